"""Pictures of `--dataset synthetic`: re-run whenever common/data.py's generator changes.

    python benchmark/synthetic_examples.py

writes common/synthetic_examples.png (one test image of each of the 100 classes, a texture per
row) and resnet18/examples/*.png (eight 32x32 test images that the web demo offers).
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import data, plots  # noqa: E402

DEMO = ("apple", "bicycle", "butterfly", "dolphin", "maple_tree", "mountain", "rose", "tractor")


def main():
    x, y = data.load_splits("synthetic", None, subset=500)["test"]  # 100 images, one per class
    first = {int(c): i for i, c in reversed(list(enumerate(y.tolist())))}
    for name in DEMO:
        image = x[first[data.FINE_NAMES.index(name)]].permute(1, 2, 0).numpy()
        Image.fromarray(image).save(REPO / "resnet18" / "examples" / f"{name}.png")

    fig = plt.figure(figsize=(12, 14.6), layout="constrained")
    fig.suptitle("--dataset synthetic: the superclass is the texture (period 5 px on the left, "
                 "10 px on the right),\nthe fine class the shape: disk, bar, triangle, cross, "
                 "ring (the 1st-5th class of each superclass, in label order)", fontsize=13)
    rows = fig.subfigures(10, 1)
    for kind, row in enumerate(rows):
        pair = (2 * kind, 2 * kind + 1)  # superclass c wears texture c // 2, period (5, 10)[c % 2]
        row.suptitle(f"{data._TEXTURES[kind]}:  {data.COARSE_NAMES[pair[0]]} (5 px)  |  "
                     f"{data.COARSE_NAMES[pair[1]]} (10 px)", fontsize=12, fontweight="bold")
        axes = row.subplots(1, 10)
        members = [c for s in pair for c in range(100) if data.FINE_TO_COARSE[c] == s]
        for ax, c in zip(axes, members):
            ax.imshow(x[first[c]].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(data.FINE_NAMES[c], fontsize=10)
            ax.axis("off")
    plots.save(fig, REPO / "common" / "synthetic_examples.png")
    print("wrote common/synthetic_examples.png and resnet18/examples/*.png")


if __name__ == "__main__":
    main()
