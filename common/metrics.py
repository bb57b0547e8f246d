"""What a training run records: per-epoch metrics (metrics.npz + metrics.csv), progress lines
(plain, fine in a log file), its JSON and figures, written atomically. Evaluation: report.py."""
import csv
import datetime
import json
import math
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator


class MetricsTracker:
    """One row per epoch, saved as metrics.npz (numeric arrays, allow_pickle=False) and metrics.csv,
    each written to a temporary name and renamed (a crash never leaves half a file). out_dir None
    keeps the rows in memory only (the ranks of a torchrun job other than 0)."""

    def __init__(self, out_dir):
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.rows = []

    def append(self, **row):
        self.rows.append({k: float(v) for k, v in row.items()})
        self.save()

    def amend(self, **fields):
        """Add fields to the last row (a figure known only after the checkpoint was taken)."""
        self.rows[-1].update({k: float(v) for k, v in fields.items()})
        self.save()

    def columns(self):
        return {k: np.array([r.get(k, np.nan) for r in self.rows])
                for k in dict.fromkeys(k for r in self.rows for k in r)}

    def save(self):
        if self.out_dir is None:
            return
        cols = self.columns()
        np.savez(self.out_dir / "metrics.tmp.npz", **cols)
        os.replace(self.out_dir / "metrics.tmp.npz", self.out_dir / "metrics.npz")
        tmp = self.out_dir / "metrics.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(zip(*(np.char.mod("%.6g", c) for c in cols.values())))
        os.replace(tmp, self.out_dir / "metrics.csv")

    def state_dict(self):
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state):
        self.rows = [dict(r) for r in state["rows"]]

    @staticmethod
    def load(out_dir):
        """Columns of a run dir's metrics.npz as a dict of numpy arrays."""
        with np.load(Path(out_dir) / "metrics.npz", allow_pickle=False) as f:
            return {k: f[k] for k in f.files}


class Progress:
    """Prints `batch i/n  loss  img/s` at most every `every` seconds inside an epoch."""

    def __init__(self, total, every=10.0):
        self.total, self.every, self.seen = total, every, 0
        self.start = self.last = time.time()

    def step(self, i, batch_size, loss_fn):
        """loss_fn is called only when a line is due, so the GPU is not synced every step."""
        self.seen += batch_size
        now = time.time()
        if now - self.last >= self.every and i + 1 < self.total:
            self.last = now
            print(f"  batch {i + 1}/{self.total}  loss {loss_fn():.4f}  "
                  f"{self.seen / (now - self.start):.0f} img/s", flush=True)


def epoch_line(epoch, epochs, row, seconds, eta):
    """One line per epoch: epoch, lr, train and eval figures, time, ETA."""
    parts = [f"epoch {epoch}/{epochs}", f"lr {row['lr']:.5f}",
             f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%"]
    for split in ("val", "test", "ema_test", "ema_val"):
        if not math.isnan(row.get(f"{split}_top1", math.nan)):
            parts.append(f"{split} loss {row[f'{split}_loss']:.4f} top1 {row[f'{split}_top1']:.2f}%"
                         f" top5 {row[f'{split}_top5']:.2f}%")
    parts += [f"{seconds:.1f}s", f"ETA {datetime.timedelta(seconds=round(eta))}"]  # H:MM:SS
    return "  ".join(parts)


def write_json(obj, path):
    """Write indented JSON, each innermost list on one line (a 100x100 matrix: 100 lines)."""
    path = Path(path)
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: f"[{' '.join(m[1].split())}]", text)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader never sees half a file


def epoch_axis(ax, ep, m=None, loss_keys=()):
    """The x axis of a per-epoch panel: whole epochs, room around a lone point; with loss_keys, a
    log y axis when one value dwarfs the rest (an early spike: BN statistics at peak lr)."""
    ys = np.concatenate([np.asarray(m[k], dtype=float) for k in loss_keys if k in m] or [[]])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if len(ys) and ys.max() > 10 * ys.min():
        ax.set_yscale("log")
    if len(ep) <= 20:
        ax.set_xlim(ep.min() - 0.5, ep.max() + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no "epoch 2.5"


def save_figure(fig, path, dpi=100):
    """A matplotlib Figure as a PNG at path, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Plotter:
    """`plotter(draw, path)` calls draw() -> Figure and saves it to path on a thread, so training
    goes on meanwhile (~1 s a figure on a CPU); a new one waits for the last, as does join()."""

    thread = None  # the last figure's

    def __call__(self, draw, path):
        self.join()
        self.thread = threading.Thread(target=lambda: save_figure(draw(), path))
        self.thread.start()

    def join(self):
        if self.thread is not None:
            self.thread.join()
