"""SE-Res-Inception V2: GoogLeNet's Inception blocks with SE attention, residual shortcuts and
stochastic depth, for 32x32 CIFAR-100 images (the "SE-Res-Inception V2" project).

Papers: GoogLeNet / Inception v1 (Szegedy et al. 2014, arXiv:1409.4842), Squeeze-and-Excitation
(Hu et al. 2018, arXiv:1709.01507), residual shortcuts (He et al. 2016, arXiv:1512.03385),
stochastic depth (Huang et al. 2016, arXiv:1603.09382). Changes for 32x32 inputs: GoogLeNet's
7x7/2 stem, its max-pools and local response norms become one 3x3 stride-1 conv to 64 channels,
so the first two blocks work at 32x32, a max-pool halves to 16x16 and a second one to 8x8; the
auxiliary classifiers are gone; every conv is followed by BatchNorm (so it has no bias).

Each block = four branches -> concat -> SE -> Dropout2d -> DropPath -> + shortcut -> ReLU. The
branch widths are GoogLeNet's (Table 1 of arXiv:1409.4842) for the same output width; the project's
sequence drops Inception 4c (a third 512) and repeats the 832-wide 4e/5a layout once more:

    block       GoogLeNet  in    #1x1  #3x3red  #3x3  #5x5red  #5x5  pool proj  out   size
    inception1  3a         64     64     96     128     16      32      32      256   32x32
    inception2  3b         256   128    128     192     32      96      64      480   32x32
    maxpool1                                                                          16x16
    inception3  4a         480   192     96     208     16      48      64      512   16x16
    inception4  4b         512   160    112     224     24      64      64      512   16x16
    inception5  4d         512   112    144     288     32      64      64      528   16x16
    inception6  4e         528   256    160     320     32     128     128      832   16x16
    inception7  4e (=5a)   832   256    160     320     32     128     128      832   16x16
    maxpool2                                                                          8x8
    inception8  5a         832   256    160     320     32     128     128      832   8x8
    inception9  5b         832   384    192     384     48     128     128     1024   8x8

Blocks are the attributes inception1..inception9 (the project's names); Grad-CAM's default layer is
inception9, the last block, found by type in gradcam.py. `python se_res_inception/model.py` prints
the summary.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per block, from the table above
WIDTHS = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
          (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (112, 144, 288, 32, 64, 64),
          (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128),
          (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))
POOL_AFTER = (2, 7)  # a 3x3/2 max-pool follows these blocks: 32 -> 16 -> 8
STEM = 64  # channels of the 3x3 stem


def conv_bn(cin, cout, k):
    """k x k conv (same padding, no bias: BN's shift replaces it) -> BN -> ReLU."""
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: scale each channel by a gate computed from all channels' means."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(channels // reduction, 8)  # at least 8 units for narrow blocks
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x):                           # (B, C, H, W)
        gate = self.fc(x.mean((2, 3)))              # (B, C) in (0, 1)
        return x * gate[:, :, None, None]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch of a whole sample with probability p.

    Survivors are scaled by 1 / (1 - p), so the expected output equals the input; in eval mode or
    at p = 0 the module is the identity.
    """

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # drawn in float32 whatever autocast's dtype: in bf16 the uniforms (and so the
        # probabilities) snap to a grid of 2^-8
        mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < keep  # (B,1,1,1)
        return x * mask.to(x.dtype) / keep

    def extra_repr(self):
        return f"p={self.p:.3f}"


class InceptionBranch(nn.Module):
    """One Inception path: '1x1', '3x3' (1x1 reduce -> 3x3), '5x5' (1x1 reduce -> 5x5) or
    'pool' (3x3/1 max-pool -> 1x1 projection). Spatial size is kept."""

    def __init__(self, kind, cin, cout, reduce=None):
        super().__init__()
        if kind == "1x1":
            layers = conv_bn(cin, cout, 1)
        elif kind in ("3x3", "5x5"):
            layers = conv_bn(cin, reduce, 1) + conv_bn(reduce, cout, int(kind[0]))
        elif kind == "pool":
            layers = [nn.MaxPool2d(3, stride=1, padding=1)] + conv_bn(cin, cout, 1)
        else:
            raise ValueError(f"unknown Inception branch {kind!r}; "
                             "use '1x1', '3x3', '5x5' or 'pool'")
        self.kind, self.out_channels = kind, cout
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class ResInceptionBlock(nn.Module):
    """Four Inception branches, concatenated, recalibrated by SE, regularised by Dropout2d and
    DropPath, added to the (projected) input."""

    def __init__(self, cin, widths, block_dropout=0.2, drop_path=0.0):
        super().__init__()
        n1, r3, n3, r5, n5, npool = widths
        self.branch1 = InceptionBranch("1x1", cin, n1)
        self.branch3 = InceptionBranch("3x3", cin, n3, r3)
        self.branch5 = InceptionBranch("5x5", cin, n5, r5)
        self.branch_pool = InceptionBranch("pool", cin, npool)
        self.out_channels = cout = n1 + n3 + n5 + npool
        self.se = SEBlock(cout)
        self.dropout = nn.Dropout2d(block_dropout)  # drops whole feature maps
        self.drop_path = DropPath(drop_path)
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):                                                   # (B, cin, H, W)
        out = torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                         self.branch_pool(x)], 1)                           # (B, cout, H, W)
        out = self.drop_path(self.dropout(self.se(out)))
        return F.relu(out + self.shortcut(x))


class SEResInception(nn.Module):
    def __init__(self, num_classes=100, dropout=0.5, block_dropout=0.2, drop_path=0.2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM, 3, 1, 1, bias=False)  # CIFAR stem: 32x32 kept
        self.bn1 = nn.BatchNorm2d(STEM)
        n, cin = len(WIDTHS), STEM
        for i, widths in enumerate(WIDTHS):
            rate = drop_path * i / (n - 1)  # stochastic depth rises linearly: 0 ... drop_path
            block = ResInceptionBlock(cin, widths, block_dropout, rate)
            setattr(self, f"inception{i + 1}", block)
            cin = block.out_channels
            if i + 1 in POOL_AFTER:
                setattr(self, f"maxpool{POOL_AFTER.index(i + 1) + 1}",
                        nn.MaxPool2d(3, stride=2, padding=1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):                         # (B, 3, 32, 32)
        x = F.relu(self.bn1(self.conv1(x)))       # (B, 64, 32, 32)
        x = self.inception1(x)                    # (B, 256, 32, 32)
        x = self.inception2(x)                    # (B, 480, 32, 32)
        x = self.maxpool1(x)                      # (B, 480, 16, 16)
        x = self.inception3(x)                    # (B, 512, 16, 16)
        x = self.inception4(x)                    # (B, 512, 16, 16)
        x = self.inception5(x)                    # (B, 528, 16, 16)
        x = self.inception6(x)                    # (B, 832, 16, 16)
        x = self.inception7(x)                    # (B, 832, 16, 16)
        x = self.maxpool2(x)                      # (B, 832, 8, 8)
        x = self.inception8(x)                    # (B, 832, 8, 8)
        x = self.inception9(x)                    # (B, 1024, 8, 8)
        x = torch.flatten(self.avgpool(x), 1)     # (B, 1024)
        return self.fc(self.dropout(x))           # (B, num_classes)


def se_res_inception(num_classes=100, dropout=0.5, block_dropout=0.2, drop_path=0.2):
    return SEResInception(num_classes, dropout, block_dropout, drop_path)


def count_flops(model, x):
    """Multiply-adds of one forward pass per image, counted by torch.utils.flop_counter (it
    reports 2 FLOPs per multiply-add of convolutions and matrix products; norms and activations
    are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x[:1])
    return counter.get_total_flops() // 2


def get_model_summary(model=None):
    """The project's summary: parameters, FLOPs, the shape after every block, a forward/backward."""
    model = se_res_inception() if model is None else model
    x = torch.zeros(1, 3, 32, 32)
    n = sum(p.numel() for p in model.parameters())
    macs = count_flops(model, x)
    print(f"SE-Res-Inception V2: {n:,} parameters, {macs / 1e6:.1f} M MACs "
          f"({2 * macs / 1e9:.2f} GFLOPs) per 32x32 image")
    print(f"{'module':<12}{'output':<18}{'params':>12}{'drop path':>11}")
    with torch.no_grad():
        x = F.relu(model.bn1(model.conv1(x)))
        params = sum(p.numel() for p in (*model.conv1.parameters(), *model.bn1.parameters()))
        print(f"{'stem':<12}{str(tuple(x.shape[1:])):<18}{params:>12,}")
        for name, m in model.named_children():
            if name.startswith(("inception", "maxpool")):
                x = m(x)
                params = sum(p.numel() for p in m.parameters())
                dp = f"{m.drop_path.p:.3f}" if name.startswith("inception") else ""
                print(f"{name:<12}{str(tuple(x.shape[1:])):<18}{params:>12,}{dp:>11}")
        params = sum(p.numel() for p in model.fc.parameters())
        print(f"{'fc':<12}{str((model.fc.out_features,)):<18}{params:>12,}")
    model.train()  # the check runs dropout and drop path as training does
    logits = model(torch.randn(2, 3, 32, 32))
    F.cross_entropy(logits, torch.arange(2)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    ok = logits.shape == (2, model.fc.out_features) and not missing and torch.isfinite(logits).all()
    print(f"forward/backward check on (2, 3, 32, 32): logits {tuple(logits.shape)}, "
          f"{'every parameter got a gradient' if not missing else f'no gradient: {missing}'}"
          f" -> {'ok' if ok else 'FAILED'}")
    return n, macs


if __name__ == "__main__":
    get_model_summary()
