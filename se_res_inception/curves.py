"""The training figure of se_res_inception/train.py: loss | accuracy (%).

Drawn from the run's metrics.npz columns (common/metrics.py); returns a matplotlib Figure (not
pyplot: no backend, no global state), which metrics.save_figure writes. Series that are missing
or all-NaN are left out; a run of one epoch still shows its points.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


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
        if ylabel == "loss":
            _log_if_spiky(ax, m, keys)
        _epoch_axis(ax, ep)
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


def _log_if_spiky(ax, m, keys):
    """Log loss axis when one value dwarfs the rest (an early spike: BN statistics at peak lr)."""
    ys = np.concatenate([np.asarray(m[k], dtype=float) for k in keys if k in m] or [[]])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if len(ys) and ys.max() > 10 * ys.min():
        ax.set_yscale("log")


def _epoch_axis(ax, ep):
    if len(ep) <= 20:  # room around a lone point
        ax.set_xlim(ep.min() - 0.5, ep.max() + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no "epoch 2.5"
