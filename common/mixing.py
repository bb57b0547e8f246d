"""Mixup and CutMix on a batch, the soft targets they make, and the loss that reads them.

Mixup: Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", arXiv:1710.09412.
CutMix: Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", arXiv:1905.04899. One lambda per batch ~ Beta(alpha, alpha); the random
numbers come from a numpy Generator on the host: mixing replays exactly and never waits for the GPU.
"""
import numpy as np
import torch
import torch.nn.functional as F


def rand_bbox(H, W, lam, rng):
    """Box (y0, y1, x0, x1) of sides sqrt(1 - lam) * (H, W), centre uniform, clipped to it."""
    r = np.sqrt(1.0 - lam)
    h, w = int(H * r), int(W * r)
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    return (max(cy - h // 2, 0), min(cy + h // 2, H), max(cx - w // 2, 0), min(cx + w // 2, W))


def mix(x, y, rng, num_classes, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5):
    """-> (images, soft targets (B, num_classes) that sum to 1); modifies nothing in place.

    With probability `prob` the batch is mixed (never with both alphas 0): by CutMix with
    probability `switch_prob` when both alphas are > 0, else by whichever is > 0; row i becomes
    lam * row i + (1 - lam) * row perm[i] (Mixup), or gets a box pasted from row perm[i] (CutMix).
    """
    target = F.one_hot(y, num_classes).float()
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or rng.random() >= prob:
        return x, target
    cutmix = use_cutmix and (not use_mixup or rng.random() < switch_prob)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x)))  # pinned: the copy makes no host wait
    perm = perm.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else perm.to(x.device)
    if cutmix:
        H, W = x.shape[-2:]
        y0, y1, x0, x1 = rand_bbox(H, W, lam, rng)
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)  # the fraction of the image left unpasted
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, lam * target + (1.0 - lam) * target[perm]


def soft_target_cross_entropy(logits, target, smoothing=0.0):
    """Mean over the batch of -sum_c t_c log softmax(logits)_c, computed in float32.

    target: int64 labels (B,) or soft targets (B, C) summing to 1. Smoothing s turns t into
    (1 - s) t + s / C, as `F.cross_entropy(label_smoothing=s)` does.
    """
    C = logits.shape[-1]
    if target.dtype == torch.long:
        target = F.one_hot(target, C).float()
    target = target * (1.0 - smoothing) + smoothing / C
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
