"""common/loader.Loader with mixing under torchrun: each rank augments and mixes only its rows.

The ranks' yields, put together, are the single-process stream bit for bit; the single-process
stream is Augment + mixing.mix with train.py's rng seeds, as before the Loader mixed."""
import functools

import numpy as np
import pytest
import torch

from common import augment, data, mixing
from common.loader import Loader

NORM = augment.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)
RECIPE = dict(rotate=15, jitter=(0.2, 0.2, 0.2, 0.05), erase_p=0.5, holes_p=0.3, holes=2,
              noise_p=0.3)  # every op, with pad 4 and flip
MIXES = {"both, p 1": dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5),
         "both, p 0.5": dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5, switch_prob=0.5)}
SPLIT = data.synthetic_cifar100(96, 5)


def loader(recipe, part=(0, 1), transform=None, batch=24):
    draw = functools.partial(mixing.draw, **recipe, num_classes=data.NUM_CLASSES)
    return Loader(SPLIT, batch, "cpu", transform or augment.Augment(NORM, **RECIPE),
                  shuffle=True, seed=3, drop_last=True, mix=draw, part=part)


def epoch(ld, e=2, start=0):
    ld.set_epoch(e)
    return list(ld.iterate(start))


@pytest.mark.parametrize("name", list(MIXES))
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_put_together_are_the_single_process_stream(name, world):
    whole = epoch(loader(MIXES[name]))
    parts = [epoch(loader(MIXES[name], (rank, world))) for rank in range(world)]
    assert len(whole) == 4 and all(len(p) == 4 for p in parts)
    for i, batch in enumerate(whole):
        for k, t in enumerate(batch):  # images, soft targets, labels
            assert torch.equal(torch.cat([p[i][k] for p in parts]), t), (i, k)
            assert torch.equal(t.chunk(world)[1], parts[1][i][k])  # = train.py's chunk
    tail = epoch(loader(MIXES[name], (1, world)), start=2)  # resume at batch 2: the same rows
    assert all(torch.equal(a, b) for p, q in zip(parts[1][2:], tail) for a, b in zip(p, q))


@pytest.mark.parametrize("name", list(MIXES))
def test_single_process_is_augment_then_mix_as_before(name):
    r, aug = MIXES[name], augment.Augment(NORM, **RECIPE)
    ld = Loader(SPLIT, 24, "cpu", aug, shuffle=True, seed=3, drop_last=True)
    ld.set_epoch(2)
    mixed = 0
    for i, ((x, y), (xm, tm, ym)) in enumerate(zip(ld, epoch(loader(r)))):
        rng = np.random.default_rng([3, 2, i])  # train.py: [args.seed, epoch, i]
        x2, t2 = mixing.mix(x, y, data.NUM_CLASSES, rng, r["mixup_alpha"], r["cutmix_alpha"],
                            r["prob"], r["switch_prob"])
        assert torch.equal(xm, x2) and torch.equal(tm, t2) and torch.equal(ym, y)
        mixed += not torch.equal(xm, x)
    assert mixed >= 1


def test_augment_rows_is_the_whole_batch_indexed():
    x = SPLIT[0][:40]
    for recipe in (RECIPE, dict(translate=0.1, scale=(0.9, 1.1), affine_p=0.5), dict(pad=0)):
        aug = augment.Augment(NORM, **recipe)
        full = aug(x, torch.Generator().manual_seed(1))
        for rows in (torch.arange(20, 40), torch.tensor([39, 0, 7, 7, 13]), torch.arange(0, 40, 3)):
            assert torch.equal(aug(x, torch.Generator().manual_seed(1), rows=rows), full[rows])
    rows = torch.tensor([5, 1])
    assert torch.equal(NORM(x, rows=rows), NORM(x)[rows])


def test_unmixed_batches_augment_only_the_ranks_rows():
    seen = []

    def counted(x, g, rows=None):
        seen.append(len(x) if rows is None else len(rows))
        return NORM(x, g, rows)

    none = dict(mixup_alpha=0.0, cutmix_alpha=0.0)
    out = epoch(loader(none, (1, 2), counted))
    assert seen == [12] * 4 and all(len(b[0]) == 12 for b in out)
    seen.clear()
    out = epoch(loader(dict(cutmix_alpha=1.0), (1, 2), counted))  # partners from rank 0 too
    assert all(12 < n <= 24 for n in seen) and all(b[1].shape == (12, 100) for b in out)
    assert np.array_equal(mixing.Plan(4, 0.5, np.array([2, 3, 0, 1])).needed([0]), [0, 2])
