"""Redraw a run's training_curves.png from its metrics.npz (seed 000's plot_metrics.py).

Loss on the left, accuracy on the right, a horizontal line at the best validation top-1 (test
top-1 when the run had no --val-split). Works on any run dir of the repo, also while it trains.

    python se_res_inception/plot_metrics.py --run-dir runs/se_res_inception
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from the repo root or from inside the folder

import numpy as np  # noqa: E402

from common import plots  # noqa: E402
from common.metrics import MetricsTracker  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--run-dir", default=str(ROOT / "runs/se_res_inception"),
                    help="holds metrics.npz; default: runs/se_res_inception under the repo root")
parser.add_argument("--out", help="default: <run dir>/training_curves.png")


def main(args):
    run = Path(args.run_dir)
    if not (run / "metrics.npz").is_file():
        raise SystemExit(f"error: no metrics.npz in {run}; train first "
                         "(python se_res_inception/train.py --out-dir DIR) or pass --run-dir DIR")
    try:
        m = MetricsTracker.load(run)
    except Exception as e:  # truncated or not an npz: one line, no traceback
        raise SystemExit(f"error: {run / 'metrics.npz'} is unreadable ({type(e).__name__}: {e})")
    if "epoch" not in m or len(m["epoch"]) == 0:
        raise SystemExit(f"error: {run / 'metrics.npz'} has no epoch rows yet")
    out = Path(args.out or run / "training_curves.png")
    plots.two_panel_curves(m, out)
    split = "val" if "val_top1" in m and not np.all(np.isnan(m["val_top1"])) else "test"
    line = f"{len(m['epoch'])} epochs"
    if f"{split}_top1" in m and not np.all(np.isnan(m[f"{split}_top1"])):
        i = int(np.nanargmax(m[f"{split}_top1"]))
        line += (f"; best {split} top-1 {m[f'{split}_top1'][i]:.2f}% at epoch "
                 f"{m['epoch'][i]:.0f}, final {m[f'{split}_top1'][-1]:.2f}%")
    print(f"{line}; wrote {out}")


if __name__ == "__main__":
    main(parser.parse_args())
