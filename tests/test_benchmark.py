"""The benchmark's parts: the baseline's recipe against resnet18's, the GPU peak table,
measure.py's reading of epoch rows, report.py's means over seeds, its parity ratio and its
throughput targets (on run directories made up here), that no benchmark file imports a script,
benchmark/gpu_check.sh's options, and (slow) one tiny baseline run each way, with and without a
validation split, measured by measure.py, and gpu_check.sh's dry run on the CPU."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, load_module, run, run_many

BENCH = REPO / "benchmark"


@pytest.fixture(scope="module")
def baseline():
    return load_module(BENCH / "baseline.py", "bench_baseline")


@pytest.fixture(scope="module")
def measure():
    return load_module(BENCH / "measure.py", "bench_measure")


@pytest.fixture(scope="module")
def report():
    return load_module(BENCH / "report.py", "bench_report")


def test_baseline_recipe_is_resnet18s_default_recipe(baseline):
    args = load_module(REPO / "resnet18" / "train.py", "r18_train_for_bench").parse_args([])
    assert (args.optimizer, args.scheduler, args.nesterov) == ("sgd", "onecycle", False)
    assert (baseline.EPOCHS, baseline.BATCH_SIZE) == (args.epochs, args.batch_size)
    assert (baseline.LR, baseline.MOMENTUM, baseline.WEIGHT_DECAY) == (
        args.lr, args.momentum, args.weight_decay)
    assert (baseline.PCT_START, baseline.DIV_FACTOR, baseline.FINAL_DIV_FACTOR) == (
        args.pct_start, args.div_factor, args.final_div_factor)
    b = baseline.parser.parse_args([])
    assert (b.epochs, b.batch_size, b.lr, b.weight_decay) == (
        args.epochs, args.batch_size, args.lr, args.weight_decay)


@pytest.mark.slow  # five runs of an 11 M parameter network: python -m pytest -m slow
def test_baseline_chooses_best_pt_as_train_py_does_and_measure_reads_either_run(tmp_path):
    """best.pt only with a validation split (chosen on it), never on the test set by default;
    val_* columns only where there is a split; --subset shrinks only the training set; and
    measure.py reports best.pt's figures as None where the run has none."""
    tiny = ["--dataset", "synthetic", "--device", "cpu", "--workers", "0", "--subset", "30",
            "--test-subset", "100", "--epochs", "1", "--batch-size", "10"]
    plain, held, both = tmp_path / "plain", tmp_path / "held", tmp_path / "both"
    results = run_many(("benchmark/baseline.py", *tiny, "--out-dir", plain),
                       ("benchmark/baseline.py", *tiny, "--val-split", "10", "--out-dir", held),
                       ("benchmark/baseline.py", *tiny, "--val-split", "10", "--select-on-test",
                        "--out-dir", both),
                       ("benchmark/measure.py", "baseline", "--run-dir", plain, "--infer-batch",
                        "50"),
                       ("benchmark/measure.py", "baseline", "--run-dir", held, "--infer-batch",
                        "50"))
    for r in results[:2] + results[3:]:
        assert r.returncode == 0, r.stdout + r.stderr
    assert results[2].returncode != 0 and "give one of them" in results[2].stderr
    assert "best.pt: none (no --val-split)" in results[0].stdout
    assert not (plain / "best.pt").exists() and (held / "best.pt").is_file()
    cols = [sorted(np.load(d / "metrics.npz").files) for d in (plain, held)]
    assert not any(c.startswith("val_") for c in cols[0]) and "val_top1" in cols[1]
    assert "test_top1" in cols[0] and "test_top1" in cols[1]
    ck = torch.load(held / "best.pt", weights_only=True)
    assert ck["best"]["split"] == "val" and ck["arch"] == "baseline"
    m = [json.loads((d / "measure.json").read_text()) for d in (plain, held)]
    assert (m[0]["best_epoch"], m[0]["best_split"], m[0]["best_test_top1"]) == (None, None, None)
    assert m[1]["best_split"] == "val" and m[1]["best_epoch"] == 1
    assert m[1]["best_test_top1"] == pytest.approx(m[1]["top1_check"])  # the same weights
    assert [(x["train_images"], x["val_images"], x["test_images"]) for x in m] == [
        (30, 0, 100), (20, 10, 100)]
    for x in m:
        assert x["top1_check"] == pytest.approx(x["final_test_top1"])  # both in float32


def test_baseline_network_matches_resnet18s_size(baseline):
    ours = load_module(REPO / "resnet18" / "model.py", "r18_model_for_bench").resnet18()
    theirs = baseline.baseline(100)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs) == 11_220_132


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
    ("NVIDIA H100 NVL", None), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100-PCIE-40GB", 312),
    ("NVIDIA A10G", 125), ("NVIDIA L4", 121), ("NVIDIA L40S", None), ("Tesla T4", 65),
    ("Tesla V100-SXM2-16GB", 125), ("Tesla V100-PCIE-32GB", 112), ("NVIDIA GeForce RTX 4090",
                                                                   None), (None, None)])
def test_gpu_peak_table(measure, name, peak):
    assert measure.peak_tflops(name) == peak


def test_training_figures_come_from_the_last_epoch_row(measure):
    rows = {"epoch": np.array([1.0, 2.0]), "train_images": np.array([1000.0, 1000.0]),
            "train_time": np.array([10.0, 4.0]), "time": np.array([12.0, 5.0]),
            "peak_mem_mb": np.array([900.0, 800.0]), "test_top1": np.array([3.0, 7.0]),
            "test_top5": np.array([9.0, 20.0])}
    f = measure.train_figures(rows)
    assert f["train_img_s"] == 250.0 and f["epoch_s"] == 5.0 and f["epochs"] == 2
    assert f["peak_memory_mb"] == 900.0 and f["final_test_top1"] == 7.0
    with pytest.raises(ValueError, match="train_time"):
        measure.train_figures({k: v for k, v in rows.items() if k != "train_time"})


def fake_run(dir, top1, seed, img_s=100.0, measured=True):
    """A finished run directory as run_all.sh leaves it, with made-up figures."""
    dir.mkdir(parents=True)
    (dir / "done").write_text("settings\n")
    (dir / "steps.tsv").write_text(f"train\tok\t10.0\t{dir}/train.log\t1.5\n")
    (dir / "args.json").write_text(json.dumps({"seed": seed, "batch_size": 10, "lr": 0.1,
                                               "weight_decay": 5e-4}))
    np.savez(dir / "metrics.npz", epoch=[1.0, 2.0], time=[3.0, 2.0], test_top1=[1.0, top1],
             train_images=[100.0, 100.0])
    if measured:
        (dir / "measure.json").write_text(json.dumps({
            "params": 11_220_132, "flops_per_image": 1.1e9, "train_img_s": img_s, "epoch_s": 2.0,
            "infer_img_s": 3 * img_s, "peak_memory_mb": 1000.0, "final_test_top1": top1,
            "final_test_top5": 3 * top1, "superclass_top1": 2 * top1, "top1_check": top1,
            "best_test_top1": top1 + 1, "best_split": "val", "device": "cpu", "gpu": None,
            "torch": "2.x", "threads": 2, "amp": "off", "channels_last": False,
            "compile": False, "epochs": 2, "batch_size": 10, "train_images": 100,
            "val_images": 10, "test_images": 100, "infer_batch": 50, "train_tflops": 0.1,
            "peak_tflops": None, "peak_share": None, "seed": seed}))


def test_report_gives_mean_and_std_over_seeds_and_the_parity_ratio(report, tmp_path):
    for k, (a, b) in enumerate([(30.0, 40.0), (34.0, 40.0)]):
        fake_run(tmp_path / "runs" / "resnet18" / f"seed{k}", a, k, img_s=100.0 + 20 * k)
        fake_run(tmp_path / "runs" / "baseline" / f"seed{k}", b, k)
        for name, top1 in (("resnet18-matched", b), ("resnet18", a), ("baseline", b / 2)):
            fake_run(tmp_path / "parity" / name / f"seed{k}", top1, k, measured=False)
    args = report.parser.parse_args(["--results", str(tmp_path), "--models",
                                     "resnet18 baseline", "--seeds", "2", "--parity",
                                     str(tmp_path / "parity")])
    report.main(args)
    md = (tmp_path / "benchmark.md").read_text()
    assert "| resnet18 | 11.22 | 1.10 | 110.0 |" in md  # speeds: the mean of 100 and 120
    assert "32.00 ± 2.83" in md and "33.00 ± 2.83" in md  # final and best.pt-by-val top-1
    assert "| 2.000 ± 0.000 |" in md.split("Learning parity")[1]  # matched: 40 / 20, both seeds
    bench = json.loads((tmp_path / "benchmark.json").read_text())
    full = bench["parity"]["comparisons"][1]
    assert full["ratio"][0] == pytest.approx((30 / 20 + 34 / 20) / 2)
    assert bench["parity"]["optimizer_steps"] == 20 and bench["parity"]["steps_equal"]
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_report_marks_a_missing_seed(report, tmp_path):
    fake_run(tmp_path / "runs" / "resnet18" / "seed0", 30.0, 0)
    report.main(report.parser.parse_args(["--results", str(tmp_path), "--models", "resnet18",
                                          "--seeds", "2"]))
    assert "**not run (seed1)**" in (tmp_path / "benchmark.md").read_text()


def test_no_benchmark_file_imports_a_script():
    """Scripts (files with a __main__ block) are run, never imported; model.py files are
    library modules, which measure.py may import by path."""
    scripts = {p.stem for p in list(BENCH.glob("*.py")) + list(REPO.glob("*/train.py"))
               if "__main__" in p.read_text()} | {"train", "evaluate", "gradcam"}
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            m = re.match(r"\s*(?:from|import) (\w+)", line)
            assert not (m and m[1] in scripts), f"{path.name} imports a script: {line}"
        for target in re.findall(r"spec_from_file_location\([^)]*\)", text):
            assert "model" in target, f"{path.name}: {target}"


def throughput_run(dir, epoch_s, img_s, tflops=100.0, failed=None):
    """A run directory as benchmark/gpu_check.sh leaves it: measure.json, or `failed`."""
    dir.mkdir(parents=True)
    if failed:
        (dir / "failed").write_text(failed + "\n")
        return
    (dir / "measure.json").write_text(json.dumps({
        "epoch_s": epoch_s, "train_time_s": 0.8 * epoch_s, "save_s": 0.05, "train_img_s": img_s,
        "batch_size": 512, "amp": "bfloat16", "epochs": 2, "peak_memory_mb": 4000.0,
        "train_tflops": tflops, "peak_tflops": 989, "peak_share": tflops / 989,
        "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.x", "device": "cuda"}))


def test_throughput_targets_say_met_not_met_or_failed(report, tmp_path):
    """resnet18 against 1.0 s / epoch eager, 0.6 s compiled, 3x the plain loop's img/s; a run
    that failed says why, and its targets say failed."""
    throughput_run(tmp_path / "runs" / "resnet18-eager", 0.9, 60_000)
    throughput_run(tmp_path / "runs" / "resnet18-compile", 0.7, 80_000)
    throughput_run(tmp_path / "runs" / "baseline-eager", 4.0, 25_000)
    throughput_run(tmp_path / "runs" / "resnet34-eager", 0, 0, failed="failed: timed out")
    lines = report.throughput_summary(tmp_path / "runs", "cmd", tmp_path / "out")
    assert lines == [
        "resnet18 (eager): 0.90 s / epoch, so 150 epochs take 2.2 min (training phase 0.72 s); "
        "target <= 1.0 s: met",
        "resnet18 (eager) / plain loop img/s: 60,000 / 25,000 = 2.40x; target >= 3x: NOT met",
        "resnet18 (compile): 0.70 s / epoch, so 150 epochs take 1.8 min (training phase "
        "0.56 s); target <= 0.6 s: NOT met",
        "resnet18 (compile) / plain loop img/s: 80,000 / 25,000 = 3.20x; target >= 3x: met"]
    md = (tmp_path / "out" / "throughput.md").read_text()
    assert "| resnet34 | eager | **failed: timed out** |" in md
    assert "| resnet18 | compile | 512 | bfloat16 | 2 | 0.56 | 0.70 | 0.05 | 80,000 |" in md
    rows = json.loads((tmp_path / "out" / "throughput.json").read_text())["rows"]
    assert [(r["model"], r["mode"], r.get("vs_plain_loop")) for r in rows] == [
        ("resnet18", "eager", 2.4), ("resnet18", "compile", 3.2), ("resnet34", "eager", None),
        ("baseline", "eager", 1.0)]
    shutil.rmtree(tmp_path / "runs" / "baseline-eager")
    assert report.throughput_targets(report.throughput_rows(tmp_path / "runs"), "NVIDIA L4")[
        1:] == ["resnet18 (eager) / plain loop img/s: the plain loop not run; target >= 3x: "
                "failed", "resnet18 (compile): 0.70 s / epoch, so 150 epochs take 1.8 min "
                "(training phase 0.56 s); target <= 0.6 s: NOT met", "resnet18 (compile) / "
                "plain loop img/s: the plain loop not run; target >= 3x: failed",
                "(the targets are for one H100; this ran on an NVIDIA L4)"]


def test_gpu_check_refuses_bad_options_and_its_estimate_fits_the_lending():
    """Before any device time is spent; and the header's estimate for both parts stays within
    the 7 minutes the lent GPU's 15 (start-up included, two calls) leave for the check."""
    script = str(BENCH / "gpu_check.sh")
    r = subprocess.run(["bash", script, "--part", "speed"], capture_output=True, text=True)
    assert r.returncode == 2 and "not 'speed'" in r.stderr
    r = subprocess.run(["bash", script, "--only", "tests"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --only" in r.stderr
    r = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    estimates = dict(re.findall(r"#? *(correctness|throughput|both parts)\b.*?~(\d+\.\d) min",
                                r.stdout))
    assert float(estimates["both parts"]) <= 7.0, estimates
    assert float(estimates["correctness"]) + float(estimates["throughput"]) == pytest.approx(
        float(estimates["both parts"]), abs=0.05)


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """benchmark/gpu_check.sh --device cpu, both parts at toy sizes: the CUDA tests run on the
    CPU (GPU_CHECK_DEVICE=cpu), compilation is off, and every line of the summary is written,
    so the lent GPU's minutes are not lost to a typo. Everything big stays in the scratch
    directory, which is gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="gc", dir="/tmp"))  # short: sockets live under it
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "TMPDIR": str(tmp)}
    try:
        r = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--device", "cpu"], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=1800)
        left = list(tmp.iterdir())
    finally:
        shutil.rmtree(tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    assert sorted(f.name for f in out.iterdir()) == [
        "correctness.log", "ddp.log", "summary.txt", "throughput.json", "throughput.log",
        "throughput.md"]
    assert all(f.stat().st_size < 2**20 for f in out.iterdir())
    assert not left, left  # the scratch directory, and everything run's temporary files: gone
    summary = (out / "summary.txt").read_text()
    lines = summary.splitlines()
    assert lines[0].startswith("machine: no CUDA GPU | torch ")
    assert lines[1] == "command: bash benchmark/gpu_check.sh --device cpu"
    for test in ("test_recipe_trains_on_the_device_and_writes_a_finite_run[resnet18]",
                 "test_the_step_under_each_precision_and_layout_matches_cpu_fp32[resnet18]",
                 "test_ctrl_c_and_resume_on_the_device_are_bit_exact_when_deterministic",
                 "test_forced_ddp_on_one_rank_runs_the_collectives_and_resumes_bit_exact[cpu]"):
        assert f"{test}: met" in summary, summary
    assert re.search(r"matches_cpu_fp32\[resnet18\]: met .*relative difference off 0\.0", summary)
    assert "test_the_loop_does_not_wait_for_the_gpu_every_step: skipped" in summary
    for name in ("resnet18-eager", "baseline-eager", "resnet34-eager", "se_res_inception-eager",
                 "resnet18-compile"):
        assert f"{name}: ok" in summary, summary
    for mode, limit in (("eager", "1.0"), ("compile", "0.6")):
        assert re.search(rf"resnet18 \({mode}\): \d+\.\d\d s / epoch, .*target <= {limit} s: "
                         r"(met|NOT met)", summary), summary
        assert re.search(rf"resnet18 \({mode}\) / plain loop img/s: .*x; target >= 3x: "
                         r"(met|NOT met)", summary), summary
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert len(rows) == 5 and all(x["status"] == "ok" and x["train_tflops"] > 0 for x in rows)
    assert "done (exit 0)" in lines[-1]


def test_the_parity_set_is_read_as_cifar100_and_its_colours_are_not_cifars(tmp_path):
    """benchmark/parity_set.py writes the official format: train.py's reader takes it, every
    class is there, and its channel statistics are far from CIFAR-100's (the point of the set:
    a loop that normalizes with CIFAR's constants is handicapped on it)."""
    from common import data
    run("benchmark/parity_set.py", "--out", tmp_path, "--train", 500, "--test", 100)
    splits = data.load_splits("cifar100", tmp_path, download=False)
    assert splits["train"][0].shape == (500, 3, 32, 32) and len(splits["test"][1]) == 100
    assert splits["train"][1].bincount().tolist() == [5] * 100
    mean, std = data.channel_stats(splits["train"][0])
    assert abs(mean[0] - data.CIFAR100_MEAN[0]) > 0.15 and max(std) < 0.2
