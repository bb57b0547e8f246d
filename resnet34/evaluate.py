"""Evaluate a CIFAR ResNet-34 checkpoint (either variant) on the test split: seed 002's analysis.

Prints top-1/top-5/loss, the best and worst classes, the most confused pairs, macro and weighted
precision/recall/F1 and the expected calibration error; writes report.json and the plots.

    python resnet34/evaluate.py --checkpoint runs/resnet34/best.pt --tta
    python resnet34/evaluate.py --checkpoint runs/resnet34/best.pt --image photo.jpg
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from the repo root or from inside the folder

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import plots, runtime  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint, model_state  # noqa: E402
from common.data import (COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE, DataError,  # noqa: E402
                         Loader, load_splits)
from common.metrics import analyse, confusion_matrix, write_json  # noqa: E402
from model import resnet34  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--checkpoint", default=str(ROOT / "runs/resnet34/best.pt"),
                    help="default: runs/resnet34/best.pt under the repo root")
parser.add_argument("--data-dir", help="default: the checkpoint's training --data-dir")
parser.add_argument("--dataset", choices=["cifar100", "synthetic"],
                    help="default: the checkpoint's")
parser.add_argument("--subset", type=int, help="default: the checkpoint's (sets the test size)")
parser.add_argument("--batch-size", type=int, default=500)
parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
parser.add_argument("--out-dir", help="default: <checkpoint dir>/eval")
parser.add_argument("--tta", action="store_true", help="average softmax over a horizontal flip")
parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
parser.add_argument("--image", metavar="FILE",
                    help="print the top-5 classes of any image (centre square, resized to 32x32)")


def load_model(path, device, ema=False):
    """Rebuild the ResNet-34 of a checkpoint (or a bare state dict) -> (model in eval, ckpt)."""
    ckpt = load_checkpoint(path)
    state = model_state(ckpt)
    if state is ckpt:  # a bare state dict (e.g. torchvision's with the CIFAR stem): its keys
        variant = "enhanced" if "layer1.4.conv1.weight" in state else "standard"  # say which
        ckpt = {"arch": "resnet34", "model_args": {"variant": variant}, "args": {}, "model": state}
    if ckpt.get("arch") != "resnet34":
        raise CheckpointError(f"{path} holds a {ckpt.get('arch')!r} model; use the scripts of "
                              "that model's folder (these rebuild resnet34)")
    if ema:
        if not ckpt.get("ema"):
            raise CheckpointError(f"{path} has no EMA weights; drop --ema or train with --ema")
        # AveragedModel keeps the network under "module." next to its "n_averaged" counter
        state = {k[7:]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    model = resnet34(**ckpt.get("model_args", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit resnet34({ckpt.get('model_args', {})}): "
                              f"{str(e).splitlines()[-1].strip()[:200]}") from None
    return model.to(device).eval(), ckpt


def test_split(args, ckpt):
    """The checkpoint's test split (same dataset and subset), unless flags override them."""
    train_args = ckpt.get("args", {})
    dataset = args.dataset or train_args.get("dataset") or ckpt.get("dataset", "cifar100")
    data_dir = args.data_dir or train_args.get("data_dir") or str(ROOT / "data")
    subset = args.subset if args.subset is not None else train_args.get("subset", 0)
    return load_splits(dataset, data_dir, subset=subset)["test"]


@torch.no_grad()
def predict(model, x, device, batch_size=500, tta=False):
    """uint8 images (N,3,32,32) -> softmax probabilities (N, C) on the CPU."""
    probs = []
    for xb, _ in Loader((x, torch.zeros(len(x), dtype=torch.long)), batch_size, device):
        p = model(xb).float().softmax(1)
        if tta:
            p = (p + model(xb.flip(3)).float().softmax(1)) / 2
        probs.append(p.cpu())
    return torch.cat(probs)


def classify_image(model, path, device, tta):
    from PIL import Image, UnidentifiedImageError  # Pillow comes with torchvision and matplotlib
    from torchvision.transforms.v2.functional import center_crop, resize
    if not Path(path).is_file():
        raise SystemExit(f"error: no image file at {path}")
    try:
        with Image.open(path) as im:
            img = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
    except (UnidentifiedImageError, OSError) as e:
        raise SystemExit(f"error: cannot read image {path}: {e}") from None
    img = resize(center_crop(img, min(img.shape[1:])), [32, 32], antialias=True)
    p = predict(model, img[None], device, tta=tta)[0]
    print(f"{path}: top-5 of {len(p)} classes")
    for prob, c in zip(*p.topk(5)):
        print(f"  {100 * prob:6.2f}%  {FINE_NAMES[c] if len(p) == 100 else c}")


def main(args):
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size {args.batch_size}: use at least 1")
        device = runtime.pick_device(args.device)
        model, ckpt = load_model(args.checkpoint, device, args.ema)
        if args.image:
            return classify_image(model, args.image, device, args.tta)
        x, y = test_split(args, ckpt)
    except (CheckpointError, DataError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out_dir or Path(args.checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    probs = predict(model, x, device, args.batch_size, args.tta)
    names = FINE_NAMES if probs.shape[1] == 100 else [str(c) for c in range(probs.shape[1])]
    r = {"checkpoint": str(Path(args.checkpoint).resolve()), "epoch": ckpt.get("epoch"),
         "weights": "EMA" if args.ema else "model", "tta": args.tta, **analyse(probs, y, names)}

    print(f"{args.checkpoint} (epoch {r['epoch']}, {r['weights']} weights"
          f"{', flip TTA' if args.tta else ''}): {len(y)} test images")
    print(f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}  "
          f"ECE {100 * r['ece']:.2f}% (15 bins)")
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
    conf, pred = probs.max(1)
    if len(names) == 100:  # the 20 superclasses: are mistakes mostly within a group?
        to_coarse = torch.tensor(FINE_TO_COARSE)
        ccm = confusion_matrix(to_coarse[pred], to_coarse[y], 20).double()
        plots.confusion_heatmap(ccm / ccm.sum(1, keepdim=True).clamp(min=1), COARSE_NAMES,
                                out / "confusion_superclass.png",
                                "Superclass confusion (%, row-normalized)", annotate=True)
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
    main(parser.parse_args())
