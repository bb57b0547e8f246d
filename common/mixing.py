"""Mixup and CutMix on a batch, returning soft targets that sum to 1.

Mixup: Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", arXiv:1710.09412.
CutMix: Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", arXiv:1905.04899. One lambda per batch ~ Beta(alpha, alpha); CutMix's box has
sides sqrt(1 - lambda) * (H, W), a uniform centre, is clipped to the image, and lambda is then set
to the fraction of the image left unpasted.

`draw` makes a batch's plan on the host (lambda, partners, box) and `Plan.apply` mixes any rows of
it, so under torchrun a rank mixes only its own slice, from the augmented rows it needs.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def rand_bbox(H, W, lam, rng):
    """Box (y0, y1, x0, x1) of about (1 - lam) of the image, centre uniform, clipped to it."""
    r = np.sqrt(1.0 - lam)
    h, w = int(H * r), int(W * r)
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    return (max(cy - h // 2, 0), min(cy + h // 2, H), max(cx - w // 2, 0), min(cx + w // 2, W))


def _to(a, device):
    """Host int64 array -> tensor on device; from pinned memory the copy does not make the host
    wait for the GPU."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


@dataclass
class Plan:
    """One batch's mixing, decided on the host: row i becomes lam * row i + (1 - lam) * row
    perm[i] (Mixup), or row i with `box` pasted from row perm[i] (CutMix)."""
    n: int                        # rows in the batch
    lam: float = 1.0              # share of each image's own label (CutMix: the area unpasted)
    perm: np.ndarray = None       # (n,) int64 partner of each row; None: the batch is not mixed
    box: tuple = None             # CutMix's (y0, y1, x0, x1), px; None: Mixup
    num_classes: int = None       # for the soft targets; apply's argument wins

    def needed(self, rows):
        """Rows (host int array) -> the sorted rows whose images mixing them reads."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.unique(rows if self.perm is None else np.concatenate([rows, self.perm[rows]]))

    def apply(self, x, y, rows=None, have=None, num_classes=None):
        """-> (images, soft targets (len(rows), num_classes)) of `rows` (host ints; None: all).

        x holds the images of rows `have` (sorted host ints, as `needed` gives; None: all n);
        y the labels of all n rows, on x's device. Modifies nothing in place."""
        num_classes = num_classes or self.num_classes
        if rows is None and have is None:  # the whole batch: no gathers of its own rows
            target = F.one_hot(y, num_classes).float()
            if self.perm is None:
                return x, target
            own, i_other = x, _to(self.perm, x.device)
            y_own, y_other = target, target[i_other]
        else:
            rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
            pos = (lambda r: r) if have is None else (lambda r: np.searchsorted(have, r))
            partner = rows if self.perm is None else self.perm[rows]
            idx = _to(np.concatenate([pos(rows), pos(partner), rows, partner]), x.device)
            i_own, i_other, r_own, r_other = idx.chunk(4)  # one host-to-device copy
            own, y_own = x[i_own], F.one_hot(y[r_own], num_classes).float()
            if self.perm is None:
                return own, y_own
            y_other = F.one_hot(y[r_other], num_classes).float()
        if self.box is not None:
            y0, y1, x0, x1 = self.box
            own = own.clone() if own is x else own
            own[:, :, y0:y1, x0:x1] = x[i_other, :, y0:y1, x0:x1]
        else:
            own = self.lam * own + (1.0 - self.lam) * x[i_other]
        return own, self.lam * y_own + (1.0 - self.lam) * y_other


def draw(n, rng, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, size=(32, 32),
         num_classes=None):
    """The plan for a batch of n images of size (H, W) px, from the numpy Generator `rng`.

    With probability `prob` the batch is mixed: by CutMix with probability `switch_prob` when both
    alphas are > 0, else by whichever alpha is > 0. Both alphas 0 leaves the batch as it is.
    """
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or rng.random() >= prob:
        return Plan(n, num_classes=num_classes)
    cutmix = use_cutmix and (not use_mixup or rng.random() < switch_prob)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(n)
    if not cutmix:
        return Plan(n, lam, perm, num_classes=num_classes)
    H, W = size
    box = rand_bbox(H, W, lam, rng)
    lam = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / (H * W)  # the area actually pasted
    return Plan(n, lam, perm, box, num_classes)


def mix(x, y, num_classes, rng, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5):
    """-> (images, soft targets (B, num_classes)): `draw` then `Plan.apply` on the whole batch.
    Modifies nothing in place. `rng` is a numpy Generator, so a batch's mixing replays exactly.
    """
    plan = draw(len(x), rng, mixup_alpha, cutmix_alpha, prob, switch_prob, tuple(x.shape[-2:]))
    return plan.apply(x, y, num_classes=num_classes)
