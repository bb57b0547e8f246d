"""The batched on-device augmentation and the loader that feeds it.

Images live as uint8 tensors (N, 3, 32, 32) on the training device. Each batch is augmented in a
few tensor ops with per-sample random parameters drawn on that device from a generator seeded by
(seed, epoch, batch), so an epoch replays exactly after a resume, nothing is copied from the host
per step, and no worker processes are needed on CPU, CUDA or MPS.
"""
import math
from dataclasses import dataclass

import numpy as np
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
    """Per-sample random augmentation of a uint8 batch, in a handful of batched tensor ops.

    Geometry (crop with zero padding, flip, rotation, shift, zoom) is one affine warp per image;
    colour jitter is a 3x3 colour matrix per image (hue turns the chroma plane in YIQ space);
    random erasing (Zhong et al. 2017, arXiv:1708.04896), coarse-dropout holes and Gaussian noise
    are masks. Probabilities are per image.
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
    holes_p: float = 0.0             # coarse dropout: `holes` squares of side `hole_size` px
    holes: int = 8
    hole_size: int = 8
    noise_p: float = 0.0             # Gaussian noise; drawn from the same uniform as holes_p,
    noise_std: tuple = (0.0125, 0.0278)  # so holes and noise never hit the same image

    def __call__(self, x, g):
        """uint8 (B,3,H,W), generator g on x's device -> normalized float (B,3,H,W)."""
        B, _, H, W = x.shape
        dev = x.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)  # noqa: E731
        x = x.float().div_(255)
        # geometry: output pixel -> input pixel, in grid_sample's [-1, 1] coordinates
        ang = (rand(B) * 2 - 1) * math.radians(self.rotate)
        zoom = self.scale[0] + rand(B) * (self.scale[1] - self.scale[0])
        shift = (rand(B, 2) * 2 - 1) * self.translate * 2
        on = rand(B) < self.affine_p
        ang, zoom, shift = ang * on, torch.where(on, zoom, 1.0), shift * on[:, None]
        crop = torch.randint(-self.pad, self.pad + 1, (B, 2), generator=g, device=dev) * 2.0
        crop = crop / torch.tensor([W, H], device=dev)
        flip = torch.where(rand(B) < 0.5, -1.0, 1.0) if self.flip else torch.ones(B, device=dev)
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        theta = torch.stack([torch.stack([cos * flip, -sin, crop[:, 0] + shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, crop[:, 1] + shift[:, 1]], 1)], 1)
        if self.pad or self.flip or self.rotate or self.translate or self.scale != (1.0, 1.0):
            grid = F.affine_grid(theta, (B, 3, H, W), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if any(self.jitter):
            x = self._jitter(x, rand)
        u = rand(B)
        if self.noise_p:
            std = self.noise_std[0] + rand(B) * (self.noise_std[1] - self.noise_std[0])
            use = (u >= self.holes_p) & (u < self.holes_p + self.noise_p)
            noise = torch.randn(x.shape, generator=g, device=dev)
            x = (x + (use * std)[:, None, None, None] * noise).clamp_(0, 1)
        mean, std = self.normalize.stats(dev)
        x = (x - mean) / std
        keep = torch.ones(B, 1, H, W, device=dev)
        if self.holes_p:
            c = torch.rand(B, self.holes, 2, generator=g, device=dev) * torch.tensor(
                [H, W], device=dev)
            for k in range(self.holes):
                keep *= ~_box(c[:, k, 0], c[:, k, 1], self.hole_size, self.hole_size, H, W)
            keep = torch.where((u < self.holes_p)[:, None, None, None], keep, 1.0)
        if self.erase_p:
            area = (0.02 + rand(B) * 0.31) * H * W
            aspect = torch.exp(math.log(0.3) + rand(B) * (math.log(3.3) - math.log(0.3)))
            h = (area * aspect).sqrt().clamp(max=H)
            w = (area / aspect).sqrt().clamp(max=W)
            cy, cx = h / 2 + rand(B) * (H - h), w / 2 + rand(B) * (W - w)
            hit = (rand(B) < self.erase_p)[:, None, None, None]
            keep *= ~(_box(cy, cx, h, w, H, W) & hit)
        return x * keep  # erased pixels become 0 after normalization: the dataset mean

    def _jitter(self, x, rand):
        B = x.shape[0]
        b, c, s, h = self.jitter
        factor = lambda m: 1 + (rand(B) * 2 - 1) * m  # noqa: E731
        x = x * factor(b)[:, None, None, None]
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        cf = factor(c)[:, None, None, None]
        x = cf * x + (1 - cf) * gray.mean((2, 3), keepdim=True)
        sf = factor(s)[:, None, None, None]
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
        x = sf * x + (1 - sf) * gray
        if h:
            a = (rand(B) * 2 - 1) * h * 2 * math.pi
            to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                                   [0.211, -0.523, 0.312]], device=x.device)
            rot = torch.zeros(B, 3, 3, device=x.device)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = torch.cos(a), -torch.sin(a)
            rot[:, 2, 1], rot[:, 2, 2] = torch.sin(a), torch.cos(a)
            m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)
            x = torch.einsum("bij,bjhw->bihw", m, x)
        return x.clamp(0, 1)


def _box(cy, cx, h, w, H, W):
    """(B,1,H,W) bool mask of axis-aligned boxes centred at (cy, cx), clipped to the image."""
    ys = torch.arange(H, device=cy.device) + 0.5
    xs = torch.arange(W, device=cy.device) + 0.5
    h = torch.as_tensor(h, device=cy.device, dtype=torch.float)
    w = torch.as_tensor(w, device=cy.device, dtype=torch.float)
    iny = ((ys - cy[:, None]).abs() < h.reshape(-1, 1) / 2)[:, :, None]
    inx = ((xs - cx[:, None]).abs() < w.reshape(-1, 1) / 2)[:, None, :]
    return (iny & inx)[:, None]


class Loader:
    """Batches of one split, held on `device`: (transform(uint8 images), int64 labels).

    `transform(x, g)` is an Augment for training or a Normalize for evaluation. Training order and
    augmentation come from generators seeded by (seed, epoch, batch), so `set_epoch(e)` followed
    by `iterate(start=k)` reproduces batch k of epoch e exactly.
    """

    def __init__(self, split, batch_size, device, transform, shuffle=False, seed=0,
                 drop_last=False):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: use at least 1")
        if drop_last and len(split[0]) < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the {len(split[0])} training "
                             "images; lower --batch-size or raise --subset")
        self.x, self.y = split[0].to(device), split[1].to(device)
        self.batch_size, self.transform, self.shuffle = batch_size, transform, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def generator(self, batch=None):
        """Generator on the data's device for this epoch's order (batch=None) or one batch."""
        key = [self.seed, self.epoch] + ([] if batch is None else [batch])
        seed = int(np.random.SeedSequence(key).generate_state(1)[0])
        return torch.Generator(self.x.device).manual_seed(seed)

    def iterate(self, start=0):
        n = len(self.x)
        order = (torch.randperm(n, generator=self.generator(), device=self.x.device)
                 if self.shuffle else None)
        for i in range(start, len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            sel = order[idx] if order is not None else idx
            yield self.transform(self.x[sel], self.generator(i)), self.y[sel]

    def __iter__(self):
        return self.iterate()
