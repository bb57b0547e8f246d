"""run_all.sh end to end at a toy size (20 synthetic training images, 2 held out for validation
to choose best.pt on, 1 epoch of one step, 100 test images; the parity runs: 2 steps of 9).

Three runs into one results dir serve most tests (each model is trained once, to keep the file
near two minutes on 2 cores): run 1 injects a bad flag into the baseline, which fails at once,
in the main and the parity runs, while everything else finishes; run 2 retries the baseline and
skips the rest; run 3 redoes the baseline on request and adds its second seed (--seeds 2). The
last test is the --gpu-throughput dry run on the CPU, so a GPU attempt is not lost to a typo.
"""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["resnet18", "resnet34", "se_res_inception", "baseline"]
# one step of 18 images (not 5 steps: resnet34's OneCycle divides by zero when 20 % of them is
# 1); the test split: quick mode's --test-subset 100, one image a class
TINY = {"QUICK": "1", "SUBSET": "20", "EPOCHS": "1", "BATCH_SIZE": "18", "INFER_BATCH": "25",
        "WORKERS": "1", "DEVICE": "cpu", "EXTRAS": "0", "PARITY_SUBSET": "20",
        "PARITY_EPOCHS": "1", "PARITY_BATCH_SIZE": "9"}


def run_all(results, *flags, **env):
    env = {**os.environ, "PYTHON": sys.executable, "RESULTS": str(results), **TINY, **env}
    return subprocess.run(["bash", str(ROOT / "run_all.sh"), *flags], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def table_rows(md):
    """{model: [cells]} of the first table in benchmark.md (the results)."""
    rows = {}
    for line in md.split("\n\n|", 1)[1].split("\n\n")[0].splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def done_times(results):
    return {str(p.parent.relative_to(results)): p.stat().st_mtime_ns
            for p in results.glob("*/*/seed*/done")}


def snapshot(results, proc):
    """What a run left: its output, the table, the json and each run's completion time."""
    md, js = results / "benchmark.md", results / "benchmark.json"
    log = results / "logs" / "baseline.seed0.train.log"
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr,
            "done": done_times(results), "md": md.read_text() if md.exists() else "",
            "json": json.loads(js.read_text()) if js.exists() else {}, "log": log.read_text()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    first = snapshot(results, run_all(results, TRAIN_ARGS_baseline="--workers x"))
    second = snapshot(results, run_all(results))
    third = snapshot(results, run_all(results, "--redo", "baseline", "--seeds", "2",
                                      "--models", "baseline", "--no-parity"))
    return results, first, second, third


@pytest.mark.slow
def test_a_failing_model_lets_the_others_finish_and_is_named(runs):
    results, first, *_ = runs
    assert first["rc"] == 1, first["out"] + first["err"]
    log = results / "logs" / "baseline.seed0.train.log"
    assert f"error: baseline.seed0 failed at step 'train' (exit 2); log: {log}" in first["err"]
    assert "error: parity.baseline.seed0 failed at step 'train'" in first["err"]
    assert "argument --workers: invalid int value: 'x'" in first["log"]
    assert sorted(first["done"]) == ["parity/resnet18-matched/seed0", "parity/resnet18/seed0",
                                     "runs/resnet18/seed0", "runs/resnet34/seed0",
                                     "runs/se_res_inception/seed0"]
    rows = table_rows(first["md"])
    assert "failed at train" in rows["baseline"][0] and str(log) in rows["baseline"][0]
    assert float(rows["resnet18"][0]) == pytest.approx(11.22)  # params (M) still reported
    assert "failed at train" in first["md"].split("Learning parity")[1]


@pytest.mark.slow
def test_second_run_skips_finished_runs_and_retries_the_failed_one(runs):
    _, first, second, _ = runs
    assert second["rc"] == 0, second["out"] + second["err"]
    for name in ("resnet18", "resnet34", "se_res_inception", "parity.resnet18-matched"):
        assert re.search(rf"{name}.seed0\s+skipped", second["out"])
    assert {k: v for k, v in second["done"].items() if k in first["done"]} == first["done"]
    assert re.search(r"\bbaseline.seed0\s+train\s+ok", second["out"])
    assert re.search(r"parity.baseline.seed0\s+train\s+ok", second["out"])


@pytest.mark.slow
def test_redo_runs_a_finished_model_again_and_seeds_add_runs(runs):
    results, _, second, third = runs
    assert third["rc"] == 0, third["out"] + third["err"]
    assert re.search(r"\bbaseline.seed0\s+train\s+ok", third["out"])
    assert re.search(r"\bbaseline.seed1\s+train\s+ok", third["out"])
    assert third["done"]["runs/baseline/seed0"] > second["done"]["runs/baseline/seed0"]
    assert third["done"]["runs/resnet18/seed0"] == second["done"]["runs/resnet18/seed0"]
    seeds = [json.loads((results / "runs" / "baseline" / f"seed{k}" / "args.json").read_text())
             ["seed"] for k in (0, 1)]
    assert seeds == [0, 1]  # the recipe's seed, then + 1
    row = table_rows(third["md"])["baseline"]
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", row[6]), row  # final top-1: mean ± std


@pytest.mark.slow
def test_table_json_and_figure_hold_every_model(runs):
    results, _, second, _ = runs
    rows = table_rows(second["md"])
    assert sorted(rows) == sorted(MODELS)
    for m in MODELS:
        params, gflops, train_ips = (float(c.replace(",", "")) for c in rows[m][:3])
        assert params > 1 and gflops > 0.1 and train_ips > 0, (m, rows[m])
    md = second["md"]
    assert "torch " in md and "command: `" in md and "quick mode" in md
    assert "train img/s, last epoch" in md and "best.pt by val" in md

    by_model = {r["model"]: r for r in second["json"]["rows"]}
    assert sorted(by_model) == sorted(MODELS)
    for m, r in by_model.items():
        assert r["status"] == "ok" and r["test_images"] == 100
        assert (r["train_images"], r["val_images"]) == (18, 2)
        assert 0 <= r["final_test_top1"] <= r["final_test_top5"] <= 100
        assert r["superclass_top1"] >= r["final_test_top1"]  # a right class: a right superclass
        assert r["best_split"] == "val" and r["best_test_top1"] is not None
        run = r["runs"][0]
        assert run["top1_check"] == pytest.approx(run["final_test_top1"])  # measure.py agrees
        if m != "baseline":
            assert run["top1_check"] == pytest.approx(run["evaluate_top1"])  # and evaluate.py
        assert r["epoch_s"] > 0 and r["infer_img_s"] > 0 and r["peak_memory_mb"] > 100
        assert r["total_wall_s"] > r["train_wall_s"] > 0
    # resnet18/model.py and the baseline are the same network; the counts must agree
    for key in ("params", "flops_per_image"):
        assert by_model["resnet18"][key] == by_model["baseline"][key]
    assert by_model["resnet18"]["params"] == 11_220_132

    for run in [*results.glob("runs/*/seed0"), *results.glob("parity/*/seed0")]:
        args = json.loads((run / "args.json").read_text())  # what each train.py was given
        assert (args["test_subset"], args["val_split"]) == (100, 2), run
        assert (run / "best.pt").is_file(), run  # chosen on those 2 held-out images

    parity = second["json"]["parity"]
    assert parity["optimizer_steps"] == 2 and parity["steps_equal"]
    for c in parity["comparisons"]:
        assert c["pairs"] <= 1 and not c["status"] and c["baseline_top1"][0] is not None
    assert "Learning parity" in md and "ratio (resnet18 / baseline)" in md

    png = (results / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1000 and height >= 800


def test_unknown_model_and_bad_seeds_are_refused_before_anything_runs(tmp_path):
    r = run_all(tmp_path, "--models", "resnet18 resnet99")
    assert r.returncode == 2
    assert "error: unknown model 'resnet99'" in r.stderr and "resnet18" in r.stderr
    r = run_all(tmp_path, "--seeds", "two")
    assert r.returncode == 2 and "error: --seeds must be a whole number, not 'two'" in r.stderr
    r = run_all(tmp_path, "--test-subset", "-5")
    assert r.returncode == 2 and "error: --test-subset must be a whole number" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_gpu_throughput_dry_run_on_the_cpu(tmp_path):
    """The GPU mode end to end, tiny, on the CPU: 2 epochs, eager and "compiled" (compilation
    switched off by TORCH_COMPILE_DISABLE, which would take minutes on a CPU; the --compile
    flag still travels through every step). One model: the others take the same path, and
    the main runs above cover each model's scripts."""
    env = {**os.environ, "PYTHON": sys.executable, "RESULTS": str(tmp_path),
           "TORCH_COMPILE_DISABLE": "1", "WORKERS": "1"}
    r = subprocess.run(["bash", str(ROOT / "run_all.sh"), "--gpu-throughput", "--device", "cpu",
                        "--subset", "20", "--test-subset", "100", "--batch-size", "10",
                        "--infer-batch", "50", "--models", "resnet18"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "gpu-throughput" / "throughput.json").read_text())
    got = {(x["model"], x["mode"]) for x in summary["rows"]}
    assert got == {("resnet18", "eager"), ("resnet18", "compile")}
    for x in summary["rows"]:
        assert x["train_img_s"] > 0 and x["train_tflops"] > 0 and x["peak_share"] is None
    for mode in ("eager", "compile"):
        run = tmp_path / "gpu-throughput" / mode / "runs" / "resnet18" / "seed0"
        args = json.loads((run / "args.json").read_text())
        assert (args["epochs"], args["val_split"], args["compile"]) == (2, 0, mode == "compile")
        assert args["test_subset"] == 100 and not (run / "best.pt").exists()  # no val split
        assert not (run / "eval").exists() and not (run / "gradcam").exists()  # no extras
    md = (tmp_path / "gpu-throughput" / "throughput.md").read_text()
    assert "| resnet18 | compile |" in md and "a dry run" in md
    assert re.search(r"resnet18 \((eager|compile)\): \d+\.\d\d s / epoch, so 150 epochs", md)
