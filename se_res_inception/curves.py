"""The training figure of se_res_inception/train.py: loss | accuracy (%).

Drawn from the run's metrics.npz columns (common/metrics.py); returns a matplotlib Figure (not
pyplot: no backend, no global state), which metrics.save_figure writes. Series that are missing
or all-NaN are left out; a run of one epoch still shows its points.
"""
import numpy as np
from matplotlib.figure import Figure

from common.metrics import epoch_axis


def plot_curves(m, best_epoch=None):
    """SE-Res-Inception's plot_metrics figure: loss (left) and accuracy (%, right) per epoch.

    A horizontal line marks the top-1 of the epoch best.pt holds (`best_epoch`, chosen on the
    validation split, or on the test split where the run was told so), else the final epoch's
    test top-1: the run's result.
    """
    ep = np.asarray(m["epoch"])
    style = {"marker": "o", "markersize": 3} if len(ep) < 30 else {}
    present = lambda k: k in m and not np.all(np.isnan(m[k]))  # noqa: E731
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, ylabel, keys in ((left, "loss", ("train_loss", "val_loss", "test_loss",
                                             "ema_val_loss", "ema_test_loss")),
                             (right, "accuracy (%)", ("train_acc", "val_top1", "test_top1",
                                                      "ema_val_top1", "ema_test_top1"))):
        for k in keys:
            if present(k):
                ax.plot(ep, m[k], label=k.rsplit("_", 1)[0], **style)
        ax.set(xlabel="epoch", ylabel=ylabel)
        epoch_axis(ax, ep, m, keys if ylabel == "loss" else ())
        ax.grid(alpha=0.3)
    split = "val" if present("val_top1") else "test"
    if present(f"{split}_top1"):
        acc = np.asarray(m[f"{split}_top1"], dtype=float)
        best = best_epoch in set(ep.tolist())
        i = int(np.flatnonzero(ep == best_epoch)[0]) if best else len(ep) - 1
        right.axhline(acc[i], color="0.3", ls="--", lw=1, label=f"{'best' if best else 'final'} "
                      f"{split} {acc[i]:.2f}% (epoch {ep[i]:.0f})")
    left.set_title("loss (train: soft-target CE on mixed batches)", fontsize=10)
    right.set_title("top-1 accuracy (train: vs the dominant label)", fontsize=10)
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return fig

