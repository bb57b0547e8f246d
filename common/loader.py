"""Batches of one split, held on the training device: no worker processes, no host copies; their
order, augmentation and mixing are seeded by (seed, epoch, batch[, rank]), so a resume replays them.
"""
import math

import numpy as np
import torch


class Loader:
    """Batches of one split on `device`: (transform(uint8 images), int64 labels), or with `mix`
    (images, soft targets, labels). `transform(x, g)` is an Augment (training) or a Normalize
    (evaluation) of common/augment.py; `mix(x, y, rng)`, e.g. functools.partial(mixing.mix,
    num_classes=100, cutmix_alpha=1.0), gets rng = np.random.default_rng(seeds(batch)).
    `set_epoch(e)` then `iterate(start=k)` reproduces batch k of epoch e exactly.

    part = (rank, world): under torchrun every rank shuffles the same order, keeps its slice of
    each global batch of `batch_size`, and augments and mixes that slice with its own numbers.
    """
    def __init__(self, split, batch_size, device, transform, shuffle=False, seed=0,
                 drop_last=False, mix=None, part=(0, 1)):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: use at least 1")
        if drop_last and len(split[0]) < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the {len(split[0])} training "
                             "images; lower --batch-size or raise --subset")
        self.x, self.y = split[0].to(device), split[1].to(device)
        self.batch_size, self.transform, self.shuffle = batch_size, transform, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.mix, (self.rank, self.world) = mix, part

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def seeds(self, *batch):
        """[seed, epoch] (the order), or [seed, epoch, batch(, rank)] (a batch's numbers)."""
        return [self.seed, self.epoch, *batch] + ([self.rank] if batch and self.world > 1 else [])

    def generator(self, *batch):
        """A torch generator on the data's device, seeded by seeds(*batch)."""
        seed = int(np.random.SeedSequence(self.seeds(*batch)).generate_state(1)[0])
        return torch.Generator(self.x.device).manual_seed(seed)

    def iterate(self, start=0):
        order = torch.randperm(len(self.x), generator=self.generator(), device=self.x.device) \
            if self.shuffle else torch.arange(len(self.x), device=self.x.device)
        for i in range(start, len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]  # global batch i
            m = len(batch)  # of which this rank takes a slice:
            sel = batch[m * self.rank // self.world:m * (self.rank + 1) // self.world]
            x, y = self.transform(self.x[sel], self.generator(i)), self.y[sel]
            if self.mix is None:
                yield x, y
            else:
                yield (*self.mix(x, y, np.random.default_rng(self.seeds(i))), y)

    def __iter__(self):
        return self.iterate()
