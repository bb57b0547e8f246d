"""Measure one trained model of the benchmark and write <run-dir>/measure.json.

Everything is rebuilt from the run's own flags (args.json), on the run's device and precision:
- parameters; forward FLOPs per 32x32 image: torch.utils.flop_counter at batch 1, which counts
  2 FLOPs per multiply-add of convolutions and matrix products (batch norm, activations and
  pooling are not counted; they add a few per cent);
- training throughput: the run's training step (its loader, augmentation, mixing, loss, optimizer
  and schedule) on a fresh model, `--steps` batches timed after `--warmup`, loading included;
- peak memory over those training steps: torch.cuda.max_memory_allocated on CUDA, the peak
  resident set of this process on the CPU (Python and torch included; DataLoader workers not);
- inference throughput: one pass of the trained model (last.pt) over the test split in batches of
  `--infer-batch` (eval mode, no gradients, the run's precision), the first batches untimed;
- superclass accuracy of last.pt: its fine predictions on the test split (float32, as evaluate.py)
  mapped through FINE_TO_COARSE, the same way for every model; top-1 is re-counted as a check.

    python benchmark/measure.py resnet18 --run-dir results/runs/resnet18
"""
import argparse
import importlib.util
import itertools
import json
import math
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from any working directory

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common import data, losses, mixing, runtime  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help="a model folder (resnet18, ...) or baseline")
parser.add_argument("--run-dir", required=True, help="what train.py / baseline.py wrote")
parser.add_argument("--warmup", type=int, default=5, help="training steps before the clock starts")
parser.add_argument("--steps", type=int, default=20, help="timed training steps")
parser.add_argument("--infer-batch", type=int, default=500, help="images per inference forward")


def import_path(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mb():
    """Peak resident set of this process so far, MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


class RepoRun:
    """A model folder's training step, built from its train.py and the run's flags."""

    def __init__(self, name, run_dir, device, min_steps):
        sys.path.insert(0, str(ROOT / name))  # train.py imports its own folder's model.py
        self.train = import_path(ROOT / name / "train.py", f"{name}_train")
        args = self.train.parse_args([])  # the recipe's defaults, then the run's flags over them
        vars(args).update(json.loads((Path(run_dir) / "args.json").read_text()))
        self.args, self.device = args, device
        self.dtype = runtime.amp_dtype(args.amp, device)
        self.channels_last = (device.type == "cuda" if args.channels_last is None
                              else args.channels_last)
        self.splits = data.load_splits(args.dataset, args.data_dir, args.subset, args.val_split)
        augment = data.Augment(  # as train.py builds it
            pad=args.pad, flip=args.flip, rotate=args.rotate, translate=args.translate,
            scale=tuple(args.scale), affine_p=args.affine_p, jitter=tuple(args.jitter),
            erase_p=args.erase_p, holes_p=args.holes_p, holes=args.holes,
            hole_size=args.hole_size, noise_p=args.noise_p, noise_std=tuple(args.noise_std))
        self.loader = data.Loader(self.splits["train"], args.batch_size, device, augment,
                                  shuffle=True, seed=args.seed, drop_last=True)
        self.model = self.new_model().to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(args.ema),
                                  use_buffers=True) if args.ema else None)
        self.optimizer = runtime.build_optimizer(args, self.model.parameters())
        # a schedule long enough for the timed steps (OneCycle refuses to step past its end)
        epochs = max(args.epochs, math.ceil(min_steps / len(self.loader)))
        self.scheduler = runtime.build_scheduler(argparse.Namespace(**{**vars(args),
                                                                       "epochs": epochs}),
                                                 self.optimizer, len(self.loader))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.run_model = torch.compile(self.model) if args.compile else self.model
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def new_model(self):
        return self.train.build_model(self.args)[0]

    def close(self):
        pass

    def batches(self):
        """(epoch, index, images, labels), epoch after epoch, as train.py's loop sees them."""
        for epoch in itertools.count():
            self.loader.set_epoch(epoch)
            for i, (x, y) in enumerate(self.loader):
                yield epoch, i, x, y

    def step(self, batch):
        """The body of train.py's loop, Ctrl-C handling and progress lines left out."""
        epoch, i, x, y = batch
        a = self.args
        rng = np.random.default_rng([a.seed, epoch, i])
        x, target = mixing.mix(x, y, data.NUM_CLASSES, rng, a.mixup_alpha, a.cutmix_alpha,
                               a.mix_prob, a.switch_prob)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.run_model(x)
            loss = losses.soft_target_cross_entropy(logits, target, a.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if a.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.sums[0] += loss.detach() * len(y)
        self.sums[1] += (logits.argmax(1) == target.argmax(1)).sum()
        self.sums[2] += len(y)


class BaselineRun:
    """benchmark/baseline.py's DataLoader and plain step, built from the run's flags."""

    def __init__(self, run_dir, device, min_steps):
        self.baseline = import_path(ROOT / "benchmark" / "baseline.py", "benchmark_baseline")
        args = self.baseline.parser.parse_args([])
        vars(args).update(json.loads((Path(run_dir) / "args.json").read_text()))
        self.args, self.device = args, device
        self.splits = data.load_splits(args.dataset, args.data_dir, args.subset)
        self.loader, _ = self.baseline.build_loaders(args, self.splits, device)
        epochs = max(args.epochs, math.ceil(min_steps / len(self.loader)))
        self.trainer = self.baseline.Trainer(argparse.Namespace(**{**vars(args), "epochs": epochs}),
                                             device, len(self.loader))
        self.model, self.dtype = self.trainer.model, self.trainer.dtype
        self.channels_last = self.trainer.channels_last
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def new_model(self):
        return self.baseline.build_model()

    def batches(self):
        while True:  # the workers persist across epochs
            yield from self.loader

    def close(self):
        """Stop the DataLoader workers, which would keep prefetching during the inference timing."""
        self.loader = None

    def step(self, batch):
        loss, logits = self.trainer.step(*batch)
        y = batch[1].to(self.device)
        self.sums += torch.stack([loss * len(y), (logits.argmax(1) == y).sum(),
                                  torch.tensor(len(y), device=self.device)]).double()


def time_training(run, warmup, steps):
    """-> (img/s, seconds, peak memory MB) over `steps` training steps after `warmup`."""
    device = run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batches = run.batches()
    for _ in range(warmup):
        run.step(next(batches))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step(next(batches))
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss_mb()
    batches.close()
    run.close()
    return steps * run.args.batch_size / seconds, seconds, peak


@torch.no_grad()
def infer(model, x, run, batch_size, warmup, dtype):
    """One pass over uint8 images x (N,3,32,32) -> (fine predictions (N,), img/s).

    The first `warmup` batches and a last, smaller batch (a new shape for torch.compile) are
    left out of the clock, as long as one batch remains; normalizing and the copy to the device
    are inside it, as in any evaluation.
    """
    model.eval()
    forward = torch.compile(model) if run.args.compile else model
    starts = range(0, len(x), batch_size)
    full = len(x) // batch_size
    warmup = min(warmup, max(full - 1, 0))
    stop = max(full, warmup + 1)  # batches warmup .. stop-1 are timed
    preds = []
    for k, i in enumerate(starts):
        if k == warmup:
            sync(run.device)
            t0 = time.perf_counter()
        xb = data.normalize(x[i:i + batch_size].to(run.device))
        if run.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=dtype, enabled=dtype is not None):
            preds.append(forward(xb).argmax(1))
        if k == stop - 1:
            sync(run.device)
            seconds = time.perf_counter() - t0
    images = min(stop * batch_size, len(x)) - warmup * batch_size
    return torch.cat(preds).cpu(), images / seconds


def main(args):
    if min(args.warmup, args.steps - 1, args.infer_batch - 1) < 0:
        raise ValueError("--steps and --infer-batch must be at least 1, --warmup at least 0")
    run_dir = Path(args.run_dir)
    if not (run_dir / "args.json").is_file():
        raise ValueError(f"{run_dir} holds no args.json: train the model first")
    run_args = json.loads((run_dir / "args.json").read_text())
    device = runtime.pick_device(run_args.get("device", "auto"))
    rss_start = rss_mb()
    min_steps = args.warmup + args.steps
    if args.model == "baseline":
        run = BaselineRun(run_dir, device, min_steps)
    elif (ROOT / args.model / "train.py").is_file():
        run = RepoRun(args.model, run_dir, device, min_steps)
    else:
        raise ValueError(f"unknown model {args.model!r}: no {args.model}/train.py")

    train_ips, train_s, peak = time_training(run, args.warmup, args.steps)
    print(f"training: {train_ips:.1f} img/s over {args.steps} steps of {run.args.batch_size} "
          f"({train_s:.1f}s, after {args.warmup} warm-up steps); peak memory {peak:.0f} MB")

    cpu_model = run.new_model().eval()
    params = sum(p.numel() for p in cpu_model.parameters())
    with FlopCounterMode(display=False) as counter:
        cpu_model(torch.zeros(1, 3, 32, 32))
    flops = counter.get_total_flops()
    print(f"{params:,} parameters, {flops / 1e9:.3f} GFLOPs per image (2 x multiply-adds)")

    model = run.new_model()
    model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
    model = model.to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_test, y_test = run.splits["test"]
    pred, infer_ips = infer(model, x_test, run, args.infer_batch, min(args.warmup, 2), run.dtype)
    print(f"inference: {infer_ips:.1f} img/s ({len(y_test)} test images, batch {args.infer_batch})")
    if run.dtype is not None:  # the accuracy figures in float32, as evaluate.py computes them
        pred, _ = infer(model, x_test, run, args.infer_batch, 0, None)
    coarse = torch.tensor(data.FINE_TO_COARSE)
    top1 = 100 * (pred == y_test).double().mean().item()
    superclass = 100 * (coarse[pred] == coarse[y_test]).double().mean().item()
    print(f"last.pt on {len(y_test)} test images: top-1 {top1:.2f}%, superclass {superclass:.2f}%")

    amp = str(run.dtype).replace("torch.", "") if run.dtype else "off"
    result = {
        "model": args.model, "device": str(device), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "amp": amp,
        "channels_last": run.channels_last, "compile": bool(run.args.compile),
        "dataset": run.args.dataset, "epochs": run.args.epochs,
        "batch_size": run.args.batch_size, "train_images": len(run.splits["train"][0]),
        "test_images": len(y_test), "params": params, "flops_per_image": flops,
        "train_img_s": train_ips, "train_timed_s": train_s, "warmup_steps": args.warmup,
        "timed_steps": args.steps, "infer_img_s": infer_ips, "infer_batch": args.infer_batch,
        "peak_memory_mb": peak, "memory_kind": ("cuda max_memory_allocated"
                                                if device.type == "cuda" else "peak RSS"),
        "rss_after_import_mb": rss_start, "top1_check": top1, "superclass_top1": superclass}
    (run_dir / "measure.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {run_dir / 'measure.json'}")


if __name__ == "__main__":
    try:
        main(parser.parse_args())
    except (data.DataError, CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
