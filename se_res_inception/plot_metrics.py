"""Redraw a run's training_curves.png from its metrics.npz (the "SE-Res-Inception V2" CIFAR-100
project's plot_metrics.py).

Loss on the left, accuracy on the right (this folder's curves.py, the figure train.py draws), a
horizontal line at the top-1 of the epoch best.pt holds: chosen on the validation split
(--val-split), or on the test split where the run was told so (--select-on-test, optimistic);
a run with neither has no best.pt, and the line marks the final epoch's test top-1, the run's
result. Works on any run dir of this folder, also while it trains.

    python se_res_inception/plot_metrics.py --run-dir runs/se_res_inception
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402

from common.flags import Parser  # noqa: E402
from common.metrics import MetricsTracker, save_figure  # noqa: E402
from curves import plot_curves  # noqa: E402  (this folder's training figure)

RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=str(RUN_DIR), help="holds metrics.npz (and args.json)")
    p.add_argument("--out", help="default: <run dir>/training_curves.png")
    return p


def selection_split(m, run):
    """The split best.pt was chosen on, as train.py chose it: "val" (the run held one out),
    "test" (--select-on-test, per the run's args.json) or None (no best.pt)."""
    if "val_top1" in m and not np.all(np.isnan(m["val_top1"])):
        return "val"
    try:
        args = json.loads((run / "args.json").read_text())
    except (OSError, ValueError):  # no args.json (a run of another repo): nothing was chosen
        return None
    return "test" if args.get("select_on_test") else None


def main(args):
    run = Path(args.run_dir)
    if not (run / "metrics.npz").is_file():
        raise SystemExit(f"error: no metrics.npz in {run}; train first "
                         f"(python {HERE.name}/train.py --out-dir DIR) or pass --run-dir DIR")
    try:
        m = MetricsTracker.load(run)
    except Exception as e:  # truncated or not an npz: one line, no traceback
        raise SystemExit(f"error: {run / 'metrics.npz'} is unreadable ({type(e).__name__}: {e})")
    if "epoch" not in m or len(m["epoch"]) == 0:
        raise SystemExit(f"error: {run / 'metrics.npz'} has no epoch rows yet")
    split = selection_split(m, run)
    best = None
    if split:  # train.py keeps the first epoch of the highest top-1
        best = int(m["epoch"][int(np.nanargmax(m[f"{split}_top1"]))])
    out = Path(args.out or run / "training_curves.png")
    save_figure(plot_curves(m, best), out)
    line = f"{len(m['epoch'])} epochs"
    if "test_top1" in m:
        line += f"; final test top-1 {m['test_top1'][-1]:.2f}% (the run's result)"
    if best is not None:
        i = int(np.flatnonzero(m["epoch"] == best)[0])
        line += (f"; best.pt: epoch {best}, chosen on {split} top-1 {m[f'{split}_top1'][i]:.2f}%"
                 + (" (the test split: optimistic)" if split == "test" else ""))
    print(f"{line}; wrote {out}")


if __name__ == "__main__":
    main(build_parser().parse_args())
