"""The training state (common/checkpoint.py's TrainState) and the CUDA path's defects that a CPU can
show: each test here fails on the code before the fix it names (issue 19)."""
import contextlib
import errno
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn

from common import checkpoint, distributed, metrics, runtime
from common.checkpoint import TrainState
from conftest import REPO, load_module

TRAIN = load_module(REPO / "resnet18" / "train.py", "resnet18_train_state")


class Args:  # the flags TrainState reads and stores
    def __init__(self, **kw):
        self.epochs, self.batch_size = 2, 8
        self.__dict__.update(kw)


def make_state(out=None, scaler_on=False, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    scaler = torch.amp.GradScaler("cpu", enabled=scaler_on)
    parts = {"model": model, "ema": runtime.EMA(model, 0.9), "optimizer": optimizer,
             "scheduler": scheduler, "scaler": scaler, "tracker": metrics.MetricsTracker(out)}
    fingerprint = {"arch": "toy", "num_classes": 3, "dataset": "synthetic", "model_args": {}}
    return TrainState(fingerprint, Args(), parts, torch.device("cpu"))


def a_step(state):
    model, optimizer = state.parts["model"], state.parts["optimizer"]
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    state.parts["scheduler"].step()
    state.parts["ema"].update_parameters(model)


def test_state_dict_round_trip_restores_everything_and_the_rng(tmp_path):
    a = make_state()
    a_step(a)
    a.epoch, a.step, a.best = 1, 3, {"epoch": 1, "top1": 5.0, "split": "val"}
    a.save(tmp_path, ["last.pt", "best.pt"], sums=[1.5, 2.0, 8.0])
    a.wait()
    after = torch.rand(3)  # what the generator gives next, after the save
    b = make_state(seed=1)
    b.resume(tmp_path / "last.pt")
    assert torch.equal(torch.rand(3), after)  # the RNG went back to the saved point
    assert (b.epoch, b.step, b.sums, b.best["split"]) == (1, 3, [1.5, 2.0, 8.0], "val")
    for name in ("model", "ema"):
        sa, sb = a.parts[name].state_dict(), b.parts[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert (tmp_path / "best.pt").samefile(tmp_path / "last.pt")  # a link, not a second write


def test_resume_reads_on_the_cpu_so_rng_and_step_counters_stay_on_the_host(tmp_path,
                                                                            monkeypatch):
    """19.1: restore() loaded with map_location=device, so on a GPU the RNG states landed there
    and set_rng_state raised, and AdamW's step counters stayed on the GPU (two host syncs per
    parameter per step). Here any map_location but the CPU puts every tensor on "meta", the way
    a GPU takes them off the host."""
    a = make_state()
    a_step(a)
    a.save(tmp_path, ["last.pt"])
    a.wait()
    real = torch.load

    def load(f, map_location=None, **kw):
        ck = real(f, map_location="cpu", **kw)
        if map_location is None or torch.device(map_location).type != "cpu":
            ck = checkpoint.to_host(ck)  # a copy, then every tensor off the host
            ck = _map_tensors(ck, lambda t: t.to("meta"))
        return ck
    monkeypatch.setattr(checkpoint.torch, "load", load)
    b = make_state(seed=1)
    b.device = torch.device("meta")  # a device that is not the host
    b.resume(tmp_path / "last.pt")
    steps = [s["step"] for s in b.parts["optimizer"].state.values()]
    assert steps and all(s.device.type == "cpu" for s in steps)


def _map_tensors(obj, fn):
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    return obj


def test_an_empty_scaler_state_resumes_where_amp_means_fp16(tmp_path):
    """19.5: a bf16 or CPU run saves GradScaler's empty state; a resume where --amp auto means
    fp16 (an older GPU) starts a fresh scale instead of refusing."""
    a = make_state(scaler_on=False)
    a.save(tmp_path, ["last.pt"])
    a.wait()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["scaler"] == {}
    b = make_state(scaler_on=True)
    b.resume(tmp_path / "last.pt")
    assert b.parts["scaler"].is_enabled()


def test_cuda_rng_is_this_ranks_device_only(monkeypatch):
    """19.5: each rank saved every visible GPU's state (get_rng_state_all), and a resume on
    fewer GPUs indexed a missing one."""
    got, put = [], []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d=None: got.append(d) or torch.ones(2))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("all GPUs saved"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d=None: put.append((s, d)))
    cuda1 = torch.device("cuda", 1)
    state = checkpoint.rng_state(cuda1)
    assert got == [cuda1] and torch.equal(state["cuda"], torch.ones(2))
    checkpoint.set_rng_state(state, cuda1)
    assert len(put) == 1 and put[0][1] == cuda1
    assert "cuda" not in checkpoint.rng_state(torch.device("cpu"))


def test_save_returns_while_a_thread_writes_and_wait_raises_its_error(tmp_path, monkeypatch):
    """19.6: the checkpoint was written and fsynced every epoch inside the loop. Now save()
    copies the state to the host and returns; a thread writes. A full disk surfaces in wait()
    and the previous file stays intact."""
    state = make_state()
    release, real = threading.Event(), checkpoint.save_checkpoint

    def held(obj, path):
        assert release.wait(60)  # the training thread goes on meanwhile
        real(obj, path)
    monkeypatch.setattr(checkpoint, "save_checkpoint", held)
    state.epoch = 1
    seconds = state.save(tmp_path, ["last.pt"])
    assert seconds >= 0 and state._writer.is_alive()  # save() returned, the write is pending
    a_step(state)  # training changes the weights in place: the snapshot must not see it
    release.set()
    state.wait()
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and not torch.equal(ck["model"]["0.weight"],
                                                state.parts["model"][0].weight.detach())

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint, "save_checkpoint", full)
    state.save(tmp_path, ["last.pt"])
    with pytest.raises(OSError, match="No space left"):
        state.wait()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1  # still whole


def test_the_epoch_row_records_the_seconds_the_checkpoint_cost(resnet18_run):
    cols = metrics.MetricsTracker.load(resnet18_run)  # the session's 2-epoch run
    assert cols["save_time"].shape == (2,) and (0 < cols["save_time"]).all()
    assert (cols["save_time"] < cols["time"]).all()
    with open(resnet18_run / "metrics.csv") as f:
        assert "save_time" in f.readline().strip().split(",")


class CountingDDP(nn.Module):
    """Stands in for DistributedDataParallel: counts the backward passes run under no_sync."""

    def __init__(self, net):
        super().__init__()
        self.net, self.unsynced = net, 0

    def forward(self, x):
        return self.net(x)

    @contextlib.contextmanager
    def no_sync(self):
        self.unsynced += 1
        yield


def test_accumulation_under_ddp_all_reduces_once_per_step():
    """19.8: with --accum-steps K every micro-batch's backward all-reduced; now the first K-1
    run under no_sync and the gradient is still the whole batch's."""
    torch.manual_seed(0)
    x, target = torch.randn(8, 6), torch.softmax(torch.randn(8, 5), 1)
    grads = []
    for accum in (1, 4):
        torch.manual_seed(1)
        model = CountingDDP(nn.Linear(6, 5))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        TRAIN.train_step(model, x, target, optimizer, scaler, None, accum=accum)
        assert model.unsynced == accum - 1
        grads.append(model.net.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_ema_broadcast_sends_only_the_averaged_networks_buffers(monkeypatch):
    """19.2: broadcast_buffers(ema) also sent AveragedModel's n_averaged, a CPU tensor that NCCL
    refuses at the first evaluation of an --ema run under torchrun."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = runtime.EMA(model, 0.9)
    sent = []
    monkeypatch.setattr(distributed, "_grouped", lambda: True)
    monkeypatch.setattr(distributed.dist, "broadcast", lambda t, src: sent.append(t))
    TRAIN.evaluate_all(model, ema, {})
    want = [*model.buffers(), *ema.module.buffers()]
    assert [id(t) for t in sent] == [id(t) for t in want]
    assert all(t is not ema.n_averaged for t in sent)
    device = next(model.parameters()).device
    assert all(t.device == device for t in sent)


DOWNLOAD_PROBE = """
import os, pickle, sys, time
import numpy as np, torch, torchvision
sys.path.insert(0, {tests!r})
from conftest import REPO, load_module
r18 = load_module(REPO / "resnet18" / "train.py", "r18_download_probe")
rank, out = int(os.environ["RANK"]), {out!r}

def note(what):
    with open(os.path.join(out, f"events_rank{{rank}}.txt"), "a") as f:
        f.write(f"{{time.monotonic()}} {{what}}\\n")

class FakeCIFAR100:  # torchvision's downloader, writing small official files instead
    def __init__(self, root, train=True, download=False):
        note("download start")
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(0)
        for name, n in (("train", 4000), ("test", 1000)):
            d = {{b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                  b"fine_labels": [int(v) for v in rng.integers(0, 100, n)]}}
            with open(os.path.join(folder, name), "wb") as f:
                pickle.dump(d, f, protocol=2)
        meta = {{b"fine_label_names": [s.encode() for s in r18.data.FINE_NAMES],
                 b"coarse_label_names": [s.encode() for s in r18.data.COARSE_NAMES]}}
        with open(os.path.join(folder, "meta"), "wb") as f:
            pickle.dump(meta, f, protocol=2)
        note("download end")

torchvision.datasets.CIFAR100 = FakeCIFAR100
real = r18.data.ensure_cifar100
def ensure(*a, **k):
    note("check")
    return real(*a, **k)
r18.data.ensure_cifar100 = ensure
args = r18.parse_args(sys.argv[1:])
rank, world, device = r18.distributed.init(torch.device("cpu"))
splits, _, _ = r18.make_loaders(args, device, rank, world)
note(f"loaded {{len(splits['train'][0])}}")
r18.distributed.close()
"""


@pytest.mark.slow  # a torchrun job of its own
def test_under_torchrun_local_rank_zero_downloads_and_the_others_wait(tmp_path):
    """19.4: every rank downloaded CIFAR-100 into the same data/ at once. Two gloo ranks, a fake
    downloader: it runs once, on rank 0, and rank 1 looks at the files only after it ended."""
    script = tmp_path / "probe_download.py"
    script.write_text(DOWNLOAD_PROBE.format(tests=str(REPO / "tests"), out=str(tmp_path)))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(script), "--data-dir", str(tmp_path / "data"),
                        "--batch-size", "20", "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    events = {r: [line.split(" ", 1) for line in
                  (tmp_path / f"events_rank{r}.txt").read_text().splitlines()] for r in (0, 1)}
    assert [e for _, e in events[0]] == ["check", "download start", "download end", "loaded 4000"]
    assert [e for _, e in events[1]] == ["check", "loaded 4000"]  # no second download
    end = float(events[0][2][0])
    assert float(events[1][0][0]) > end  # rank 1 looked only once rank 0's files were whole


@pytest.mark.parametrize("folder", ["resnet18", "resnet34", "se_res_inception"])
def test_help_shows_each_value_of_the_default_recipe_as_the_flags_default(folder, capsys):
    """Issue 18: --help showed no default for the flags only the recipe sets (resnet18
    --weight-decay, resnet34 --optimizer/--scheduler, se_res_inception --scheduler)."""
    import re
    train = load_module(REPO / folder / "train.py", f"{folder}_train_help")
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out.split("\nrecipes (")[0]
    for key, value in next(iter(train.RECIPES.values())).items():
        flag = "--" + key.replace("_", "-")
        entry = re.search(rf"\n  {re.escape(flag)}[ ,\n].*?(?=\n  -|\Z)", text, re.S)
        assert entry and f"default: {value}" in " ".join(entry.group(0).split()), flag


BARRIER_PROBE = """
import datetime, os, sys, time
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from common import distributed
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=2))  # a short default
with distributed.local_rank_zero_first():
    if int(os.environ["LOCAL_RANK"]) == 0:
        time.sleep(5)  # a download that outlasts the default group's timeout
open(os.path.join({out!r}, "rank" + os.environ["RANK"]), "w").write("through")
distributed.close()
"""


@pytest.mark.slow  # a torchrun job of its own
def test_the_ranks_wait_for_a_download_longer_than_the_groups_timeout(tmp_path):
    """27.4: the other ranks waited for local rank 0's download in a barrier of the default
    group, which gives up after its timeout (10 minutes for gloo and NCCL): a slow download
    killed the job. The wait now has a group and a timeout of its own (2 hours)."""
    script = tmp_path / "probe_barrier.py"
    script.write_text(BARRIER_PROBE.format(repo=str(REPO), out=str(tmp_path)))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(script)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    for rank in (0, 1):  # one file each: two processes printing to one pipe interleave
        assert (tmp_path / f"rank{rank}").read_text() == "through"


def test_evaluation_gives_the_same_figures_at_any_batch_size():
    """27.5: evaluation batches went from 500 to 1000 images; the figures are per image (the
    network is in eval mode), so the batch size changes no count and the loss only by float
    rounding."""
    from common import augment, data
    from common.loader import Loader
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 100))
    split = data.synthetic_cifar100(300, 2)
    norm = augment.Normalize(*data.channel_stats(split[0]))
    small, large = (TRAIN.evaluate(net, Loader(split, b, "cpu", norm)) for b in (7, 1000))
    assert (small["top1"], small["top5"]) == (large["top1"], large["top5"])
    assert small["loss"] == pytest.approx(large["loss"], rel=1e-5)
