"""Train a CIFAR ResNet-34 on CIFAR-100: seed 003's enhanced [5,5,5,5] or the standard [3,4,6,3].

Defaults are seed 003's recipe: the enhanced variant, up to 200 epochs of SGD with Nesterov momentum
(lr 0.1, wd 5e-4) under OneCycle (start lr/25, 20 % warm-up, end lr/1000), stopping once test
top-1 reaches 75 %; label smoothing 0.1, gradient clipping 1.0, CutMix (alpha 1) on 30 % of the
batches; crop + flip + affine (p 0.5) + either coarse-dropout holes or Gaussian noise (p 0.3);
batch 128, seed 1, mixed precision on CUDA. Seed 003 reports 75.14 % test top-1 at epoch 165 on a
T4 (its figure, not re-measured here). Seed 001's recipe is one command, in README.md.

    python resnet34/train.py                                          # seed 003's recipe
    python resnet34/train.py --dataset synthetic --subset 500 --epochs 2 --batch-size 50   # CPU
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (curves, data, distributed, losses, metrics, mixing, plots,  # noqa: E402
                    runtime)
from common.augment import Augment, Loader, Normalize  # noqa: E402
from common.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, check_compatible,  # noqa
                               copy_checkpoint, load_checkpoint, load_weights, model_weights,
                               rng_state, save_checkpoint, set_rng_state)
from common.flags import Parser, ranged  # noqa: E402
from model import resnet34  # noqa: E402

# ---- the recipe: the only part that differs between the three train.py files --------------
ARCH = "resnet34"
RECIPES = {  # --recipe NAME; the first is the default
    "seed003": dict(
        variant="enhanced", dropout=0.3, epochs=200, target_acc=75.0, batch_size=128,
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        scheduler="onecycle", pct_start=0.2,  # 40 warm-up epochs of 200
        div_factor=25.0, final_div_factor=1000.0,  # lr 0.004 -> 0.1 -> 4e-6 (README: seed's 1e-4)
        label_smoothing=0.1, clip_grad=1.0, cutmix_alpha=1.0, mix_prob=0.3,
        translate=0.1, scale=[0.85, 1.15], rotate=15.0, affine_p=0.5,
        holes_p=0.15, noise_p=0.15,  # albumentations OneOf(p 0.3) of two equally likely transforms
        holes=8, hole_size=[8, 16],  # "8x16 pixel holes": 8 holes of 8-16 px, README.md
        seed=1, save_every=5),
    "seed001": dict(  # the torchvision ResNet-34 notebook: SGDR, Mixup + CutMix, crop + flip only
        variant="standard", dropout=0.0, epochs=400, batch_size=128, optimizer="sgd", lr=0.1,
        momentum=0.9, nesterov=False, weight_decay=1e-3, scheduler="cosine-restarts", t0=50,
        tmult=2, label_smoothing=0.1, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=1.0,
        save_every=20),
}


def add_model_args(g):
    g.add_argument("--variant", choices=["enhanced", "standard"],
                   help="enhanced: blocks [5,5,5,5] (seed 003); standard: [3,4,6,3] (seed 001)")
    g.add_argument("--dropout", type=ranged(float, 0, 1, hi_open=True),
                   help="before the classifier")


def build_model(args):
    model_args = {"variant": args.variant, "num_classes": data.NUM_CLASSES,
                  "dropout": args.dropout}
    return resnet34(**model_args), model_args


plot_curves = curves.overview_curves  # seed 003: 2x2 train/test loss/accuracy + learning rate
# ---- everything below is shared by the three train.py files --------------------------------


def build_parser(add_help=True):
    """The flags, grouped; their defaults are the recipe's (see `select_recipe` in parse_args)."""
    p = Parser(__doc__.split("\n\n")[0], RECIPES, add_help=add_help)
    unit, share, count = ranged(float, 0, 1), ranged(float, 0, 1), ranged(int, 0)
    p.add_argument("--recipe", default=next(iter(RECIPES)), choices=list(RECIPES),
                   help="a named set of defaults, listed at the end")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=str(HERE.parent / "data"), help="holds cifar-100-python/")
    g.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100",
                   help="synthetic: the offline stand-in, same shapes and class names")
    g.add_argument("--subset", type=count, default=0, help="train on N images (0 = all)")
    g.add_argument("--val-split", type=count, default=0,
                   help="hold out N training images to pick best.pt on (0 = pick on test)")
    g.add_argument("--num-workers", type=count, default=0,
                   help="accepted for seed 004's command line; unused: batches are drawn and "
                   "augmented on the device, with no loader processes")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=ranged(int, 1), help="passes over the training set")
    g.add_argument("--batch-size", type=ranged(int, 1),
                   help="images per optimizer step, over all GPUs under torchrun")
    g.add_argument("--accum-steps", type=ranged(int, 1), default=1,
                   help="split each batch into K micro-batches (gradient accumulation): the "
                   "memory of batch/K, the update of the whole batch")
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--lr", type=ranged(float, 0, 100, lo_open=True), help="peak learning rate")
    g.add_argument("--momentum", type=share, default=0.9, help="SGD only")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False,
                   help="SGD only")
    g.add_argument("--weight-decay", type=unit, help="L2 factor (SGD) or decoupled (AdamW)")
    g.add_argument("--scheduler", choices=["onecycle", "cosine", "cosine-restarts", "step"],
                   help="stepped once per optimizer step")
    g.add_argument("--pct-start", type=ranged(float, 0, 1, True, True), default=0.3,
                   help="onecycle: warm-up share")
    g.add_argument("--div-factor", type=ranged(float, 1), default=25.0,
                   help="onecycle: start lr = lr / this")
    g.add_argument("--final-div-factor", type=ranged(float, 1), default=1e4,
                   help="onecycle: end lr = start lr / this")
    g.add_argument("--t0", type=ranged(int, 1), default=50, help="cosine-restarts: first cycle, "
                   "epochs")
    g.add_argument("--tmult", type=ranged(int, 1), default=2, help="cosine-restarts: growth")
    g.add_argument("--step-epochs", type=ranged(int, 1), default=30,
                   help="step: epochs between lr drops")
    g.add_argument("--gamma", type=unit, default=0.1, help="step: lr factor per drop")
    g.add_argument("--clip-grad", type=ranged(float, 0), default=0.0,
                   help="max gradient norm (0 = off)")
    g.add_argument("--target-acc", type=ranged(float, 0, 100), default=0.0,
                   help="stop once eval top-1 %% reaches it (0 = never)")
    g = p.add_argument_group("regularization")
    g.add_argument("--label-smoothing", type=ranged(float, 0, 1, hi_open=True),
                   help="share of the target spread over all classes")
    g.add_argument("--mixup-alpha", type=ranged(float, 0), default=0.0, help="0 = no Mixup")
    g.add_argument("--cutmix-alpha", type=ranged(float, 0), default=0.0, help="0 = no CutMix")
    g.add_argument("--mix-prob", type=share, default=1.0, help="share of batches mixed")
    g.add_argument("--switch-prob", type=share, default=0.5,
                   help="CutMix share when both alphas > 0")
    g.add_argument("--ema", type=ranged(float, 0, 1, hi_open=True), default=0.0,
                   help="EMA decay per step, e.g. 0.999 (0 = off)")
    add_model_args(p.add_argument_group("model"))
    g = p.add_argument_group("augmentation (per image, batched on the device)")
    g.add_argument("--pad", type=ranged(int, 0, 16), default=4,
                   help="random crop of the zero-padded image, px")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="horizontal, p 0.5")
    g.add_argument("--rotate", type=ranged(float, 0, 180), default=0.0,
                   help="max rotation, degrees")
    g.add_argument("--translate", type=ranged(float, 0, 0.5), default=0.0,
                   help="max shift, fraction of the side")
    g.add_argument("--scale", type=ranged(float, 0.1, 10), nargs=2, default=[1.0, 1.0],
                   metavar=("LO", "HI"), help="zoom range")
    g.add_argument("--affine-p", type=share, default=1.0, help="chance of rotate/translate/scale")
    g.add_argument("--jitter", type=ranged(float, 0, 1), nargs=4, default=[0.0, 0.0, 0.0, 0.0],
                   metavar=("B", "C", "S", "H"),
                   help="colour jitter: brightness contrast saturation hue")
    g.add_argument("--erase-p", type=share, default=0.0, help="random erasing probability")
    g.add_argument("--holes-p", type=share, default=0.0, help="coarse dropout probability")
    g.add_argument("--holes", type=ranged(int, 1, 64), default=8,
                   help="coarse dropout: squares per image")
    g.add_argument("--hole-size", type=ranged(int, 1, 32), nargs=2, default=[8, 8],
                   metavar=("LO", "HI"), help="coarse dropout: each side drawn from LO..HI px")
    g.add_argument("--noise-p", type=share, default=0.0, help="Gaussian noise (never with holes)")
    g.add_argument("--noise-std", type=ranged(float, 0, 1), nargs=2, default=[0.0125, 0.0278],
                   metavar=("LO", "HI"), help="Gaussian noise: std range, on [0, 1] pixels")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto: CUDA, else MPS, else CPU")
    g.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
                   help="auto: bf16 on CUDA GPUs with native bf16 (compute capability 8.0+), "
                   "fp16 with loss scaling on older ones; off on CPU/MPS")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout; None = on for CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true",
                   help="CUDA: deterministic kernels and no cuDNN autotuning, so reruns and "
                   "resumes are bit-exact (slower)")
    g.add_argument("--seed", type=int, default=0, help="data order, augmentation and init")
    g.add_argument("--out-dir", default=str(HERE.parent / "runs" / HERE.name),
                   help="the run directory")
    g.add_argument("--save-every", type=count, default=0,
                   help="also keep epoch_N.pt every N epochs (0 = never)")
    g.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                   help="continue from PATH, or from OUT_DIR/last.pt; flags not given are restored")
    g.add_argument("--init", metavar="CKPT", help="start from these weights with a fresh "
                   "optimizer and schedule (fine-tuning, or going past a finished run)")
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on CUDA: BatchNorm statistics over the global batch")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log each epoch's figures to OUT_DIR/tensorboard "
                   "(pip install -r requirements-tensorboard.txt)")
    g.add_argument("--progress-every", type=ranged(float, 0), default=10.0,
                   help="seconds between progress lines")
    return p


def train_step(model, x, target, optimizer, scaler, dtype, smoothing=0.0, clip_grad=0.0,
               accum=1):
    """One optimizer step on a batch, in `accum` micro-batches -> (loss, logits), detached.

    The forward pass and the loss run under autocast (bf16/fp16 on CUDA, off elsewhere). With
    fp16 the loss is scaled up so small gradients do not flush to zero, and scaled back before
    clipping; a step whose gradients overflowed is skipped and the scale lowered. Micro-batch
    gradients add up in .grad (each loss divided by `accum`: the mean over the whole batch);
    under DDP every backward all-reduces, which gives the same sum.
    """
    optimizer.zero_grad(set_to_none=True)
    batch_losses, batch_logits = [], []
    for xk, tk in zip(x.chunk(accum), target.chunk(accum)):
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(xk)
            loss = losses.soft_target_cross_entropy(logits, tk, smoothing)
        scaler.scale(loss / accum).backward()
        batch_losses.append(loss.detach())
        batch_logits.append(logits.detach())
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return torch.stack(batch_losses).mean(), torch.cat(batch_logits)


def parse_args(argv=None):
    """Flags on the command line > the checkpoint's flags (--resume) > the recipe's defaults."""
    pre = build_parser(add_help=False)
    pre.set_defaults(recipe=None, out_dir=None)  # None: not on the command line
    given, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if given.resume:
        run_dir = Path(given.out_dir or parser.get_default("out_dir"))
        path = run_dir / "last.pt" if given.resume == "last" else Path(given.resume)
        saved = load_checkpoint(path)["args"]
        if given.recipe and given.recipe != saved.get("recipe"):
            parser.error(f"argument --recipe: the checkpoint was trained with recipe "
                         f"{saved.get('recipe')!r}; drop --recipe when resuming")
        parser.select_recipe(saved.get("recipe", next(iter(RECIPES))))
        parser.set_defaults(**{**saved, "resume": None, "init": None,  # --init was its start
                               "out_dir": str(given.out_dir or path.parent)})
    else:
        parser.select_recipe(given.recipe or next(iter(RECIPES)))
    args = parser.parse_args(argv)
    if given.resume:
        args.resume = str(path)
    return args


def check_args(args, world):
    """What a single flag's type cannot check."""
    if args.batch_size % (world * args.accum_steps):
        raise ValueError(f"--batch-size {args.batch_size} does not split into {world} rank(s) x "
                         f"{args.accum_steps} micro-batch(es) (--accum-steps): make it a "
                         f"multiple of {world * args.accum_steps}")
    if args.resume and args.init:
        raise ValueError("--resume continues a run, --init starts a new one from weights: "
                         "give one of them")
    if args.holes_p + args.noise_p > 1:
        raise ValueError("--holes-p plus --noise-p must be at most 1 (they share one draw)")
    if args.scale[0] > args.scale[1]:
        raise ValueError(f"--scale {args.scale[0]} {args.scale[1]}: LO must not exceed HI")


@torch.no_grad()
def evaluate(model, loader, dtype):
    """Plain cross-entropy, top-1 and top-5 (%) over a whole split (under torchrun each rank
    holds a disjoint share and the sums are added up); one host sync at the end."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=loader.x.device)  # loss, top-1, top-5
    for x, y in loader:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        hit = logits.topk(5, dim=1).indices == y[:, None]
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                             hit[:, 0].sum().double(), hit.any(1).sum().double()])
    sums = distributed.sum_over_ranks(torch.cat([sums, sums.new_tensor([len(loader.x)])]))
    loss, top1, top5 = (sums[:3] / sums[3]).tolist()
    return {"loss": loss, "top1": 100 * top1, "top5": 100 * top5}


def evaluate_all(model, run_model, ema, eval_loaders, dtype):
    """{"val"/"test"/"ema_val"/"ema_test": evaluate(...)} at the end of an epoch."""
    distributed.broadcast_buffers(model)  # under torchrun: rank 0's BatchNorm statistics, as saved
    results = {name: evaluate(run_model, loader, dtype) for name, loader in eval_loaders.items()}
    if ema is not None:
        distributed.broadcast_buffers(ema)
        for name, loader in eval_loaders.items():
            results[f"ema_{name}"] = evaluate(ema.module, loader, dtype)
    return results


def summarize(tracker, best):
    """The closing line: the best epoch (and on which split) and the final epoch's test figures."""
    final = tracker.rows[-1] if tracker.rows else {}
    summary = {"best_epoch": best["epoch"], f"best_{best['split']}_top1": best["top1"],
               "final_epoch": int(final.get("epoch", 0)), "final_test_top1": final.get("test_top1"),
               "final_test_top5": final.get("test_top5")}
    print("done: " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in summary.items()))
    return summary


def make_loaders(args, device, rank=0, world=1):
    """uint8 splits held on the device -> (splits, training loader, {"val"/"test": loader}).

    Each training batch is augmented as it is drawn; evaluation batches are only normalized.
    Every rank draws the whole global batch (the single-process stream) and later keeps its
    slice; evaluation splits are cut into disjoint contiguous shards, one per rank.
    """
    splits = data.load_splits(args.dataset, args.data_dir, args.subset, args.val_split)
    normalize = Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)
    augment = Augment(
        normalize, pad=args.pad, flip=args.flip, rotate=args.rotate, translate=args.translate,
        scale=tuple(args.scale), affine_p=args.affine_p, jitter=tuple(args.jitter),
        erase_p=args.erase_p, holes_p=args.holes_p, holes=args.holes,
        hole_size=tuple(args.hole_size), noise_p=args.noise_p, noise_std=tuple(args.noise_std))
    train_loader = Loader(splits["train"], args.batch_size, device, augment, shuffle=True,
                          seed=args.seed, drop_last=True)
    shard = lambda t: t[len(t) * rank // world:len(t) * (rank + 1) // world]  # noqa: E731
    eval_loaders = {name: Loader(tuple(map(shard, splits[name])), 500, device, normalize)
                    for name in ("val", "test") if splits[name] is not None}
    return splits, train_loader, eval_loaders


def initial_weights(path, fingerprint):
    """--init: the network weights of a checkpoint of the same architecture (any layout)."""
    ck = load_checkpoint(path)
    if isinstance(ck, dict) and "arch" in ck:  # ours: the fingerprint says what it is
        check_compatible(ck, **{k: fingerprint[k] for k in ("arch", "num_classes", "model_args")})
    return model_weights(ck, path)


def restore(args, fingerprint, device, model, ema, optimizer, scheduler, scaler, tracker,
            rank=0, world=1):
    """Load --resume's checkpoint into the run's objects -> (best, epoch, step, running sums)."""
    ck = load_checkpoint(args.resume, map_location=device)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{args.resume} was written by an older train.py; its weights still "
                              "load in evaluate.py or as --init CKPT, but it cannot be resumed")
    check_compatible(ck, **fingerprint)
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
    same_world = len(ck["rng"]) == world  # one entry per rank that wrote it
    set_rng_state(ck["rng"][rank if same_world else 0])
    sums = ck["running_sums"]
    if sums is not None:  # the unfinished epoch's sums: each rank its own, or all on rank 0
        sums = sums[rank] if same_world else (np.sum(sums, 0).tolist() if rank == 0 else None)
    print(f"resumed from {args.resume} at epoch {ck['epoch']} batch {ck['step']}")
    return ck["best"], ck["epoch"], ck["step"], sums


def main(args):
    rank, world, device = distributed.init(runtime.pick_device(args.device))  # 0, 1: python
    check_args(args, world)
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # one writer: rank 0 alone prints, plots and saves
    dtype = runtime.amp_dtype(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    runtime.set_kernels(args.deterministic)  # cuDNN autotuning, unless --deterministic
    out = Path(args.out_dir)
    if not args.resume and (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run; continue it with --resume, "
                         "or start a new one with --out-dir NEW_DIR")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    splits, train_loader, eval_loaders = make_loaders(args, device, rank, world)

    model, model_args = build_model(args)
    fingerprint = {"arch": ARCH, "num_classes": data.NUM_CLASSES, "dataset": args.dataset,
                   "model_args": model_args}  # what --resume, --init and evaluate.py check
    if args.init:  # weights only; the optimizer, schedule and epochs start afresh
        load_weights(model, initial_weights(args.init, fingerprint), args.init, ARCH)
    model = model.to(device, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)
    run_model = distributed.data_parallel(model, device, args.sync_bn)  # DDP under torchrun
    if world > 1:
        torch.manual_seed(args.seed * 1000 + rank)  # dropout masks differ between ranks
    ema = runtime.EMA(model, args.ema) if args.ema else None
    optimizer = runtime.build_optimizer(args, model.parameters())
    steps = len(train_loader)  # optimizer steps per epoch: the schedule counts these
    scheduler = runtime.build_scheduler(args, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    tracker = metrics.MetricsTracker(out if rank == 0 else None)
    start_epoch, start_step, running_sums = 0, 0, None
    best = {"epoch": 0, "top1": -1.0, "split": "val" if splits["val"] is not None else "test"}
    if args.resume:
        best, start_epoch, start_step, running_sums = restore(
            args, fingerprint, device, model, ema, optimizer, scheduler, scaler, tracker, rank,
            world)
    run_model = torch.compile(run_model) if args.compile else run_model
    board = runtime.tensorboard(out / "tensorboard") if args.tensorboard and rank == 0 else None
    if rank == 0:
        metrics.write_json(vars(args), out / "args.json")

    def save(paths, epoch, step=0, sums=None):  # every rank joins the gather; rank 0 writes
        mine = (rng_state(), None if sums is None else sums.tolist())
        per_rank = distributed.gather_objects(mine)
        state = {"format": CHECKPOINT_FORMAT, **fingerprint, "epoch": epoch, "step": step,
                 "running_sums": None if sums is None else [s for _, s in per_rank],
                 "model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "tracker": tracker.state_dict(), "best": best,
                 "args": vars(args), "rng": [r for r, _ in per_rank]}  # common/checkpoint.py
        if rank == 0:
            save_checkpoint(state, out / paths[0])
            for path in paths[1:]:  # best.pt, epoch_N.pt: links to the same file
                copy_checkpoint(out / paths[0], out / path)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{ARCH}: {n_params:,} parameters | {args.dataset}: {len(splits['train'][0]):,} train, "
          f"{len(splits['test'][0]):,} test | {device} x {world}, amp {dtype}, channels_last "
          f"{channels_last}" + (", --num-workers unused (no loader processes)"
                                if args.num_workers else ""))
    if splits["val"] is None:
        print("no --val-split: best.pt is the epoch with the best TEST top-1 (an optimistic "
              "pick); the final epoch is reported as well")
    epoch_times, plotted = [], 0.0
    with runtime.StopOnCtrlC("Ctrl-C: saving last.pt after this step (Ctrl-C again to abort)") \
            as stop:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            runtime.reset_peak_memory(device)
            model.train()
            train_loader.set_epoch(epoch)
            first = start_step if epoch == start_epoch else 0
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*B, correct, images
            if running_sums is not None and epoch == start_epoch:
                sums += torch.tensor(running_sums, dtype=torch.float64, device=device)
            progress = metrics.Progress(steps, args.progress_every)
            for i, (x, y) in enumerate(train_loader.iterate(first), start=first):
                rng = np.random.default_rng([args.seed, epoch, i])
                x, target = mixing.mix(x, y, data.NUM_CLASSES, rng, args.mixup_alpha,
                                       args.cutmix_alpha, args.mix_prob, args.switch_prob)
                x, target, y = (t.chunk(world)[rank] for t in (x, target, y))  # this rank's share
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
                        save(["last.pt"], epoch, i + 1, sums)
                        print(f"interrupted: saved {out / 'last.pt'} at epoch {epoch + 1} batch "
                              f"{i + 1}/{steps}; continue with --resume")
                        return None
            distributed.sum_over_ranks(sums)
            train_loss, train_acc = (sums[0] / sums[2]).item(), (100 * sums[1] / sums[2]).item()
            train_time = time.time() - t0  # .item() above waited for the GPU
            results = evaluate_all(model, run_model, ema, eval_loaders, dtype)
            if not all(map(math.isfinite, [train_loss] + [r["loss"] for r in results.values()])):
                raise FloatingPointError(
                    f"the loss became non-finite in epoch {epoch + 1}; nothing of that epoch was "
                    f"saved and {out / 'last.pt'} holds epoch {epoch}: lower --lr or set "
                    "--clip-grad")
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "train_images": sums[2].item(), "train_time": train_time,
                   "peak_mem_mb": runtime.peak_memory_mb(device)}
            for name in ("val", "test", "ema_val", "ema_test"):
                for k in ("loss", "top1", "top5"):
                    row[f"{name}_{k}"] = results[name][k] if name in results else math.nan
            row["time"] = time.time() - t0
            tracker.append(**row)
            score = results[best["split"]]["top1"]
            if score > best["top1"]:
                best = {"epoch": epoch + 1, "top1": score, "split": best["split"]}
            keep = args.save_every and (epoch + 1) % args.save_every == 0
            save(["last.pt"] + ["best.pt"] * (best["epoch"] == epoch + 1)
                 + [f"epoch_{epoch + 1}.pt"] * bool(keep), epoch + 1)
            finished = epoch + 1 == args.epochs or (args.target_acc and score >= args.target_acc)
            if rank == 0 and (finished or stop or time.time() - plotted > 30):  # ~1 s a plot
                figure = plot_curves(tracker.columns(), best["epoch"])
                plots.save(figure, out / "training_curves.png")
                plotted = time.time()
            runtime.log_scalars(board, row)
            epoch_times.append(time.time() - t0)
            eta = np.mean(epoch_times[-5:]) * (args.epochs - epoch - 1)
            print(metrics.epoch_line(epoch + 1, args.epochs, row, epoch_times[-1], eta),
                  flush=True)
            if distributed.any_rank(stop)[0]:
                print(f"interrupted: {out / 'last.pt'} holds epoch {epoch + 1}; continue with "
                      "--resume")
                return None
            if finished and epoch + 1 < args.epochs:
                print(f"reached --target-acc {args.target_acc}% ({best['split']} top-1 "
                      f"{score:.2f}%)")
                break
    return summarize(tracker, best)


if __name__ == "__main__":
    try:
        main(parse_args())
        distributed.close()
    except (data.DataError, CheckpointError, ValueError, FloatingPointError, OSError) as e:
        raise SystemExit(f"error: {e}")
