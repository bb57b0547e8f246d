"""Gather the per-model results of run_all.sh into benchmark.md, benchmark.json and benchmark.png.

Reads, for each model, <results>/runs/<model>/: steps.tsv (what run_all.sh ran, its status and
wall time), args.json, metrics.npz (epoch times, test top-1 per epoch), eval/report.json (top-1,
top-5), measure.json (benchmark/measure.py), superclass/superclass.json where the folder has
evaluate_superclass.py, and `done` (written when every step passed). A model that failed, was
interrupted or never ran gets a row that says so.

    python benchmark/report.py --results results --models "resnet18 baseline"
"""
import argparse
import json
import math
import os
import platform
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.plots import save  # noqa: E402  (atomic PNG write; common/plots imports no torch)

COLORS = {"resnet18": "#1f77b4", "resnet34": "#ff7f0e", "se_res_inception": "#2ca02c",
          "baseline": "#7f7f7f"}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--results", default=str(ROOT / "results"))
parser.add_argument("--models", default="resnet18 resnet34 se_res_inception baseline")
parser.add_argument("--command", default="bash run_all.sh", help="shown in benchmark.md")
parser.add_argument("--settings", default="", help="one line describing the run's settings")


def read_json(path):
    return json.loads(path.read_text()) if path.is_file() else {}


def read_steps(run):
    """steps.tsv -> [{"step", "status", "seconds", "log", "load"}] in the order they ran."""
    path = run / "steps.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [{"step": s, "status": st, "seconds": float(t), "log": log,
             "load": float(load) if load.replace(".", "", 1).isdigit() else None}
            for s, st, t, log, load in rows]


def gather(results, model):
    """Everything known about one model's run -> a flat dict (None where missing)."""
    run = Path(results) / "runs" / model
    steps = read_steps(run)
    failed = [s for s in steps if s["status"] != "ok"]
    status = ("ok" if (run / "done").is_file() else f"failed at {failed[0]['step']}" if failed
              else "incomplete (interrupted?)" if steps else "not run")
    row = {"model": model, "steps": steps, "status": status,
           "log": failed[0]["log"] if failed else None,
           "train_wall_s": sum(s["seconds"] for s in steps if s["step"] == "train") or None,
           "total_wall_s": sum(s["seconds"] for s in steps) or None,
           "max_load": max((s["load"] for s in steps if s["load"] is not None), default=None)}
    m = read_json(run / "measure.json")
    row.update({k: m.get(k) for k in (
        "device", "gpu", "torch", "threads", "amp", "channels_last", "compile", "dataset",
        "epochs", "batch_size", "train_images", "test_images", "params", "flops_per_image",
        "train_img_s", "warmup_steps", "timed_steps", "infer_img_s", "infer_batch",
        "peak_memory_mb", "memory_kind", "rss_after_import_mb", "superclass_top1",
        "top1_check")})
    row["superclass_script_top1"] = read_json(run / "superclass" / "superclass.json").get(
        "superclass_top1")  # se_res_inception's evaluate_superclass.py
    report = read_json(run / "eval" / "report.json")
    row["top1"], row["top5"] = report.get("top1"), report.get("top5")
    row["epoch_times_s"], row["test_top1_per_epoch"] = [], []
    if (run / "metrics.npz").is_file():
        with np.load(run / "metrics.npz") as f:
            row["epoch_times_s"] = f["time"].tolist()
            row["test_top1_per_epoch"] = f["test_top1"].tolist()
    times = row["epoch_times_s"]
    row["epoch_s"] = float(np.median(times)) if times else None
    row["epoch_img_s"] = (row["train_images"] / row["epoch_s"]
                          if times and row["train_images"] else None)
    return row


def fmt(v, digits=1, scale=1.0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v / scale:,.{digits}f}"


def ratio(a, b):
    return a / b if a and b else None


def environment(rows):
    done = [r for r in rows if r["device"]]
    first = done[0] if done else {}
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"date": datetime.now().astimezone().isoformat(timespec="minutes"),
            "device": first.get("device"), "gpu": first.get("gpu"), "torch": first.get("torch"),
            "torch_threads": first.get("threads"), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


RESULT_COLUMNS = [  # header, row key, decimals, divide by
    ("params (M)", "params", 2, 1e6), ("GFLOPs / image", "flops_per_image", 2, 1e9),
    ("train img/s (timed steps)", "train_img_s", 1, 1), ("epoch time (s)", "epoch_s", 1, 1),
    ("epoch img/s", "epoch_img_s", 1, 1), ("inference img/s", "infer_img_s", 1, 1),
    ("peak memory (MB)", "peak_memory_mb", 0, 1), ("top-1 (%)", "top1", 2, 1),
    ("top-5 (%)", "top5", 2, 1), ("superclass (%)", "superclass_top1", 2, 1),
    ("train wall (s)", "train_wall_s", 1, 1), ("total wall (s)", "total_wall_s", 1, 1)]
RATIO_COLUMNS = [("train img/s (timed steps)", "train_img_s"), ("epoch img/s", "epoch_img_s"),
                 ("inference img/s", "infer_img_s"),
                 ("peak memory", "peak_memory_mb")]


def table(header, lines):
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)] + [
        "| " + " | ".join(cells) + " |" for cells in lines]


def markdown(rows, env, args):
    ok = [r for r in rows if r["status"] == "ok"]
    base = next((r for r in ok if r["model"] == "baseline"), None)
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    out = ["# CIFAR-100 benchmark: the repo's models against a plain torchvision baseline", "",
           f"- date: {env['date']}",
           f"- device: {env['device'] or '-'}{gpu}; CPU: {env['cpu']}, {env['cpu_count']} "
           f"cores, torch threads {env['torch_threads']}",
           f"- torch {env['torch']}, Python {env['python']}, {env['platform']}",
           f"- command: `{args.command}`"]
    if args.settings:
        out.append(f"- settings: {args.settings}")
    lines = []
    for r in rows:
        if r["status"] == "ok":
            lines.append([r["model"]] + [fmt(r[k], d, s) for _, k, d, s in RESULT_COLUMNS])
        else:
            log = f" (log: `{r['log']}`)" if r["log"] else ""
            lines.append([r["model"], f"**{r['status']}**{log}"] + [""] * (len(RESULT_COLUMNS) - 1))
    out += [""] + table(["model"] + [h for h, *_ in RESULT_COLUMNS], lines)
    if base:
        out += ["", "Each model against the baseline (its figure / the baseline's). resnet18 is "
                "the same network as the baseline, so its row isolates the loader and the "
                "training loop (which also does more work per image: see below).", ""]
        out += table(["model"] + [h for h, _ in RATIO_COLUMNS], [
            [r["model"]] + [fmt(ratio(r[k], base[k]), 2) + "x" for _, k in RATIO_COLUMNS]
            for r in ok if r is not base])
    out += [""] + table(
        ["model", "epochs", "batch", "train / test images", "amp", "channels_last", "compile",
         "timed steps (warm-up + timed)", "inference batch", "highest load"],
        [[r["model"], str(r["epochs"]), str(r["batch_size"]),
          f"{r['train_images']:,} / {r['test_images']:,}", r["amp"], str(r["channels_last"]),
          str(r["compile"]), f"{r['warmup_steps']} + {r['timed_steps']}", str(r["infer_batch"]),
          fmt(r["max_load"], 2)] for r in ok])
    return "\n".join(out + [""] + definitions(env, ok) + [""] + checks(rows)) + "\n"


def definitions(env, ok):
    mem = ("torch.cuda.max_memory_allocated over the timed steps" if env["gpu"] else
           "peak resident memory of the measuring process over the timed steps (Python and "
           f"torch included: {fmt(ok[0]['rss_after_import_mb'], 0) if ok else '-'} MB right "
           "after import; the baseline's DataLoader workers not included)")
    return [
        "How each column is measured (benchmark/measure.py, benchmark/report.py):", "",
        "- params: trainable parameters. GFLOPs / image: forward pass of one 32x32 image, counted "
        "by torch.utils.flop_counter: 2 FLOPs per multiply-add of convolutions and matrix "
        "products (batch norm, activations and pooling not counted).",
        "- train img/s (timed steps): the run's own training step on a fresh model, data loading "
        "included, timed after the warm-up steps. The repo's step: batched on-device "
        "augmentation with the folder's recipe (resnet18: crop, flip, rotation, colour jitter, "
        "erasing, CutMix, label smoothing); the baseline's: a DataLoader of per-sample "
        "torchvision transforms (crop, flip) and plain cross-entropy.",
        "- epoch time: median over the run's epochs (metrics.npz `time`), the per-epoch test "
        "evaluation included, as train.py and baseline.py log it; epoch img/s = training images "
        "/ epoch time.",
        "- inference img/s: one pass of the trained model over the test split in batches of the "
        "inference batch, eval mode, the run's precision, the first batches (up to 2) untimed.",
        f"- peak memory: {mem}.",
        "- top-1 / top-5: evaluate.py's report.json on the final weights (last.pt; the "
        "baseline: its final epoch). superclass: last.pt's predictions mapped to the 20 "
        "superclasses through common.data.FINE_TO_COARSE, the same way for every model.",
        "- train wall: the training command, start to exit; total wall: every step of the model "
        "(train, evaluate, evaluate_superclass, gradcam, measure), from steps.tsv.",
        f"- highest load: the largest 1-minute load average seen at the end of the model's steps; "
        f"above {env['cpu_count']} (the cores) other processes competed for the CPU and the "
        "times of that model are pessimistic."]


def checks(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    off = [f"{r['model']} {fmt(r['top1_check'], 2)}% vs {fmt(r['top1'], 2)}%" for r in ok
           if r["top1"] is None or r["top1_check"] is None
           or abs(r["top1_check"] - r["top1"]) > 0.01]
    text = ("Checks: top-1 re-counted by measure.py from last.pt "
            + ("DIFFERS from evaluate.py's: " + "; ".join(off) if off
               else "equals evaluate.py's for every model"))
    for r in ok:
        if r["superclass_script_top1"] is not None:
            text += (f"; {r['model']}'s evaluate_superclass.py reports superclass "
                     f"{fmt(r['superclass_script_top1'], 2)}%")
    out = [text + "."] if ok else []
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["", "Failed or not run: " + "; ".join(
            f"{r['model']} {r['status']}" + (f" (log: {r['log']})" if r["log"] else "")
            for r in failed)]
    return out


def accuracy_panel(ax, ok):
    """Test top-1 after each epoch against the cumulative epoch time, one line per model."""
    longest = max((sum(r["epoch_times_s"]) for r in ok), default=0)
    unit, scale = ("min", 60) if longest > 300 else ("s", 1)
    for r in ok:
        c = COLORS.get(r["model"], "#9467bd")
        t, acc = np.cumsum(r["epoch_times_s"]) / scale, r["test_top1_per_epoch"]
        ax.plot(t, acc, color=c, marker="o", ms=4, label=r["model"],
                ls="--" if r["model"] == "baseline" else "-")
        if len(t):
            ax.annotate(f"{acc[-1]:.1f}%", (t[-1], acc[-1]), textcoords="offset points",
                        xytext=(4, 4), fontsize=9, color=c)
    ax.axhline(1.0, color="0.5", lw=1, ls=":", label="chance (1 %)")
    top = max((max(r["test_top1_per_epoch"], default=0) for r in ok), default=0)
    ax.set(xlabel=f"training time ({unit}, cumulative epoch time)", ylabel="test top-1 (%)",
           title="Accuracy vs training time", ylim=(0, max(5.0, 1.15 * top)),
           xlim=(0, 1.18 * max(longest / scale, 1e-9)))  # room for the end labels
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    if ok and top < 10:  # say so rather than let a reader rank models on noise
        ax.text(0.98, 0.97, "every model is near chance:\ntoo little training to compare "
                "accuracy", transform=ax.transAxes, ha="right", va="top", fontsize=9,
                color="0.3", bbox={"facecolor": "white", "edgecolor": "0.7"})


def throughput_panels(ax_train, ax_inf, ok):
    """Horizontal bars: training img/s (timed steps, whole epochs) and inference img/s."""
    names = [r["model"] for r in ok][::-1]  # the first model on top
    colors = [COLORS.get(n, "#9467bd") for n in names]
    y = np.arange(len(names))
    series = [("timed training steps", "train_img_s", 1.0, 0.2),
              ("whole epochs (eval incl.)", "epoch_img_s", 0.45, -0.2)]
    for label, key, alpha, dy in series:
        bars = ax_train.barh(y + dy, [r[key] or 0 for r in ok][::-1], height=0.38, alpha=alpha,
                             color=colors)
        ax_train.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    ax_train.legend(handles=[Patch(color="0.35", alpha=alpha, label=label)
                             for label, _, alpha, _ in series],
                    fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2)
    bars = ax_inf.barh(y, [r["infer_img_s"] or 0 for r in ok][::-1], height=0.6, color=colors)
    ax_inf.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
    for ax, title in ((ax_train, "Training throughput (img/s)"),
                      (ax_inf, "Inference throughput (img/s)")):
        ax.set_yticks(y, names)
        ax.set(title=title, xlabel="images / second")
        ax.margins(x=0.22)
        ax.grid(axis="x", alpha=0.3)


def figure(rows, env, args, path):
    ok = [r for r in rows if r["status"] == "ok"]
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    ax_acc, ax_train, ax_inf = fig.subplots(1, 3, width_ratios=[1.3, 1, 1])
    accuracy_panel(ax_acc, ok)
    throughput_panels(ax_train, ax_inf, ok)
    device = env["device"] or "-"
    device += f" ({env['gpu']})" if env["gpu"] else f", {env['torch_threads']} threads"
    fig.suptitle(f"{args.settings or args.command}  |  {device}, torch {env['torch']}, "
                 f"{env['date'][:10]}", fontsize=10)
    save(fig, path)


def main(args):
    results = Path(args.results)
    rows = [gather(results, m) for m in args.models.split()]
    env = environment(rows)
    results.mkdir(parents=True, exist_ok=True)
    (results / "benchmark.md").write_text(markdown(rows, env, args))
    (results / "benchmark.json").write_text(json.dumps(
        {"environment": env, "command": args.command, "settings": args.settings,
         "rows": rows}, indent=1))
    figure(rows, env, args, results / "benchmark.png")
    print((results / "benchmark.md").read_text())
    print(f"wrote {results / 'benchmark.md'}, benchmark.json and benchmark.png")


if __name__ == "__main__":
    main(parser.parse_args())
