"""Gather the runs of run_all.sh into benchmark.md, benchmark.json and benchmark.png.

Reads, for each model and each seed k below --seeds, <results>/runs/<model>/seed<k>/: steps.tsv
(what run_all.sh ran, its status and wall time), measure.json (benchmark/measure.py: every
figure of the table), metrics.npz (test top-1 and time per epoch, for the figure), args.json,
eval/report.json and superclass/superclass.json where those scripts ran (checks), and `done`
(written when every step passed). A model that failed, was interrupted or never ran gets a row
that says so. With --parity DIR it adds the learning-parity table from DIR/<run>/seed<k>/ of
resnet18-matched, resnet18 and baseline (the final epoch's test top-1 in their metrics.npz).
The figure is drawn by benchmark/figure.py.

With --throughput DIR it instead sums up a throughput check into throughput.md and
throughput.json (in DIR, or --throughput-out): the runs benchmark/gpu_check.sh leaves in
DIR/<model>-<mode>/ (measure.json, or a file `failed` saying why), or the tables run_all.sh
--gpu-throughput leaves in DIR/eager/benchmark.json and DIR/compile/benchmark.json. It compares
resnet18 with the targets for one H100 (TARGET_S_PER_EPOCH, PLAIN_LOOP_RATIO).

    python benchmark/report.py --results results --models "resnet18 baseline" --seeds 2
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common.metrics import write_json  # noqa: E402  (atomic; common/metrics imports no model)
import figure  # noqa: E402  (benchmark/figure.py: benchmark.png)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--results", default=str(HERE.parent / "results"))
parser.add_argument("--models", default="resnet18 resnet34 se_res_inception baseline")
parser.add_argument("--seeds", type=int, default=1, help="runs per model: seed0 .. seed<K-1>")
parser.add_argument("--parity", metavar="DIR", help="where the learning-parity runs are")
parser.add_argument("--throughput", metavar="DIR", help="sum up a throughput check instead")
parser.add_argument("--throughput-out", metavar="DIR",
                    help="where throughput.md and .json go (default: the --throughput DIR)")
parser.add_argument("--command", default="bash run_all.sh", help="shown in benchmark.md")
parser.add_argument("--settings", default="", help="one line describing the run's settings")

MEAN_KEYS = ["train_img_s", "train_time_s", "epoch_s", "save_s", "infer_img_s",
             "peak_memory_mb", "train_tflops", "peak_share", "final_test_top5",
             "superclass_top1", "train_wall_s", "total_wall_s"]
SPREAD_KEYS = ["final_test_top1", "best_test_top1"]  # mean +- std over the seeds
PARITY = [("resnet18-matched", "crop + flip on both: resnet18 without label smoothing, "
           "CutMix, rotation, colour jitter, erasing and dropout"),
          ("resnet18", "resnet18's full recipe (its augmentation, CutMix, label smoothing, "
           "dropout) against the baseline's crop + flip")]


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


def gather_run(run):
    """Everything known about one run directory -> a flat dict (keys absent where unknown)."""
    steps = read_steps(run)
    failed = [s for s in steps if s["status"] != "ok"]
    r = {"run": str(run), "steps": steps, "log": failed[0]["log"] if failed else None,
         "status": ("ok" if (run / "done").is_file() else f"failed at {failed[0]['step']}"
                    if failed else "incomplete (interrupted?)" if steps else "not run"),
         "train_wall_s": sum(s["seconds"] for s in steps if s["step"] == "train") or None,
         "total_wall_s": sum(s["seconds"] for s in steps) or None,
         "max_load": max((s["load"] for s in steps if s["load"] is not None), default=None)}
    args = read_json(run / "args.json")
    r.update({k: args.get(k) for k in ("seed", "batch_size", "lr", "weight_decay")})
    r["epoch_times_s"], r["test_top1_per_epoch"] = [], []
    if (run / "metrics.npz").is_file():
        with np.load(run / "metrics.npz") as f:
            r["epoch_times_s"] = f["time"].tolist()
            r["test_top1_per_epoch"] = f["test_top1"].tolist()
            r["final_test_top1"] = r["test_top1_per_epoch"][-1]
            if "train_images" in f.files and r["batch_size"]:
                r["optimizer_steps"] = int(f["train_images"].sum()) // r["batch_size"]
                r["epoch_train_images"] = int(f["train_images"][-1])
            r["epochs"] = len(r["epoch_times_s"])
    r.update(read_json(run / "measure.json"))
    r["evaluate_top1"] = read_json(run / "eval" / "report.json").get("top1")
    r["superclass_script_top1"] = read_json(run / "superclass" / "superclass.json").get(
        "superclass_top1")  # se_res_inception's evaluate_superclass.py
    return r


def mean_std(values):
    """(mean, sample std) of the numbers among values; std None for fewer than two."""
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None


def aggregate(model, runs):
    """The K runs of one model -> one table row: means, and mean +- std for top-1."""
    bad = next(((k, r) for k, r in enumerate(runs) if r["status"] != "ok"), None)
    row = {"model": model, "seeds": len(runs), "runs": runs, "log": bad[1]["log"] if bad else None,
           "status": "ok" if not bad else
           bad[1]["status"] + (f" (seed{bad[0]})" if len(runs) > 1 else "")}
    ok = [r for r in runs if r["status"] == "ok"]
    first = ok[0] if ok else {}
    for key in ("params", "flops_per_image", "device", "gpu", "torch", "threads", "amp",
                "channels_last", "compile", "dataset", "epochs", "batch_size", "train_images",
                "val_images", "test_images", "infer_batch", "memory_kind", "peak_tflops",
                "epoch_times_s", "test_top1_per_epoch"):
        row[key] = first.get(key)
    for key in MEAN_KEYS:
        row[key] = mean_std([r.get(key) for r in ok])[0]
    for key in SPREAD_KEYS:
        row[key], row[f"{key}_std"] = mean_std([r.get(key) for r in ok])
    splits = {r.get("best_split") for r in ok}
    row["best_split"] = splits.pop() if len(splits) == 1 else None
    if row["best_split"] != "val":  # best.pt was picked on the test set: not reported as such
        row["best_test_top1"] = row["best_test_top1_std"] = None
    row["seeds_used"] = [r.get("seed") for r in ok]
    row["max_load"] = max((r["max_load"] for r in ok if r["max_load"] is not None), default=None)
    return row


def parity(parity_dir, seeds):
    """Test top-1 of the final epoch: resnet18 (matched, full) against the baseline, per seed."""
    runs = {v: [gather_run(Path(parity_dir) / v / f"seed{k}") for k in range(seeds)]
            for v in ("resnet18-matched", "resnet18", "baseline")}
    top1 = {v: [r.get("final_test_top1") if r["status"] == "ok" else None for r in rs]
            for v, rs in runs.items()}
    out = {"dir": str(parity_dir), "runs": runs, "comparisons": []}
    for name, label in PARITY:
        ratios = [a / b for a, b in zip(top1[name], top1["baseline"]) if a is not None and b]
        out["comparisons"].append({
            "repo": name, "label": label, "repo_top1": mean_std(top1[name]),
            "baseline_top1": mean_std(top1["baseline"]), "ratio": mean_std(ratios),
            "pairs": len(ratios), "status": [r["status"] for r in runs[name] + runs["baseline"]
                                             if r["status"] != "ok"]})
    ok = [r for rs in runs.values() for r in rs if r["status"] == "ok"]
    first = ok[0] if ok else {}
    out.update({k: first.get(k) for k in ("optimizer_steps", "epochs", "batch_size", "lr",
                                          "weight_decay", "epoch_train_images")})
    out["steps_equal"] = len({r.get("optimizer_steps") for r in ok}) <= 1
    return out


def fmt(v, digits=1, scale=1.0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v / scale:,.{digits}f}"


def fmt_pm(mean, std, digits=2):
    return fmt(mean, digits) + (f" ± {fmt(std, digits)}" if std is not None else "")


def ratio(a, b):
    return a / b if a and b else None


def environment(rows):
    first = next((r for r in rows if r.get("device")), {})
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
    ("train img/s, last epoch", "train_img_s", 1, 1), ("epoch time (s)", "epoch_s", 1, 1),
    ("inference img/s", "infer_img_s", 1, 1), ("peak memory (MB)", "peak_memory_mb", 0, 1),
    ("test top-1, final epoch (%)", "final_test_top1", 2, None),
    ("test top-1, best.pt by val (%)", "best_test_top1", 2, None),
    ("test top-5, final (%)", "final_test_top5", 2, 1),
    ("superclass, final (%)", "superclass_top1", 2, 1), ("train wall (s)", "train_wall_s", 1, 1)]
RATIO_COLUMNS = [("train img/s, last epoch", "train_img_s"), ("inference img/s", "infer_img_s"),
                 ("peak memory", "peak_memory_mb"), ("epoch time", "epoch_s")]


def table(header, lines):
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)] + [
        "| " + " | ".join(cells) + " |" for cells in lines]


def cell(row, key, digits, scale):
    if scale is None:  # mean +- std over the seeds
        return fmt_pm(row[key], row[f"{key}_std"], digits)
    return fmt(row[key], digits, scale)


def markdown(rows, par, env, args):
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
            lines.append([r["model"]] + [cell(r, k, d, s) for _, k, d, s in RESULT_COLUMNS])
        else:
            log = f" (log: `{r['log']}`)" if r["log"] else ""
            lines.append([r["model"], f"**{r['status']}**{log}"] + [""] * (len(RESULT_COLUMNS) - 1))
    seeds = max((r["seeds"] for r in rows), default=1)
    out += ["", f"Per model, {seeds} run(s)" + (": top-1 as mean ± std over the seeds, the other "
                                                "figures as means." if seeds > 1 else ".")]
    out += [""] + table(["model"] + [h for h, *_ in RESULT_COLUMNS], lines)
    if any(r["device"] == "cuda" or r["peak_tflops"] for r in ok):
        out += ["", "Achieved training compute: 3 x forward FLOPs per image x train img/s, "
                "against the GPU's dense bf16 peak (vendor datasheet; measure.py's PEAK_TFLOPS).",
                ""] + table(["model", "precision", "train TFLOP/s", "dense bf16 peak (TFLOP/s)",
                             "share of peak"],
                            [[r["model"], r["amp"], fmt(r["train_tflops"], 2),
                              fmt(r["peak_tflops"], 0), fmt_share(r["peak_share"])] for r in ok])
    if base:
        out += ["", "Each model against the baseline (its figure / the baseline's). resnet18 is "
                "the same network as the baseline, so its row isolates the loader and the "
                "training loop (which also does more work per image: see below).", ""]
        out += table(["model"] + [h for h, _ in RATIO_COLUMNS], [
            [r["model"]] + [fmt(ratio(r[k], base[k]), 2) + "x" for _, k in RATIO_COLUMNS]
            for r in ok if r is not base])
    if par:
        out += [""] + parity_markdown(par)
    out += [""] + table(
        ["model", "seeds", "epochs", "batch", "train / val / test images", "amp",
         "channels_last", "compile", "inference batch", "highest load"],
        [[r["model"], ", ".join(map(str, r["seeds_used"])), str(r["epochs"]),
          str(r["batch_size"]), f"{r['train_images']:,} / {r['val_images']:,} / "
          f"{r['test_images']:,}", r["amp"], str(r["channels_last"]), str(r["compile"]),
          str(r["infer_batch"]), fmt(r["max_load"], 2)] for r in ok])
    return "\n".join(out + [""] + definitions(env, ok) + [""] + checks(rows, par, env)) + "\n"


def fmt_share(share):
    return "-" if share is None else f"{100 * share:.1f} %"


def parity_markdown(par):
    c = par["comparisons"]
    out = ["## Learning parity: the repo's loop against the plain baseline loop", "",
           f"resnet18/train.py and benchmark/baseline.py at one recipe (SGD lr {par['lr']}, "
           f"weight decay {par['weight_decay']}, OneCycle), {par['epochs']} epoch(s) of "
           f"{par['epoch_train_images']} images in batches of {par['batch_size']}: "
           f"{par['optimizer_steps']} optimizer steps each"
           + ("" if par["steps_equal"] else " (STEP COUNTS DIFFER between the runs)")
           + ". Test top-1 (%) of the final epoch on the test split; with "
           "several seeds, mean ± std, the ratio taken per seed. A ratio near 1 with matched "
           "augmentation means the repo's loop learns as well as the plain one.", ""]
    lines = []
    for x in c:
        failed = f" (**{', '.join(x['status'])}**)" if x["status"] else ""
        lines.append([x["label"] + failed, fmt_pm(*x["repo_top1"]), fmt_pm(*x["baseline_top1"]),
                      fmt_pm(*x["ratio"], digits=3)])
    return out + table(["comparison", "resnet18", "baseline", "ratio (resnet18 / baseline)"],
                       lines)


def definitions(env, ok):
    mem = ("torch.cuda.max_memory_allocated of the training process, reset every epoch, the "
           "largest over the epochs" if env["gpu"] else
           "peak resident set of the training process (Python and torch included; the "
           "baseline's DataLoader workers not included)")
    return [
        "How each column is measured (benchmark/measure.py, from the run's own metrics.npz and "
        "last.pt):", "",
        "- params: trainable parameters. GFLOPs / image: forward pass of one 32x32 image, counted "
        "by torch.utils.flop_counter: 2 FLOPs per multiply-add of convolutions and matrix "
        "products (batch norm, activations and pooling not counted).",
        "- train img/s, last epoch: images trained on in the run's last epoch / the training "
        "phase of that epoch (train_time: loader, augmentation, mixing, step; evaluation "
        "excluded). With 2 or more epochs the first epoch's warm-up is left out. The repo's "
        "step: batched on-device augmentation with the folder's recipe; the baseline's: a "
        "DataLoader of per-sample torchvision transforms (crop, flip) and plain cross-entropy.",
        "- epoch time: that last epoch whole, as train.py's `time` column has it: training, "
        "evaluation of the val and test splits, the checkpoint's copy to the host (its "
        "`save_time`; a thread writes the file) and, when it is drawn, the training-curve "
        "figure. The baseline draws no figure.",
        "- inference img/s: common.inference.predict of last.pt over the test split, the run's "
        "precision and memory layout, eager, after one untimed warm-up batch.",
        f"- peak memory: {mem}.",
        "- test top-1, final epoch: the run's own evaluation after its last epoch (mean ± std "
        "over the seeds). best.pt by val: the test top-1 of the checkpoint the run picked on its "
        "held-out validation split, never on the test set ('-' where there was none). "
        "superclass: last.pt's predictions mapped to the 20 superclasses through "
        "common.data.FINE_TO_COARSE, the same way for every model.",
        "- train wall: the training command, start to exit (data set-up included).",
        f"- highest load: the largest 1-minute load average seen at the end of the model's steps; "
        f"above {env['cpu_count']} (the cores) other processes competed for the CPU and the "
        "times of that model are pessimistic."]


def checks(rows, par, env):
    out = []
    ok = [r for r in rows if r["status"] == "ok"]
    runs = [(r["model"], x) for r in ok for x in r["runs"]]
    # measure.py counts in float32, as evaluate.py does; the run's own evaluation used its amp
    off = [f"{m} seed {x.get('seed')}: {fmt(x.get('top1_check'), 2)}% vs "
           f"{fmt(x.get(k), 2)}% ({k})" for m, x in runs
           for k in ("evaluate_top1", "final_test_top1") if x.get(k) is not None
           and (k == "evaluate_top1" or x.get("amp") == "off")
           and (x.get("top1_check") is None or abs(x["top1_check"] - x[k]) > 0.01)]
    if ok:
        text = ("Checks: top-1 of last.pt re-counted by measure.py "
                + ("DIFFERS: " + "; ".join(off) if off else "equals evaluate.py's and, where "
                   "the run evaluated in float32, the run's own final evaluation"))
        for r in ok:
            if r["runs"][0].get("superclass_script_top1") is not None:
                text += (f"; {r['model']}'s evaluate_superclass.py reports superclass "
                         f"{fmt(r['runs'][0]['superclass_script_top1'], 2)}%")
        out.append(text + ".")
    if par:
        for x in par["comparisons"]:
            low = min((v for v in (x["repo_top1"][0], x["baseline_top1"][0]) if v is not None),
                      default=None)
            if low is not None and low < 5:
                out.append(f"Parity ({x['repo']}): a top-1 of {low:.1f}% is too close to chance "
                           "(1 %) for the ratio to mean much; train longer.")
    busy = [f"{r['model']} {r['max_load']:.1f}" for r in ok
            if env["device"] == "cpu" and (r["max_load"] or 0) > env["cpu_count"]]
    if busy:
        out.append(f"Timing: other processes competed for the {env['cpu_count']} cores during "
                   f"some runs (highest 1-minute load: {', '.join(busy)}); their speed figures "
                   "and the speed ratios above are pessimistic for those models.")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["Failed or not run: " + "; ".join(
            f"{r['model']} {r['status']}" + (f" (log: {r['log']})" if r["log"] else "")
            for r in failed)]
    return [line for x in out for line in (x, "")][:-1]


# The targets for resnet18's recipe (batch 512, bf16, channels_last) on one H100: seconds per
# epoch, whole (training, the 10,000-image evaluation, the checkpoint's copy), eager and
# compiled: 150 epochs in 2.5 and 1.5 minutes; and its training img/s against the plain loop's
# (benchmark/baseline.py at the same recipe), in each mode.
TARGET_S_PER_EPOCH = {"eager": 1.0, "compile": 0.6}
PLAIN_LOOP_RATIO = 3.0


def throughput_rows(folder):
    """The runs of a throughput check -> [{"model", "mode", "status", measure.py's figures}]."""
    folder, rows = Path(folder), []
    for mode in ("eager", "compile"):  # run_all.sh --gpu-throughput
        rows += [{**r, "mode": mode} for r in read_json(folder / mode / "benchmark.json")
                 .get("rows", [])]
    order = ["resnet18", "resnet34", "se_res_inception", "baseline", "eager", "compile"]
    place = lambda name: order.index(name) if name in order else len(order)  # noqa: E731
    runs = [d.name.rsplit("-", 1) + [d] for d in folder.iterdir() if d.is_dir() and "-" in d.name]
    for model, mode, run in sorted(runs, key=lambda r: (place(r[0]), r[0], place(r[1]))):
        figures = read_json(run / "measure.json")  # benchmark/gpu_check.sh: <model>-<mode>/
        failed = run / "failed"
        status = ("ok" if figures else failed.read_text().strip() if failed.is_file()
                  else "not measured")
        rows.append({"model": model, "mode": mode, "status": status, **figures})
    return rows


def throughput_summary(folder, command, out_dir=None):
    """A throughput check's runs side by side -> throughput.md, throughput.json, and the
    target lines on stdout."""
    rows = throughput_rows(folder)
    ok = {(r["model"], r["mode"]): r for r in rows if r["status"] == "ok"}
    base = ok.get(("baseline", "eager"))
    env = next((r for r in ok.values()), {})
    lines, out_rows = [], []
    for r in rows:
        if r["status"] != "ok":
            lines.append([r["model"], r["mode"], f"**{r['status']}**"] + [""] * 10)
            out_rows.append({k: r[k] for k in ("model", "mode", "status")})
            continue
        x = {k: None if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k) for k in (
            "model", "mode", "status", "batch_size", "amp", "epochs", "train_time_s", "epoch_s",
            "save_s", "train_img_s", "peak_memory_mb", "train_tflops", "peak_tflops",
            "peak_share")}  # NaN (the plain loop writes no checkpoint copy): null in json
        x["vs_plain_loop"] = ratio(r["train_img_s"], base and base["train_img_s"])
        x["vs_eager"] = ratio(r["train_img_s"],
                              (ok.get((r["model"], "eager")) or {}).get("train_img_s"))
        out_rows.append(x)
        lines.append([r["model"], r["mode"], str(r["batch_size"]), str(r["amp"]),
                      str(r["epochs"]), fmt(r.get("train_time_s"), 2), fmt(r["epoch_s"], 2),
                      fmt(r.get("save_s"), 2), fmt(r["train_img_s"], 0),
                      fmt(r["peak_memory_mb"], 0), fmt(r["train_tflops"], 1),
                      fmt_share(r["peak_share"]),
                      fmt(x["vs_plain_loop"], 2) + "x" if x["vs_plain_loop"] else "-"])
    gpu = env.get("gpu") or f"no GPU: {env.get('device')} (a dry run)"
    date = datetime.now().astimezone().isoformat(timespec="minutes")
    targets = throughput_targets(out_rows, env.get("gpu"))
    md = ["# Training throughput", "",
          f"- {date}, {gpu}, torch {env.get('torch')}", f"- command: `{command}`",
          "- each model at its recipe's batch size and precision on the 50,000-image synthetic "
          "set. Timed epoch: the last. The first warms up (cuDNN's autotuning, torch.compile); "
          "with 3 (resnet18) the second overlaps the training-curve figure train.py draws on a "
          "thread after the first (a long run draws one every 30 s); with 1 the figures include "
          "the warm-up. Training s / epoch: the "
          "training phase (loader, augmentation, mixing, steps); whole: train.py's `time`, "
          "with the evaluation of the 10,000 test images, the checkpoint's copy to the host "
          "(checkpoint s) and the training-curve figure where drawn. img/s = training images / "
          "training phase; TFLOP/s = 3 x forward FLOPs per image x img/s, against the dense "
          "bf16 peak of the GPU's datasheet (benchmark/measure.py's PEAK_TFLOPS); vs plain "
          "loop: img/s against benchmark/baseline.py (a DataLoader of per-image torchvision "
          "transforms, 2 worker processes) at resnet18's recipe", ""]
    md += table(["model", "mode", "batch", "precision", "timed epoch", "training s / epoch",
                 "whole s / epoch", "checkpoint s", "train img/s", "peak memory (MB)",
                 "train TFLOP/s", "share of bf16 peak", "vs plain loop"], lines)
    md += ["", "Targets:", ""] + [f"- {line}" for line in targets]
    text = "\n".join(md) + "\n"
    out = Path(out_dir or folder)
    out.mkdir(parents=True, exist_ok=True)
    write_text(text, out / "throughput.md")
    write_json({"date": date, "gpu": env.get("gpu"), "torch": env.get("torch"),
                "command": command, "rows": out_rows, "targets": targets},
               out / "throughput.json")
    print("\n".join(targets))
    return targets


def throughput_targets(rows, gpu=None):
    """One line per target: resnet18's whole s / epoch eager and compiled, and its img/s
    against the plain loop in each mode; 'met', 'NOT met', or 'failed' with the reason."""
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    by = {(r["model"], r["mode"]): r for r in rows}
    base = by.get(("baseline", "eager"), {"status": "not run"})
    lines = []
    for mode, limit in TARGET_S_PER_EPOCH.items():
        r = by.get(("resnet18", mode), {"status": "not run"})
        if r["status"] != "ok":
            lines.append(f"resnet18 ({mode}): {r['status']}; target <= {limit} s / epoch: "
                         "failed")
            continue
        lines.append(f"resnet18 ({mode}): {r['epoch_s']:.2f} s / epoch, so 150 epochs take "
                     f"{150 * r['epoch_s'] / 60:.1f} min (training phase "
                     f"{fmt(r.get('train_time_s'), 2)} s); target <= {limit} s: "
                     f"{verdict(r['epoch_s'] <= limit)}")
        if base["status"] != "ok":
            lines.append(f"resnet18 ({mode}) / plain loop img/s: the plain loop "
                         f"{base['status']}; target >= {PLAIN_LOOP_RATIO:g}x: failed")
            continue
        x = r["train_img_s"] / base["train_img_s"]
        lines.append(f"resnet18 ({mode}) / plain loop img/s: {r['train_img_s']:,.0f} / "
                     f"{base['train_img_s']:,.0f} = {x:.2f}x; target >= "
                     f"{PLAIN_LOOP_RATIO:g}x: {verdict(x >= PLAIN_LOOP_RATIO)}")
    if gpu is not None and "H100" not in gpu:
        lines.append(f"(the targets are for one H100; this ran on an {gpu})")
    return lines


def write_text(text, path):
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(args):
    if args.throughput:
        return throughput_summary(args.throughput, args.command, args.throughput_out)
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be at least 1")
    results = Path(args.results)
    rows = [aggregate(m, [gather_run(results / "runs" / m / f"seed{k}")
                          for k in range(args.seeds)]) for m in args.models.split()]
    par = parity(args.parity, args.seeds) if args.parity else None
    env = environment([x for r in rows for x in r["runs"]])
    results.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, par, env, args)
    write_text(md, results / "benchmark.md")
    write_json({"environment": env, "command": args.command, "settings": args.settings,
                "rows": rows, "parity": par}, results / "benchmark.json")
    figure.draw(rows, par, env, args.settings or args.command, results / "benchmark.png")
    print(md + f"wrote {results / 'benchmark.md'}, benchmark.json and benchmark.png")


if __name__ == "__main__":
    main(parser.parse_args())
