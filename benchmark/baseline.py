"""The benchmark's baseline: a plain torchvision ResNet-18 trained the way the source notebooks did.

The model is torchvision.models.resnet18(num_classes=100) with the 32x32 stem (conv1 a 3x3
stride-1 conv, no max-pool): the same network as resnet18/model.py without its dropout. Data comes
from a DataLoader whose Dataset hands out one PIL image at a time through torchvision transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in `--workers` processes.
The loop is plain cross-entropy with SGD and resnet18's OneCycle schedule, batch size and epochs,
so the benchmark's resnet18 row against this one shows what the repo's batched loader and
training step gain or lose. Writes last.pt, metrics.npz/csv (same columns as train.py's) and
eval/report.json (top-1/top-5 of the final epoch).

    python benchmark/baseline.py --dataset synthetic --subset 500 --epochs 2 --batch-size 50
"""
import argparse
import ast
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from any working directory

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.transforms.functional import to_pil_image  # noqa: E402

from common import data, metrics, runtime  # noqa: E402
from common.checkpoint import save_checkpoint  # noqa: E402


def resnet18_recipe():
    """resnet18/train.py's RECIPE dict, read from its source so the two cannot drift apart."""
    tree = ast.parse((ROOT / "resnet18" / "train.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "RECIPE":
            return {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
    raise RuntimeError("resnet18/train.py has no RECIPE = dict(...)")


RECIPE = resnet18_recipe()
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data-dir", default=str(ROOT / "data"), help="holds cifar-100-python/")
parser.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100")
parser.add_argument("--subset", type=int, default=0, help="train on N images (0 = all)")
parser.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="resnet18's")
parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"], help="resnet18's")
parser.add_argument("--lr", type=float, default=RECIPE["lr"], help="OneCycle peak, resnet18's")
parser.add_argument("--weight-decay", type=float, default=RECIPE["weight_decay"])
parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
parser.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
                    help="as train.py: bf16/fp16 on CUDA, off elsewhere")
parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="default: on for CUDA, as train.py")
parser.add_argument("--compile", action="store_true", help="torch.compile the model")
parser.add_argument("--seed", type=int, default=0)
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


def build_model():
    model = torchvision.models.resnet18(num_classes=data.NUM_CLASSES)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # 32x32 inputs keep full resolution
    model.maxpool = nn.Identity()
    return model


def build_loaders(args, splits, device):
    """-> (train DataLoader, test DataLoader): per-sample transforms in worker processes."""
    normalize = [T.ToTensor(), T.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)]
    train = TensorImages(splits["train"], T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + normalize))
    test = TensorImages(splits["test"], T.Compose(normalize))
    kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda",
              persistent_workers=args.workers > 0)
    if len(train) < args.batch_size:
        raise data.DataError(f"batch size {args.batch_size} exceeds the {len(train)} training "
                             "images; lower --batch-size or raise --subset")
    return (DataLoader(train, args.batch_size, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(args.seed), **kw),
            DataLoader(test, 500, **kw))


class Trainer:
    """The model, optimizer and schedule of one run, and the plain training step."""

    def __init__(self, args, device, steps_per_epoch):
        self.device = device
        self.dtype = runtime.amp_dtype(args.amp, device)
        self.channels_last = (device.type == "cuda" if args.channels_last is None
                              else args.channels_last)
        self.model = build_model().to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr,
                                         momentum=RECIPE["momentum"],
                                         weight_decay=args.weight_decay)
        # resnet18's schedule: train.py's OneCycle defaults (30 % warm-up, lr/25 -> lr -> lr/25e4)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.3,
            div_factor=25.0, final_div_factor=1e4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.run_model = torch.compile(self.model) if args.compile else self.model

    def step(self, x, y):
        """One training step on a CPU batch -> (loss, logits), both still on the device."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.run_model(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), logits.detach()

    @torch.no_grad()
    def evaluate(self, loader):
        """Cross-entropy, top-1 and top-5 (%) over a split."""
        self.model.eval()
        loss, c1, c5, n = 0.0, 0, 0, 0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype,
                                enabled=self.dtype is not None):
                logits = self.run_model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            k1, k5 = metrics.topk_correct(logits, y)
            c1, c5, n = c1 + k1, c5 + k5, n + len(y)
        self.model.train()
        return {"loss": loss / n, "top1": 100 * c1 / n, "top5": 100 * c5 / n}


def main(args):
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        raise ValueError("--epochs and --batch-size must be at least 1, --workers at least 0")
    device = runtime.pick_device(args.device)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    splits = data.load_splits(args.dataset, args.data_dir, args.subset)
    train_loader, test_loader = build_loaders(args, splits, device)
    trainer = Trainer(args, device, len(train_loader))
    tracker = metrics.MetricsTracker(out)
    (out / "args.json").write_text(json.dumps(vars(args), indent=2))
    print(f"baseline (torchvision resnet18, 3x3 stem): "
          f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters | {args.dataset}: "
          f"{len(splits['train'][0]):,} train, {len(splits['test'][0]):,} test | {device}, "
          f"{args.workers} DataLoader workers, amp {trainer.dtype}")

    for epoch in range(args.epochs):
        t0 = time.time()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*B, correct, images
        for x, y in train_loader:
            loss, logits = trainer.step(x, y)
            y = y.to(device)
            sums += torch.stack([loss * len(y), (logits.argmax(1) == y).sum(),
                                 torch.tensor(len(y), device=device)]).double()
        test = trainer.evaluate(test_loader)  # inside the epoch time, as in train.py
        row = {"epoch": epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"],
               "train_loss": (sums[0] / sums[2]).item(),
               "train_acc": (100 * sums[1] / sums[2]).item(), "time": time.time() - t0,
               **{f"test_{k}": v for k, v in test.items()}}
        tracker.append(**row)
        eta = row["time"] * (args.epochs - epoch - 1)
        print(metrics.epoch_line(epoch + 1, args.epochs, row, row["time"], eta), flush=True)

    save_checkpoint({"arch": "baseline", "num_classes": data.NUM_CLASSES, "epoch": args.epochs,
                     "model": trainer.model.state_dict(), "args": vars(args)}, out / "last.pt")
    report = {"checkpoint": str((out / "last.pt").resolve()), "epoch": args.epochs,
              "images": len(splits["test"][0]), **test}
    (out / "eval").mkdir(exist_ok=True)
    (out / "eval" / "report.json").write_text(json.dumps(report, indent=1))
    print(f"done: final test top-1 {test['top1']:.2f}% top-5 {test['top5']:.2f}%; wrote {out}")


if __name__ == "__main__":
    try:
        main(parser.parse_args())
    except (data.DataError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
