"""Batches of one split, held on the training device: no worker processes, no host copies.

Training order and each batch's augmentation and mixing come from generators seeded by
(seed, epoch, batch), so an epoch replays exactly after a resume. The transform is an
Augment or a Normalize (common/augment.py); mixing is a mixing.draw (common/mixing.py).
"""
import math

import numpy as np
import torch


class Loader:
    """Batches of one split, held on `device`: (transform(uint8 images), int64 labels).

    `transform(x, g)` is an Augment for training or a Normalize for evaluation. Training order and
    augmentation come from generators seeded by (seed, epoch, batch), so `set_epoch(e)` followed
    by `iterate(start=k)` reproduces batch k of epoch e exactly.

    With `mix(n, rng) -> plan` (e.g. functools.partial(mixing.draw, cutmix_alpha=1.0,
    num_classes=100)) batches are also mixed, with rng = np.random.default_rng([seed, epoch,
    batch]), and come as (images, soft targets, labels) of this rank's rows
    [rank * B // world, (rank + 1) * B // world) for part = (rank, world): the whole batch's
    random numbers are drawn, but only those rows and their mixing partners are augmented.
    """

    def __init__(self, split, batch_size, device, transform, shuffle=False, seed=0,
                 drop_last=False, mix=None, part=(0, 1)):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: use at least 1")
        if drop_last and len(split[0]) < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the {len(split[0])} training "
                             "images; lower --batch-size or raise --subset")
        if not 0 <= part[0] < part[1]:
            raise ValueError(f"part {part}: rank must be in 0..world-1")
        self.x, self.y = split[0].to(device), split[1].to(device)
        self.batch_size, self.transform, self.shuffle = batch_size, transform, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.mix, self.part = mix, tuple(part)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def generator(self, batch=None):
        """Generator on the data's device for this epoch's order (batch=None) or one batch."""
        key = [self.seed, self.epoch] + ([] if batch is None else [batch])
        seed = int(np.random.SeedSequence(key).generate_state(1)[0])
        return torch.Generator(self.x.device).manual_seed(seed)

    def iterate(self, start=0):
        n = len(self.x)
        order = (torch.randperm(n, generator=self.generator(), device=self.x.device)
                 if self.shuffle else None)
        for i in range(start, len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            sel = order[idx] if order is not None else idx
            x, y = self.x[sel], self.y[sel]
            if self.mix is None:
                yield self.transform(x, self.generator(i)), y
            else:
                yield self._mixed(x, y, i)

    def _mixed(self, x, y, i):
        """One batch's (images, soft targets, labels) of this rank's rows."""
        plan = self.mix(len(y), np.random.default_rng([self.seed, self.epoch, i]))
        rank, world = self.part
        if world == 1:  # the single-process stream: every row, no gathers
            return (*plan.apply(self.transform(x, self.generator(i)), y), y)
        lo, hi = rank * len(y) // world, (rank + 1) * len(y) // world
        rows = np.arange(lo, hi)
        have = plan.needed(rows)  # sorted, on the host: no wait for the device
        t = torch.from_numpy(have)
        t = t.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else t.to(x.device)
        images, target = plan.apply(self.transform(x, self.generator(i), rows=t), y, rows, have)
        return images, target, y[lo:hi]

    def __iter__(self):
        return self.iterate()
