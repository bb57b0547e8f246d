"""Superclass accuracy of an SE-Res-Inception V2 checkpoint (the evaluate_superclass.py of the
"SE-Res-Inception V2" CIFAR-100 project).

Each fine prediction is mapped to its superclass through the official CIFAR-100 100 -> 20 map;
superclass top-1 is printed next to fine top-1, with the share of fine mistakes that stay inside
the true superclass (near-misses such as maple_tree -> oak_tree) and the accuracy per superclass.
A run on the synthetic set names its superclasses as that set does (the texture, "h-stripes
5px"). The test images are those the checkpoint was scored on while it trained (--test-subset
and --dataset change that). Writes superclass_confusion.png (row-normalized 20x20, annotated)
and superclass.json.

    python se_res_inception/evaluate_superclass.py --checkpoint runs/se_res_inception/last.pt
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
from common.data import (CIFAR100_MEAN, CIFAR100_STD, FINE_TO_COARSE,  # noqa: E402
                         DataError, class_names, load_splits)
from common.flags import Parser, ranged  # noqa: E402
from common.inference import data_of, load_model, predict, stats_of  # noqa: E402
from common.metrics import save_figure, write_json  # noqa: E402
from common.report import confusion_matrix, superclass_accuracy  # noqa: E402
from model import se_res_inception  # noqa: E402

FACTORY = se_res_inception  # rebuilds the checkpoint's network, named by its __name__
RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(RUN_DIR / "last.pt"),
                   help="a training checkpoint, a bare state dict (default factory arguments) "
                        "or a {'model_state_dict': ...}")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"],
                   help="default: the checkpoint's (cifar100 for a bare state dict)")
    p.add_argument("--test-subset", type=ranged(int, 0),
                   help="N test images, as many of each class (0 = all; default: the "
                   "checkpoint's, so the figures match its training log)")
    p.add_argument("--batch-size", type=ranged(int, 1), default=500)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--out-dir", help="default: <checkpoint dir>/superclass")
    return p


def summed_superclass(probs, fine_to_coarse=FINE_TO_COARSE):
    """(N, 100) fine probabilities -> (N, 20) superclass probabilities (sums over 5 classes)."""
    member = torch.zeros(len(fine_to_coarse), max(fine_to_coarse) + 1, dtype=probs.dtype)
    member[torch.arange(len(fine_to_coarse)), torch.as_tensor(fine_to_coarse)] = 1
    return probs @ member


def main(args):
    try:
        device = runtime.pick_device(args.device)
        ckpt = load_checkpoint(args.checkpoint)
        normalize = Normalize(*stats_of(ckpt, (CIFAR100_MEAN, CIFAR100_STD)))
        model = load_model(ckpt, FACTORY, args.checkpoint, args.ema, device=device)
        where = data_of(ckpt, args.dataset, args.data_dir, args.test_subset)
        coarse_names = class_names(where["dataset"])[1]
        # subset: the training split goes unused, and the synthetic one is drawn at the size
        # asked for (its whole 50,000 images would take half a minute on 2 cores)
        x, y = load_splits(**where, train=False)["test"]
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    probs = predict(model, x, normalize, device, args.batch_size)
    if probs.shape[1] != len(FINE_TO_COARSE):
        raise SystemExit(f"error: the model has {probs.shape[1]} classes; superclasses need the "
                         f"{len(FINE_TO_COARSE)} CIFAR-100 classes")
    out = Path(args.out_dir or Path(args.checkpoint).parent / "superclass")
    to_coarse = torch.tensor(FINE_TO_COARSE)
    pred = probs.argmax(1)
    fine = 100.0 * float((pred == y).double().mean())
    coarse = superclass_accuracy(pred, y, FINE_TO_COARSE)
    summed = 100.0 * float((summed_superclass(probs).argmax(1) == to_coarse[y]).double().mean())
    wrong = pred != y
    near = (to_coarse[pred] == to_coarse[y]) & wrong  # wrong class, right superclass
    within = 100.0 * float(near.sum()) / max(int(wrong.sum()), 1)
    cm = confusion_matrix(to_coarse[pred], to_coarse[y], len(coarse_names)).double()
    support = cm.sum(1)
    row_norm = cm / support[:, None].clamp(min=1)
    per_class = {n: (100 * float(row_norm[i, i]) if support[i] else None)
                 for i, n in enumerate(coarse_names)}

    print(f"{args.checkpoint} (epoch {ckpt.get('epoch', '?')}): {len(y)} test images")
    print(f"fine top-1 {fine:.2f}% (chance 1%)  superclass top-1 {coarse:.2f}% (chance 5%)")
    print(f"superclass top-1 from summed probabilities {summed:.2f}%")
    print(f"{within:.1f}% of the {int(wrong.sum())} fine mistakes stay inside the true superclass "
          "(4.0% for a wrong class drawn at random)")
    seen = sorted(((-a, n) for n, a in per_class.items() if a is not None))  # best first
    print("best superclasses:  " + ", ".join(f"{n} {-a:.1f}%" for a, n in seen[:5]))
    print("worst superclasses: " + ", ".join(f"{n} {-a:.1f}%" for a, n in seen[::-1][:5]))

    out.mkdir(parents=True, exist_ok=True)
    save_figure(plots.confusion_heatmap(
        row_norm, coarse_names, f"Superclass confusion (% of the true superclass)\nsuperclass "
        f"top-1 {coarse:.2f}%, fine top-1 {fine:.2f}% ({len(y)} test images)", annotate=True),
        out / "superclass_confusion.png")
    report = {"checkpoint": str(Path(args.checkpoint).resolve()), "epoch": ckpt.get("epoch"),
              "weights": "EMA" if args.ema else "model", "images": len(y), "fine_top1": fine,
              "superclass_top1": coarse, "superclass_top1_summed_probs": summed,
              "fine_mistakes_within_superclass": within, "per_superclass_top1": per_class,
              "superclass_names": list(coarse_names), "confusion_row_normalized": row_norm.tolist(),
              "confusion_counts": cm.long().tolist()}
    write_json(report, out / "superclass.json")
    print(f"wrote superclass_confusion.png and superclass.json to {out}")
    return report


if __name__ == "__main__":
    main(build_parser().parse_args())
