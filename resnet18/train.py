"""Train the CIFAR ResNet-18 on CIFAR-100.

Defaults are seed 004's recipe: 150 epochs of SGD (lr 0.1, momentum 0.9, wd 5e-4) under OneCycle,
label smoothing 0.1, CutMix (alpha 1), crop + flip + rotation + colour jitter + random erasing,
batch 512, mixed precision on CUDA. Seed 004 reports 77.05 % best / 77.00 % final test top-1 on an
A10G (its figures, not re-measured here; README.md says what was measured).

    python resnet18/train.py --epochs 150                            # the recipe
    python resnet18/train.py --dataset synthetic --subset 2000 --epochs 3 --batch-size 128   # CPU
"""
import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

from common import data, losses, metrics, mixing, plots, runtime  # noqa: E402
from common.checkpoint import (CheckpointError, check_compatible, load_checkpoint,  # noqa: E402
                               rng_state, save_checkpoint, set_rng_state)
from model import resnet18  # noqa: E402

# ---- the recipe: the only part that differs between the three train.py files --------------
ARCH = "resnet18"
RECIPE = dict(  # seed 004
    epochs=150, batch_size=512, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
    weight_decay=5e-4, scheduler="onecycle", label_smoothing=0.1, cutmix_alpha=1.0,
    mix_prob=0.5,  # seed 004: "applied with some probability"; 0.5 is our choice
    rotate=15.0, jitter=[0.2, 0.2, 0.2, 0.05], erase_p=0.5)


def add_model_args(g):
    g.add_argument("--dropout", type=float, default=0.3, help="before the classifier")


def build_model(args):
    model_args = {"num_classes": data.NUM_CLASSES, "dropout": args.dropout}
    return resnet18(**model_args), model_args


plot_curves = plots.training_curves  # loss | accuracy | learning rate
# ---- everything below is shared by the three train.py files --------------------------------

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
g = parser.add_argument_group("data")
g.add_argument("--data-dir", default=str(HERE.parent / "data"), help="holds cifar-100-python/")
g.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100")
g.add_argument("--subset", type=int, default=0, help="train on N images (0 = all)")
g.add_argument("--val-split", type=int, default=0,
               help="hold out N training images to pick best.pt on (0 = pick on test)")
g = parser.add_argument_group("optimization")
g.add_argument("--epochs", type=int)
g.add_argument("--batch-size", type=int)
g.add_argument("--optimizer", choices=["sgd", "adamw"])
g.add_argument("--lr", type=float, help="peak learning rate")
g.add_argument("--momentum", type=float, default=0.9, help="SGD only")
g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="SGD only")
g.add_argument("--weight-decay", type=float)
g.add_argument("--scheduler", choices=["onecycle", "cosine", "cosine-restarts", "step"])
g.add_argument("--pct-start", type=float, default=0.3, help="onecycle: warm-up share")
g.add_argument("--div-factor", type=float, default=25.0, help="onecycle: start lr = lr / this")
g.add_argument("--final-div-factor", type=float, default=1e4,
               help="onecycle: end lr = start lr / this")
g.add_argument("--t0", type=int, default=50, help="cosine-restarts: first cycle, epochs")
g.add_argument("--tmult", type=int, default=2, help="cosine-restarts: cycle growth")
g.add_argument("--step-epochs", type=int, default=30, help="step: epochs between lr drops")
g.add_argument("--gamma", type=float, default=0.1, help="step: lr factor per drop")
g.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0 = off)")
g.add_argument("--target-acc", type=float, default=0.0, help="stop once eval top-1 %% reaches it")
g = parser.add_argument_group("regularization")
g.add_argument("--label-smoothing", type=float)
g.add_argument("--mixup-alpha", type=float, default=0.0, help="0 = no Mixup")
g.add_argument("--cutmix-alpha", type=float, default=0.0, help="0 = no CutMix")
g.add_argument("--mix-prob", type=float, default=1.0, help="share of batches mixed")
g.add_argument("--switch-prob", type=float, default=0.5, help="CutMix share when both alphas > 0")
g.add_argument("--ema", type=float, default=0.0, help="EMA decay per step, e.g. 0.999 (0 = off)")
add_model_args(parser.add_argument_group("model"))
g = parser.add_argument_group("augmentation (per image, batched on the device)")
g.add_argument("--pad", type=int, default=4, help="random crop of the zero-padded image, px")
g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
g.add_argument("--rotate", type=float, default=0.0, help="max rotation, degrees")
g.add_argument("--translate", type=float, default=0.0, help="max shift, fraction of the side")
g.add_argument("--scale", type=float, nargs=2, default=[1.0, 1.0], metavar=("LO", "HI"))
g.add_argument("--affine-p", type=float, default=1.0, help="chance of rotate/translate/scale")
g.add_argument("--jitter", type=float, nargs=4, default=[0.0, 0.0, 0.0, 0.0],
               metavar=("B", "C", "S", "H"),
               help="colour jitter: brightness contrast saturation hue")
g.add_argument("--erase-p", type=float, default=0.0, help="random erasing probability")
g.add_argument("--holes-p", type=float, default=0.0, help="coarse dropout probability")
g.add_argument("--holes", type=int, default=8, help="coarse dropout: squares per image")
g.add_argument("--hole-size", type=int, default=8, help="coarse dropout: square side, px")
g.add_argument("--noise-p", type=float, default=0.0, help="Gaussian noise (never with holes)")
g.add_argument("--noise-std", type=float, nargs=2, default=[0.0125, 0.0278], metavar=("LO", "HI"))
g = parser.add_argument_group("run")
g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
g.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
               help="auto = bf16 on CUDA GPUs that have it, else fp16; off on CPU/MPS")
g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
               help="default: on for CUDA")
g.add_argument("--compile", action="store_true", help="torch.compile the model")
g.add_argument("--seed", type=int, default=0)
g.add_argument("--out-dir", default=str(HERE.parent / "runs" / HERE.name))
g.add_argument("--save-every", type=int, default=0, help="also keep epoch_N.pt every N epochs")
g.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
               help="continue from PATH, or from OUT_DIR/last.pt; flags not given are restored")
g.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
parser.set_defaults(**RECIPE)

RANGES = {"epochs": (1, 10**6), "batch_size": (1, 10**6), "subset": (0, 10**8),
          "val_split": (0, 10**8), "lr": (1e-8, 100), "momentum": (0, 1), "weight_decay": (0, 1),
          "label_smoothing": (0, 0.99), "mixup_alpha": (0, 100), "cutmix_alpha": (0, 100),
          "mix_prob": (0, 1), "switch_prob": (0, 1), "dropout": (0, 0.99), "ema": (0, 0.999999),
          "pad": (0, 16), "rotate": (0, 180), "translate": (0, 0.5), "affine_p": (0, 1),
          "erase_p": (0, 1), "holes_p": (0, 1), "holes": (1, 64), "hole_size": (1, 32),
          "noise_p": (0, 1), "clip_grad": (0, 1e6), "target_acc": (0, 100),
          "pct_start": (0.01, 0.99), "t0": (1, 10**6), "tmult": (1, 100), "step_epochs": (1, 10**6), "save_every": (0, 10**6)}


def parse_args(argv=None):
    args = parser.parse_args(argv)
    if args.resume:  # the checkpoint's flags become the defaults; flags given here still win
        path = Path(args.out_dir) / "last.pt" if args.resume == "last" else Path(args.resume)
        saved = load_checkpoint(path)["args"]
        parser.set_defaults(**{k: v for k, v in saved.items() if k != "resume"})
        args = parser.parse_args(argv)
        args.resume = str(path)
    return args


def check_args(args):
    for name, (lo, hi) in RANGES.items():
        if not lo <= getattr(args, name) <= hi:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} is outside "
                             f"[{lo}, {hi}]")
    if args.holes_p + args.noise_p > 1:
        raise ValueError("--holes-p plus --noise-p must be at most 1 (they share one draw)")


@torch.no_grad()
def evaluate(model, loader, dtype):
    """Plain cross-entropy, top-1 and top-5 (%) over a whole split."""
    model.eval()
    loss, c1, c5, n = 0.0, 0, 0, 0
    for x, y in loader:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        k1, k5 = metrics.topk_correct(logits, y)
        c1, c5, n = c1 + k1, c5 + k5, n + len(y)
    return {"loss": loss / n, "top1": 100 * c1 / n, "top5": 100 * c5 / n}


def main(args):
    check_args(args)
    device = runtime.pick_device(args.device)
    dtype = runtime.amp_dtype(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume and (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run; continue it with --resume, "
                         "or start a new one with --out-dir NEW_DIR")
    torch.manual_seed(args.seed)

    splits = data.load_splits(args.dataset, args.data_dir, args.subset, args.val_split)
    augment = data.Augment(
        pad=args.pad, flip=args.flip, rotate=args.rotate, translate=args.translate,
        scale=tuple(args.scale), affine_p=args.affine_p, jitter=tuple(args.jitter),
        erase_p=args.erase_p, holes_p=args.holes_p, holes=args.holes, hole_size=args.hole_size,
        noise_p=args.noise_p, noise_std=tuple(args.noise_std))
    train_loader = data.Loader(splits["train"], args.batch_size, device, augment, shuffle=True,
                               seed=args.seed, drop_last=True)
    eval_loaders = {name: data.Loader(splits[name], 500, device)
                    for name in ("val", "test") if splits[name] is not None}

    model, model_args = build_model(args)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
           if args.ema else None)
    optimizer = runtime.build_optimizer(args, model.parameters())
    steps = len(train_loader)
    scheduler = runtime.build_scheduler(args, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    tracker = metrics.MetricsTracker(out)
    start_epoch, start_step, partial = 0, 0, None
    best = {"epoch": 0, "top1": -1.0, "split": "val" if splits["val"] is not None else "test"}

    identity = {"arch": ARCH, "num_classes": data.NUM_CLASSES, "dataset": args.dataset,
                "model_args": model_args}
    if args.resume:
        ck = load_checkpoint(args.resume, map_location=device)
        check_compatible(ck, **identity)
        if (args.epochs, args.batch_size) != (ck["args"]["epochs"], ck["args"]["batch_size"]):
            raise ValueError(f"the lr schedule was laid out for --epochs {ck['args']['epochs']} "
                             f"--batch-size {ck['args']['batch_size']}; resume with those values")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        tracker.load_state_dict(ck["tracker"])
        best, start_epoch, start_step, partial = ck["best"], ck["epoch"], ck["step"], ck["partial"]
        set_rng_state(ck["rng"])
        print(f"resumed from {args.resume} at epoch {start_epoch} batch {start_step}")
    (out / "args.json").write_text(json.dumps(vars(args), indent=2))
    run_model = torch.compile(model) if args.compile else model

    def state(epoch, step, partial=None):
        return {**identity, "epoch": epoch, "step": step, "partial": partial,
                "model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "tracker": tracker.state_dict(), "best": best,
                "args": vars(args), "rng": rng_state()}

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{ARCH}: {n_params:,} parameters | {args.dataset}: {len(splits['train'][0]):,} train, "
          f"{len(splits['test'][0]):,} test | {device}, amp {dtype}, channels_last {channels_last}")
    if splits["val"] is None:
        print("no --val-split: best.pt is the epoch with the best TEST top-1 (an optimistic "
              "pick); the final epoch is reported as well")
    interrupted = []  # Ctrl-C sets it; the loop stops between two steps and saves last.pt

    def on_sigint(*_):
        if interrupted:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        interrupted.append(True)
        print("\nCtrl-C: saving last.pt after this step (Ctrl-C again to abort)", flush=True)
    signal.signal(signal.SIGINT, on_sigint)

    epoch_times = []
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        model.train()
        train_loader.set_epoch(epoch)
        step0 = start_step if epoch == start_epoch else 0
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*B, correct, images
        if partial is not None and epoch == start_epoch:
            sums += torch.tensor(partial, dtype=torch.float64, device=device)
        progress = metrics.Progress(steps, args.progress_every)
        lr = optimizer.param_groups[0]["lr"]
        for i, (x, y) in enumerate(train_loader.iterate(step0), start=step0):
            rng = np.random.default_rng([args.seed, epoch, i])
            x, target = mixing.mix(x, y, data.NUM_CLASSES, rng, args.mixup_alpha,
                                   args.cutmix_alpha, args.mix_prob, args.switch_prob)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # the training step
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = run_model(x)
                loss = losses.soft_target_cross_entropy(logits, target, args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if args.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]  # the lr this step used, for the log
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            sums[0] += loss.detach() * len(y)
            sums[1] += (logits.argmax(1) == target.argmax(1)).sum()  # vs the dominant label
            sums[2] += len(y)
            progress.step(i, len(y), lambda: sums[0].item() / sums[2].item())
            if i % 20 == 0 and not torch.isfinite(sums[0]):  # a GPU sync every 20 steps only
                break  # reported below
            if interrupted:
                save_checkpoint(state(epoch, i + 1, sums.tolist()), out / "last.pt")
                print(f"interrupted: saved {out / 'last.pt'} at epoch {epoch + 1} batch "
                      f"{i + 1}/{steps}; continue with --resume")
                return None
        train_loss, train_acc = (sums[0] / sums[2]).item(), (100 * sums[1] / sums[2]).item()
        results = {name: evaluate(run_model, loader, dtype)
                   for name, loader in eval_loaders.items()}
        if ema is not None:
            for name, loader in eval_loaders.items():
                results[f"ema_{name}"] = evaluate(ema.module, loader, dtype)
        if not all(math.isfinite(v) for v in [train_loss] + [r["loss"] for r in results.values()]):
            raise FloatingPointError(
                f"the loss became non-finite in epoch {epoch + 1}; nothing of that epoch was saved "
                f"and {out / 'last.pt'} holds epoch {epoch}: lower --lr or set --clip-grad")
        row = {"epoch": epoch + 1, "lr": lr,
               "train_loss": train_loss, "train_acc": train_acc, "time": time.time() - t0}
        for name in ("val", "test", "ema_val", "ema_test"):
            for k in ("loss", "top1", "top5"):
                row[f"{name}_{k}"] = results[name][k] if name in results else math.nan
        tracker.append(**row)
        score = results[best["split"]]["top1"]
        if score > best["top1"]:
            best = {"epoch": epoch + 1, "top1": score, "split": best["split"]}
            save_checkpoint(state(epoch + 1, 0), out / "best.pt")
        save_checkpoint(state(epoch + 1, 0), out / "last.pt")
        if args.save_every and (epoch + 1) % args.save_every == 0:
            save_checkpoint(state(epoch + 1, 0), out / f"epoch_{epoch + 1}.pt")
        plot_curves(tracker.columns(), out / "training_curves.png", best["epoch"])
        epoch_times.append(time.time() - t0)
        eta = np.mean(epoch_times[-5:]) * (args.epochs - epoch - 1)
        print(metrics.epoch_line(epoch + 1, args.epochs, row, epoch_times[-1], eta), flush=True)
        if interrupted:
            print(f"interrupted: {out / 'last.pt'} holds epoch {epoch + 1}; continue with --resume")
            return None
        if args.target_acc and score >= args.target_acc:
            print(f"reached --target-acc {args.target_acc}% ({best['split']} top-1 {score:.2f}%)")
            break
    final = tracker.rows[-1] if tracker.rows else {}
    summary = {"best_epoch": best["epoch"], f"best_{best['split']}_top1": best["top1"],
               "final_epoch": int(final.get("epoch", 0)), "final_test_top1": final.get("test_top1"),
               "final_test_top5": final.get("test_top5")}
    print("done: " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    try:
        main(parse_args())
    except (data.DataError, CheckpointError, ValueError, FloatingPointError, OSError) as e:
        raise SystemExit(f"error: {e}")
