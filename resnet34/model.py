"""CIFAR ResNet-34 (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385).

Two variants for 32x32 inputs, both with the 7x7 stride-2 stem and its max-pool replaced by one 3x3
stride-1 conv (layer1 works at 32x32, layer4 at 4x4) and a dropout before the classifier:
- "enhanced" (the Enhanced ResNet34 project's, the default): BasicBlock [5, 5, 5, 5], dropout
  0.3, 30,032,292 parameters.
- "standard" (the ResNet-34 pipeline notebook's): the paper's BasicBlock [3, 4, 6, 3],
  21,328,292 parameters. Module names follow torchvision, so torchvision's
  `resnet34(num_classes=100)` with its stem swapped for a 3x3 stride-1 conv and its max-pool
  removed has the same state-dict keys and shapes (dropout has none).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

LAYERS = {"enhanced": (5, 5, 5, 5), "standard": (3, 4, 6, 3)}  # BasicBlocks per stage


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; a 1x1 stride-s conv projects it when the shape changes."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes=100, dropout=0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem: no stride, no max-pool
        self.bn1 = nn.BatchNorm2d(64)
        widths, self.in_planes = (64, 128, 256, 512), 64
        self.layer1 = self._make_layer(widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride):
        layers = [BasicBlock(self.in_planes, planes, stride)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):                       # (B, 3, 32, 32)
        x = F.relu(self.bn1(self.conv1(x)))     # (B, 64, 32, 32)
        x = self.layer1(x)                      # (B, 64, 32, 32)
        x = self.layer2(x)                      # (B, 128, 16, 16)
        x = self.layer3(x)                      # (B, 256, 8, 8)
        x = self.layer4(x)                      # (B, 512, 4, 4)
        x = torch.flatten(self.avgpool(x), 1)   # (B, 512)
        return self.fc(self.dropout(x))         # (B, num_classes)


def resnet34(variant="enhanced", num_classes=100, dropout=0.3):
    if variant not in LAYERS:
        raise ValueError(f"unknown ResNet-34 variant {variant!r}; use one of {', '.join(LAYERS)}")
    return ResNet(LAYERS[variant], num_classes, dropout)


def model_args_of(state_dict):
    """The factory arguments of a bare state dict: its blocks per stage tell the variant."""
    blocks = tuple(len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{s}.")})
                   for s in range(1, 5))
    return {"variant": next((v for v, n in LAYERS.items() if n == blocks), "enhanced")}


def count_flops(model, x):
    """Multiply-adds of one forward pass per image, counted by torch.utils.flop_counter (it
    reports 2 FLOPs per multiply-add of convolutions and matrix products; norms and activations
    are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x[:1])
    return counter.get_total_flops() // 2


def summary(model, name="CIFAR ResNet-34"):
    """Parameters, FLOPs, output shape, parameters and receptive field per block."""
    x = torch.zeros(1, 3, 32, 32)
    n = sum(p.numel() for p in model.parameters())
    macs = count_flops(model, x)
    print(f"{name}: {n:,} parameters, {macs / 1e6:.1f} M MACs "
          f"({2 * macs / 1e9:.2f} GFLOPs) per 32x32 image")
    print(f"{'stage':<8}{'block':<8}{'output':<18}{'params':>12}{'RF':>6}")
    rf, jump = 1, 1  # RF_l = RF_(l-1) + (k-1) * jump_(l-1);  jump_l = jump_(l-1) * stride
    with torch.no_grad():
        x = F.relu(model.bn1(model.conv1(x)))
        rf += 2 * jump
        params = sum(p.numel() for p in (*model.conv1.parameters(), *model.bn1.parameters()))
        print(f"{'stem':<8}{'conv1':<8}{str(tuple(x.shape[1:])):<18}{params:>12,}{rf:>6}")
        for s in range(1, 5):
            for i, block in enumerate(getattr(model, f"layer{s}")):
                x = block(x)
                rf += 2 * jump                          # conv1 of the block, 3x3
                jump *= block.conv1.stride[0]
                rf += 2 * jump                          # conv2, 3x3 stride 1
                params = sum(p.numel() for p in block.parameters())
                print(f"{f'layer{s}':<8}{i:<8}{str(tuple(x.shape[1:])):<18}{params:>12,}{rf:>6}")
        params = sum(p.numel() for p in model.fc.parameters())
        print(f"{'head':<8}{'fc':<8}{str((model.fc.out_features,)):<18}{params:>12,}{rf:>6}")


if __name__ == "__main__":
    for variant in LAYERS:
        summary(resnet34(variant), f"CIFAR ResNet-34 {variant} {list(LAYERS[variant])}")
        print()
