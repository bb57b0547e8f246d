"""The training curves of a run, from its metrics.npz columns: one figure per source project's
style. Each function returns a matplotlib Figure (not pyplot: no backend, no global state);
plots.save writes it.

    plots.save(curves.training_curves(MetricsTracker.load(run), best_epoch), "curves.png")

Series that are missing or all-NaN (e.g. val_* without --val-split) are left out; a run of one
epoch still shows its points.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def training_curves(m, best_epoch=None):
    """Seed 004's style: loss | accuracy (%) | learning rate per epoch, the best epoch marked."""
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
        if ylabel == "loss":
            _log_if_spiky(ax, m, keys)
        _epoch_axis(ax, ep)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def overview_curves(m, best_epoch=None):
    """Seed 003's overview: a 2x2 grid of train loss, test loss, train accuracy and test accuracy
    (%) per epoch, with a learning-rate strip underneath. Val and EMA series join the test panels
    when present; a dashed line marks the best epoch."""
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
            i = int(np.nanargmax(m["test_top1"]))
            title += f" (max {m['test_top1'][i]:.2f}% at epoch {ep[i]:.0f})"
        _mark_best(ax, best_epoch)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        if ylabel == "loss":
            _log_if_spiky(ax, m, keys)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    if "lr" in m:
        ax.plot(ep, m["lr"], color="0.2", **style)
    _mark_best(ax, best_epoch)
    ax.set(title="learning rate (at the end of each epoch)", xlabel="epoch", ylabel="lr")
    ax.grid(alpha=0.3)
    for ax in fig.axes:
        _epoch_axis(ax, ep)
    return fig


def two_panel_curves(m, best_epoch=None):
    """Seed 000's figure: loss (left) and accuracy (%, right) per epoch from metrics.npz columns.

    A horizontal line marks the best validation top-1 (test top-1 when there is no val split): the
    value at `best_epoch` if given (the epoch best.pt holds), else the column's maximum.
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
        i = (int(np.flatnonzero(ep == best_epoch)[0]) if best_epoch in set(ep.tolist())
             else int(np.nanargmax(acc)))
        right.axhline(acc[i], color="0.3", ls="--", lw=1,
                      label=f"best {split} {acc[i]:.2f}% (epoch {ep[i]:.0f})")
    left.set_title("loss (train: soft-target CE on mixed batches)", fontsize=10)
    right.set_title("top-1 accuracy (train: vs the dominant label)", fontsize=10)
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return fig


def _mark_best(ax, best_epoch):
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.4", ls="--", lw=1, label=f"best (epoch {best_epoch})")


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
