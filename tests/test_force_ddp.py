"""DistributedDataParallel on ONE rank: CIFAR100_FORCE_DDP=1 under torchrun --nproc_per_node=1
makes common/distributed.py join a process group of size 1 (gloo on the CPU, NCCL on CUDA)
instead of skipping it, so a machine with one GPU runs what a multi-GPU run runs: DDP around the
model (device_ids on CUDA), the buffer broadcasts, the sums over ranks, the gathering of every
rank's RNG state into last.pt. Without the switch a one-rank torchrun run is plain python.

One test, on the CPU (gloo) under `-m slow` and on the GPU (NCCL) under `-m cuda`, which
benchmark/gpu_check.sh runs: a 2-epoch resnet18 run straight through against the same run
stopped by Ctrl-C inside epoch 2 and resumed, both forced-DDP, --deterministic. The probe
(tests/probe.py `collectives`) counts the calls that reach torch.distributed, so the test also
proves the collectives ran, not only that the run finished.
"""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, interrupt_in_epoch_2

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
PROBE = REPO / "tests" / "probe.py"
# 3 steps an epoch on the CPU, 40 on the GPU (a step takes milliseconds there): the Ctrl-C sent
# at epoch 2's first progress line (after its first step) lands inside the epoch. CUDA needs
# --deterministic for bit-exact kernels; the CPU's are already, and 4x slower with the flag.
SIZES = {"cpu": ["--subset", "30", "--test-subset", "20", "--batch-size", "10"],
         "cuda": ["--subset", "1280", "--test-subset", "500", "--batch-size", "32",
                  "--deterministic"]}
DEVICES = [pytest.param("cpu", marks=pytest.mark.slow),  # 3 torchrun launches: ~1 min on 2 cores
           pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="no CUDA GPU visible")])]


def probe(out, *train_flags, interrupt=False):
    """tests/probe.py resnet18 collectives under torchrun (one rank); out: the probe's json."""
    out.mkdir(parents=True)
    cmd = [*TORCHRUN, PROBE, "resnet18", "collectives", out, "--", *train_flags]
    if interrupt:
        _, rest = interrupt_in_epoch_2(cmd, timeout=300)
        assert "interrupted: saved" in rest, rest  # torchrun exits non-zero after a signal
    else:
        p = subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, f"{cmd} failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    return json.loads((out / "collectives_rank0.json").read_text())


@pytest.mark.parametrize("device", DEVICES)
def test_forced_ddp_on_one_rank_runs_the_collectives_and_resumes_bit_exact(device, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("CIFAR100_FORCE_DDP", "1")  # the subprocesses inherit it
    flags = ["--dataset", "synthetic", "--device", device, *SIZES[device], "--epochs", "2",
             "--ema", "0.9"]
    straight = probe(tmp_path / "a", *flags, "--out-dir", tmp_path / "a" / "run",
                     "--progress-every", "1000")
    probe(tmp_path / "b1", *flags, "--out-dir", tmp_path / "b" / "run", "--progress-every", "0",
          interrupt=True)
    stopped = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert stopped["epoch"] == 1 and stopped["step"] > 0, "Ctrl-C did not land inside epoch 2"
    resumed = probe(tmp_path / "b2", "--resume", "--out-dir", tmp_path / "b" / "run")

    for seen in (straight, resumed):
        assert seen["backend"] == ("nccl" if device == "cuda" else "gloo") and seen["world"] == 1
        assert seen["model"] == {"cls": "DistributedDataParallel",
                                 "device_ids": [0] if device == "cuda" else None}
        # sums over ranks (all_reduce), BatchNorm buffers from rank 0 (broadcast), each rank's
        # RNG state for last.pt (all_gather_object): each reached torch.distributed
        assert all(seen["calls"].get(c, 0) > 0
                   for c in ("all_reduce", "broadcast", "all_gather_object")), seen["calls"]

    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and len(b["rng"]) == 1
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        differ = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not differ, f"{key}: {len(differ)} of {len(a[key])} tensors differ"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    timing = ("time", "peak_mem_mb")  # wall clock and memory: the only figures allowed to differ
    rows = lambda ck: [{k: v for k, v in r.items() if not k.endswith(timing)}  # noqa: E731
                       for r in ck["tracker"]["rows"]]
    assert str(rows(a)) == str(rows(b))
