"""Evaluate a CIFAR ResNet-18 checkpoint on the test split, with the analysis of the
"ResNet-18 Training on CIFAR-100" notebook.

Prints top-1/top-5/loss, the best and worst classes, the most confused pairs, macro and weighted
precision/recall/F1, superclass top-1 and the expected calibration error; writes report.json and
the plots. A run on the synthetic set names its classes by texture and shape.

    python resnet18/evaluate.py --checkpoint runs/resnet18/last.pt --tta
    python resnet18/evaluate.py --checkpoint runs/resnet18/last.pt --image photo.jpg
"""
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
from common.data import (CIFAR100_MEAN, CIFAR100_STD, FINE_TO_COARSE, DataError,  # noqa: E402
                         class_names, load_splits)
from common.flags import Parser, ranged  # noqa: E402
from common.inference import data_of, load_model, predict, read_image, stats_of  # noqa: E402
from common.metrics import save_figure, write_json  # noqa: E402
from common.report import analyse, confusion_matrix, superclass_accuracy  # noqa: E402
from model import resnet18  # noqa: E402

# ---- the model: the only lines that differ between the evaluate.py files -------------------
FACTORY = resnet18  # rebuilds the checkpoint's network; checkpoints name it by its __name__
ARGS_OF_STATE = None  # a bare state dict gets the factory's default arguments
# ---- everything below is shared by the evaluate.py files -----------------------------------
RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(RUN_DIR / "last.pt"),
                   help="a training checkpoint, a bare state dict or a {'model_state_dict': ...}")
    p.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"],
                   help="default: the checkpoint's")
    p.add_argument("--test-subset", type=ranged(int, 0),
                   help="N test images, as many of each class (0 = all; default: the "
                   "checkpoint's, so the figures match its training log)")
    p.add_argument("--batch-size", type=ranged(int, 1), default=1000)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--out-dir", help="default: <checkpoint dir>/eval")
    p.add_argument("--tta", action="store_true", help="average softmax over a horizontal flip")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--image", metavar="FILE",
                   help="print the top-5 classes of any image (centre square, resized to 32x32)")
    return p


def classify_image(model, path, normalize, device, tta, names):
    """The top-5 of one image file, as app.py shows them."""
    p = predict(model, read_image(path)[None], normalize, device, tta=tta)[0]
    print(f"{path}: top-5 of {len(p)} classes")
    for prob, c in zip(*p.topk(5)):
        print(f"  {100 * prob:6.2f}%  {names[c] if len(p) == len(names) else c}")


def main(args):
    try:
        device = runtime.pick_device(args.device)
        ckpt = load_checkpoint(args.checkpoint)
        model = load_model(ckpt, FACTORY, args.checkpoint, args.ema, ARGS_OF_STATE, device)
        normalize = Normalize(*stats_of(ckpt, (CIFAR100_MEAN, CIFAR100_STD)))
        where = data_of(ckpt, args.dataset, args.data_dir, args.test_subset)
        fine_names, coarse_names = class_names(where["dataset"])
        if args.image:
            return classify_image(model, args.image, normalize, device, args.tta, fine_names)
        x, y = load_splits(**where, train=False)["test"]
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out_dir or Path(args.checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    probs = predict(model, x, normalize, device, args.batch_size, args.tta)
    names = fine_names if probs.shape[1] == 100 else [str(c) for c in range(probs.shape[1])]
    r = {"checkpoint": str(Path(args.checkpoint).resolve()), "epoch": ckpt.get("epoch"),
         "weights": "EMA" if args.ema else "model", "tta": args.tta, **analyse(probs, y, names)}
    conf, pred = probs.max(1)
    if len(names) == 100:
        r["superclass_top1"] = superclass_accuracy(pred, y, FINE_TO_COARSE)

    print(f"{args.checkpoint} (epoch {r['epoch']}, {r['weights']} weights"
          f"{', flip TTA' if args.tta else ''}): {len(y)} test images")
    print(f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}  "
          f"ECE {100 * r['ece']:.2f}% (15 bins)"
          + (f"  superclass top-1 {r['superclass_top1']:.2f}%" if len(names) == 100 else ""))
    for avg in ("macro", "weighted"):
        print(f"{avg:>8}  precision {r[f'{avg}_precision']:.4f}  recall "
              f"{r[f'{avg}_recall']:.4f}  F1 {r[f'{avg}_f1']:.4f}")
    print("best classes:  " + ", ".join(f"{n} {a:.1f}%" for n, a in r["best_classes"]))
    print("worst classes: " + ", ".join(f"{n} {a:.1f}%" for n, a in r["worst_classes"]))
    print("most confused (true -> predicted, count):")
    for t, p, n in r["confused_pairs"]:
        print(f"  {t} -> {p}: {n}")
    write_json(r, out / "report.json")

    cm = torch.tensor(r["confusion_matrix"], dtype=torch.float64)  # on the host
    save_figure(plots.confusion_heatmap(cm / cm.sum(1, keepdim=True).clamp(min=1), names,
                                        f"Confusion matrix, row-normalized (top-1 "
                                        f"{r['top1']:.2f}%)"), out / "confusion_matrix.png")
    if len(names) == 100:  # the 20 superclasses: are mistakes mostly within a group?
        to_coarse = torch.tensor(FINE_TO_COARSE)
        ccm = confusion_matrix(to_coarse[pred], to_coarse[y], 20).double()
        save_figure(plots.confusion_heatmap(ccm / ccm.sum(1, keepdim=True).clamp(min=1),
                                            coarse_names, f"Superclass confusion (%, "
                                            f"row-normalized), superclass top-1 "
                                            f"{r['superclass_top1']:.2f}%", annotate=True),
                    out / "superclass_confusion.png")
    bins = r["calibration_bins"]  # empty bins hold None, which numpy reads as NaN
    save_figure(plots.reliability_diagram(bins["confidence"], bins["accuracy"], bins["count"],
                                          r["ece"]), out / "reliability.png")
    show = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:32]
    grid(x, y, pred, conf, show, names, out / "samples.png", "Sample test predictions")
    wrong = (pred != y).nonzero()[:, 0]
    wrong = wrong[conf[wrong].argsort(descending=True)][:24]
    grid(x, y, pred, conf, wrong, names, out / "confident_mistakes.png",
         "Most confident mistakes" if len(wrong) else "No mistakes")
    print(f"wrote report.json and plots to {out}")
    return r


def grid(x, y, pred, conf, idx, names, path, suptitle):
    titles = [f"{names[pred[i]]} ({100 * conf[i]:.0f}%) / {names[y[i]]}" for i in idx]
    colors = [plots.GOOD if pred[i] == y[i] else plots.BAD for i in idx]
    save_figure(plots.image_grid(x[idx], titles, colors=colors,
                                 suptitle=f"{suptitle}: predicted (confidence) / true, "
                                          "green correct, red wrong"), path)


if __name__ == "__main__":
    main(build_parser().parse_args())
