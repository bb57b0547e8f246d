"""Pictures of `--dataset synthetic`: re-run whenever common/synthetic.py's generator changes.

    python benchmark/synthetic_examples.py

writes common/synthetic_examples.png (one test image of each of the 100 classes, a texture per
row, each named as the set names it: "disk on h-stripes 5px") and resnet18/examples/*.png (eight
32x32 test images that the web demo offers). An example file is named after its label's
CIFAR-100 class (apple.png holds a test image of label 0); the demo shows the name that label has
in the served checkpoint's dataset. --figure and --examples write elsewhere.
"""
import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import data, synthetic  # noqa: E402
from common.metrics import save_figure  # noqa: E402

DEMO = ("apple", "bicycle", "butterfly", "dolphin", "maple_tree", "mountain", "rose", "tractor")


def main(args):
    # the test split's first 100 images hold each class once; the training split goes unused
    x, y = data.load_splits("synthetic", subset=data.NUM_CLASSES,
                            test_subset=data.NUM_CLASSES)["test"]
    first = {int(c): i for i, c in reversed(list(enumerate(y.tolist())))}
    examples = Path(args.examples)
    examples.mkdir(parents=True, exist_ok=True)
    for name in DEMO:
        image = x[first[data.FINE_NAMES.index(name)]].permute(1, 2, 0).numpy()
        Image.fromarray(image).save(examples / f"{name}.png")

    fine, coarse = data.class_names("synthetic")
    fig = Figure(figsize=(13, 15.4), layout="constrained")
    fig.suptitle("--dataset synthetic: the superclass is the texture (period 5 px on the left, "
                 "10 px on the right),\nthe fine class the shape: " + ", ".join(synthetic.SHAPES)
                 + " (the 1st-5th class of each superclass, in label order)", fontsize=13)
    for kind, row in enumerate(fig.subfigures(len(synthetic.TEXTURES), 1)):
        pair = (2 * kind, 2 * kind + 1)  # superclass c wears texture c // 2, period (5, 10)[c % 2]
        row.suptitle(f"{synthetic.TEXTURES[kind]}: superclasses \"{coarse[pair[0]]}\" and "
                     f"\"{coarse[pair[1]]}\"", fontsize=12, fontweight="bold")
        members = [c for s in pair for c in range(data.NUM_CLASSES) if data.FINE_TO_COARSE[c] == s]
        for ax, c in zip(row.subplots(1, len(members)), members):
            ax.imshow(x[first[c]].permute(1, 2, 0).numpy(), interpolation="nearest")
            shape, texture = fine[c].split(" on ")  # "disk on h-stripes 5px": the row says the
            ax.set_title(f"{shape}, {texture.rsplit(' ', 1)[1]}", fontsize=9)  # texture
            ax.axis("off")
    save_figure(fig, args.figure)
    print(f"wrote {args.figure} and {len(DEMO)} examples to {examples}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figure", default=str(REPO / "common" / "synthetic_examples.png"),
                        help="the 100-class figure (default: %(default)s)")
    parser.add_argument("--examples", default=str(REPO / "resnet18" / "examples"),
                        help="the web demo's example images (default: %(default)s)")
    main(parser.parse_args())
