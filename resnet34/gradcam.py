"""Grad-CAM maps of a CIFAR ResNet-34 checkpoint (Selvaraju et al. 2017, arXiv:1610.02391).

gradcam_grid.png: correct predictions on top, mistakes below, each test image next to the map of
its predicted class. gradcam_2x3.png: the Enhanced ResNet34 project's figure, the first six test
images, each next to the map of its predicted class. --per-class: gradcam_per_class.png, one test
image per class with the map of its true class: where the network finds evidence for the right
answer. On the synthetic set, where each object's pixels are known, it also measures the maps:
the share of test images whose Grad-CAM peak lies on the object (the pointing game).

    python resnet34/gradcam.py --checkpoint runs/resnet34/last.pt --layer "layer4[-1]"
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import torch  # noqa: E402

from common import plots, runtime  # noqa: E402
from common.augment import Normalize  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from common.data import CIFAR100_MEAN, CIFAR100_STD, DataError, class_names, load_splits  # noqa
from common.flags import Parser, ranged  # noqa: E402
from common.gradcam import (find_layer, gradcam_maps, layer_name, overlay,  # noqa: E402
                            pointing_game, side_by_side)
from common.inference import data_of, load_model, predict, stats_of  # noqa: E402
from common.metrics import save_figure  # noqa: E402
from model import model_args_of, resnet34  # noqa: E402

# ---- the model: the only lines that differ between the gradcam.py files --------------------
FACTORY = resnet34  # rebuilds the checkpoint's network; checkpoints name it by its __name__
ARGS_OF_STATE = model_args_of  # a bare state dict's blocks per stage tell its variant


def auto_layer(model):
    """the last residual block of layer4 (512 maps of 4x4)"""
    return "layer4[-1]"


# ---- everything below is shared by the gradcam.py files ------------------------------------
RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(RUN_DIR / "last.pt"),
                   help="a training checkpoint, a bare state dict or a {'model_state_dict': ...}")
    p.add_argument("--layer", default="auto",
                   help=f'a module name such as "layer3" or "layer3.1.conv2"; auto: '
                        f'{auto_layer.__doc__}')
    p.add_argument("--num", type=ranged(int, 1, 64), default=8,
                   help="images per group: correct and wrong")
    p.add_argument("--per-class", action="store_true", help="also one test image per class")
    p.add_argument("--classes", help="comma-separated names or indices (implies --per-class)")
    p.add_argument("--ema", action="store_true", help="explain the EMA weights")
    p.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"],
                   help="default: the checkpoint's")
    p.add_argument("--test-subset", type=ranged(int, 0),
                   help="N test images, as many of each class (0 = all; default: the "
                   "checkpoint's)")
    p.add_argument("--pointing", type=ranged(int, 0), default=1000,
                   help="synthetic set: test images for the pointing game (0 = skip it)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--out-dir", help="default: <checkpoint dir>/gradcam")
    return p


def parse_classes(text, names):
    out = []
    for t in (t.strip() for t in text.split(",")):
        if t.isdigit() and int(t) < len(names):
            out.append(int(t))
        elif t in names:
            out.append(names.index(t))
        else:
            raise ValueError(f"unknown class {t!r}; use a name of the run's dataset, such as "
                             f"{names[0]}, or 0-{len(names) - 1}")
    return out


def main(args):
    try:
        device = runtime.pick_device(args.device)
        ckpt = load_checkpoint(args.checkpoint)
        normalize = Normalize(*stats_of(ckpt, (CIFAR100_MEAN, CIFAR100_STD)))
        model = load_model(ckpt, FACTORY, args.checkpoint, args.ema, ARGS_OF_STATE, device)
        layer = find_layer(model, auto_layer(model) if args.layer == "auto" else args.layer)
        where = data_of(ckpt, args.dataset, args.data_dir, args.test_subset)
        names = class_names(where["dataset"])[0]
        classes = parse_classes(args.classes, names) if args.classes else range(len(names))
        splits = load_splits(**where, masks=True, train=False)
        x, y = splits["test"]
        gradcam_maps(model, layer, x[:1], normalize)  # fail early on a layer without maps
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out_dir or Path(args.checkpoint).parent / "gradcam")
    name = layer_name(model, layer)
    conf, pred = predict(model, x, normalize, device).max(1)

    def title(i):
        return f"{names[pred[i]]} ({100 * conf[i]:.0f}%) / {names[y[i]]}"

    def color(i):
        return plots.GOOD if pred[i] == y[i] else plots.BAD

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    ncols = 4  # examples per row, each plain + overlay
    panels, titles, colors = [], [], []
    for group in (order[pred[order] == y[order]][:args.num],
                  order[pred[order] != y[order]][:args.num]):
        maps = gradcam_maps(model, layer, x[group], normalize)  # maps of the predicted class
        panels += [side_by_side(x[i], m) for i, m in zip(group, maps)]
        titles += [title(i) for i in group]
        colors += [color(i) for i in group]
        pad = -len(panels) % ncols  # wrong predictions start on a fresh row
        panels, titles, colors = panels + [None] * pad, titles + [""] * pad, colors + [""] * pad
    out.mkdir(parents=True, exist_ok=True)
    save_figure(plots.image_grid(
        panels, titles, ncols=ncols, colors=colors, wrap=36,
        suptitle=f"Grad-CAM of the predicted class at {name}: correct (green) above, wrong "
                 "(red) below; predicted (confidence) / true"), out / "gradcam_grid.png")
    six = torch.arange(min(6, len(y)))  # the first six test images, 2 rows of 3
    maps = gradcam_maps(model, layer, x[six], normalize)
    save_figure(plots.image_grid(
        [side_by_side(x[i], m) for i, m in zip(six, maps)], [title(i) for i in six], ncols=3,
        wrap=36, colors=[color(i) for i in six], suptitle=f"Grad-CAM of the predicted class at "
        f"{name}: image | overlay; predicted (confidence) / true"), out / "gradcam_2x3.png")
    written = ["gradcam_grid.png", "gradcam_2x3.png"]
    if splits["test_masks"] is not None and args.pointing:  # the synthetic set: objects known
        pick = order[:args.pointing]
        maps = gradcam_maps(model, layer, x[pick], normalize)  # of the predicted class
        score = pointing_game(maps, splits["test_masks"][pick], pred[pick] == y[pick])
        print(f"pointing game: the Grad-CAM peak lies on the object in {score['hit']:.1f}% of "
              f"{score['images']:,} test images ({score['hit_correct']:.1f}% of those classified "
              f"right); chance, the objects' share of the image: {score['chance']:.1f}%")
        (out / "pointing_game.json").write_text(json.dumps({"layer": name, **score}, indent=1))
        written.append("pointing_game.json")

    if args.per_class or args.classes:
        picks = []
        for c in classes:  # a correctly classified example if there is one
            ours = order[y[order] == c]
            hits = ours[pred[ours] == c]
            if len(ours):
                picks.append(int((hits if len(hits) else ours)[0]))
        picks = torch.tensor(picks, dtype=torch.long)
        maps = gradcam_maps(model, layer, x[picks], normalize, target=y[picks])  # true class
        save_figure(plots.image_grid(
            [overlay(x[i], m) for i, m in zip(picks, maps)], [title(i) for i in picks],
            ncols=max(1, min(10, len(picks))), colors=[color(i) for i in picks],
            suptitle=f"Grad-CAM of the true class at {name}, one test image per class; "
                     "predicted (confidence) / true"), out / "gradcam_per_class.png")
        written.append("gradcam_per_class.png")
        if len(picks) < len(classes):
            print(f"{len(classes) - len(picks)} classes have no test image in this split")
    print(f"Grad-CAM at {name}: wrote {', '.join(written)} to {out}")


if __name__ == "__main__":
    main(build_parser().parse_args())
