"""Redraw a run's training_curves.png from its metrics.npz (seed 000's plot_metrics.py).

Loss on the left, accuracy on the right, a horizontal line at the best validation top-1 (test
top-1 when the run had no --val-split). Works on any run dir of the repo, also while it trains.

    python se_res_inception/plot_metrics.py --run-dir runs/se_res_inception
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402

from common import curves, plots  # noqa: E402
from common.flags import Parser  # noqa: E402
from common.metrics import MetricsTracker  # noqa: E402

RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=str(RUN_DIR), help="holds metrics.npz")
    p.add_argument("--out", help="default: <run dir>/training_curves.png")
    return p


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
    out = Path(args.out or run / "training_curves.png")
    plots.save(curves.two_panel_curves(m), out)
    split = "val" if "val_top1" in m and not np.all(np.isnan(m["val_top1"])) else "test"
    line = f"{len(m['epoch'])} epochs"
    if f"{split}_top1" in m and not np.all(np.isnan(m[f"{split}_top1"])):
        i = int(np.nanargmax(m[f"{split}_top1"]))
        line += (f"; best {split} top-1 {m[f'{split}_top1'][i]:.2f}% at epoch "
                 f"{m['epoch'][i]:.0f}, final {m[f'{split}_top1'][-1]:.2f}%")
    print(f"{line}; wrote {out}")


if __name__ == "__main__":
    main(build_parser().parse_args())
