"""Cross-entropy against soft targets (Mixup/CutMix) with label smoothing applied once."""
import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits, target, smoothing=0.0):
    """Mean over the batch of -sum_c t_c log softmax(logits)_c.

    target: int64 labels (B,) or soft targets (B, C) summing to 1. Smoothing s turns t into
    (1 - s) t + s / C: a one-hot row gets 1 - s + s/C on its class and s/C elsewhere, as in
    `F.cross_entropy(label_smoothing=s)`. Computed in float32 whatever the autocast dtype.
    """
    C = logits.shape[-1]
    if target.dtype == torch.long:
        target = F.one_hot(target, C).float()
    target = target * (1.0 - smoothing) + smoothing / C
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
