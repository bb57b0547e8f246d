"""Evaluate an SE-Res-Inception checkpoint on the test split: seed 002's notebook analysis.

Prints top-1/top-5/loss, the best and worst classes, the most confused pairs, macro and weighted
precision/recall/F1, superclass top-1 and the expected calibration error; writes report.json and
the plots.

    python se_res_inception/evaluate.py --checkpoint runs/se_res_inception/best.pt --tta
    python se_res_inception/evaluate.py --checkpoint runs/se_res_inception/best.pt --image photo.jpg
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import torch  # noqa: E402

from common import plots, runtime  # noqa: E402
from common.augment import Normalize  # noqa: E402
from common.checkpoint import CheckpointError, load_model  # noqa: E402
from common.data import (CIFAR100_MEAN, CIFAR100_STD, COARSE_NAMES, FINE_NAMES,  # noqa: E402
                         FINE_TO_COARSE, DataError, load_splits)
from common.flags import Parser, ranged  # noqa: E402
from common.inference import data_of, predict, read_image  # noqa: E402
from common.metrics import analyse, confusion_matrix, superclass_accuracy, write_json  # noqa: E402
from model import se_res_inception  # noqa: E402

# ---- the model: the only lines that differ between the evaluate.py files -------------------
FACTORY = se_res_inception  # rebuilds the checkpoint's network, named by its __name__
ARGS_OF_STATE = None  # a bare state dict gets the factory's default arguments
# ---- everything below is shared by the evaluate.py files -----------------------------------
RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(RUN_DIR / "best.pt"),
                   help="a training checkpoint, a bare state dict or a {'model_state_dict': ...}")
    p.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"],
                   help="default: the checkpoint's")
    p.add_argument("--subset", type=ranged(int, 0),
                   help="default: the checkpoint's (sets the test size)")
    p.add_argument("--batch-size", type=ranged(int, 1), default=500)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--out-dir", help="default: <checkpoint dir>/eval")
    p.add_argument("--tta", action="store_true", help="average softmax over a horizontal flip")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--image", metavar="FILE",
                   help="print the top-5 classes of any image (centre square, resized to 32x32)")
    return p


def classify_image(model, path, normalize, device, tta):
    """The top-5 of one image file, as app.py shows them."""
    p = predict(model, read_image(path)[None], normalize, device, tta=tta)[0]
    print(f"{path}: top-5 of {len(p)} classes")
    for prob, c in zip(*p.topk(5)):
        print(f"  {100 * prob:6.2f}%  {FINE_NAMES[c] if len(p) == 100 else c}")


def main(args):
    normalize = Normalize(CIFAR100_MEAN, CIFAR100_STD)
    try:
        device = runtime.pick_device(args.device)
        model, ckpt = load_model(args.checkpoint, FACTORY, args.ema, ARGS_OF_STATE, device)
        if args.image:
            return classify_image(model, args.image, normalize, device, args.tta)
        x, y = load_splits(**data_of(ckpt, args.dataset, args.data_dir, args.subset))["test"]
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out_dir or Path(args.checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    probs = predict(model, x, normalize, device, args.batch_size, args.tta)
    names = FINE_NAMES if probs.shape[1] == 100 else [str(c) for c in range(probs.shape[1])]
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

    cm = torch.tensor(r["confusion_matrix"], dtype=torch.float64)
    plots.confusion_heatmap(cm / cm.sum(1, keepdim=True).clamp(min=1), names,
                            out / "confusion_matrix.png",
                            f"Confusion matrix, row-normalized (top-1 {r['top1']:.2f}%)")
    if len(names) == 100:  # the 20 superclasses: are mistakes mostly within a group?
        to_coarse = torch.tensor(FINE_TO_COARSE)
        ccm = confusion_matrix(to_coarse[pred], to_coarse[y], 20).double()
        plots.confusion_heatmap(ccm / ccm.sum(1, keepdim=True).clamp(min=1), COARSE_NAMES,
                                out / "superclass_confusion.png",
                                f"Superclass confusion (%, row-normalized), superclass top-1 "
                                f"{r['superclass_top1']:.2f}%", annotate=True)
    bins = r["calibration_bins"]  # empty bins hold None, which numpy reads as NaN
    plots.reliability_diagram(bins["confidence"], bins["accuracy"], bins["count"], r["ece"],
                              out / "reliability.png")
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
    plots.image_grid(x[idx], titles, path, colors=colors,
                     suptitle=f"{suptitle}: predicted (confidence) / true, "
                              "green correct, red wrong")


if __name__ == "__main__":
    main(build_parser().parse_args())
