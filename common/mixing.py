"""Mixup and CutMix on a batch, returning soft targets that sum to 1.

Mixup: Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", arXiv:1710.09412.
CutMix: Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", arXiv:1905.04899. One lambda per batch ~ Beta(alpha, alpha); CutMix's box has
sides sqrt(1 - lambda) * (H, W), a uniform centre, is clipped to the image, and lambda is then set
to the fraction of the image left unpasted.
"""
import numpy as np
import torch
import torch.nn.functional as F


def rand_bbox(H, W, lam, rng):
    """Box (y0, y1, x0, x1) of about (1 - lam) of the image, centre uniform, clipped to it."""
    r = np.sqrt(1.0 - lam)
    h, w = int(H * r), int(W * r)
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    return (max(cy - h // 2, 0), min(cy + h // 2, H), max(cx - w // 2, 0), min(cx + w // 2, W))


def mix(x, y, num_classes, rng, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5):
    """-> (images, soft targets (B, num_classes)). Modifies nothing in place.

    With probability `prob` the batch is mixed: by CutMix with probability `switch_prob` when both
    alphas are > 0, else by whichever alpha is > 0. Both alphas 0 leaves the batch as it is.
    `rng` is a numpy Generator, so a batch's mixing replays exactly.
    """
    target = F.one_hot(y, num_classes).float()
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or rng.random() >= prob:
        return x, target
    cutmix = use_cutmix and (not use_mixup or rng.random() < switch_prob)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x)))
    if x.is_cuda:  # from pinned memory the copy does not make the host wait for the GPU
        perm = perm.pin_memory()
    perm = perm.to(x.device, non_blocking=True)
    if cutmix:
        H, W = x.shape[-2:]
        y0, y1, x0, x1 = rand_bbox(H, W, lam, rng)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)  # the area actually pasted
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, lam * target + (1.0 - lam) * target[perm]
