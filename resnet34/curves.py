"""The training figure of resnet34/train.py: a 2x2 overview of loss and accuracy, lr below.

Drawn from the run's metrics.npz columns (common/metrics.py); returns a matplotlib Figure (not
pyplot: no backend, no global state), which metrics.save_figure writes. Series that are missing
or all-NaN are left out; a run of one epoch still shows its points.
"""
import numpy as np
from matplotlib.figure import Figure

from common.metrics import epoch_axis


def plot_curves(m, best_epoch=None):
    """The Enhanced ResNet34 project's overview: a 2x2 grid of train loss, test loss, train
    accuracy and test accuracy (%) per epoch, with a learning-rate strip underneath. Val and EMA
    series join the test panels when present; a dashed line marks the epoch best.pt holds."""
    ep = np.asarray(m["epoch"])
    style = {"marker": "o", "markersize": 3} if len(ep) < 30 else {}
    fig = Figure(figsize=(12, 9), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=(1, 1, 0.45))
    panels = (("training loss", "loss", ("train_loss",)),
              ("test loss", "loss", ("test_loss", "val_loss", "ema_test_loss", "ema_val_loss")),
              ("training accuracy (mixed batches: vs the dominant label)", "top-1 (%)",
               ("train_acc",)),
              ("test accuracy", "top-1 (%)",
               ("test_top1", "val_top1", "ema_test_top1", "ema_val_top1")))
    for cell, (title, ylabel, keys) in zip((grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1]),
                                           panels):
        ax = fig.add_subplot(cell)
        for k in keys:
            if k in m and not np.all(np.isnan(m[k])):
                ax.plot(ep, m[k], label=k.rsplit("_", 1)[0], **style)
        if "test_top1" in keys and "test_top1" in m and not np.all(np.isnan(m["test_top1"])):
            title += f" (final {m['test_top1'][-1]:.2f}%)"
        _mark_best(ax, best_epoch)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        epoch_axis(ax, ep, m, keys if ylabel == "loss" else ())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    if "lr" in m:
        ax.plot(ep, m["lr"], color="0.2", **style)
    _mark_best(ax, best_epoch)
    ax.set(title="learning rate (at the end of each epoch)", xlabel="epoch", ylabel="lr")
    ax.grid(alpha=0.3)
    epoch_axis(ax, ep)
    return fig


def _mark_best(ax, best_epoch):
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.4", ls="--", lw=1, label=f"best (epoch {best_epoch})")

