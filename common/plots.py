"""The evaluation figures every folder draws: confusion heatmap, reliability diagram, image grid.

Each returns a matplotlib.figure.Figure (not pyplot: no backend, no global state);
metrics.save_figure writes it atomically.
"""
import textwrap

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

GOOD, BAD = "#1a7f37", "#cf222e"  # title colours of correct / wrong predictions


def confusion_heatmap(cm_norm, names, title, annotate=False):
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
    return fig


def reliability_diagram(conf, acc, count, ece):
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
    return fig


def image_grid(images, titles, ncols=8, colors=None, suptitle=None, wrap=18):
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
    return fig


def _wrap(title, width):
    """Break a long "pred / true" title after the slash, then wrap each part."""
    if len(title) <= width:
        return title
    parts = title.split(" / ")
    return " /\n".join(textwrap.fill(p, width) for p in parts)


def _hwc(img):
    img = np.asarray(img)
    return img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 else img
