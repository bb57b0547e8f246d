"""A small hyper-parameter sweep of resnet34/train.py (a to-do of the "CIFAR-100 ResNet-34
Training Pipeline" notebook: "hyperparameter tuning").

Runs one short training per (lr, weight decay) pair of the grid, each as its own
`python resnet34/train.py` process with its own run dir (train.py is run, never imported), then
overlays their loss and accuracy curves in sweep.png and writes the table of final figures to
sweep.md and sweep.json. The runs are compared on a validation split held out from their
training images, never on the test set, which would then stop being a fair test of the winner:
the table names the pair with the best final validation top-1 and shows test top-1 beside it.
Flags this script does not know go to train.py unchanged, after the sweep's own defaults
(SWEEP_DEFAULTS: 10 epochs on 5,000 training images, 500 of them held out for validation, 1,000
test images, no epoch checkpoints), so any of them can be overridden. A finished run is reused,
an interrupted one resumed; a run whose loss turns non-finite is reported as diverged and the
sweep goes on.

    python resnet34/sweep.py --lrs 0.03 0.1 0.3 --weight-decays 5e-4 1e-3 --variant standard
    python resnet34/sweep.py --dataset synthetic --subset 200 --val-split 50 --test-subset 100 \\
        --epochs 2 --batch-size 50 --lrs 0.01 0.1 --weight-decays 5e-4   # CPU, a few minutes
"""
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from common import runtime  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from common.data import DataError  # noqa: E402
from common.flags import Parser  # noqa: E402
from common.metrics import MetricsTracker, save_figure, write_json  # noqa: E402


def build_parser():
    p = Parser(__doc__.split("\n\n")[0], epilog="Other flags go to resnet34/train.py (see its "
               f"--help), after the sweep's defaults:\n  {' '.join(SWEEP_DEFAULTS)}\nThe runs "
               "are ranked on that validation split, never on the test set.",
               allow_abbrev=False)  # else train's --lr would read as --lrs
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3],
                   help="peak learning rates")
    p.add_argument("--weight-decays", type=float, nargs="+", default=[5e-4, 1e-3])
    p.add_argument("--out-dir", default=str(HERE.parent / "runs" / HERE.name / "sweep"),
                   help="one run dir per pair inside, plus sweep.png/.md/.json")
    return p


# short runs on a stratified tenth of the training set; 500 of its images (5 a class) rank the
# runs; the test set shrinks with it (10 a class), so each epoch's evaluation stays cheap
SWEEP_DEFAULTS = ["--epochs", "10", "--subset", "5000", "--val-split", "500",
                  "--test-subset", "1000", "--save-every", "0"]


def run_one(argv, run_dir):
    """Train one configuration in its own process (or reuse/resume it) -> (status, seconds).

    Ctrl-C reaches train.py too, which saves last.pt and exits; the sweep then stops."""
    t0 = time.time()
    argv = argv + ["--out-dir", str(run_dir)]
    if (run_dir / "last.pt").exists():
        ck = load_checkpoint(run_dir / "last.pt")
        if ck["epoch"] >= ck["args"]["epochs"] and ck.get("running_sums") is None:
            print(f"reusing the finished run in {run_dir}")
            return "done (reused)", 0.0
        argv = argv + ["--resume"]
    with runtime.StopOnCtrlC("Ctrl-C: the run saves last.pt, then the sweep stops") as stop:
        p = subprocess.run([sys.executable, str(HERE / "train.py"), *argv], stderr=subprocess.PIPE,
                           text=True)
    sys.stderr.write(p.stderr)
    if stop:
        return "interrupted", time.time() - t0
    if p.returncode and "non-finite" in p.stderr:
        return "diverged", time.time() - t0
    if p.returncode:
        raise ValueError(f"train.py failed: {p.stderr.strip().splitlines()[-1]}")
    return "done", time.time() - t0


def final_row(lr, wd, status, seconds, run_dir):
    """The run's last epoch (and its best validation epoch) -> (table row, metrics or None)."""
    row = {"lr": lr, "weight_decay": wd, "status": status, "seconds": round(seconds, 1),
           "epochs": 0, "train_loss": None, "val_loss": None, "val_top1": None,
           "best_val_top1": None, "best_epoch": None, "test_top1": None, "run_dir": str(run_dir)}
    if not (run_dir / "metrics.npz").exists():
        return row, None
    m = MetricsTracker.load(run_dir)
    last = lambda k: float(m[k][-1]) if k in m else None  # noqa: E731  (val_*: --val-split)
    row.update(epochs=int(m["epoch"][-1]), train_loss=last("train_loss"),
               val_loss=last("val_loss"), val_top1=last("val_top1"), test_top1=last("test_top1"))
    if "val_top1" in m:
        best = int(np.nanargmax(m["val_top1"]))  # the epoch train.py's best.pt holds
        row.update(best_val_top1=float(m["val_top1"][best]), best_epoch=int(m["epoch"][best]))
    return row, m


def winner(rows):
    """The row with the highest final validation top-1, or None (no run has a val split)."""
    scored = [r for r in rows if r["val_top1"] is not None and r["status"].startswith("done")]
    return max(scored, key=lambda r: r["val_top1"], default=None)


def table(rows):
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = ["| lr | weight decay | epochs | final train loss | final val loss | final val top-1 "
             "(%) | best val top-1 (%) @ epoch | final test top-1 (%) | time (s) | status |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        best = "-" if r["best_epoch"] is None else f"{r['best_val_top1']:.2f} @ {r['best_epoch']}"
        lines.append(f"| {r['lr']:g} | {r['weight_decay']:g} | {r['epochs']} | "
                     f"{fmt(r['train_loss'], '.4f')} | {fmt(r['val_loss'], '.4f')} | "
                     f"{fmt(r['val_top1'], '.2f')} | {best} | {fmt(r['test_top1'], '.2f')} | "
                     f"{r['seconds']:.0f} | {r['status']} |")
    w = winner(rows)
    lines.append("\n" + ("no run held out a validation split (--val-split 0): nothing is ranked"
                         if w is None else f"best by final validation top-1: lr {w['lr']:g}, "
                         f"weight decay {w['weight_decay']:g} ({w['val_top1']:.2f}% val, "
                         f"{w['test_top1']:.2f}% test)"))
    return "\n".join(lines)


def plot(curves, path, title):
    """Loss (train solid, val dashed) and accuracy (val solid, train dashed), one colour a run.
    Runs without a val split (--val-split 0) show their test curves instead, and say so."""
    split = "val" if all("val_top1" in m for _, m in curves) else "test"
    fig = Figure(figsize=(13, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k, (label, m) in enumerate(curves):
        c = f"C{k % 10}"
        style = {"marker": "o", "markersize": 3} if len(m["epoch"]) < 30 else {}
        left.plot(m["epoch"], m["train_loss"], color=c, label=label, **style)
        left.plot(m["epoch"], m[f"{split}_loss"], color=c, ls="--", **style)
        right.plot(m["epoch"], m[f"{split}_top1"], color=c, label=label, **style)
        right.plot(m["epoch"], m["train_acc"], color=c, ls="--", alpha=0.6, **style)
    losses = np.concatenate([np.r_[m["train_loss"], m[f"{split}_loss"]] for _, m in curves])
    if np.nanmax(losses) > 10 * np.nanmin(losses):  # one blown-up run would flatten the others
        left.set_yscale("log")
    left.set(title=f"loss (solid: train, dashed: {split})", xlabel="epoch", ylabel="loss")
    right.set(title=f"top-1 accuracy (solid: {split}, dashed: train vs the dominant label)",
              xlabel="epoch", ylabel="top-1 (%)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2 if len(curves) > 6 else 1, loc="best")
    fig.suptitle(title)
    save_figure(fig, path)


def main(argv=None):
    args, rest = build_parser().parse_known_args(argv)
    if not args.lrs or not args.weight_decays or min(args.lrs) <= 0 or min(args.weight_decays) < 0:
        raise ValueError("--lrs must be positive and --weight-decays non-negative")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], []
    grid = [(lr, wd) for lr in args.lrs for wd in args.weight_decays]
    for n, (lr, wd) in enumerate(grid, 1):
        print(f"== sweep {n}/{len(grid)}: lr {lr:g}, weight decay {wd:g}", flush=True)
        run_dir = out / f"lr{lr:g}_wd{wd:g}"
        status, seconds = run_one(SWEEP_DEFAULTS + rest + ["--lr", str(lr),
                                                           "--weight-decay", str(wd)], run_dir)
        row, m = final_row(lr, wd, status, seconds, run_dir)
        rows.append(row)
        if m is not None:
            curves.append((f"lr {lr:g}, wd {wd:g}", m))
        if status == "interrupted":
            break
    md = table(rows)
    print(md)
    cfg = json.loads((Path(rows[0]["run_dir"]) / "args.json").read_text())  # the runs' flags
    title = (f"Sweep: ResNet-34 {cfg['variant']}, {cfg['dataset']} ({cfg['subset'] or 'all'} "
             f"images, {cfg['val_split']} of them held out for validation, "
             f"{cfg['epochs']} epochs, {cfg['scheduler']})")
    (out / "sweep.md").write_text(f"# {title}\n\n{md}\n")
    write_json({"train_args": SWEEP_DEFAULTS + rest, "runs": rows}, out / "sweep.json")
    if curves:
        plot(curves, out / "sweep.png", title)
    print(f"wrote sweep.png, sweep.md and sweep.json to {out}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except (DataError, CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
