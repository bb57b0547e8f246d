"""benchmark.png, drawn by benchmark/report.py from its table rows: accuracy against training
time, training and inference throughput, and the learning-parity comparison. Written atomically
with common.metrics.save_figure."""
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common.metrics import save_figure  # noqa: E402  (atomic PNG write; imports no torch)

COLORS = {"resnet18": "#1f77b4", "resnet34": "#ff7f0e", "se_res_inception": "#2ca02c",
          "baseline": "#7f7f7f", "resnet18-matched": "#17becf"}


def color(model):
    return COLORS.get(model, "#9467bd")


def accuracy_panel(ax, ok):
    """Test top-1 after each epoch against the cumulative epoch time, every seed of every model."""
    longest = max((sum(x["epoch_times_s"]) for r in ok for x in r["runs"]), default=0)
    unit, scale = ("min", 60) if longest > 300 else ("s", 1)
    top = 0.0
    for r in ok:
        for k, x in enumerate(r["runs"]):
            t, acc = np.cumsum(x["epoch_times_s"]) / scale, x["test_top1_per_epoch"]
            ax.plot(t, acc, color=color(r["model"]), marker="o", ms=4, alpha=1 if k == 0 else 0.4,
                    label=r["model"] if k == 0 else None,
                    ls="--" if r["model"] == "baseline" else "-")
            top = max([top] + list(acc))
        if r["test_top1_per_epoch"]:
            t_end = sum(r["epoch_times_s"]) / scale
            ax.annotate(f"{r['test_top1_per_epoch'][-1]:.1f}%",
                        (t_end, r["test_top1_per_epoch"][-1]), textcoords="offset points",
                        xytext=(4, 4), fontsize=9, color=color(r["model"]))
    ax.axhline(1.0, color="0.5", lw=1, ls=":", label="chance (1 %)")
    ax.set(xlabel=f"training time ({unit}, cumulative epoch time)", ylabel="test top-1 (%)",
           title="Accuracy vs training time (main runs)", ylim=(0, max(5.0, 1.15 * top)),
           xlim=(0, 1.18 * max(longest / scale, 1e-9)))  # room for the end labels
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=5)  # below
    if ok and top < 10:  # say so rather than let a reader rank models on noise
        ax.text(0.98, 0.97, "every model is near chance:\ntoo little training to rank "
                "them\n(see the parity panel)", transform=ax.transAxes, ha="right", va="top",
                fontsize=9, color="0.3", bbox={"facecolor": "white", "edgecolor": "0.7"})


def bars_panel(ax, ok, key, title, digits, cores):
    """One horizontal bar per model (the first model on top), labelled with its value and, where
    other processes competed for the CPU, the load that makes the figure pessimistic."""
    rows = ok[::-1]
    y = np.arange(len(rows))
    bars = ax.barh(y, [r[key] or 0 for r in rows], height=0.6,
                   color=[color(r["model"]) for r in rows])
    busy = [r["max_load"] if (r["max_load"] or 0) > cores else None for r in rows]
    labels = [f"{r[key] or 0:.{digits}f}" + (f"  (load {b:.1f})" if b else "")
              for r, b in zip(rows, busy)]
    ax.bar_label(bars, labels, padding=3, fontsize=9)
    ax.set_yticks(y, [r["model"] for r in rows])
    ax.set(title=title, xlabel="images / second")
    ax.margins(x=0.3)
    ax.grid(axis="x", alpha=0.3)


def parity_panel(ax, par):
    """Grouped bars: resnet18 and the baseline per comparison, error bars = std over seeds."""
    labels = ["crop + flip on both\n(resnet18-matched)", "resnet18's full recipe\nvs crop + flip"]
    x = np.arange(len(par["comparisons"]))
    for dx, key, name in ((-0.2, "repo_top1", None), (0.2, "baseline_top1", "baseline")):
        means = [c[key][0] or 0 for c in par["comparisons"]]
        stds = [c[key][1] or 0 for c in par["comparisons"]]
        colors = [color(name or c["repo"]) for c in par["comparisons"]]
        bars = ax.bar(x + dx, means, 0.38, yerr=stds if any(stds) else None, capsize=4,
                      color=colors, hatch="//" if name else None, edgecolor="white")
        ax.bar_label(bars, fmt="%.1f", padding=3, fontsize=9)
    for i, c in enumerate(par["comparisons"]):
        r, s = c["ratio"]
        if r is not None:
            ax.annotate(f"ratio {r:.2f}" + (f" ± {s:.2f}" if s is not None else ""), (i, 0),
                        xytext=(0, -38), textcoords="offset points", ha="center", fontsize=10,
                        annotation_clip=False)
    ax.axhline(1.0, color="0.5", lw=1, ls=":")
    ax.set_xticks(x, labels, fontsize=9)
    top = max([c[k][0] or 0 for c in par["comparisons"] for k in ("repo_top1", "baseline_top1")])
    ax.set(ylabel="test top-1 after the same steps (%)", ylim=(0, max(5.0, 1.25 * top)),
           title=f"Learning parity: resnet18 (solid) vs baseline (hatched), "
                 f"{par['optimizer_steps']} steps")
    ax.grid(axis="y", alpha=0.3)


def draw(rows, par, env, title, path):
    ok = [r for r in rows if r["status"] == "ok"]
    fig = Figure(figsize=(15, 9.5), layout="constrained")
    (ax_acc, ax_par), (ax_train, ax_inf) = fig.subplots(2, 2)
    accuracy_panel(ax_acc, ok)
    if par:
        parity_panel(ax_par, par)
    else:
        ax_par.set_axis_off()
        ax_par.text(0.5, 0.5, "no learning-parity runs (--no-parity)", ha="center",
                    transform=ax_par.transAxes, color="0.4")
    cores = env["cpu_count"] if env["device"] == "cpu" else float("inf")
    bars_panel(ax_train, ok, "train_img_s", "Training throughput, last epoch (img/s)", 1, cores)
    bars_panel(ax_inf, ok, "infer_img_s", "Inference throughput, test split (img/s)", 0, cores)
    device = env["device"] or "-"
    device += f" ({env['gpu']})" if env["gpu"] else f", {env['torch_threads']} threads"
    fig.suptitle(f"{title}\n{device}, torch {env['torch']}, {env['date'][:10]}", fontsize=10)
    save_figure(fig, path)
