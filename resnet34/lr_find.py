"""Learning-rate range test for the CIFAR ResNet-34 (a to-do of the "CIFAR-100 ResNet-34 Training
Pipeline" notebook: "try different learning rates").

Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (arXiv:1506.01186), in the
fast.ai "lr finder" form: a fresh model trains for --steps mini-batches while the lr grows
exponentially from --start-lr to --end-lr. While it runs, a bias-corrected exponential moving
average of the loss (fast.ai's) stops the test once it exceeds --diverge (1.3) times its minimum:
fast.ai's 4x never fires here, as a 100-class cross-entropy that blows up saturates near 5-7
instead of growing. Afterwards the loss is smoothed again by a centred moving average, which,
unlike the EMA, does not lag (an EMA of factor 0.95 trails ~20 steps, 0.4 of a decade of lr at
300 steps over 6 decades), and that curve is plotted against lr on a log axis and read two ways:
  steepest: the lr where the smoothed loss falls fastest per decade of lr (the suggestion; for the
            peak lr of OneCycle or the start lr of a cosine schedule);
  min/10:   a tenth of the lr at the smoothed loss's minimum (fast.ai's older rule, a safer bound).
Only training images are used (--subset of them, as many of each class); the test split is
never looked at. Writes lr_find.png and lr_find.json into --out-dir.

    python resnet34/lr_find.py                                          # CIFAR-100, GPU-sized
    python resnet34/lr_find.py --dataset synthetic --variant standard --subset 2000 \\
        --batch-size 32 --steps 100 --smooth 0.9                        # CPU, offline
"""
import argparse
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common import data, runtime  # noqa: E402
from common.augment import Augment, Normalize  # noqa: E402
from common.flags import Parser, ranged  # noqa: E402
from common.loader import Loader  # noqa: E402
from common.metrics import save_figure, write_json  # noqa: E402
from model import resnet34  # noqa: E402


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=["enhanced", "standard"], default="enhanced")
    p.add_argument("--data-dir", help="holds cifar-100-python/ (default: data/ in the repo)")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100")
    p.add_argument("--subset", type=ranged(int, 0), default=10000,
                   help="training images used, as many of each class (0 = all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=300, help="mini-batches, at most")
    p.add_argument("--start-lr", type=float, default=1e-5)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--smooth", type=float, default=0.95,
                   help="EMA factor of the loss per step, for the stop rule")
    p.add_argument("--window", type=int, default=0,
                   help="centred moving average read for the suggestion, in steps "
                   "(0 = a sixth of the steps run, at least 5)")
    p.add_argument("--diverge", type=float, default=1.3,
                   help="stop once the EMA of the loss exceeds this many times its minimum")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE.parent / "runs" / HERE.name / "lr_find"))
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between lines")
    return p


SKIP_START, SKIP_END = 10, 5  # points left out of the suggestion: EMA warm-up and the blow-up


def check_args(args):
    if not 0 < args.start_lr < args.end_lr:
        raise ValueError(f"need 0 < --start-lr < --end-lr, got {args.start_lr} and {args.end_lr}")
    if args.steps < SKIP_START + SKIP_END + 5:
        raise ValueError(f"--steps {args.steps} is too few to read a curve; use at least "
                         f"{SKIP_START + SKIP_END + 5}")
    if not 0 <= args.smooth < 1:
        raise ValueError(f"--smooth {args.smooth} must be in [0, 1)")
    if args.diverge <= 1:
        raise ValueError(f"--diverge {args.diverge} must be above 1")
    if args.window < 0:
        raise ValueError(f"--window {args.window} must be >= 0 (0 = automatic)")
    if args.batch_size < 2:
        raise ValueError("--batch-size must be at least 2 (batch norm)")


def range_test(model, loader, optimizer, lrs, smooth, diverge, label_smoothing, every=10.0):
    """Train one step per lr in `lrs` -> (raw losses, their EMA, diverged?)."""
    raw, ema, avg, best = [], [], 0.0, math.inf
    model.train()
    t0 = last = time.time()
    epoch, batches = 0, iter(())
    for i, lr in enumerate(lrs):
        try:
            x, y = next(batches)
        except StopIteration:  # the subset is used up: a new epoch, a new order
            loader.set_epoch(epoch)
            epoch, batches = epoch + 1, loader.iterate()
            x, y = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            return raw, ema, True
        avg = smooth * avg + (1 - smooth) * value
        raw.append(value)
        ema.append(avg / (1 - smooth ** (i + 1)))  # bias correction of the zero start
        best = min(best, ema[-1])
        if time.time() - last >= every:
            last = time.time()
            print(f"  step {i + 1}/{len(lrs)}  lr {lr:.2e}  loss {ema[-1]:.4f}  "
                  f"{(i + 1) * len(y) / (last - t0):.0f} img/s", flush=True)
        if i > SKIP_START and ema[-1] > diverge * best:
            return raw, ema, True
    return raw, ema, False


def centred_average(values, window):
    """Mean over `window` neighbours centred on each step; fewer at the two ends."""
    v, k = np.asarray(values, dtype=float), np.ones(window)
    return np.convolve(v, k, "same") / np.convolve(np.ones_like(v), k, "same")


def suggest(lrs, smoothed):
    """-> (steepest, min/10), read between the EMA warm-up and the last few steps.

    min/10: a tenth of the lr at the smoothed minimum (None if the curve is too short to read).
    steepest: the lr of the most negative d loss / d log10(lr) on the way down to that minimum
    (None if the loss never fell): past the minimum a collapsed network's loss can fall again,
    and that is no place to train at.
    """
    lrs, smoothed = np.asarray(lrs[:len(smoothed)]), np.asarray(smoothed)
    lo, hi = SKIP_START, len(smoothed) - SKIP_END
    if hi - lo < 3:
        return None, None
    i_min = lo + int(np.argmin(smoothed[lo:hi]))
    steepest = None
    if i_min - lo >= 2:
        slope = np.gradient(smoothed[lo:i_min + 1], np.log10(lrs[lo:i_min + 1]))  # per decade
        steepest = float(lrs[lo + int(np.argmin(slope[:-1]))])  # strictly before the minimum
    return steepest, float(lrs[i_min] / 10)


def plot(lrs, raw, ema, smoothed, window, steepest, min10, title, path):
    lrs = np.asarray(lrs[:len(smoothed)])
    s = np.asarray(smoothed)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, raw, color="0.75", lw=0.8, label="loss per step")
    ax.plot(lrs, ema, color="C1", lw=1, ls="--", label="EMA (stop rule; lags)")
    ax.plot(lrs, s, color="C0", lw=2, label=f"centred average of {window} steps (read)")
    if steepest is not None:
        i = int(np.argmin(np.abs(lrs - steepest)))
        ax.plot(steepest, s[i], "o", color="C3", ms=9, zorder=3,
                label=f"steepest descent: lr {steepest:.2e} (suggested)")
    if min10 is not None:
        ax.axvline(min10, color="C2", ls="--", lw=1.2, label=f"minimum / 10: lr {min10:.2e}")
        ax.axvline(min10 * 10, color="C2", ls=":", lw=1, label=f"minimum: lr {min10 * 10:.2e}")
    # keep the starting loss and the minimum in view; the blow-up at the end would flatten them
    lo, hi = s.min(), max(s[:SKIP_START + 1].max(), s.min())
    ax.set_ylim(lo - 0.1 * (hi - lo) - 0.05, hi + 0.8 * (hi - lo) + 0.1)  # room for the legend
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (label-smoothed CE)",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", ncol=2)
    save_figure(fig, path)


def main(args):
    check_args(args)
    device = runtime.pick_device(args.device)
    torch.manual_seed(args.seed)
    # the test split is not used: its smallest stratified draw (1 image a class) is enough
    train = data.load_splits(args.dataset, args.data_dir, args.subset,
                             test_subset=data.NUM_CLASSES)["train"]
    augment = Augment(Normalize(*data.channel_stats(train[0])), pad=4, flip=True)  # as train.py
    loader = Loader(train, args.batch_size, device, augment, shuffle=True, seed=args.seed,
                    drop_last=True)
    model = resnet34(args.variant).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.start_lr, momentum=args.momentum,
                                nesterov=args.nesterov, weight_decay=args.weight_decay)
    lrs = np.geomspace(args.start_lr, args.end_lr, args.steps)  # lr_i = start * q^i
    print(f"lr range test: resnet34 {args.variant} | {args.dataset} {len(train[0]):,} images, "
          f"batch {args.batch_size} | lr {args.start_lr:g} -> {args.end_lr:g} over at most "
          f"{args.steps} steps | {device}")
    t0 = time.time()
    raw, ema, diverged = range_test(model, loader, optimizer, lrs, args.smooth, args.diverge,
                                    args.label_smoothing, args.progress_every)
    if not raw:
        raise ValueError(f"the loss was not finite at the first step (lr {args.start_lr:g}); "
                         "lower --start-lr")
    window = args.window or max(5, len(raw) // 6 // 2 * 2 + 1)  # odd: centred on a step
    smoothed = centred_average(raw, window)
    steepest, min10 = suggest(lrs, smoothed)
    stop = (f"stopped at step {len(raw)}: the loss diverged at lr {lrs[len(raw) - 1]:.2e}"
            if diverged else f"ran all {len(raw)} steps without diverging")
    print(f"{stop} ({time.time() - t0:.0f} s)")
    suggested = min10 if steepest is None else steepest
    if min10 is None:
        print(f"warning: the loss diverged after {len(raw)} steps, too early to read a "
              "suggestion; lower --end-lr, raise --diverge or --batch-size")
    elif steepest is None:
        print("warning: the smoothed loss never fell, so there is no steepest descent; lower "
              "--start-lr. Suggesting minimum / 10 instead")
    if suggested is not None:
        print(f"suggested lr ({'minimum / 10' if steepest is None else 'steepest descent'}): "
              f"{suggested:.3g}   minimum / 10: {min10:.3g}   minimum: {10 * min10:.3g}")

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(lrs, raw, ema, smoothed, window, steepest, min10,
         f"LR range test, ResNet-34 {args.variant}, {args.dataset} "
         f"({len(raw)} steps of {args.batch_size})", out / "lr_find.png")
    result = {"suggested_lr": suggested, "steepest_lr": steepest, "min_over_10_lr": min10,
              "diverged": diverged, "steps_run": len(raw), "seconds": time.time() - t0,
              "window": window, "lr": lrs[:len(raw)].tolist(), "loss": raw, "ema_loss": ema,
              "smoothed_loss": smoothed.tolist(), "args": vars(args)}
    write_json(result, out / "lr_find.json")
    print(f"wrote lr_find.png and lr_find.json to {out}")
    return result


if __name__ == "__main__":
    try:
        main(build_parser().parse_args())
    except (data.DataError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
