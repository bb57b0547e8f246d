"""A hue-and-texture set in the official cifar-100-python format, for learning-parity checks.

The superclass (20) is a texture over the whole image: one of 5 kinds (horizontal stripes,
vertical stripes, checkerboard, dots, rings) at one of 4 periods (4, 6, 9, 14 px, each +-6 %).
The fine class (5 per superclass, CIFAR-100's own fine -> coarse map) is the HUE of the image:
5 hues 72 degrees apart, each +-12 degrees. Brightness, chroma, texture contrast and phase are
random per image and there is pixel noise, so neither cue is a single number. The whole set
has a blue tint and a low spread, so its per-channel mean/std differ from CIFAR-100's
(0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762); the script prints them.

    python benchmark/parity_set.py --out /tmp/hue --train 10000 --test 2000 --seed 0
    python resnet18/train.py --dataset cifar100 --data-dir /tmp/hue ...
"""
import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
from common.data import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE  # noqa: E402
from common.flags import ranged  # noqa: E402

PERIODS = (4.0, 6.0, 9.0, 14.0)  # px; superclass c has kind c // 4 and period PERIODS[c % 4]
TINT = np.array([-0.06, 0.0, 0.08])  # added to every pixel: a blue cast, as a dataset might have


def texture(kind, period, rng):
    """(32, 32) zero-mean, unit-RMS texture of `kind` (0..4) at `period` px, random phase."""
    k = 2 * np.pi / period
    u, v = np.meshgrid(np.arange(32.0), np.arange(32.0))  # u right, v down
    pu, pv = rng.uniform(0, 2 * np.pi, 2)
    if kind == 0:
        t = np.cos(k * v + pv)                             # horizontal stripes
    elif kind == 1:
        t = np.cos(k * u + pu)                             # vertical stripes
    elif kind == 2:
        t = np.cos(k * u + pu) * np.cos(k * v + pv)        # checkerboard (diagonal period)
    elif kind == 3:
        t = (1 + np.cos(k * u + pu)) * (1 + np.cos(k * v + pv))  # bright dots on a lattice
    else:
        cu, cv = rng.uniform(4, 28, 2)                     # rings about a random point
        t = np.cos(k * np.hypot(u - cu, v - cv) + pu)
    t = t - t.mean()
    return t / np.sqrt((t ** 2).mean())


def make_split(n, rng):
    """n images -> (uint8 (n, 3072) channel-major, fine labels, coarse labels)."""
    fine = rng.permutation(np.arange(n) % 100)
    coarse = np.asarray(FINE_TO_COARSE)[fine]
    rank = np.zeros(100, dtype=int)  # rank of a fine class within its superclass, label order
    for c in range(20):
        members = [f for f in range(100) if FINE_TO_COARSE[f] == c]
        rank[members] = np.arange(5)
    channel_angle = np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3])  # R, G, B on the hue wheel
    x = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        c = coarse[i]
        period = PERIODS[c % 4] * rng.uniform(0.94, 1.06)
        t = texture(c // 4, period, rng)
        hue = 2 * np.pi * rank[fine[i]] / 5 + rng.uniform(-1, 1) * np.radians(12)
        chroma = rng.uniform(0.05, 0.10)
        level = rng.uniform(0.22, 0.48)                    # random brightness
        colour = level + chroma * np.cos(hue + channel_angle) + TINT  # (3,)
        contrast = rng.uniform(0.05, 0.10)                 # texture RMS, in luminance
        img = colour[:, None, None] + contrast * t + rng.normal(0, 0.02, (3, 32, 32))
        x[i] = np.clip(np.round(img * 255), 0, 255)
    return x.reshape(n, 3072), fine, coarse


def write(out, splits):
    """The official layout: pickled dicts with bytes keys (as Python 2 wrote them), uint8 data."""
    folder = Path(out) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, fine, coarse) in splits.items():
        d = {b"batch_label": f"parity {name}".encode(), b"data": x,
             b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(),
             b"filenames": [f"parity_{name}_{i}.png".encode() for i in range(len(x))]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    meta = {b"fine_label_names": [n.encode() for n in FINE_NAMES],
            b"coarse_label_names": [n.encode() for n in COARSE_NAMES]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="writes OUT/cifar-100-python/{train,test,meta}")
    p.add_argument("--train", type=ranged(int, 100), default=10000, help="images, 100 or more")
    p.add_argument("--test", type=ranged(int, 100), default=2000, help="images, 100 or more")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    splits = {"train": make_split(a.train, rng), "test": make_split(a.test, rng)}
    write(a.out, splits)
    px = splits["train"][0].reshape(-1, 3, 1024) / 255.0
    mean, std = px.mean((0, 2)), px.transpose(1, 0, 2).reshape(3, -1).std(1)
    print(f"wrote {a.out}/cifar-100-python: {a.train} train, {a.test} test images")
    print("train mean", np.round(mean, 4).tolist(), "std", np.round(std, 4).tolist())


if __name__ == "__main__":
    main()
