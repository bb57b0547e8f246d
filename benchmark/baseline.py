"""The benchmark's baseline: a plain torchvision ResNet-18 loop, as the source notebooks trained.

Data: a DataLoader whose Dataset hands out one PIL image at a time through torchvision transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in `--workers` processes.
Model: benchmark/baseline_model.py (torchvision's ResNet-18, 32x32 stem). Loop: plain
cross-entropy, SGD and OneCycle at resnet18's default recipe (that of "ResNet-18 — CIFAR-100
Classification (From Scratch, 150 Epochs)"), stated below as literals (a test checks them against
resnet18/train.py's defaults). The benchmark's resnet18 row against this one shows what the
repo's batched loader and training step gain or lose.

The data flags mean what they mean for train.py: --subset shrinks the training set only (as many
images of each class), --test-subset the test set; evaluation is in float32, as train.py and
evaluate.py score. Writes, like train.py: last.pt (the final epoch: the run's result), args.json,
metrics.npz / metrics.csv with the same per-epoch columns (train_images, train_time, peak_mem_mb,
time, test_*, and val_* with --val-split), and best.pt only where a split was named to choose it
on: the best validation top-1 with --val-split, the best TEST top-1 with --select-on-test (the
source projects' practice, an optimistic pick; the log says so).

    python benchmark/baseline.py --dataset synthetic --subset 500 --epochs 2 --batch-size 50
"""
import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from any working directory

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.transforms.functional import to_pil_image  # noqa: E402

from baseline_model import baseline  # noqa: E402  (benchmark/baseline_model.py)
from common import data, metrics, runtime  # noqa: E402
from common.report import topk_correct  # noqa: E402
from common.checkpoint import save_checkpoint  # noqa: E402
from common.flags import Parser, ranged  # noqa: E402

# resnet18's default recipe (resnet18/train.py's defaults; tests/test_benchmark.py compares them)
EPOCHS, BATCH_SIZE = 150, 512
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # SGD; LR is OneCycle's peak, for batch 512
PCT_START, DIV_FACTOR, FINAL_DIV_FACTOR = 0.3, 25.0, 1e4  # lr/25 -> lr (30 %) -> lr/25/1e4

parser = Parser(__doc__.split("\n\n")[0])
parser.add_argument("--data-dir", help="holds cifar-100-python/ (default: data/ in the repo)")
parser.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100")
parser.add_argument("--subset", type=ranged(int, 0), default=0,
                    help="train on N images, as many of each class (0 = all); the test split "
                    "stays whole")
parser.add_argument("--test-subset", type=ranged(int, 0), default=0,
                    help="test on N images, as many of each class (0 = all)")
parser.add_argument("--val-split", type=ranged(int, 0), default=0,
                    help="hold out N training images, as many of each class, to choose best.pt "
                    "on (0 = none, and no best.pt)")
parser.add_argument("--select-on-test", action="store_true",
                    help="best.pt is the epoch with the best TEST top-1, as the source projects "
                    "chose (optimistic; the log says so)")
parser.add_argument("--epochs", type=ranged(int, 1), default=EPOCHS)
parser.add_argument("--batch-size", type=ranged(int, 1), default=BATCH_SIZE)
parser.add_argument("--lr", type=ranged(float, 0, 100, lo_open=True), default=LR,
                    help="OneCycle peak")
parser.add_argument("--weight-decay", type=ranged(float, 0, 1), default=WEIGHT_DECAY)
parser.add_argument("--workers", type=ranged(int, 0), default=2, help="DataLoader processes")
parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
parser.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
                    help="as train.py: bf16/fp16 on CUDA, off elsewhere")
parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="default: on for CUDA, as train.py")
parser.add_argument("--compile", action="store_true", help="torch.compile the model")
parser.add_argument("--seed", type=int, default=0, help="data order and init")
parser.add_argument("--out-dir", default=str(ROOT / "runs" / "baseline"))


class TensorImages(Dataset):
    """uint8 (N,3,32,32) images served one PIL image at a time, as torchvision's CIFAR100 does."""

    def __init__(self, split, transform):
        self.x, self.y = split
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(to_pil_image(self.x[i])), int(self.y[i])


@torch.no_grad()
def evaluate(model, loader, device):
    """Cross-entropy, top-1 and top-5 (%) over a split, in float32 as train.py and evaluate.py
    score (no autocast); the sums stay on the host."""
    model.eval()
    loss, c1, c5, n = 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        k1, k5 = topk_correct(logits, y)
        c1, c5, n = c1 + k1, c5 + k5, n + len(y)
    model.train()
    return {"loss": loss / n, "top1": 100 * c1 / n, "top5": 100 * c5 / n}


def main(args):
    if args.val_split and args.select_on_test:
        raise ValueError("--val-split chooses best.pt on held-out training images, "
                         "--select-on-test on the test split: give one of them")
    device = runtime.pick_device(args.device)
    dtype = runtime.amp_dtype(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    splits = data.load_splits(args.dataset, args.data_dir, subset=args.subset,
                              test_subset=args.test_subset, val_split=args.val_split)
    if len(splits["train"][1]) < args.batch_size:
        raise ValueError(f"batch size {args.batch_size} exceeds the {len(splits['train'][1])} "
                         "training images; lower --batch-size or raise --subset")
    args.normalize = data.channel_stats(splits["train"][0])  # the training images' own, as
    to_tensor = [T.ToTensor(), T.Normalize(*args.normalize)]  # train.py; its checkpoints keep it
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + to_tensor)
    kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda",
              persistent_workers=args.workers > 0)
    train_loader = DataLoader(TensorImages(splits["train"], augment), args.batch_size,
                              shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed), **kw)
    eval_loaders = {name: DataLoader(TensorImages(splits[name], T.Compose(to_tensor)), 500, **kw)
                    for name in ("val", "test") if splits[name] is not None}

    model = baseline(data.NUM_CLASSES).to(device, memory_format=torch.channels_last
                                          if channels_last else torch.preserve_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.epochs * len(train_loader), pct_start=PCT_START,
        div_factor=DIV_FACTOR, final_div_factor=FINAL_DIV_FACTOR)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    run_model = torch.compile(model) if args.compile else model
    tracker = metrics.MetricsTracker(out)
    metrics.write_json(vars(args), out / "args.json")
    # where best.pt is chosen, as train.py chooses: the val split, the test split when told
    # so, else nowhere (no best.pt; the final epoch is the run's result)
    select = "val" if "val" in eval_loaders else "test" if args.select_on_test else None
    best = {"epoch": 0, "top1": -1.0, "split": select}
    print(f"baseline (torchvision resnet18, 3x3 stem): "
          f"{sum(p.numel() for p in model.parameters()):,} parameters | {args.dataset}: "
          f"{splits['sizes']} | {device}, {args.workers} DataLoader workers, amp {dtype}")
    print("best.pt: " + {"val": "the epoch with the best validation top-1", None: "none "
                         "(no --val-split); the final epoch is the run's result",
                         "test": "the epoch with the best TEST top-1 (--select-on-test): an "
                         "optimistic pick"}[select])

    def checkpoint(epoch):  # enough for measure.py and evaluate-style use; not resumable
        return {"arch": "baseline", "num_classes": data.NUM_CLASSES, "dataset": args.dataset,
                "model_args": {"num_classes": data.NUM_CLASSES}, "epoch": epoch,
                "model": model.state_dict(), "best": best, "args": vars(args)}

    for epoch in range(args.epochs):
        t0 = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # loss x images, correct: float32, as every tensor on the device (MPS has no float64;
        # a count below 2^24 is exact, a sum of losses keeps ~7 significant digits)
        sums = torch.zeros(2, device=device)
        images = 0  # counted on the host, as train.py does: no host-to-device copy per step
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = optimizer.param_groups[0]["lr"]  # the lr this step uses, for the log
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = run_model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums += torch.stack([loss.detach().float() * len(y), (logits.argmax(1) == y).sum()])
            images += len(y)
        loss_sum, correct = sums.tolist()  # divided on the host
        train_loss, train_acc = loss_sum / images, 100 * correct / images
        train_time = time.time() - t0  # .tolist() above waited for the GPU
        results = {name: evaluate(run_model, loader, device)
                   for name, loader in eval_loaders.items()}
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"the loss became non-finite in epoch {epoch + 1}")
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "train_images": float(images), "train_time": train_time,
               "peak_mem_mb": runtime.peak_memory_mb(device)}
        for name, r in results.items():  # val_* only with --val-split, as train.py writes
            row.update({f"{name}_{k}": r[k] for k in ("loss", "top1", "top5")})
        row["time"] = time.time() - t0
        tracker.append(**row)
        if select and results[select]["top1"] > best["top1"]:
            best = {"epoch": epoch + 1, "top1": results[select]["top1"], "split": select}
            save_checkpoint(checkpoint(epoch + 1), out / "best.pt")
        eta = row["time"] * (args.epochs - epoch - 1)
        print(metrics.epoch_line(epoch + 1, args.epochs, row, row["time"], eta), flush=True)

    save_checkpoint(checkpoint(args.epochs), out / "last.pt")
    print(f"done: final test top-1 {row['test_top1']:.2f}% (last.pt: the run's result)" + (
        f"; best.pt: epoch {best['epoch']}, chosen on val top-1 {best['top1']:.2f}%"
        if select == "val" else f"; best.pt: epoch {best['epoch']}, chosen on the TEST split "
        f"(--select-on-test): its {best['top1']:.2f}% is an optimistic figure"
        if select else "") + f"; wrote {out}")


if __name__ == "__main__":
    try:
        main(parser.parse_args())
    except (data.DataError, ValueError, FloatingPointError, OSError) as e:
        raise SystemExit(f"error: {e}")
