"""The benchmark's parts: the baseline's recipe against resnet18's, the GPU peak table,
measure.py's reading of epoch rows, report.py's means over seeds and its parity ratio (on run
directories made up here), that no benchmark file imports a script, and (slow) one tiny baseline
run each way, with and without a validation split, measured by measure.py."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import REPO, load_module, run_many

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


def test_throughput_targets_take_each_models_faster_mode(report):
    row = lambda model, mode, img_s, epoch_s, tflops: {  # noqa: E731
        "model": model, "mode": mode, "train_img_s": img_s, "epoch_s": epoch_s,
        "train_tflops": tflops}
    lines = report.throughput_targets([
        row("resnet18", "eager", 20_000, 3.0, 60.0), row("resnet18", "compile", 30_000, 1.9, 90.0),
        row("baseline", "eager", 16_000, 4.0, 50.0), row("resnet34", "compile", 9_000, 6.0, 50.0),
        row("se_res_inception", "eager", 3_000, 20.0, 40.0)])
    assert lines == [
        "resnet18 (compile): 1.90 s / epoch, so 150 epochs take 4.8 min; target <= 2.0 s: met",
        "resnet18 / baseline img/s: 1.88x; target >= 2x: NOT met",
        "resnet34 TFLOP/s / resnet18's: 0.56; target >= 0.5: met",
        "se_res_inception TFLOP/s / resnet18's: 0.44; target >= 0.5: NOT met"]
