"""A synthetic stand-in for CIFAR-100 that runs offline: the same shapes, the same class and
superclass structure, and classes that only a network that sees texture and shape can tell apart.

Superclass c wears texture TEXTURES[c // 2] at a period of (5, 10)[c % 2] px; the k-th fine class of
a superclass, in label order, is the object SHAPES[k] on it in the opposite hue, lighter or darker.
Hue and grey level are random per image and every texture has zero mean and one contrast (RMS), so
no colour statistic tells a class; a blur (sigma 5 px) leaves the silhouette, no texture; every cue
survives the recipes' augmentations (design: docs/synthetic.md; measured in tests/test_data.py).
"""
import math

import torch

TEXTURES = ("h-stripes", "v-stripes", "diag-stripes", "waves", "grid", "checkerboard",
            "dots", "honeycomb", "rings", "plaid")
SHAPES = ("disk", "bar", "triangle", "cross", "ring")
_PX = torch.arange(32.0) - 15.5  # pixel centres from the image centre, px


def names(fine_to_coarse):
    """-> (fine names in label order, superclass names), e.g. "disk on h-stripes 5px"."""
    coarse = [f"{TEXTURES[c // 2]} {(5, 10)[c % 2]}px" for c in range(max(fine_to_coarse) + 1)]
    shape = [fine_to_coarse[:f].count(c) for f, c in enumerate(fine_to_coarse)]
    return [f"{SHAPES[shape[f]]} on {coarse[c]}" for f, c in enumerate(fine_to_coarse)], coarse


def images(n, split_seed, fine_to_coarse, masks=False):
    """n images: uint8 (n,3,32,32) and int64 labels (each class n / classes times); masks=True adds
    each object's pixels, bool (n,32,32). fine_to_coarse[label] is the label's superclass (5 labels
    a superclass); the classes are the same for every split_seed."""
    coarse = torch.tensor(fine_to_coarse)
    shape_of = torch.tensor([fine_to_coarse[:f].count(c) for f, c in enumerate(fine_to_coarse)])
    g = torch.Generator().manual_seed(split_seed)
    y = torch.randperm(n, generator=g) % len(fine_to_coarse)
    x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    where = torch.empty(n, 32, 32, dtype=torch.bool)
    for i in range(0, n, 8192):  # bounded memory: ~0.2 GB of float32 per chunk
        yb = y[i:i + 8192]
        b, c = len(yb), coarse[yb]
        q = torch.rand(b, 17, generator=g)  # every per-image random number, uniform in [0, 1)
        k = 2 * math.pi / (torch.where(c % 2 == 0, 5.0, 10.0) * (0.92 + 0.16 * q[:, 0]))  # rad/px
        tilt = math.radians(5) * (2 * q[:, 1] - 1)  # rad
        t = _grouped(c // 2, lambda kind, j: _texture(kind, k[j], tilt[j], q[j, 2:10]))
        t = t - t.mean((1, 2), keepdim=True)
        t = t / t.pow(2).mean((1, 2), keepdim=True).sqrt()  # zero mean, unit RMS: one contrast
        radius = 7.5 + 2.5 * q[:, 10]  # px, of the disk of the object's area
        centre = 3 * (2 * q[:, 11:13] - 1)  # px from the image centre
        inside = _grouped(shape_of[yb], lambda kind, j: _shape(kind, centre[j], radius[j]))
        # colours: the background a random hue of chroma 0.03-0.06 at a grey level of 0.4-0.6,
        # the object the opposite hue 0.1 lighter or darker; all within 0.34-0.66, so that the
        # texture (RMS 0.11, peaks at most 3.1x that: 0.34) never clips into a coarse moire
        hue = torch.cos(2 * math.pi * q[:, 14, None] + torch.tensor([0, -2, 2]) * math.pi / 3)
        hue = (0.03 + 0.03 * q[:, 15, None]) * hue
        level = 0.4 + 0.2 * q[:, 16, None]
        bg, fg = level + hue, level - hue + torch.where(level < 0.5, 0.1, -0.1)
        lum = 0.11 * t + 0.01 * torch.randn(b, 32, 32, generator=g)  # texture + pixel noise
        img = torch.addcmul(bg[:, :, None, None], (fg - bg)[:, :, None, None], inside[:, None])
        x[i:i + b] = (img + lum[:, None]).mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        where[i:i + b] = inside
    return (x, y, where) if masks else (x, y)


def _grouped(group, fn):
    """fn(kind, index) for each kind's images at once, back in the original order."""
    order = torch.argsort(group, stable=True)
    parts = order.split(torch.bincount(group).tolist())
    return torch.cat([fn(kind, j) for kind, j in enumerate(parts) if len(j)])[order.argsort()]


def _wave(k, angle, phase):
    """(m,) -> (m, 32, 32): k (u cos angle + v sin angle) + phase, u right and v down, rad."""
    along_u = (k * torch.cos(angle))[:, None, None] * _PX
    along_v = (k * torch.sin(angle))[:, None] * _PX + phase[:, None]
    return along_u + along_v[:, :, None]


def _texture(kind, k, tilt, q):
    """Texture `kind` at wave number k (rad/px), tilted by `tilt` (rad); q: (m, 8) uniforms.
    Cosines of wave number k, at most squared: no frequency exceeds 2k, 0.43 cycles/px at the
    shortest period (4.6 px), under the pixel grid's 0.5, so nothing folds into a moire."""
    ph = 2 * math.pi * q
    cos = lambda j, angle, kk=k: torch.cos(_wave(kk, tilt + angle, ph[:, j]))  # noqa: E731
    right = math.pi / 2
    if kind == 0:
        return cos(0, right)  # the wave runs down: horizontal stripes
    if kind == 1:
        return cos(0, 0.0)
    if kind == 2:  # a flip turns one diagonal into the other, so the class holds both
        return cos(0, torch.where(q[:, 1] < 0.5, -1.0, 1.0) * right / 2)
    if kind == 3:  # horizontal stripes bent by a sine twice as long, up to 45 degrees
        return torch.cos(_wave(k, tilt + right, ph[:, 0])
                         + 2 * torch.sin(_wave(k / 2, tilt, ph[:, 1])))
    if kind == 4:  # bright lines both ways
        return (1 + cos(0, 0.0)) ** 2 + (1 + cos(1, right)) ** 2
    if kind == 5:  # squares of side period / sqrt(2): the fundamental is at the period
        return cos(0, 0.0, k / 2 ** 0.5) * cos(1, right, k / 2 ** 0.5)
    if kind == 6:  # bright dots on a square lattice
        return (1 + cos(0, 0.0)) * (1 + cos(1, right))
    if kind == 7:  # three gratings 60 degrees apart, phased to draw dark dots in a bright mesh
        return -(cos(0, 0.0) + cos(1, math.pi / 3)
                 + torch.cos(_wave(k, tilt + 2 * math.pi / 3, ph[:, 1] - ph[:, 0])))
    if kind == 8:  # concentric rings about a point up to 6 px from the centre
        cu, cv = 12 * q[:, 1:3].T - 6
        r2 = ((_PX - cu[:, None]) ** 2)[:, None, :] + ((_PX - cv[:, None]) ** 2)[:, :, None]
        return torch.cos(k[:, None, None] * r2.sqrt() + ph[:, 0, None, None])
    return sum(cos(j, j * math.pi / 4) for j in range(4))  # plaid: four orientations at once


def _shape(kind, centre, radius):
    """(m, 32, 32) bool: shape `kind` of about a disk's area, axis-aligned and mirror-symmetric."""
    u = ((_PX - centre[:, 0, None]) / radius[:, None])[:, None, :]  # (m, 1, 32), in radii
    v = ((_PX - centre[:, 1, None]) / radius[:, None])[:, :, None]  # (m, 32, 1)
    if kind == 0:
        return u ** 2 + v ** 2 < 1
    if kind == 1:  # lying flat, 2.6 x 1 radii
        return (u.abs() < 1.3) & (v.abs() < 0.5)
    if kind == 2:  # apex up; height 2.2, base 2.6 radii
        return (v.abs() < 1.1) & (u.abs() < (v + 1.1) * 1.3 / 2.2)
    if kind == 3:
        return ((u.abs() < 0.35) & (v.abs() < 1.15)) | ((v.abs() < 0.35) & (u.abs() < 1.15))
    r2 = u ** 2 + v ** 2
    return (r2 < 1.15 ** 2) & (r2 > 0.6 ** 2)


