"""train.py under torchrun: 2 CPU processes with gloo against 1 process, on the repo's own code
(tests/probe.py wraps train.py's functions, it re-types none of them)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, SMALL, interrupt_in_epoch_2, run

PROBE = REPO / "tests" / "probe.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def torchrun(nproc, script, *args, check=True, timeout=300):
    p = subprocess.run([*TORCHRUN, str(nproc), str(script), *map(str, args)], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"torchrun {script} {args} failed:\n{p.stdout}\n{p.stderr[-3000:]}")
    return p


def probe(nproc, scenario, out, *train_flags):
    out.mkdir(parents=True, exist_ok=True)
    args = ["resnet18", scenario, out, "--", *SMALL, "--out-dir", out / "run", *train_flags]
    if nproc == 1:
        return run(PROBE, *args)
    return torchrun(nproc, PROBE, *args)


@pytest.mark.slow  # a torchrun job of its own
def test_the_ranks_split_each_global_batch_and_augment_their_own_share(tmp_path):
    """Rank 0 trains on the first half of each global batch, rank 1 on the second (the labels
    are the single-process batch's); each augments its half with its own random numbers."""
    flags = ["--subset", "40", "--batch-size", "20", "--epochs", "1", "--cutmix-alpha", "0"]
    probe(1, "record", tmp_path / "one", *flags)
    p = probe(2, "record", tmp_path / "two", *flags)
    check_the_run_dir_and_evaluate_it(p, tmp_path / "two" / "run", tmp_path / "eval")
    one = torch.load(tmp_path / "one" / "seen_rank0.pt")
    two = [torch.load(tmp_path / "two" / f"seen_rank{r}.pt") for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 2  # steps
    for step, (x, target, _) in enumerate(one):  # unmixed: the target is the label, one-hot
        assert two[0][step][0].shape[0] == 10
        halves = torch.cat([two[0][step][1], two[1][step][1]])
        assert torch.equal(halves.argmax(1), target.argmax(1)), step
        assert not torch.equal(two[1][step][0], x[10:]), step  # rank 1's own augmentation


@pytest.mark.slow  # a torchrun job of its own
def test_one_step_on_two_ranks_equals_one_process_without_batchnorm(tmp_path):
    flags = ["--subset", "16", "--batch-size", "16", "--epochs", "1", "--cutmix-alpha", "1",
             "--mix-prob", "1"]
    probe(1, "nobn", tmp_path / "one", *flags)
    probe(2, "nobn", tmp_path / "two", *flags)
    a = torch.load(tmp_path / "one" / "run" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "run" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k


@pytest.mark.slow  # a torchrun job of its own
def test_sharded_evaluation_counts_every_test_image_once(tmp_path):
    flags = ["--subset", "505", "--batch-size", "50", "--test-subset", "101"]  # 50 + 51
    probe(1, "eval", tmp_path / "one", *flags)
    probe(2, "eval", tmp_path / "two", *flags)
    one = torch.load(tmp_path / "one" / "eval_rank0.pt")
    two = [torch.load(tmp_path / "two" / f"eval_rank{r}.pt") for r in range(2)]
    assert one["images"] == 101 and [t["images"] for t in two] == [50, 51]
    for t in two:  # every rank reports the figures of the whole split
        for k in ("top1", "top5"):  # counts: exactly the single-process ones
            assert round(t["result"][k] * 101 / 100) == round(one["result"][k] * 101 / 100)
        assert t["result"]["loss"] == pytest.approx(one["result"]["loss"], rel=1e-6)


def check_the_run_dir_and_evaluate_it(p, out, eval_dir, folder="resnet18"):
    assert p.stdout.count("done:") == 1  # rank 0 alone prints
    assert sorted(f.name for f in out.iterdir()) == [
        "args.json", "last.pt", "metrics.csv", "metrics.npz", "training_curves.png"]
    run(REPO / folder / "evaluate.py", "--checkpoint", out / "last.pt", "--device", "cpu",
        "--out-dir", eval_dir)
    assert json.loads((eval_dir / "report.json").read_text())["images"] == 100


@pytest.mark.slow  # resnet18's train.py under torchrun: test_the_ranks_together_see_... above
@pytest.mark.parametrize("folder", ["resnet34", "se_res_inception"])
def test_each_train_py_runs_under_torchrun_and_its_checkpoint_evaluates(folder, tmp_path):
    out = tmp_path / "run"
    extra = ["--variant", "standard"] if folder == "resnet34" else []
    p = torchrun(2, REPO / folder / "train.py", *SMALL, "--subset", "40", "--batch-size", "20",
                 "--epochs", "1", "--out-dir", out, *extra)
    check_the_run_dir_and_evaluate_it(p, out, tmp_path / "eval", folder)


@pytest.mark.slow  # a torchrun job of its own
def test_a_rank_with_no_validation_images_does_not_hang(tmp_path):
    """27.4: evaluation ran the DDP wrapper, whose first forward after training broadcasts the
    BatchNorm buffers; a rank with an empty shard (1 validation image, 2 ranks) never called it
    and the other rank waited forever. Evaluation runs the bare network now."""
    p = torchrun(2, REPO / "resnet18" / "train.py", *SMALL, "--subset", "41", "--val-split", "1",
                 "--batch-size", "20", "--epochs", "1", "--out-dir", tmp_path, timeout=180)
    assert p.stdout.count("done:") == 1 and (tmp_path / "best.pt").is_file()


@pytest.mark.slow  # a torchrun job of its own
def test_a_batch_the_ranks_do_not_divide_is_a_one_line_error(tmp_path):
    p = torchrun(2, REPO / "resnet18" / "train.py", *SMALL, "--subset", "40", "--batch-size", "15",
                 "--out-dir", tmp_path, check=False)
    assert p.returncode != 0 and "does not split into 2 rank(s)" in p.stderr


@pytest.mark.slow
def test_ctrl_c_under_torchrun_then_resume_is_bit_exact(tmp_path):
    """2 ranks x 2 epochs straight == Ctrl-C (to the torchrun launcher) in epoch 2, then
    --resume under torchrun. 42 steps an epoch: ranks agree to stop every 20 steps."""
    flags = [*SMALL, "--subset", "420", "--batch-size", "10", "--epochs", "2", "--ema", "0.9"]
    torchrun(2, REPO / "resnet18" / "train.py", *flags, "--out-dir", tmp_path / "a")
    _, rest = interrupt_in_epoch_2([*TORCHRUN, "2", REPO / "resnet18" / "train.py", *flags,
                                    "--out-dir", tmp_path / "b", "--progress-every", "0"])
    assert "interrupted: saved" in rest, rest  # torchrun itself exits non-zero after a signal
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] > 0 and len(ck["rng"]) == 2
    torchrun(2, REPO / "resnet18" / "train.py", "--resume", "--out-dir", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(),
                                                 b["optimizer"]["state"][0].values()))
    rows = lambda ck: [{k: v for k, v in r.items()  # noqa: E731
                        if "time" not in k and k != "peak_mem_mb"}
                       for r in ck["tracker"]["rows"]]
    assert str(rows(a)) == str(rows(b)) and b["epoch"] == 2


def _parent_and_env(proc):
    """(parent pid, whether RANK=1 is in its environment) of a /proc/<pid> entry, or None."""
    try:
        ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        env = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        return ppid, "RANK=1" in env
    except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
        return None


@pytest.mark.slow
def test_a_dead_rank_ends_the_run_and_last_pt_survives(tmp_path):
    """SIGKILL one of 2 ranks in epoch 2 (an out-of-memory kill, a lost node): torchrun ends the
    other rank with an error instead of hanging in a collective, epoch 1's last.pt stays intact,
    and --resume under torchrun finishes the run."""
    flags = [*SMALL, "--subset", "420", "--batch-size", "10", "--epochs", "2",
             "--progress-every", "0"]
    p = subprocess.Popen([*TORCHRUN, "2", str(REPO / "resnet18" / "train.py"), *map(str, flags),
                          "--out-dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("epoch 1/2"):  # last.pt is being written, on a thread
            break
    deadline = time.time() + 60
    while not (tmp_path / "last.pt").exists() and time.time() < deadline:  # renamed when whole
        time.sleep(0.1)
    rank1 = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and
             _parent_and_env(d) == (p.pid, True)]  # torchrun's worker with RANK=1
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGKILL)
    _, err = p.communicate(timeout=120)  # a hang fails here
    assert p.returncode != 0 and re.search(r"exitcode\s*:\s*-9", err), err  # rank 1's SIGKILL
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == 0
    torchrun(2, REPO / "resnet18" / "train.py", "--resume", "--out-dir", tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
