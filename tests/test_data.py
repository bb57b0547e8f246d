"""common/data.py: constants, the official-file reader, download, the synthetic set, splits."""
import pickle
import re

import numpy as np
import pytest
import torch

from common import data

def test_constants_are_the_official_lists():
    # the fine -> coarse map against the published superclass table: test_se_res_inception.py
    assert len(data.FINE_NAMES) == 100 and data.FINE_NAMES == sorted(data.FINE_NAMES)
    assert len(data.COARSE_NAMES) == 20 and data.COARSE_NAMES == sorted(data.COARSE_NAMES)


def write_official(root, n_train=60, n_test=20, protocol=2, override=None):
    """Files in the official layout: dicts with bytes keys, uint8 (N, 3072) data, list labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        d = {b"filenames": [b"img_%d.png" % i for i in range(n)], b"batch_label": name.encode(),
             b"fine_labels": fine, b"coarse_labels": [data.FINE_TO_COARSE[f] for f in fine],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        d.update(override or {})
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    meta = {b"fine_label_names": [n.encode() for n in data.FINE_NAMES],
            b"coarse_label_names": [n.encode() for n in data.COARSE_NAMES]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_reader_reads_official_format(tmp_path, protocol):
    folder = write_official(tmp_path, protocol=protocol)
    x, y = data.read_cifar100(tmp_path, train=True)
    raw = pickle.loads((folder / "train").read_bytes())
    assert x.shape == (60, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    # row-major 3072 = 1024 red, 1024 green, 1024 blue, each 32x32
    assert torch.equal(x[5, 1, 2, 3], torch.tensor(raw[b"data"][5][1024 + 2 * 32 + 3]))
    assert y.tolist() == raw[b"fine_labels"]
    assert data.read_meta(tmp_path) == (data.FINE_NAMES, data.COARSE_NAMES)
    splits = data.load_splits("cifar100", tmp_path, val_split=10, download=False)
    assert len(splits["train"][0]) == 50 and len(splits["val"][0]) == 10
    assert len(splits["test"][0]) == 20


@pytest.mark.parametrize("override, message", [
    ({b"data": np.zeros((60, 100), np.uint8)}, "expected uint8 (N, 3072)"),
    ({b"data": np.zeros((60, 3072), np.float32)}, "expected uint8 (N, 3072)"),
    ({b"fine_labels": [100] * 60}, "expected 0..99"),
    ({b"fine_labels": [1] * 59}, "fine labels for 60 images"),
])
def test_reader_rejects_malformed_files(tmp_path, override, message):
    write_official(tmp_path, override=override)
    with pytest.raises(data.DataError, match=re.escape(message)):
        data.read_cifar100(tmp_path, train=True)


def test_reader_refuses_a_crafted_pickle_without_running_it(tmp_path):
    folder = write_official(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (folder / "train").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(data.DataError, match="refusing to load"):
        data.read_cifar100(tmp_path, train=True)
    assert not marker.exists()


def test_truncated_file_and_missing_dataset_give_clear_errors(tmp_path, monkeypatch):
    folder = write_official(tmp_path)
    blob = (folder / "test").read_bytes()
    (folder / "test").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="delete the cifar-100-python folder"):
        data.read_cifar100(tmp_path, train=False)
    with pytest.raises(data.DataError, match="--dataset synthetic"):
        data.load_splits("cifar100", tmp_path / "empty", download=False)

    import torchvision

    def offline(*a, **k):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(data.DataError, match="download failed.*--dataset synthetic"):
        data.load_splits("cifar100", tmp_path / "empty")


def test_synthetic_is_deterministic_learnable_and_grouped():
    x, y = data.synthetic_cifar100(3000, 1)
    x2, y2 = data.synthetic_cifar100(3000, 1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (3000, 3, 32, 32) and x.dtype == torch.uint8
    assert set(y.tolist()) == set(range(100))
    xt, yt = data.synthetic_cifar100(1000, 2)
    assert not torch.equal(xt[:10], x[:10])
    # learnable: even a nearest-class-mean classifier on 8x8 thumbnails is far above chance (1 %)
    f = lambda v: torch.nn.functional.avg_pool2d(v.float(), 4).flatten(1)  # noqa: E731
    means = torch.stack([f(x[y == c]).mean(0) for c in range(100)])
    acc = (torch.cdist(f(xt), means).argmin(1) == yt).float().mean().item()
    assert acc > 0.10, acc
    # superclasses: class means are closer within a superclass than across
    d = torch.cdist(means, means)
    coarse = torch.tensor(data.FINE_TO_COARSE)
    same = (coarse[:, None] == coarse[None, :]) & ~torch.eye(100, dtype=torch.bool)
    assert d[same].mean() < 0.8 * d[coarse[:, None] != coarse[None, :]].mean()
