"""The training figure of resnet18/train.py: loss | accuracy (%) | learning rate per epoch.

Drawn from the run's metrics.npz columns (common/metrics.py); returns a matplotlib Figure (not
pyplot: no backend, no global state), which metrics.save_figure writes. Series that are missing
or all-NaN are left out; a run of one epoch still shows its points.
"""
import numpy as np
from matplotlib.figure import Figure

from common.metrics import epoch_axis


def plot_curves(m, best_epoch=None):
    """loss | accuracy (%) | learning rate per epoch, as the ResNet-18 write-up plots them; the
    epoch best.pt holds is marked."""
    ep = np.asarray(m["epoch"])
    style = {"marker": "o", "markersize": 3} if len(ep) < 30 else {}
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    panels = zip(fig.subplots(1, 3), ("loss", "accuracy (%)", "learning rate"),
                 (("train_loss", "val_loss", "test_loss", "ema_val_loss", "ema_test_loss"),
                  ("train_acc", "val_top1", "test_top1", "ema_val_top1", "ema_test_top1"),
                  ("lr",)))
    for ax, ylabel, keys in panels:
        for k in keys:
            if k in m and not np.all(np.isnan(m[k])):
                ax.plot(ep, m[k], label=k.rsplit("_", 1)[0] if ylabel != "learning rate" else k,
                        **style)
        _mark_best(ax, best_epoch)
        ax.set(xlabel="epoch", ylabel=ylabel)
        epoch_axis(ax, ep, m, keys if ylabel == "loss" else ())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _mark_best(ax, best_epoch):
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.4", ls="--", lw=1, label=f"best (epoch {best_epoch})")

