"""Train a CIFAR ResNet-34 on CIFAR-100: the enhanced [5,5,5,5] or the standard [3,4,6,3].

The default recipe is that of "CIFAR-100 Classification with Enhanced ResNet34": the enhanced
variant, 200 epochs of SGD with Nesterov momentum (lr 0.1, wd 5e-4) under OneCycle (start lr/25,
20 % warm-up, end lr/1000); label smoothing 0.1, gradient clipping 1.0, CutMix (alpha 1) on 30 %
of the batches; crop + flip + affine (p 0.5) + either coarse-dropout holes or Gaussian noise
(p 0.3); batch 128, seed 1, mixed precision on CUDA. That project reports 75.14 % test top-1 at
epoch 165 on a T4, where it stopped on reaching 75 % on the test set (its figure, not re-measured
here; `--select-on-test --target-acc 75` does the same). `--recipe sgdr-400-mixup-cutmix` is the
"CIFAR-100 ResNet-34 Training Pipeline" notebook's recipe (README.md).

    python resnet34/train.py                                          # the recipe, on a GPU
    python resnet34/train.py --dataset synthetic --subset 500 --test-subset 500 --epochs 2 \
        --batch-size 50                                               # a CPU smoke run
"""
import contextlib
import functools
import math
import os
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

from common import data, distributed, flags, metrics, mixing, runtime  # noqa: E402
from common.augment import Augment, Normalize  # noqa: E402
from common.checkpoint import (CheckpointError, TrainState, check_compatible,  # noqa: E402
                               load_checkpoint, load_weights)
from common.flags import ranged  # noqa: E402
from common.loader import Loader  # noqa: E402
from curves import plot_curves  # noqa: E402  (this folder's training figure)
from model import resnet34  # noqa: E402

# ---- the recipe: the only part that differs between the three train.py files --------------
ARCH = "resnet34"
RECIPES = {  # --recipe NAME; the first is the default
    "onecycle-200-cutmix": dict(  # the Enhanced ResNet34 project's (75.14 % at epoch 165)
        variant="enhanced", dropout=0.3, epochs=200, batch_size=128,
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        scheduler="onecycle", pct_start=0.2,  # 40 warm-up epochs of 200
        div_factor=25.0, final_div_factor=1000.0,  # lr 0.004 -> 0.1 -> 4e-6 (README.md)
        label_smoothing=0.1, clip_grad=1.0, cutmix_alpha=1.0, mix_prob=0.3,
        translate=0.1, scale=[0.85, 1.15], rotate=15.0, affine_p=0.5,
        holes_p=0.15, noise_p=0.15,  # albumentations OneOf(p 0.3) of two equally likely transforms
        holes=8, hole_size=[8, 16],  # "8x16 pixel holes": 8 holes of 8-16 px, README.md
        seed=1, save_every=5),
    "sgdr-400-mixup-cutmix": dict(  # the ResNet-34 pipeline notebook: SGDR, crop + flip only
        variant="standard", dropout=0.0, epochs=400, batch_size=128, optimizer="sgd", lr=0.1,
        momentum=0.9, nesterov=False, weight_decay=1e-3, scheduler="cosine-restarts", t0=50,
        tmult=2, label_smoothing=0.1, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=1.0,
        save_every=20),
}
RENAMED = {"seed003": "onecycle-200-cutmix", "seed001": "sgdr-400-mixup-cutmix"}  # before 12-07


def add_model_args(g):
    g.add_argument("--variant", choices=["enhanced", "standard"],
                   help="enhanced: blocks [5,5,5,5]; standard: torchvision's [3,4,6,3]")
    g.add_argument("--dropout", type=ranged(float, 0, 1, hi_open=True),
                   help="before the classifier")


def build_model(args):
    model_args = {"variant": args.variant, "num_classes": data.NUM_CLASSES,
                  "dropout": args.dropout}
    return resnet34(**model_args), model_args


# ---- everything below is shared by the three train.py files --------------------------------
BEST_PT = {None: "none (no --val-split); the final epoch is the run's result",
           "val": "chosen on the validation split",
           "test": "chosen on the TEST split (--select-on-test): an optimistic figure"}


def build_parser(add_help=True):
    """The shared flags (common/flags.py), this folder's model flags, the first recipe's values."""
    return flags.training_parser(__doc__, RECIPES, add_model_args, HERE, add_help, RENAMED)


def parse_args(argv=None):
    """Flags on the command line > the checkpoint's flags (--resume) > the recipe's defaults."""
    return flags.parse_training_args(build_parser, argv, lambda p: load_checkpoint(p)["args"])


def train_step(model, x, target, optimizer, scaler, dtype, smoothing=0.0, clip_grad=0.0,
               accum=1):
    """One optimizer step on a batch, in `accum` micro-batches -> (loss, logits), detached.

    Forward and loss run under autocast (bf16/fp16 on CUDA, off elsewhere); with fp16 the loss
    is scaled so small gradients do not flush to zero, and a step whose gradients overflowed is
    skipped. Micro-batch gradients add up in .grad (each loss / accum: the batch mean); under
    DDP only the last backward all-reduces (no_sync on the others), which gives the same sum.
    """
    optimizer.zero_grad(set_to_none=True)
    batch_losses, batch_logits = [], []
    for k, (xk, tk) in enumerate(zip(x.chunk(accum), target.chunk(accum))):
        last = k == accum - 1 or not hasattr(model, "no_sync")  # no_sync: DDP's
        with contextlib.nullcontext() if last else model.no_sync():
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(xk)
                loss = mixing.soft_target_cross_entropy(logits, tk, smoothing)
            scaler.scale(loss / accum).backward()
        batch_losses.append(loss.detach())
        batch_logits.append(logits.detach())
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return torch.stack(batch_losses).mean(), torch.cat(batch_logits)


@torch.no_grad()
def evaluate(model, loader):
    """Cross-entropy, top-1 and top-5 (%) over a split in float32, as evaluate.py reports them;
    under torchrun each rank sums its share and the sums are added up. One host sync."""
    model.eval()
    sums = torch.zeros(4, device=loader.x.device)  # loss, top-1, top-5, images: float32 holds
    for x, y in loader:                             # counts below 2^24 exactly
        logits = model(x).float()
        hit = logits.topk(5, dim=1).indices == y[:, None]
        sums[:3] += torch.stack([F.cross_entropy(logits, y, reduction="sum"), hit[:, 0].sum(),
                                 hit.any(1).sum()])
        sums[3] += len(y)
    loss, top1, top5, n = distributed.sum_over_ranks(sums).tolist()  # divided on the host
    return {"loss": loss / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n}


def evaluate_all(model, ema, loaders):
    """{"val"/"test"/"ema_val"/"ema_test": evaluate(...)}, with rank 0's BatchNorm statistics
    on every rank first: evaluation uses the weights rank 0 saves."""
    distributed.broadcast_buffers(model)
    results = {name: evaluate(model, loader) for name, loader in loaders.items()}
    if ema is not None:
        distributed.broadcast_buffers(ema.module)  # not AveragedModel's counter: on the CPU
        results.update({f"ema_{name}": evaluate(ema.module, loader)
                        for name, loader in loaders.items()})
    return results


def make_loaders(args, device, rank=0, world=1):
    """-> (splits, training loader: this rank's slice of each batch, augmented and mixed, as
    (images, soft targets, labels), {"val"/"test": loader of normalized batches})."""
    with distributed.local_rank_zero_first():  # one download per machine, the others wait
        splits = data.load_splits(args.dataset, args.data_dir, args.subset, args.test_subset,
                                  args.val_split)
    if not getattr(args, "normalize", None):  # the training images' own; older runs resume
        args.normalize = (data.CIFAR100_MEAN, data.CIFAR100_STD) if args.resume else \
            data.channel_stats(splits["train"][0])  # with CIFAR-100's; checkpoints keep it
    normalize = Normalize(*args.normalize)
    augment = Augment(
        normalize, pad=args.pad, flip=args.flip, rotate=args.rotate, translate=args.translate,
        scale=tuple(args.scale), affine_p=args.affine_p, jitter=tuple(args.jitter),
        erase_p=args.erase_p, holes_p=args.holes_p, holes=args.holes,
        hole_size=tuple(args.hole_size), noise_p=args.noise_p, noise_std=tuple(args.noise_std))
    if args.compile:
        augment.compile()  # shape-static: one fused graph instead of ~160 small kernels
    mix = functools.partial(mixing.mix, mixup_alpha=args.mixup_alpha, prob=args.mix_prob,
                            cutmix_alpha=args.cutmix_alpha, switch_prob=args.switch_prob,
                            num_classes=data.NUM_CLASSES)  # Mixup / CutMix, per batch
    train_loader = Loader(splits["train"], args.batch_size, device, augment, shuffle=True,
                          seed=args.seed, drop_last=True, mix=mix, part=(rank, world))
    eval_loaders = {name: Loader(splits[name], 1000, device, normalize, part=(rank, world))
                    for name in ("val", "test") if splits[name] is not None}
    return splits, train_loader, eval_loaders


def initial_weights(model, path, fingerprint):
    """--init: load the network weights of a checkpoint of the same architecture (any layout)."""
    ck = load_checkpoint(path)
    if ck.get("arch") is not None:  # ours: the fingerprint says what it is
        check_compatible(ck, **{k: fingerprint[k] for k in ("arch", "num_classes", "model_args")})
    load_weights(model, ck.get("model"), f"--init {path}")


def summarize(tracker, best, select):
    """The closing line: the final epoch's test figures (the run's result), then best.pt's."""
    final = tracker.rows[-1]
    print(f"done: final test top-1 {final['test_top1']:.2f}% top-5 {final['test_top5']:.2f}% "
          f"(epoch {final['epoch']:.0f}, last.pt: the run's result)" + (
              f"; best.pt: epoch {best['epoch']}, top-1 {best['top1']:.2f}%, {BEST_PT[select]}"
              if select else ""))
    return {"final_epoch": int(final["epoch"]), "final_test_top1": final["test_top1"],
            "final_test_top5": final["test_top5"], "best_epoch": best["epoch"] if select else None,
            "best_split": select}


def main(args):
    rank, world, device = distributed.init(runtime.pick_device(args.device))  # 0, 1: python
    flags.check_training_args(args, world)
    runtime.check_device(args, device)  # what Apple's MPS cannot do, in one line
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # one writer: rank 0 alone prints, plots and saves
    dtype = runtime.amp_dtype(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    runtime.set_kernels(args.deterministic, device)  # cuDNN autotuning, unless --deterministic
    out = Path(args.out_dir)
    if not args.resume and (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run: continue it with --resume, or start a new "
                         f"one with --out-dir NEW_DIR (or delete {out})")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    splits, train_loader, eval_loaders = make_loaders(args, device, rank, world)

    model, model_args = build_model(args)
    fingerprint = {"arch": ARCH, "num_classes": data.NUM_CLASSES, "dataset": args.dataset,
                   "model_args": model_args}  # what --resume, --init and evaluate.py check
    if args.init:  # weights only; the optimizer, schedule and epochs start afresh
        initial_weights(model, args.init, fingerprint)
    model = model.to(device, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)
    run_model = distributed.data_parallel(model, device, args.sync_bn)  # DDP under torchrun
    if world > 1:
        torch.manual_seed(args.seed * 1000 + rank)  # dropout masks differ between ranks
    ema = runtime.EMA(model, args.ema) if args.ema else None
    optimizer = runtime.build_optimizer(args, model.parameters(), device)
    steps = len(train_loader)  # optimizer steps per epoch: the schedule counts these
    scheduler = runtime.build_scheduler(args, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    tracker = metrics.MetricsTracker(out if rank == 0 else None)
    state = TrainState(fingerprint, args, {  # everything last.pt holds; common/checkpoint.py
        "model": model, "ema": ema, "optimizer": optimizer, "scheduler": scheduler,
        "scaler": scaler, "tracker": tracker}, device, rank, world, distributed.gather_objects)
    select = "val" if splits["val"] is not None else "test" if args.select_on_test else None
    state.best["split"] = select  # where best.pt is chosen: None, no best.pt
    if args.resume:
        state.resume(args.resume)
    run_model = torch.compile(run_model) if args.compile else run_model
    eval_model = torch.compile(model) if args.compile else model  # no DDP: no collectives
    board = runtime.tensorboard(out / "tensorboard") if args.tensorboard and rank == 0 else None
    if rank == 0:
        metrics.write_json(vars(args), out / "args.json")

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{ARCH}: {n_params:,} parameters | {args.dataset}: {splits['sizes']} | {device} x "
          f"{world}, amp {dtype}, channels_last {channels_last}"
          + (", --num-workers unused (no loader processes)" if args.num_workers else ""))
    print(f"best.pt: {BEST_PT[select]}")
    epoch_times, plotted, best, plotter = [], time.time(), state.best, metrics.Plotter()
    with runtime.StopOnCtrlC("Ctrl-C: saving last.pt after this step (Ctrl-C again to abort)") \
            as stop, state:  # leaving `state` waits for the last checkpoint write
        for epoch in range(state.epoch, args.epochs):
            t0 = time.time()
            model.train()
            train_loader.set_epoch(epoch)
            first = state.step if epoch == state.epoch else 0
            sums = torch.zeros(3, device=device)  # loss x images, correct, images (float32:
            if state.sums is not None and epoch == state.epoch:  # counts below 2^24 are exact)
                sums += torch.tensor(state.sums, device=device)
            progress = metrics.Progress(steps, args.progress_every)
            for i, (x, target, y) in enumerate(train_loader.iterate(first), start=first):
                # this rank's share of batch i: augmented, mixed, soft targets (common/loader.py)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = optimizer.param_groups[0]["lr"]  # the lr this step uses, for the log
                loss, logits = train_step(run_model, x, target, optimizer, scaler, dtype,
                                          args.label_smoothing, args.clip_grad, args.accum_steps)
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                sums[0] += loss * len(y)
                sums[1] += (logits.argmax(1) == target.argmax(1)).sum()  # vs the dominant label
                sums[2] += len(y)
                progress.step(i, len(y) * world, lambda: sums[0].item() / sums[2].item())
                if i % 20 == 0 or (stop and world == 1):  # a host sync; ranks decide together
                    blew_up, halt = distributed.any_rank(not torch.isfinite(sums[0]), stop)
                    if blew_up:
                        break  # reported below
                    if halt:
                        state.epoch, state.step = epoch, i + 1
                        state.save(out, ["last.pt"], sums.tolist())
                        state.wait()
                        print(f"interrupted: saved {out / 'last.pt'} at epoch {epoch + 1} batch "
                              f"{i + 1}/{steps}; continue with --resume")
                        return None
            loss_sum, correct, images = distributed.sum_over_ranks(sums).tolist()
            train_loss, train_acc = loss_sum / images, 100 * correct / images
            train_time = time.time() - t0  # .tolist() above waited for the GPU
            results = evaluate_all(eval_model, ema, eval_loaders)
            if not all(map(math.isfinite, [train_loss] + [r["loss"] for r in results.values()])):
                raise FloatingPointError(
                    f"the loss became non-finite in epoch {epoch + 1}; nothing of that epoch was "
                    f"saved and {out / 'last.pt'} holds epoch {epoch}: lower --lr or set "
                    "--clip-grad")
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "train_images": images, "train_time": train_time,
                   **{f"{name}_{k}": r[k] for name, r in results.items() for k in r},
                   "peak_mem_mb": runtime.peak_memory_mb(device)}
            tracker.append(**row)
            score = results[select]["top1"] if select else math.nan
            if score > best["top1"]:
                best.update(epoch=epoch + 1, top1=score)
            state.epoch, state.step, state.sums = epoch + 1, 0, None
            keep = args.save_every and (epoch + 1) % args.save_every == 0
            names = ["last.pt"] + ["best.pt"] * (best["epoch"] == epoch + 1) + \
                [f"epoch_{epoch + 1}.pt"] * bool(keep)
            row["save_time"] = state.save(out, names)  # a copy to the host; a thread writes it
            finished = epoch + 1 == args.epochs or args.target_acc and score >= args.target_acc
            if rank == 0 and (finished or stop or time.time() - plotted > 30):  # on a thread
                plotter(functools.partial(plot_curves, tracker.columns(), best["epoch"] or None),
                        out / "training_curves.png")
                plotted = time.time()
            row["time"] = time.time() - t0  # the whole epoch: training, evaluation, checkpoint
            tracker.amend(save_time=row["save_time"], time=row["time"])
            runtime.log_scalars(board, row)
            epoch_times.append(row["time"])  # this process's epochs: the ETA's basis
            eta = np.mean(epoch_times[-5:]) * (args.epochs - epoch - 1)
            print(metrics.epoch_line(epoch + 1, args.epochs, row, row["time"], eta), flush=True)
            if distributed.any_rank(stop)[0]:
                plotter.join()
                print(f"interrupted: {out / 'last.pt'} holds epoch {epoch + 1}; continue with "
                      "--resume")
                return None
            if finished and epoch + 1 < args.epochs:
                print(f"reached --target-acc {args.target_acc}% ({select} top-1 {score:.2f}%)")
                break
    plotter.join()
    return summarize(tracker, best, select)


if __name__ == "__main__":
    try:
        main(parse_args())
        distributed.close()
    except (data.DataError, CheckpointError, ValueError, FloatingPointError, OSError) as e:
        raise SystemExit(f"error: {e}")
