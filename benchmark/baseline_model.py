"""The benchmark baseline's network: torchvision's ResNet-18 with the 32x32 stem.

torchvision.models.resnet18(num_classes=100) with conv1 a 3x3 stride-1 convolution and no
max-pool, so a 32x32 image keeps full resolution into layer1, as the source notebooks built it.
It is resnet18/model.py's network without its dropout (11,220,132 parameters, the same count).
Used by benchmark/baseline.py (training) and benchmark/measure.py (rebuilding last.pt); the
checkpoint names the factory, `baseline`, as its arch.
"""
import torch.nn as nn
import torchvision


def baseline(num_classes=100):
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # (B, 64, 32, 32): no stride-2 7x7 stem
    model.maxpool = nn.Identity()
    return model
