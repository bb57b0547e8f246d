"""common/augment.py: the batched augmentation and the loader."""
import pytest
import torch

from common import augment, data

NORM = augment.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)


def A(**kwargs):
    return augment.Augment(NORM, **kwargs)


def test_augment_identity_crop_and_flip_are_exact():
    x, _ = data.synthetic_cifar100(64, 3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.allclose(A(pad=0, flip=False)(x, g()), NORM(x), atol=1e-5)
    plain = NORM(torch.nn.functional.pad(x, (4, 4, 4, 4)).float().to(torch.uint8))
    out = A(pad=4, flip=True)(x, g())
    shifts = set()
    for i in range(len(x)):  # each image is one integer crop of the padded image, maybe flipped
        windows = {(dy, dx): plain[i, :, dy:dy + 32, dx:dx + 32]
                   for dy in range(9) for dx in range(9)}
        hits = [(k, fl) for k, w in windows.items() for fl in (False, True)
                if torch.allclose(out[i], w.flip(-1) if fl else w, atol=1e-4)]
        assert hits, f"image {i} is not a crop of the padded original"
        shifts.add(hits[0])
    assert len(shifts) > 10  # parameters are drawn per image


def test_augment_masks_and_noise_hit_their_share():
    x, _ = data.synthetic_cifar100(400, 3)
    g = torch.Generator().manual_seed(0)
    erased = (A(pad=0, flip=False, erase_p=0.5)(x, g) == 0).all(1).flatten(1).any(1)
    assert 0.35 < erased.float().mean() < 0.65
    aug = A(pad=0, flip=False, holes_p=0.3, noise_p=0.3, holes=2, hole_size=8)
    out, clean = aug(x, torch.Generator().manual_seed(1)), NORM(x)
    holed = (out == 0).all(1).flatten(1).sum(1) >= 16
    changed = ~torch.isclose(out, clean, atol=1e-4).flatten(1).all(1)
    assert 0.2 < holed.float().mean() < 0.4 and 0.45 < changed.float().mean() < 0.75


def test_loader_replays_an_epoch_from_any_batch():
    split = data.synthetic_cifar100(200, 4)
    loader = augment.Loader(split, 32, "cpu", A(rotate=15, erase_p=0.5), shuffle=True,
                         seed=7, drop_last=True)
    loader.set_epoch(3)
    full = list(loader)
    assert len(full) == 6 and all(xb.shape == (32, 3, 32, 32) for xb, _ in full)
    tail = list(loader.iterate(start=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], tail))
    loader.set_epoch(4)
    assert not torch.equal(next(iter(loader))[1], full[0][1])
    with pytest.raises(ValueError, match="lower --batch-size"):
        augment.Loader(split, 500, "cpu", NORM, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match="at least 1"):
        augment.Loader(split, 0, "cpu", NORM)
    with pytest.raises(data.DataError, match="--subset -5"):
        data.load_splits("synthetic", None, subset=-5)
