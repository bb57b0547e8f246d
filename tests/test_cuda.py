"""The CUDA path of the three folders: `python -m pytest -m cuda` on a machine with a GPU; skipped
(not failed) where none is visible, so CI on CPUs stays green. benchmark/gpu_check.sh runs them,
and its CPU dry run runs them on the CPU (GPU_CHECK_DEVICE=cpu: the same code, tiny sizes, the
sync count skipped), so a typo here never costs a lent GPU's minutes.

What is compared with what:
- every train.py runs its own recipe on CUDA (the batched loader, augmentation and mixing on the
  GPU, autocast, channels_last, checkpoints from GPU tensors) and its checkpoint evaluates on the
  CPU; a CPU checkpoint evaluates on CUDA; evaluate.py, gradcam.py, evaluate_superclass.py run;
- the step itself (train.py's train_step) on the first batch a CPU fp32 run drew, with every
  dropout off on both sides (their masks would differ), for --amp off / bf16 / fp16 x
  channels_last off / on, and for resnet18 once more compiled at the recipe's bf16 +
  channels_last: the first loss is within STEP_TOLERANCE of the CPU fp32 loss, which then
  measures precision alone; three steps stay finite; fp16 really scales its loss;
- the training loop waits for the GPU only every 20 steps and at the epoch's end: no line (the
  repo's or torch's under it) synchronises per step (torch.cuda.set_sync_debug_mode counts);
- Ctrl-C and --resume on CUDA with --deterministic give bit-identical weights, EMA and optimizer
  state to the uninterrupted run (cuDNN autotuning off, deterministic kernels). Without
  --deterministic cuDNN may pick other kernels in the resumed process: the run continues
  correctly, but not bit for bit.
(tests/test_force_ddp.py holds the one-rank DistributedDataParallel check, also `-m cuda`.)
"""
import json
import os
import sys

import pytest
import torch

from conftest import REPO, interrupt_in_epoch_2, run, run_many

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")  # cpu: gpu_check.sh --device cpu
ON_GPU = DEVICE == "cuda"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                                                   reason="no CUDA GPU visible")]

# the dry run on the CPU: resnet18 alone (the others take the same code path, and their CPU
# tests run their scripts), at a quarter of the sizes. Test images: 500 on the GPU, 100 on the
# CPU (the default, all 10,000, would be scored every epoch; on the CPU too by the CPU runs)
FOLDERS = ["resnet18", "resnet34", "se_res_inception"] if ON_GPU else ["resnet18"]
TEST = ["--test-subset", 500 if ON_GPU else 100]
SMALL = ["--dataset", "synthetic", "--subset", 256 if ON_GPU else 64, *TEST, "--batch-size",
         64 if ON_GPU else 32, "--epochs", "2", "--progress-every", "1000"]
STEP_BATCH = 32 if ON_GPU else 8
NO_DROPOUT = {"resnet18": ["--dropout", "0"], "resnet34": ["--dropout", "0"],
              "se_res_inception": ["--dropout", "0", "--block-dropout", "0", "--drop-path", "0"]}
# |first loss on the device - CPU fp32 loss| / CPU fp32 loss: same weights, same batch, no
# dropout, so only rounding separates them. The first loss is a forward pass of ~20 (resnet18)
# to ~40 (resnet34, 4 x 5 blocks) layers whose outputs are rounded; rounding errors of random
# sign add up like a random walk, ~sqrt(40) = 6.3 times one rounding, in the logits. Measured
# on the CPU (autocast against fp32, 8 batches of resnet18 and resnet34, 4 of se_res_inception;
# TF32 emulated by rounding the inputs and weights of every conv and linear layer): bf16 at most
# 0.19 %, fp16 0.021 %, TF32 0.026 % (resnet34 the largest each time).
STEP_TOLERANCE = {
    # bf16: 8 significant bits, each rounding off by up to 2^-9 = 0.2 %, 6.3 x 0.2 % = 1.2 %
    # in the logits; the loss moves less, and 1 % is 5x the largest loss error measured
    "bf16": 0.01,
    # fp16: 11 significant bits, 2^-11 = 0.05 % a rounding, 6.3 x that = 0.3 %; 0.25 % is 10x
    # the largest measured
    "fp16": 0.0025,
    # off: float32, but cuDNN convolutions use TF32 on Ampere and later (torch's default,
    # torch.backends.cudnn.allow_tf32): 11 significant bits like fp16, the same bound
    "off": 0.0025,
}


def flags_for(folder, out_dir, *extra):
    return [*SMALL, *extra, "--device", DEVICE, "--out-dir", out_dir]


@pytest.fixture(scope="module", params=FOLDERS)
def device_run(request, tmp_path_factory):
    folder = request.param
    out = tmp_path_factory.mktemp(folder)
    run(REPO / folder / "train.py", *flags_for(folder, out / "run"))
    return folder, out


def test_recipe_trains_on_the_device_and_writes_a_finite_run(device_run):
    folder, out = device_run
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


def test_device_checkpoint_evaluates_on_cpu_and_the_scripts_run_on_the_device(device_run):
    folder, out = device_run
    ckpt = out / "run" / "last.pt"
    commands = [(f"{folder}/evaluate.py", "--checkpoint", ckpt, "--device", "cpu",
                 "--out-dir", out / "eval_cpu"),
                (f"{folder}/evaluate.py", "--checkpoint", ckpt, "--device", DEVICE,
                 "--out-dir", out / "eval_device"),
                (f"{folder}/gradcam.py", "--checkpoint", ckpt, "--device", DEVICE, "--num", "4",
                 "--pointing", 1000 if ON_GPU else 20, "--out-dir", out / "gradcam")]
    if folder == "se_res_inception":
        commands.append((f"{folder}/evaluate_superclass.py", "--checkpoint", ckpt, "--device",
                         DEVICE, "--out-dir", out / "superclass"))
    results = run_many(*commands)  # one interpreter: torch and CUDA start once
    for command, r in zip(commands, results):
        assert r.returncode == 0, (command, r.stdout, r.stderr)
    r_cpu = json.loads((out / "eval_cpu" / "report.json").read_text())
    r_dev = json.loads((out / "eval_device" / "report.json").read_text())
    # Both evaluate in float32, but cuDNN convolutions round to TF32 (relative error ~2^-11
    # per rounding, ~0.3 % in the logits after 40 layers): an image whose two largest logits
    # are that close may change its top-1, and after 2 epochs on 256 images the logits are
    # still close together. Measured on the CPU with TF32 emulated, such a resnet18 changes
    # the top-1 of 2 of 2,000 test images (0.1 %); 1 percentage point allows 10x that.
    assert abs(r_cpu["top1"] - r_dev["top1"]) <= 1.0, (r_cpu["top1"], r_dev["top1"])
    assert (out / "gradcam" / "gradcam_grid.png").is_file()
    if folder == "se_res_inception":
        assert (out / "superclass" / "superclass.json").is_file()


def test_cpu_checkpoint_evaluates_on_the_device(tmp_path):
    run(REPO / "resnet18" / "train.py", "--dataset", "synthetic", "--subset", "100",
        "--test-subset", "100", "--batch-size", "50", "--epochs", "1", "--device", "cpu",
        "--out-dir", tmp_path / "run")
    run(REPO / "resnet18" / "evaluate.py", "--checkpoint", tmp_path / "run" / "last.pt",
        "--device", DEVICE, "--out-dir", tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["images"] == 100


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_step_under_each_precision_and_layout_matches_cpu_fp32(folder, tmp_path,
                                                                   record_property):
    flags = ["--dataset", "synthetic", "--subset", 2 * STEP_BATCH, "--test-subset", "100",
             "--batch-size", STEP_BATCH, "--epochs", "1", "--progress-every", "1000",
             *NO_DROPOUT[folder]]
    run(REPO / "tests" / "probe.py", folder, "record", tmp_path, "--", *flags, "--device", "cpu",
        "--out-dir", tmp_path / "run")
    cpu_loss = torch.load(tmp_path / "seen_rank0.pt")[0][2]
    compile_flag = ["--compile"] if folder == "resnet18" else []  # bf16 + channels_last only
    run(REPO / "tests" / "probe.py", folder, "steps", tmp_path, "--", *flags, "--device", DEVICE,
        "--out-dir", tmp_path / "run2", *compile_flag)
    results = torch.load(tmp_path / f"steps_{DEVICE}.pt")
    assert len(results) == 6 + len(compile_flag)
    name = lambda r: r["amp"] + " NHWC" * r["channels_last"] + " compiled" * r["compile"]  # noqa
    off = {name(r): abs(r["losses"][0] - cpu_loss) / cpu_loss for r in results}
    figure = (f"CPU fp32 first loss {cpu_loss:.4f}; relative difference " + ", ".join(
        f"{k} {100 * v:.3f} %" for k, v in off.items()) + " (limits: " + ", ".join(
        f"{k} {100 * v:g} %" for k, v in STEP_TOLERANCE.items()) + ")")
    record_property("figure", figure)  # gpu_check.sh's summary line
    for r in results:
        assert off[name(r)] <= STEP_TOLERANCE[r["amp"]], figure
        assert all(torch.isfinite(torch.tensor(r["losses"][1:]))), r
        if r["amp"] == "fp16":
            # GradScaler starts at 2^16 and halves at each of the 3 steps whose gradients
            # overflow (it grows only after 2000 clean steps): anything else is not scaling
            assert r["scale"] is not None and 2.0 ** 13 <= r["scale"] <= 2.0 ** 16, r
        else:
            assert r["scale"] is None


def test_ctrl_c_and_resume_on_the_device_are_bit_exact_when_deterministic(tmp_path):
    # 20 steps an epoch on the GPU, 3 on the CPU: the Ctrl-C at epoch 2's first progress line
    # (after its first step) lands inside the epoch either way
    flags = ["--dataset", "synthetic", "--subset", 640 if ON_GPU else 48, *TEST, "--batch-size",
             32 if ON_GPU else 16, "--epochs", "2", "--ema", "0.9", "--device", DEVICE,
             "--deterministic"]
    run(REPO / "resnet18" / "train.py", *flags, "--out-dir", tmp_path / "a",
        "--progress-every", "1000")
    code, rest = interrupt_in_epoch_2([sys.executable, REPO / "resnet18" / "train.py", *flags,
                                       "--out-dir", tmp_path / "b", "--progress-every", "0"])
    assert code == 0 and "interrupted: saved" in rest
    stopped = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert stopped["epoch"] == 1 and stopped["step"] > 0, "Ctrl-C did not land inside epoch 2"
    run(REPO / "resnet18" / "train.py", "--resume", "--out-dir", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.skipif(not ON_GPU, reason="counts CUDA synchronisations")
def test_the_loop_does_not_wait_for_the_gpu_every_step(tmp_path, record_property):
    """One epoch of 20 steps against one of 60 (EMA on): a line that waits every step counts 40
    more in the longer run; the loop's check every 20 steps counts 2 more; what happens once an
    epoch (evaluation, the checkpoint's copy to the host) counts the same in both."""
    counts = {}
    for steps in (20, 60):
        out = tmp_path / str(steps)
        out.mkdir()
        run(REPO / "tests" / "probe.py", "resnet18", "syncs", out, "--", "--dataset", "synthetic",
            "--subset", 64 * steps, *TEST, "--batch-size", "64", "--epochs", "1",
            "--progress-every", "1000", "--ema", "0.99", "--device", "cuda", "--out-dir",
            out / "run")
        counts[steps] = json.loads((out / "syncs.json").read_text())  # {"file:line": count}
    assert counts[60], "no synchronisation counted: is set_sync_debug_mode working?"
    more = {line: n - counts[20].get(line, 0) for line, n in counts[60].items()}
    worst = max(more.items(), key=lambda kv: kv[1])
    record_property("figure", f"most extra waits of one line over 40 more steps: {worst[1]} "
                    f"({worst[0]}); limit 4")
    # 4 = the check every 20 steps (2 more) with room for one more line at that pace; a line
    # that waits every step adds 40, every 10 steps 4, so the limit catches anything more
    # frequent than every 10 steps
    assert worst[1] <= 4, more
