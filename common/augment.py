"""The batched on-device augmentation (common/loader.py feeds it batches).

Images stay uint8 (N, 3, 32, 32) on the device; per-sample parameters come from a generator there
seeded by (seed, epoch, batch): exact replay after a resume, no host copies, no worker processes.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class Normalize:
    """uint8 (B,3,H,W) -> float (x / 255 - mean) / std; the constants are kept per device."""

    def __init__(self, mean, std):
        self.mean, self.std, self._on = tuple(mean), tuple(std), {}

    def stats(self, device):
        if device not in self._on:  # one host-to-device copy per device, not one per batch
            self._on[device] = (torch.tensor(self.mean, device=device)[:, None, None],
                                torch.tensor(self.std, device=device)[:, None, None])
        return self._on[device]

    def __call__(self, x, g=None):
        mean, std = self.stats(x.device)
        return (x.float() / 255 - mean) / std


@dataclass
class Augment:
    """Per-sample random augmentation of a uint8 batch, in a handful of batched tensor ops:
    geometry (crop with zero padding, flip, rotation, shift, zoom) is one affine warp per image;
    colour jitter is torchvision's ColorJitter with each image's own factors; random erasing
    (Zhong et al. 2017, arXiv:1708.04896), coarse-dropout holes and Gaussian noise are masks.
    `draw` takes the generator's numbers; the pure `apply` is what `compile()` hands torch.compile.
    """
    normalize: Normalize             # the dataset's mean/std, applied after the colour ops
    pad: int = 4                     # random crop of the zero-padded image, px
    flip: bool = True                # horizontal flip with p 0.5
    rotate: float = 0.0              # max |angle|, degrees
    translate: float = 0.0           # max |shift| on top of the crop, fraction of the side
    scale: tuple = (1.0, 1.0)        # zoom range
    affine_p: float = 1.0            # chance that rotate/translate/scale apply to an image
    jitter: tuple = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue (torchvision's)
    erase_p: float = 0.0             # one rectangle of 2-33 % of the area, aspect 0.3-3.3
    holes_p: float = 0.0             # coarse dropout: `holes` rectangles inside the image, each
    holes: int = 8                   # side drawn from hole_size = (lo, hi) px, as
    hole_size: tuple = (8, 8)        # albumentations' CoarseDropout(min/max_height, _width)
    noise_p: float = 0.0             # Gaussian noise; drawn from the same uniform as holes_p,
    noise_std: tuple = (0.0125, 0.0278)  # so holes and noise never hit the same image

    def __call__(self, x, g):
        """uint8 (B,3,H,W), generator g on x's device -> normalized float (B,3,H,W)."""
        p = self.draw(x.shape, g, x.device)
        mean, std = self.normalize.stats(x.device)  # outside apply: a compiled graph stays one
        return getattr(self, "_compiled", self.apply)(x, p, mean, std)

    def compile(self, **kwargs):
        """Make __call__ run `apply` through torch.compile (eager `draw` stays); -> self."""
        self._compiled = torch.compile(self.apply, dynamic=False, **kwargs)
        return self

    def draw(self, shape, g, dev):
        """-> {name: (B, ...) tensor on dev}, U(0, 1) unless said, in a never-changing order."""
        B = shape[0]
        rand = lambda *size: torch.rand(*size, generator=g, device=dev)  # noqa: E731
        p = {"ang": rand(B), "zoom": rand(B), "shift": rand(B, 2), "on": rand(B),
             "crop": torch.randint(-self.pad, self.pad + 1, (B, 2), generator=g, device=dev)}
        if self.flip:
            p["flip"] = rand(B)
        if any(self.jitter):
            for k in ("bright", "contrast", "saturation") + ("hue",) * bool(self.jitter[3]):
                p[k] = rand(B)
        p["u"] = rand(B)
        if self.noise_p:
            p["std"], p["noise"] = rand(B), torch.randn(shape, generator=g, device=dev)
        if self.holes_p:
            lo, hi = self.hole_size
            p["size"] = torch.randint(lo, hi + 1, (B, self.holes, 2), generator=g, device=dev)
            p["top"] = rand(B, self.holes, 2)
        if self.erase_p:
            p.update({k: rand(B) for k in ("area", "aspect", "cy", "cx", "hit")})
        return p

    def apply(self, x, p, mean, std):
        """uint8 (B,3,H,W), draw's numbers, the normalization's (3,1,1) mean and std ->
        normalized float images. No generator: a pure function, traced whole by torch.compile."""
        B, _, H, W = x.shape
        x = x.float().div_(255)
        # geometry: output pixel -> input pixel, in grid_sample's [-1, 1] coordinates
        ang = (p["ang"] * 2 - 1) * math.radians(self.rotate)
        zoom = self.scale[0] + p["zoom"] * (self.scale[1] - self.scale[0])
        shift = (p["shift"] * 2 - 1) * self.translate * 2
        on = p["on"] < self.affine_p
        ang, zoom, shift = ang * on, torch.where(on, zoom, 1.0), shift * on[:, None]
        crop = p["crop"] * 2.0  # px -> grid units; Python scalars, nothing from the host
        crop = torch.stack([crop[:, 0] / W, crop[:, 1] / H], 1)
        flip = torch.where(p["flip"] < 0.5, -1.0, 1.0) if self.flip else x.new_ones(B)
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        m = torch.stack([torch.stack([cos * flip, -sin], 1), torch.stack([sin * flip, cos], 1)], 1)
        # the shift goes through m, so it moves the output by `shift` whatever the angle and
        # zoom, as torchvision's RandomAffine translate does; the crop moves the input
        theta = torch.cat([m, (crop + (m @ shift[:, :, None])[:, :, 0])[:, :, None]], 2)
        if self.pad or self.flip or self.rotate or self.translate or self.scale != (1.0, 1.0):
            grid = F.affine_grid(theta, (B, 3, H, W), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if any(self.jitter):
            draws = iter(p[k] for k in ("bright", "contrast", "saturation", "hue") if k in p)
            x = self._jitter(x, lambda n: next(draws))
        if self.noise_p:
            sigma = self.noise_std[0] + p["std"] * (self.noise_std[1] - self.noise_std[0])
            use = (p["u"] >= self.holes_p) & (p["u"] < self.holes_p + self.noise_p)
            x = (x + (use * sigma)[:, None, None, None] * p["noise"]).clamp_(0, 1)
        x = (x - mean) / std
        keep = torch.ones(B, 1, H, W, device=x.device)
        if self.holes_p:
            size = p["size"]
            room = torch.stack([H - size[..., 0], W - size[..., 1]], -1) + 1
            c = (p["top"] * room).floor() + size / 2  # top: whole pixels, hole inside the image
            for k in range(self.holes):
                keep *= ~_box(c[:, k, 0], c[:, k, 1], size[:, k, 0], size[:, k, 1], H, W)
            keep = torch.where((p["u"] < self.holes_p)[:, None, None, None], keep, 1.0)
        if self.erase_p:
            area = (0.02 + p["area"] * 0.31) * H * W
            aspect = torch.exp(math.log(0.3) + p["aspect"] * (math.log(3.3) - math.log(0.3)))
            h = (area * aspect).sqrt().clamp(max=H)
            w = (area / aspect).sqrt().clamp(max=W)
            cy, cx = h / 2 + p["cy"] * (H - h), w / 2 + p["cx"] * (W - w)
            hit = (p["hit"] < self.erase_p)[:, None, None, None]
            keep *= ~(_box(cy, cx, h, w, H, W) & hit)
        return x * keep  # erased pixels become 0 after normalization: the dataset mean

    def _jitter(self, x, rand):
        """torchvision's ColorJitter with each image's own factors, in one fixed order: brightness,
        contrast, saturation, hue (torchvision draws the order per call). Each step is torchvision's
        adjust_* and clamps to [0, 1] as it does; rand(B) gives the next (B,) of U(0, 1)."""
        B = x.shape[0]
        b, c, s, h = self.jitter
        factor = lambda m: 1 + (rand(B) * 2 - 1)[:, None, None, None] * m  # noqa: E731
        gray = lambda v: (0.2989 * v[:, 0] + 0.587 * v[:, 1] + 0.114 * v[:, 2])[:, None]  # noqa
        x = (x * factor(b)).clamp(0, 1)
        cf = factor(c)  # blend with the image's mean gray
        x = (cf * x + (1 - cf) * gray(x).mean((2, 3), keepdim=True)).clamp(0, 1)
        sf = factor(s)  # blend with each pixel's gray
        x = (sf * x + (1 - sf) * gray(x)).clamp(0, 1)
        if h:  # HSV hue turned by up to h turns (0.05: 18 degrees), saturation and value kept
            turn = (rand(B) * 2 - 1) * h
            v, lo = x.amax(1), x.amin(1)
            chroma = v - lo
            r, g, bl = ((v[:, None] - x) / torch.where(chroma > 0, chroma, 1)[:, None]).unbind(1)
            hue = torch.where(v == x[:, 0], bl - g,  # in sixths of a turn
                              torch.where(v == x[:, 1], 2 + r - bl, 4 + g - r))
            k = (torch.arange(5.0, 0.0, -2.0, device=x.device)[:, None, None]  # 5, 3, 1
                 + (hue[:, None] + 6 * turn[:, None, None, None])) % 6  # (B, 3, H, W)
            x = v[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)
        return x


def _box(cy, cx, h, w, H, W):
    """(B,1,H,W) bool mask of axis-aligned boxes centred at (cy, cx), clipped to the image."""
    ys = torch.arange(H, device=cy.device) + 0.5  # pixel centres
    xs = torch.arange(W, device=cy.device) + 0.5
    iny = ((ys - cy[:, None]).abs() < h[:, None] / 2)[:, :, None]  # h, w: (B,) sides, px
    inx = ((xs - cx[:, None]).abs() < w[:, None] / 2)[:, None, :]
    return (iny & inx)[:, None]
