"""common/: Mixup/CutMix, soft-target loss, metrics, the evaluation report, checkpoints."""
import functools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import checkpoint, metrics, mixing, report, runtime


def batch(b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 32, generator=g) + 1.0, torch.randint(0, 100, (b,), generator=g)


@pytest.mark.parametrize("mixup, cutmix", [(1.0, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixed_targets_sum_to_one(mixup, cutmix):
    x, y = batch()
    for seed in range(20):
        _, t = mixing.mix(x, y, np.random.default_rng(seed), 100, mixup, cutmix, prob=0.8)
        assert t.shape == (16, 100) and torch.allclose(t.sum(1), torch.ones(16))
        assert (t >= 0).all()


def test_cutmix_lambda_is_the_pasted_area():
    x, y = batch()
    y = torch.arange(16)  # distinct labels, so the target weight of y is lambda itself
    for seed in range(30):
        out, t = mixing.mix(x, y, np.random.default_rng(seed), 100, cutmix_alpha=1.0)
        kept = (out == x).all(1).float().mean((1, 2))  # share of each image left unpasted
        lam = t[torch.arange(16), y]
        moved = (t.argmax(1) != y) | (lam < 1)  # images paired with another one
        assert torch.allclose(kept[moved], lam[moved], atol=1e-6)


def test_each_alpha_reaches_its_own_augmentation_and_zero_is_identity():
    x, _ = batch()
    y = torch.arange(16)  # distinct labels: an image paired with another has target[y] < 1
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    out, t = mixing.mix(x, y, rng(), 100, 0.0, 0.0)
    assert out is x and torch.equal(t, F.one_hot(y, 100).float())
    out, t = mixing.mix(x, y, rng(), 100, mixup_alpha=1.0)  # Mixup: a blend of every pixel
    paired = t[torch.arange(16), y] < 1
    assert paired.sum() >= 8
    assert ((out != x).flatten(1)[paired].float().mean(1) > 0.99).all()
    out, t = mixing.mix(x, y, rng(), 100, cutmix_alpha=1.0)  # CutMix: one box, the rest untouched
    paired = t[torch.arange(16), y] < 1
    assert paired.sum() >= 8
    for i in paired.nonzero().flatten():
        changed = ~torch.isclose(out[i], x[i]).all(0)  # (32, 32)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and changed.sum() == box.numel() < 32 * 32
    out, _ = mixing.mix(x, y, rng(), 100, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)
    assert out is x


def test_rand_bbox_is_clipped_and_about_the_right_size():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.5, 0.9):
        areas = []
        for _ in range(200):
            y0, y1, x0, x1 = mixing.rand_bbox(32, 32, lam, rng)
            assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 32
            areas.append((y1 - y0) * (x1 - x0) / 1024)
        assert max(areas) <= (1 - lam) + 0.05  # clipping only shrinks the box


@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_soft_target_ce_on_one_hot_equals_cross_entropy(s):
    logits, y = torch.randn(32, 100), torch.randint(0, 100, (32,))
    want = F.cross_entropy(logits, y, label_smoothing=s)
    assert torch.allclose(mixing.soft_target_cross_entropy(logits, y, s), want, atol=1e-6)
    one_hot = F.one_hot(y, 100).float()
    assert torch.allclose(mixing.soft_target_cross_entropy(logits, one_hot, s), want, atol=1e-6)


def test_smoothing_is_applied_once_to_mixed_targets():
    logits = torch.randn(4, 10)
    t = torch.zeros(4, 10)
    t[:, 0], t[:, 1] = 0.7, 0.3
    s = 0.1
    want = -((t * (1 - s) + s / 10) * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(mixing.soft_target_cross_entropy(logits, t, s), want)


def test_topk_confusion_and_per_class_report():
    logits = torch.tensor([[3., 2, 1, 0], [0, 3, 2, 1], [1, 0, 3, 2], [3, 0, 1, 2]])
    y = torch.tensor([0, 2, 3, 3])
    assert report.topk_correct(logits, y, ks=(1, 2)) == [1, 4]
    cm = report.confusion_matrix(logits.argmax(1), y, 4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]
    r = report.per_class_report(cm)
    assert r["recall"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert r["precision"][0] == 0.5 and r["macro_recall"] == 0.25
    assert r["weighted_recall"] == pytest.approx(0.25)  # supports 1, 0, 1, 2


def test_calibration_of_a_perfectly_calibrated_toy():
    conf = torch.tensor([0.95] * 20 + [0.55] * 20)
    correct = torch.tensor([1] * 19 + [0] + [1] * 11 + [0] * 9)
    ece, c, a, n = report.calibration(conf, correct, bins=10)
    assert ece == pytest.approx(0.0, abs=1e-6) and n.sum() == 40 and torch.isnan(c[0])
    ece, *_ = report.calibration(conf, torch.ones(40), bins=10)  # always right: under-confident
    assert ece == pytest.approx((0.05 * 20 + 0.45 * 20) / 40, abs=1e-6)


def test_tracker_files_are_plain_and_reload(tmp_path):
    tr = metrics.MetricsTracker(tmp_path)
    tr.append(epoch=1, train_loss=4.5, test_top1=3.0)
    tr.append(epoch=2, train_loss=4.0, test_top1=float("nan"))
    cols = metrics.MetricsTracker.load(tmp_path)  # allow_pickle=False inside
    assert cols["epoch"].tolist() == [1, 2] and np.isnan(cols["test_top1"][1])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,test_top1" and lines[2].startswith("2,4,")
    other = metrics.MetricsTracker(tmp_path)
    other.load_state_dict(tr.state_dict())
    assert other.rows == tr.rows and not list(tmp_path.glob("*.tmp*"))


def test_checkpoint_survives_a_failure_in_the_middle_of_a_save(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint({"arch": "x", "epoch": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint({"arch": "x", "epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ck = checkpoint.load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_corrupt_missing_or_foreign_checkpoints_give_clear_errors(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save_checkpoint({"arch": "resnet18", "num_classes": 100, "w": torch.ones(9)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        checkpoint.load_checkpoint(path)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(checkpoint.CheckpointError, match="arch='resnet34'.*arch='resnet18'"):
        checkpoint.check_compatible({"arch": "resnet34"}, arch="resnet18")
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: refused, not executed
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_checkpoint(path)


def test_rng_state_round_trip_in_weights_only_form(tmp_path):
    torch.manual_seed(1)
    checkpoint.save_checkpoint({"rng": checkpoint.rng_state()}, tmp_path / "r.pt")
    want = torch.rand(3)
    checkpoint.set_rng_state(checkpoint.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(want, torch.rand(3))


def test_rng_state_is_restored_from_a_packed_checkpoint_of_two_ranks(tmp_path):
    """A saved checkpoint's tensors are views into to_host's one buffer per dtype; torch's
    set_rng_state read rank 1's view from the buffer's start (rank 0's bytes, or a crash)."""
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.rand(5)
        states.append(checkpoint.rng_state())
    copy, wait = checkpoint.to_host({"rng": states})
    wait()
    checkpoint.save_checkpoint(copy, tmp_path / "r.pt")
    loaded = checkpoint.load_checkpoint(tmp_path / "r.pt")["rng"]
    for seed, state in enumerate(loaded):
        checkpoint.set_rng_state(state)
        torch.manual_seed(seed)
        torch.rand(5)
        want = torch.rand(3)
        checkpoint.set_rng_state(state)
        assert torch.equal(torch.rand(3), want), seed


def test_training_draws_nothing_from_pythons_or_numpys_global_generators():
    """The checkpoint keeps torch's generators only: one step of each train.py's loop (mixing,
    augmentation, dropout) must leave Python's and numpy's global states as they were."""
    from common import augment, mixing
    from common.loader import Loader
    before = (random.getstate(), np.random.get_state()[1].copy())
    x, y = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16)
    mix = functools.partial(mixing.mix, num_classes=100, mixup_alpha=1.0, cutmix_alpha=1.0)
    aug = augment.Augment(augment.Normalize((0.5,) * 3, (0.25,) * 3), rotate=15, erase_p=0.5,
                          jitter=(0.2, 0.2, 0.2, 0.05), holes_p=0.5, noise_p=0.5)
    for _ in Loader((x, y), 8, "cpu", aug, shuffle=True, drop_last=True, mix=mix):
        pass
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),   # T4 (the Enhanced ResNet34's GPU, free Colab): bf16 emulated
    ((7, 0), torch.float16),   # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),  # A10G, RTX 30xx
    ((9, 0), torch.bfloat16),  # H100
])
def test_amp_auto_picks_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capability,
                                                                     expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # says yes on T4
    assert runtime.amp_dtype("auto", torch.device("cuda")) == expected
    assert runtime.amp_dtype("fp16", torch.device("cuda")) == torch.float16
    assert runtime.amp_dtype("off", torch.device("cuda")) is None
    assert runtime.amp_dtype("auto", torch.device("cpu")) is None


def test_stop_on_ctrl_c_restores_the_previous_handler_and_ignores_a_double_signal():
    import signal
    before = signal.getsignal(signal.SIGINT)
    with runtime.StopOnCtrlC("stop requested") as stop:
        assert not stop
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # torchrun's forwarded copy: within a second, ignored
        assert stop
    assert signal.getsignal(signal.SIGINT) is before


def test_ema_matches_torchs_averaged_model_bit_for_bit_and_reloads():
    """runtime.EMA against AveragedModel(get_ema_multi_avg_fn, use_buffers=True): the same
    weights, BatchNorm statistics and integer batch count after every step, the same state dict
    keys, and a reloaded EMA carries on identically (its host counter is re-read)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.randn(2, 3, 6, 6))
    ours = runtime.EMA(model, 0.9)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def train_and_compare(steps, ours):
        for _ in range(steps):
            model(torch.randn(4, 3, 6, 6)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            ours.update_parameters(model)
            theirs.update_parameters(model)
            a, b = ours.state_dict(), theirs.state_dict()
            assert a.keys() == b.keys()
            differ = [k for k in a if not torch.equal(a[k], b[k])]
            assert not differ, differ
        return ours

    train_and_compare(3, ours)
    assert int(ours.n_averaged) == 3 and not torch.equal(ours.module[0].weight, model[0].weight)
    reloaded = runtime.EMA(model, 0.9)
    reloaded.load_state_dict(ours.state_dict())
    train_and_compare(2, reloaded)


def test_to_host_packs_each_dtype_into_one_copy_and_is_a_snapshot():
    """The checkpoint's copy to the host: every tensor equal to the original, in the same
    nesting, taken at once (training may change the originals in place right after), and one
    cat + one copy per (device, dtype) instead of one per tensor."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    tree = {"model": net.state_dict(), "rng": [torch.get_rng_state()], "step": 3,
            "t": (torch.tensor(2.5), torch.arange(4))}
    want = {k: v.clone() for k, v in net.state_dict().items()}
    copy, wait = checkpoint.to_host(tree)
    wait()
    with torch.no_grad():
        net[0].weight.add_(1)  # training goes on in place
    assert set(copy["model"]) == set(want) and copy["step"] == 3
    assert all(torch.equal(copy["model"][k], v) for k, v in want.items())
    assert torch.equal(copy["rng"][0], tree["rng"][0]) and copy["t"][0].shape == ()
    assert torch.equal(copy["t"][1], torch.arange(4))
    cats = []
    real_cat = torch.cat
    try:
        torch.cat = lambda ts, *a, **k: cats.append(len(ts)) or real_cat(ts, *a, **k)
        checkpoint.to_host(tree)
    finally:
        torch.cat = real_cat
    assert len(cats) == 3  # float32 (weights, BN, the 0-d tensor), int64, uint8 (the rng)


def test_fused_sgd_on_cuda_gives_the_update_of_the_default_sgd():
    """runtime.build_optimizer asks for torch's fused SGD on CUDA; the fused kernel is also
    built for the CPU, where its update matches the default (foreach) one to float rounding."""
    class Args:
        optimizer, lr, momentum, nesterov, weight_decay = "sgd", 0.1, 0.9, True, 5e-4
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = torch.optim.SGD(a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)
    plain = runtime.build_optimizer(Args, b, torch.device("cpu"))
    assert plain.defaults["fused"] is None  # the CPU keeps torch's default
    for _ in range(5):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    assert max((p - q).abs().max().item() for p, q in zip(a, b)) < 1e-6


def test_mps_refuses_what_it_cannot_do_in_one_line():
    class Args:
        compile, channels_last, amp = False, None, "auto"
    mps = torch.device("mps")
    runtime.check_device(Args, mps)  # the defaults run
    for change, flag in (({"compile": True}, "--compile"),
                         ({"channels_last": True}, "--channels-last")):
        args = type("A", (Args,), change)
        with pytest.raises(ValueError, match=f"^{flag}.*--device cpu$"):
            runtime.check_device(args, mps)
        runtime.check_device(args, torch.device("cpu"))  # elsewhere nothing is refused


def test_load_checkpoint_reads_every_layout_into_one(tmp_path):
    net = torch.nn.Linear(2, 3)
    for name, obj in (("bare", net.state_dict()), ("theirs", {"model_state_dict":
                                                              net.state_dict()}),
                      ("ddp", {f"module.{k}": v for k, v in net.state_dict().items()})):
        torch.save(obj, tmp_path / f"{name}.pt")
        ck = checkpoint.load_checkpoint(tmp_path / f"{name}.pt")
        assert ck["arch"] is None and list(ck["model"]) == ["weight", "bias"]
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(checkpoint.CheckpointError, match="holds a list"):
        checkpoint.load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(checkpoint.CheckpointError, match="^--init x does not fit: .*weight"):
        checkpoint.load_weights(torch.nn.Linear(2, 4), net.state_dict(), "--init x")
