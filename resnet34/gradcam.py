"""Grad-CAM maps of a CIFAR ResNet-34 checkpoint (Selvaraju et al. 2017, arXiv:1610.02391).

gradcam_grid.png: correct predictions on top, mistakes below, each test image next to the map of
its predicted class. --per-class: gradcam_per_class.png, one test image per class with the map of
its true class: where the network finds evidence for the right answer. gradcam_2x3.png: seed
003's figure, the first six test images, each next to the map of its predicted class.

    python resnet34/gradcam.py --checkpoint runs/resnet34/best.pt --layer "layer4[-1]"
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from the repo root or from inside the folder

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import plots, runtime  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.data import FINE_NAMES, DataError, normalize  # noqa: E402
from common.gradcam import GradCAM, find_layer, layer_name, overlay  # noqa: E402
from evaluate import load_model, predict, test_split  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--checkpoint", default=str(ROOT / "runs/resnet34/best.pt"),
                    help="default: runs/resnet34/best.pt under the repo root")
parser.add_argument("--layer", default="layer4[-1]",
                    help='module name: "layer4[-1]" (last block, 4x4 maps), "layer3.1.conv2", ...')
parser.add_argument("--num", type=int, default=8, help="images per group: correct and wrong")
parser.add_argument("--per-class", action="store_true", help="also one test image per class")
parser.add_argument("--classes", help="comma-separated names or indices (implies --per-class)")
parser.add_argument("--ema", action="store_true", help="explain the EMA weights")
parser.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
parser.add_argument("--dataset", choices=["cifar100", "synthetic"],
                    help="default: the checkpoint's")
parser.add_argument("--subset", type=int, help="default: the checkpoint's (sets the test size)")
parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
parser.add_argument("--out-dir", help="default: <checkpoint dir>/gradcam")


def cams(model, layer, x, device, target=None, batch=100):
    """uint8 images (N,3,32,32) -> maps (N,32,32) in [0, 1]; the hook is gone on return."""
    maps = []
    with GradCAM(model, layer) as cam:
        for i in range(0, len(x), batch):
            t = None if target is None else target[i:i + batch].to(device)
            maps.append(cam(normalize(x[i:i + batch].to(device)), t)[0].cpu())
    return torch.cat(maps) if maps else torch.zeros(0, *x.shape[2:])


def side_by_side(image, cam):
    """The plain image, a 2-px white gap, and its overlay: one (32, 66, 3) panel per example."""
    plain = image.permute(1, 2, 0).numpy() / 255
    return np.concatenate([plain, np.ones((len(plain), 2, 3)), overlay(image, cam)], axis=1)


def parse_classes(text):
    out = []
    for t in (t.strip() for t in text.split(",")):
        if t.isdigit() and int(t) < len(FINE_NAMES):
            out.append(int(t))
        elif t in FINE_NAMES:
            out.append(FINE_NAMES.index(t))
        else:
            raise ValueError(f"unknown class {t!r}; use names such as apple, maple_tree or 0-99")
    return out


def main(args):
    try:
        device = runtime.pick_device(args.device)
        model, ckpt = load_model(args.checkpoint, device, args.ema)
        layer = find_layer(model, args.layer)
        classes = parse_classes(args.classes) if args.classes else range(len(FINE_NAMES))
        x, y = test_split(args, ckpt)
        cams(model, layer, x[:1], device)  # fail early on a layer without maps, e.g. fc
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out_dir or Path(args.checkpoint).parent / "gradcam")
    name = layer_name(model, layer)
    conf, pred = predict(model, x, device).max(1)

    def title(i):
        return f"{FINE_NAMES[pred[i]]} ({100 * conf[i]:.0f}%) / {FINE_NAMES[y[i]]}"

    def color(i):
        return plots.GOOD if pred[i] == y[i] else plots.BAD

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    ncols = 4  # examples per row, each plain + overlay
    panels, titles, colors = [], [], []
    for group in (order[pred[order] == y[order]][:args.num],
                  order[pred[order] != y[order]][:args.num]):
        maps = cams(model, layer, x[group], device)  # maps of the predicted class
        panels += [side_by_side(x[i], m) for i, m in zip(group, maps)]
        titles += [title(i) for i in group]
        colors += [color(i) for i in group]
        pad = -len(panels) % ncols  # wrong predictions start on a fresh row
        panels, titles, colors = panels + [None] * pad, titles + [""] * pad, colors + [""] * pad
    out.mkdir(parents=True, exist_ok=True)
    plots.image_grid(panels, titles, out / "gradcam_grid.png", ncols=ncols, colors=colors, wrap=36,
                     suptitle=f"Grad-CAM of the predicted class at {name}: correct (green) "
                              "above, wrong (red) below; predicted (confidence) / true")
    written = ["gradcam_grid.png"]
    six = torch.arange(min(6, len(y)))  # seed 003: the first six test images, 2 rows of 3
    maps = cams(model, layer, x[six], device)
    plots.image_grid([side_by_side(x[i], m) for i, m in zip(six, maps)], [title(i) for i in six],
                     out / "gradcam_2x3.png", ncols=3, wrap=36, colors=[color(i) for i in six],
                     suptitle=f"Grad-CAM of the predicted class at {name}: image | overlay; "
                              "predicted (confidence) / true")
    written.append("gradcam_2x3.png")

    if args.per_class or args.classes:
        picks = []
        for c in classes:  # a correctly classified example if there is one
            ours = order[y[order] == c]
            hits = ours[pred[ours] == c]
            if len(ours):
                picks.append(int((hits if len(hits) else ours)[0]))
        picks = torch.tensor(picks, dtype=torch.long)
        maps = cams(model, layer, x[picks], device, target=y[picks])  # maps of the true class
        plots.image_grid([overlay(x[i], m) for i, m in zip(picks, maps)],
                         [title(i) for i in picks], out / "gradcam_per_class.png",
                         ncols=max(1, min(10, len(picks))),
                         colors=[color(i) for i in picks],
                         suptitle=f"Grad-CAM of the true class at {name}, one test image per "
                                  "class; predicted (confidence) / true")
        written.append("gradcam_per_class.png")
        if len(picks) < len(classes):
            print(f"{len(classes) - len(picks)} classes have no test image in this split")
    print(f"Grad-CAM at {name}: wrote {', '.join(written)} to {out}")


if __name__ == "__main__":
    main(parser.parse_args())
