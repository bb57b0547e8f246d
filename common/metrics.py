"""Accuracy, confusion matrix, per-class and calibration figures, the evaluation report that
every evaluate.py writes, the per-epoch metrics file, and the progress lines printed while
training (plain lines, readable in a log file)."""
import csv
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def topk_correct(logits, y, ks=(1, 5)):
    """Number of samples whose label is among the k highest logits, for each k."""
    top = logits.topk(max(ks), dim=1).indices
    hit = top == y[:, None]
    return [int(hit[:, :k].any(1).sum()) for k in ks]


def confusion_matrix(pred, y, num_classes):
    """cm[true, predicted] counts, int64 (C, C)."""
    idx = y.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def superclass_accuracy(pred, y, fine_to_coarse):
    """% of images whose predicted fine class lies in the superclass of the true fine class."""
    to_coarse = torch.as_tensor(fine_to_coarse)
    return 100.0 * float((to_coarse[pred.cpu()] == to_coarse[y.cpu()]).double().mean())


def per_class_report(cm):
    """Precision, recall (= per-class accuracy), F1 per class and their macro/weighted means."""
    cm = cm.double()
    tp, support = cm.diag(), cm.sum(1)
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    w = support / support.sum()
    out = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    for name in ("precision", "recall", "f1"):
        out[f"macro_{name}"] = float(out[name].mean())
        out[f"weighted_{name}"] = float((out[name] * w).sum())
    return out


def calibration(confidence, correct, bins=15):
    """Expected calibration error (Guo et al. 2017, arXiv:1706.04599) over equal-width bins.

    -> ece, per-bin mean confidence, accuracy and count (empty bins: nan, nan, 0).
    """
    confidence, correct = confidence.double().cpu(), correct.double().cpu()
    b = (confidence * bins).long().clamp(max=bins - 1)
    count = torch.bincount(b, minlength=bins).double()
    conf = torch.bincount(b, confidence, minlength=bins) / count
    acc = torch.bincount(b, correct, minlength=bins) / count
    ece = float(((conf - acc).abs().nan_to_num() * count).sum() / count.sum())
    return ece, conf, acc, count


class MetricsTracker:
    """One row per epoch; saved as metrics.npz (numeric arrays, allow_pickle=False) and metrics.csv.

    Both files are written to a temporary name and renamed, so a crash never leaves half a file.
    out_dir None keeps the rows in memory only (the ranks of a torchrun job other than 0).
    """

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
        npz, tmp = self.out_dir / "metrics.npz", self.out_dir / "metrics.tmp.npz"
        np.savez(tmp, **cols)
        os.replace(tmp, npz)
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
        self.total, self.every = total, every
        self.start = self.last = time.time()
        self.seen = 0

    def step(self, i, batch_size, loss_fn):
        """loss_fn is called only when a line is due, so the GPU is not synced every step."""
        self.seen += batch_size
        now = time.time()
        if now - self.last >= self.every and i + 1 < self.total:
            self.last = now
            rate = self.seen / (now - self.start)
            print(f"  batch {i + 1}/{self.total}  loss {loss_fn():.4f}  {rate:.0f} img/s",
                  flush=True)


def hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def epoch_line(epoch, epochs, row, seconds, eta):
    """One line per epoch: epoch, lr, train and eval figures, time, ETA."""
    parts = [f"epoch {epoch}/{epochs}", f"lr {row['lr']:.5f}",
             f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%"]
    for split in ("val", "test", "ema_test", "ema_val"):
        if not math.isnan(row.get(f"{split}_top1", math.nan)):
            parts.append(f"{split} loss {row[f'{split}_loss']:.4f} top1 {row[f'{split}_top1']:.2f}%"
                         f" top5 {row[f'{split}_top5']:.2f}%")
    parts += [f"{seconds:.1f}s", f"ETA {hms(eta)}"]
    return "  ".join(parts)


def analyse(probs, y, names):
    """All the figures of report.json, from test probabilities (N, C) and labels (N,)."""
    C = probs.shape[1]
    conf, pred = probs.max(1)
    top1, top5 = (100 * k / len(y) for k in topk_correct(probs, y, (1, 5)))
    cm = confusion_matrix(pred, y, C)
    rep = per_class_report(cm)
    ece, bin_conf, bin_acc, bin_count = calibration(conf, pred == y, bins=15)
    acc = 100 * rep["recall"]

    def ranked(descending):  # ten classes that have test images; ties in class order
        order = acc.argsort(descending=descending, stable=True).tolist()
        return [(names[c], float(acc[c])) for c in order if rep["support"][c] > 0][:10]
    off = cm.clone().fill_diagonal_(0).view(-1)
    pairs = [(names[i // C], names[i % C], int(off[i]))
             for i in off.argsort(descending=True, stable=True)[:10].tolist() if off[i] > 0]
    return {"images": len(y), "top1": top1, "top5": top5,
            "loss": float(F.nll_loss(probs.clamp(min=1e-12).log(), y)),  # of the averaged softmax
            "ece": ece, "best_classes": ranked(True), "worst_classes": ranked(False),
            "confused_pairs": pairs,
            **{k: v for k, v in rep.items() if not torch.is_tensor(v)},  # macro_/weighted_ P, R, F1
            "classes": list(names),
            **{f"per_class_{k}": rep[k].tolist() for k in ("precision", "recall", "f1", "support")},
            "calibration_bins": {"confidence": [None if v != v else v for v in bin_conf.tolist()],
                                 "accuracy": [None if v != v else v for v in bin_acc.tolist()],
                                 "count": bin_count.tolist()},  # None: empty bin (JSON has no NaN)
            "confusion_matrix": cm.tolist()}


def write_json(obj, path):
    """Write JSON atomically (a reader never sees half a file), indented, with each innermost list
    on one line (a 100x100 matrix is 100 lines)."""
    path = Path(path)
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: f"[{' '.join(m[1].split())}]", text)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader never sees half a report
