"""The CUDA path of the three folders: `python -m pytest -m cuda` on a machine with a GPU; skipped
(not failed) where none is visible, so CI on CPUs stays green.

What is compared with what:
- every train.py runs its own recipe on CUDA (the batched loader, augmentation and mixing on the
  GPU, autocast, channels_last, checkpoints from GPU tensors) and its checkpoint evaluates on the
  CPU; a CPU checkpoint evaluates on CUDA; evaluate.py, gradcam.py, evaluate_superclass.py run;
- the step itself (train.py's train_step) on the first batch a CPU fp32 run drew, for --amp off /
  bf16 / fp16 x channels_last off / on (+ --compile for resnet18): the first loss is within
  a tolerance of the CPU fp32 loss (see STEP_TOLERANCE), three steps stay finite, and fp16
  really scales its loss (GradScaler scale 2**16 at the start);
- the training loop waits for the GPU only every 20 steps and at the epoch's end: no line (the
  repo's or torch's under it) synchronises per step (torch.cuda.set_sync_debug_mode counts);
- Ctrl-C and --resume on CUDA with --deterministic give bit-identical weights, EMA and optimizer
  state to the uninterrupted run (cuDNN autotuning off, deterministic kernels). Without
  --deterministic cuDNN may pick other kernels in the resumed process: the run continues
  correctly, but not bit for bit.
"""
import json
import sys

import pytest
import torch

from conftest import REPO, interrupt_in_epoch_2, run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")]

FOLDERS = ["resnet18", "resnet34", "se_res_inception"]
SMALL = ["--dataset", "synthetic", "--subset", "256", "--batch-size", "64", "--epochs", "2",
         "--progress-every", "1000"]
# |first loss on CUDA - CPU fp32 loss| / CPU loss, same weights and batch. bf16 keeps 8 bits of
# mantissa (~0.4 % per rounding), fp16 11 bits; "off" still uses TF32 in cuDNN convolutions.
STEP_TOLERANCE = {"off": 0.01, "fp16": 0.01, "bf16": 0.03}


@pytest.fixture(scope="module", params=FOLDERS)
def cuda_run(request, tmp_path_factory):
    folder = request.param
    out = tmp_path_factory.mktemp(folder)
    run(REPO / folder / "train.py", *SMALL, "--device", "cuda", "--out-dir", out / "run")
    return folder, out


def test_recipe_trains_on_cuda_and_writes_a_finite_run(cuda_run):
    folder, out = cuda_run
    # no map_location on purpose: tensors load onto the device they were saved from, and
    # TrainState writes host copies, so a CPU-only machine can read the file
    ck = torch.load(out / "run" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and all(t.device.type == "cpu" for t in ck["model"].values())
    assert all(t.device.type == "cpu" for s in ck["optimizer"]["state"].values()
               for t in s.values() if torch.is_tensor(t))
    rows = ck["tracker"]["rows"]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    args = json.loads((out / "run" / "args.json").read_text())
    assert args["amp"] == "auto" and args["channels_last"] is None  # the defaults: bf16, NHWC
    assert rows[-1]["peak_mem_mb"] > 0 and rows[-1]["train_time"] > 0


def test_cuda_checkpoint_evaluates_on_cpu_and_scripts_run_on_cuda(cuda_run):
    folder, out = cuda_run
    ckpt = out / "run" / "best.pt"
    cpu = run(REPO / folder / "evaluate.py", "--checkpoint", ckpt, "--device", "cpu",
              "--out-dir", out / "eval_cpu")
    gpu = run(REPO / folder / "evaluate.py", "--checkpoint", ckpt, "--device", "cuda",
              "--out-dir", out / "eval_cuda")
    r_cpu = json.loads((out / "eval_cpu" / "report.json").read_text())
    r_gpu = json.loads((out / "eval_cuda" / "report.json").read_text())
    assert abs(r_cpu["top1"] - r_gpu["top1"]) <= 1.0, (cpu.stdout, gpu.stdout)  # TF32 ties
    run(REPO / folder / "gradcam.py", "--checkpoint", ckpt, "--device", "cuda", "--num", "4",
        "--out-dir", out / "gradcam")
    assert (out / "gradcam" / "gradcam_grid.png").is_file()
    if folder == "se_res_inception":
        run(REPO / folder / "evaluate_superclass.py", "--checkpoint", ckpt, "--device", "cuda",
            "--out-dir", out / "superclass")
        assert (out / "superclass" / "superclass.json").is_file()


def test_cpu_checkpoint_evaluates_on_cuda(tmp_path):
    run(REPO / "resnet18" / "train.py", "--dataset", "synthetic", "--subset", "100",
        "--batch-size", "50", "--epochs", "1", "--device", "cpu", "--out-dir", tmp_path / "run")
    run(REPO / "resnet18" / "evaluate.py", "--checkpoint", tmp_path / "run" / "last.pt",
        "--device", "cuda", "--out-dir", tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["images"] == 100


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_step_under_each_precision_and_layout_matches_cpu_fp32(folder, tmp_path):
    flags = ["--dataset", "synthetic", "--subset", "64", "--batch-size", "32", "--epochs", "1",
             "--progress-every", "1000", "--out-dir", tmp_path / "run"]
    run(REPO / "tests" / "probe.py", folder, "record", tmp_path, "--", *flags, "--device", "cpu")
    cpu_loss = torch.load(tmp_path / "seen_rank0.pt")[0][2]
    compile_flag = ["--compile"] if folder == "resnet18" else []
    run(REPO / "tests" / "probe.py", folder, "steps", tmp_path, "--", *flags, "--device", "cuda",
        "--out-dir", tmp_path / "run2", *compile_flag)
    results = torch.load(tmp_path / "steps_cuda.pt")
    assert len(results) == (12 if compile_flag else 6)
    for r in results:
        first, *later = r["losses"]
        assert abs(first - cpu_loss) <= STEP_TOLERANCE[r["amp"]] * cpu_loss, (r, cpu_loss)
        assert all(torch.isfinite(torch.tensor(later))), r
        if r["amp"] == "fp16":
            assert r["scale"] is not None and r["scale"] >= 2.0 ** 10, r  # loss scaling is on
        else:
            assert r["scale"] is None


def test_ctrl_c_and_resume_on_cuda_are_bit_exact_when_deterministic(tmp_path):
    flags = ["--dataset", "synthetic", "--subset", "640", "--batch-size", "32", "--epochs", "2",
             "--ema", "0.9", "--device", "cuda", "--deterministic"]
    run(REPO / "resnet18" / "train.py", *flags, "--out-dir", tmp_path / "a",
        "--progress-every", "1000")
    code, rest = interrupt_in_epoch_2([sys.executable, REPO / "resnet18" / "train.py", *flags,
                                       "--out-dir", tmp_path / "b", "--progress-every", "0"])
    assert code == 0 and "interrupted: saved" in rest
    run(REPO / "resnet18" / "train.py", "--resume", "--out-dir", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_loop_does_not_wait_for_the_gpu_every_step(tmp_path):
    """One epoch of 20 steps against one of 60 (EMA on): a line that waits every step counts 40
    more in the longer run; the loop's check every 20 steps counts 2 more; what happens once an
    epoch (evaluation, the checkpoint's copy to the host) counts the same in both."""
    counts = {}
    for steps in (20, 60):
        out = tmp_path / str(steps)
        out.mkdir()
        run(REPO / "tests" / "probe.py", "resnet18", "syncs", out, "--", "--dataset", "synthetic",
            "--subset", 64 * steps, "--batch-size", "64", "--epochs", "1", "--progress-every",
            "1000", "--ema", "0.99", "--device", "cuda", "--out-dir", out / "run")
        counts[steps] = json.loads((out / "syncs.json").read_text())  # {"file:line": count}
    more = {line: n - counts[20].get(line, 0) for line, n in counts[60].items()}
    assert counts[60] and max(more.values()) <= 4, more
