"""The evaluation report of a checkpoint, as every evaluate.py writes it: top-k accuracy, the
confusion matrix, per-class precision / recall / F1, calibration (ECE) and superclass accuracy.
The figures that show them are in plots.py.
"""
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
    confidence, correct = confidence.cpu().double(), correct.cpu().double()
    b = (confidence * bins).long().clamp(max=bins - 1)
    count = torch.bincount(b, minlength=bins).double()
    conf = torch.bincount(b, confidence, minlength=bins) / count
    acc = torch.bincount(b, correct, minlength=bins) / count
    ece = float(((conf - acc).abs().nan_to_num() * count).sum() / count.sum())
    return ece, conf, acc, count


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
