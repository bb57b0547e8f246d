"""What a student's Mac needs: Apple's MPS device has no float64. One tiny epoch and its
evaluation of each train.py run under a dispatch mode that fails on any op whose output is
float64 (on the CPU here; every op is the one MPS would run). MPS itself was not available:
the ops were checked against PyTorch's MPS kernel list, and the flags MPS cannot serve are
refused in one line (test_common.py)."""
import signal

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import REPO, SMALL, load_module


class NoFloat64(TorchDispatchMode):
    """Records every op that produces a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, (list, tuple)) else [out]
        if any(torch.is_tensor(t) and t.dtype == torch.float64 for t in flat):
            self.seen.append(str(func))
        return out


@pytest.mark.parametrize("folder, extra", [("resnet18", ["--ema", "0.9", "--val-split", "10"]),
                                           ("resnet34", ["--variant", "standard"]),
                                           ("se_res_inception", [])])
def test_an_epoch_and_its_evaluation_make_no_float64_tensor(folder, extra, tmp_path):
    train = load_module(REPO / folder / "train.py", f"{folder}_train_portable")
    args = train.parse_args([*SMALL, "--subset", "30", "--batch-size", "10", "--epochs", "1",
                             "--test-subset", "20", "--out-dir", str(tmp_path), *extra])
    mode = NoFloat64()
    try:
        with mode:
            train.main(args)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert (tmp_path / "last.pt").is_file()
    assert not mode.seen, sorted(set(mode.seen))


def test_drop_path_draws_its_mask_in_float32_under_bf16_autocast():
    """27.4: the mask's uniforms were drawn in the activations' dtype, bf16 under autocast, whose
    2^-8 grid moves every keep probability (0.2 became 0.203125)."""
    model = load_module(REPO / "se_res_inception" / "model.py", "se_model_portable")
    drop = model.DropPath(0.2).train()
    seen = []

    class Rands(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if "rand" in str(func) or "uniform" in str(func):
                seen.append(out.dtype)
            return out
    x = torch.ones(64, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16), Rands():
        y = drop(x.to(torch.bfloat16))
    assert seen == [torch.float32] and y.dtype == torch.bfloat16
    kept = (y[:, 0, 0, 0] != 0).float()
    assert set(y[:, 0, 0, 0].unique().tolist()) <= {0.0, 1.25}  # x / keep where kept
    assert 0.5 < kept.mean() < 1.0
