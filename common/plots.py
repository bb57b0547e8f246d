"""Figures every folder draws: training curves, confusion heatmap, reliability diagram, image grid.

Built on matplotlib.figure.Figure, not pyplot, so no backend or global state is touched. Each PNG
is written to a temporary name in the same directory and renamed, so a crash never leaves half a
file where a finished plot was.
"""
import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GOOD, BAD = "#1a7f37", "#cf222e"  # title colours of correct / wrong predictions


def save(fig, path, dpi=100):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def training_curves(m, path, best_epoch=None):
    """Loss, accuracy (%) and learning rate per epoch from metrics.npz columns.

    Series that are missing or all-NaN (e.g. val_* without --val-split) are left out.
    """
    ep = np.asarray(m["epoch"])
    style = {"marker": "o", "markersize": 3} if len(ep) < 30 else {}  # a 1-epoch run still shows
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
    save(fig, path)


def confusion_heatmap(cm_norm, names, path, title, annotate=False):
    """Row-normalized confusion matrix (rows: true class, columns: predicted).

    The colour scale is a square root so the small off-diagonal confusions stay visible. With
    annotate=True each cell prints its percentage (meant for the 20 superclasses).
    """
    cm = np.asarray(cm_norm, dtype=float)
    n = len(names)
    side = min(max(9.0 if annotate else 6.0, 0.19 * n + 3), 22)  # ~0.19 in per class row
    font = 9 if n <= 40 else 7
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.6, label="fraction of the true class")
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted", fontsize=12)
    ax.set_ylabel("true", fontsize=12)
    ax.set_title(title, fontsize=14)
    if annotate:
        for i, j in zip(*np.nonzero(cm >= 0.005)):  # blank cells read faster than rows of "0"
            ax.text(j, i, f"{100 * cm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > 0.4 else "black")
    save(fig, path)


def reliability_diagram(conf, acc, count, ece, path):
    """Accuracy per equal-width confidence bin against the diagonal, bin counts underneath."""
    conf, acc, count = (np.asarray(a, dtype=float) for a in (conf, acc, count))
    bins = len(count)
    centers = (np.arange(bins) + 0.5) / bins
    fig = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    seen = count > 0
    top.bar(centers[seen], acc[seen], width=1 / bins, edgecolor="black", lw=0.5,
            color="#4c72b0", label="accuracy")
    top.bar(centers[seen], (conf - acc)[seen], bottom=acc[seen], width=1 / bins, color="#dd8452",
            alpha=0.35, edgecolor="#dd8452", hatch="//", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"Reliability diagram (ECE {100 * ece:.2f}%)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, count, width=1 / bins, color="0.5", edgecolor="black", lw=0.5)
    for x, c in zip(centers[seen], count[seen]):
        bottom.text(x, c, f"{c:.0f}", ha="center", va="bottom", fontsize=7)
    bottom.set(xlim=(0, 1), ylim=(0, 1.3 * max(count.max(), 1)), xlabel="confidence",
               ylabel="images")
    save(fig, path)


def image_grid(images, titles, path, ncols=8, colors=None, suptitle=None, wrap=18):
    """A grid of small images, upscaled with nearest-neighbour so pixels stay sharp.

    images: uint8 (N,3,H,W) array/tensor, or a list whose items are (3,H,W) uint8, (H,W,3) float
    in [0, 1], or None for an empty cell; cells take the first image's aspect ratio. Titles are
    wrapped at `wrap` characters.
    """
    images = [None if im is None else _hwc(im) for im in images]
    nrows = max(1, -(-len(images) // ncols))
    h, w = next((im.shape[:2] for im in images if im is not None), (1, 1))
    width = 1.7 * ncols * w / h  # inches
    suptitle = textwrap.fill(suptitle, int(11 * width)) if suptitle else ""  # ~11 chars/inch
    fig = Figure(figsize=(width, 2.0 * nrows + 0.25 * (suptitle.count("\n") + 2 * bool(suptitle))),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= len(images) or images[i] is None:
            continue
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(_wrap(str(titles[i]), wrap), fontsize=8,
                     color=colors[i] if colors is not None else "black")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    save(fig, path)


def _wrap(title, width):
    """Break a long "pred / true" title after the slash, then wrap each part."""
    if len(title) <= width:
        return title
    parts = title.split(" / ")
    return " /\n".join(textwrap.fill(p, width) for p in parts)


def _hwc(img):
    img = np.asarray(img)
    return img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 else img


def overview_curves(m, path, best_epoch=None):
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
              ("test accuracy", "top-1 (%)", ("test_top1", "val_top1", "ema_test_top1",
                                               "ema_val_top1")))
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
    save(fig, path)


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


def two_panel_curves(m, path, best_epoch=None):
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
    save(fig, path)
