"""common/loader.Loader with mixing, in one process and under torchrun: each rank trains on its
slice of every global batch, augmented and mixed with its own random numbers, and replays it
exactly from any batch (a resume)."""
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


def loader(recipe, part=(0, 1), batch=24):
    mix = functools.partial(mixing.mix, **recipe, num_classes=data.NUM_CLASSES)
    return Loader(SPLIT, batch, "cpu", augment.Augment(NORM, **RECIPE), shuffle=True, seed=3,
                  drop_last=True, mix=mix, part=part)


def epoch(ld, e=2, start=0):
    ld.set_epoch(e)
    return list(ld.iterate(start))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_each_global_batch_and_replay_it(world):
    whole = epoch(loader(MIXES["both, p 1"]))
    parts = [epoch(loader(MIXES["both, p 1"], (rank, world))) for rank in range(world)]
    assert len(whole) == 4 and all(len(p) == 4 for p in parts)
    for i, batch in enumerate(whole):  # the same images, each on exactly one rank
        assert torch.equal(torch.cat([p[i][2] for p in parts]), batch[2])
        assert all(p[i][0].shape[0] == 24 // world and p[i][1].shape == (24 // world, 100)
                   for p in parts)
    assert not torch.equal(parts[0][0][0][:1], whole[0][0][:1])  # a rank's own numbers
    tail = epoch(loader(MIXES["both, p 1"], (1, world)), start=2)  # resume at batch 2
    assert all(torch.equal(a, b) for p, q in zip(parts[1][2:], tail) for a, b in zip(p, q))


@pytest.mark.parametrize("name", list(MIXES))
def test_single_process_is_augment_then_mix(name):
    r, aug = MIXES[name], augment.Augment(NORM, **RECIPE)
    ld = Loader(SPLIT, 24, "cpu", aug, shuffle=True, seed=3, drop_last=True)
    ld.set_epoch(2)
    mixed = 0
    for i, ((x, y), (xm, tm, ym)) in enumerate(zip(ld, epoch(loader(r)))):
        rng = np.random.default_rng([3, 2, i])  # train.py: [args.seed, epoch, i]
        x2, t2 = mixing.mix(x, y, rng, data.NUM_CLASSES, r["mixup_alpha"], r["cutmix_alpha"],
                            r["prob"], r["switch_prob"])
        assert torch.equal(xm, x2) and torch.equal(tm, t2) and torch.equal(ym, y)
        mixed += not torch.equal(xm, x)
    assert mixed >= 1


def test_evaluation_shards_cover_the_split_once_even_when_a_rank_gets_nothing():
    x, y = SPLIT[0][:5], SPLIT[1][:5]
    for world in (2, 7):  # 7 ranks, 5 images: two ranks hold none
        seen = [lab for rank in range(world) for _, yb in
                Loader((x, y), 1000, "cpu", NORM, part=(rank, world)) for lab in yb.tolist()]
        assert seen == y.tolist()
