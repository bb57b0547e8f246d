"""run_all.sh end to end at a toy size (20 synthetic training images, 1 epoch, 1 timed step).

Three runs into one results dir serve every test (each model is trained once, to keep the file
near two minutes on 2 cores): run 1 injects a bad flag into the baseline, which fails at once
while the three models finish; run 2 retries the baseline and skips the three; run 3 redoes the
baseline on request.
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
# one step of 20 images (not 5 steps: resnet34's OneCycle divides by zero when 20 % of them is 1);
# the synthetic test split is 100 images whatever the subset
TINY = {"QUICK": "1", "SUBSET": "20", "EPOCHS": "1", "BATCH_SIZE": "20", "WARMUP": "0",
        "STEPS": "1", "INFER_BATCH": "50", "WORKERS": "1", "DEVICE": "cpu",
        "EXTRAS": "0"}


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


def snapshot(results, proc):
    """What a run left: its output, the table and each model's completion time."""
    done = {m: (results / "runs" / m / "done").stat().st_mtime_ns for m in MODELS
            if (results / "runs" / m / "done").exists()}
    md = results / "benchmark.md"
    log = results / "logs" / "baseline.train.log"
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr, "done": done,
            "md": md.read_text() if md.exists() else "", "log": log.read_text()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    first = snapshot(results, run_all(results, TRAIN_ARGS_baseline="--workers x"))
    second = snapshot(results, run_all(results))
    third = snapshot(results, run_all(results, "--redo", "baseline"))
    return results, first, second, third


def test_a_failing_model_lets_the_others_finish_and_is_named(runs):
    results, first, *_ = runs
    assert first["rc"] == 1, first["out"] + first["err"]
    log = results / "logs" / "baseline.train.log"
    assert f"error: baseline failed at step 'train' (exit 2); log: {log}" in first["err"]
    assert "argument --workers: invalid int value: 'x'" in first["log"]
    assert sorted(first["done"]) == ["resnet18", "resnet34", "se_res_inception"]
    rows = table_rows(first["md"])
    assert "failed at train" in rows["baseline"][0] and str(log) in rows["baseline"][0]
    assert float(rows["resnet18"][0]) == pytest.approx(11.22)  # params (M) still reported


def test_second_run_skips_finished_models_and_retries_the_failed_one(runs):
    _, first, second, _ = runs
    assert second["rc"] == 0, second["out"] + second["err"]
    for m in ("resnet18", "resnet34", "se_res_inception"):
        assert re.search(rf"{m}\s+skipped", second["out"])
        assert second["done"][m] == first["done"][m]
    assert re.search(r"baseline\s+train\s+ok", second["out"])


def test_redo_runs_a_finished_model_again(runs):
    _, _, second, third = runs
    assert third["rc"] == 0, third["out"] + third["err"]
    assert re.search(r"baseline\s+train\s+ok", third["out"])
    assert third["done"]["baseline"] > second["done"]["baseline"]
    assert third["done"]["resnet18"] == second["done"]["resnet18"]


def test_table_json_and_figure_hold_every_model(runs):
    results, *_ = runs
    md = (results / "benchmark.md").read_text()
    rows = table_rows(md)
    assert sorted(rows) == sorted(MODELS)
    for m in MODELS:
        params, gflops, train_ips = (float(c.replace(",", "")) for c in rows[m][:3])
        assert params > 1 and gflops > 0.1 and train_ips > 0, (m, rows[m])
    assert "torch " in md and "command: `" in md and "quick mode" in md

    bench = json.loads((results / "benchmark.json").read_text())
    by_model = {r["model"]: r for r in bench["rows"]}
    assert sorted(by_model) == sorted(MODELS)
    for m, r in by_model.items():
        assert r["status"] == "ok" and r["train_images"] == 20 and r["test_images"] == 100
        assert 0 <= r["top1"] <= r["top5"] <= 100
        assert r["superclass_top1"] >= r["top1"]  # a right fine class is a right superclass
        assert r["top1_check"] == pytest.approx(r["top1"])  # measure.py agrees with evaluate.py
        assert r["epoch_s"] > 0 and r["infer_img_s"] > 0 and r["peak_memory_mb"] > 100
        assert r["total_wall_s"] > r["train_wall_s"] > 0
    # resnet18/model.py and the baseline are the same network; the counts must agree
    for key in ("params", "flops_per_image"):
        assert by_model["resnet18"][key] == by_model["baseline"][key]
    assert by_model["resnet18"]["params"] == 11_220_132

    png = (results / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1000 and height >= 400


def test_unknown_model_is_refused_before_anything_runs(tmp_path):
    r = run_all(tmp_path, "--models", "resnet18 resnet99")
    assert r.returncode == 2
    assert "error: unknown model 'resnet99'" in r.stderr and "resnet18" in r.stderr
    assert not (tmp_path / "runs").exists()
