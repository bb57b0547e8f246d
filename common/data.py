"""CIFAR-100 data: constants, the official-file reader, download, a synthetic stand-in, splits.

Every split is a pair (uint8 images (N, 3, 32, 32), int64 fine labels (N,)) on the CPU; the
loader and the augmentation that feed them to a model are in augment.py.
"""
import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch

# Per-channel mean/std of the 50,000 CIFAR-100 training images, pixels scaled to [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# The official label order (alphabetical), as in cifar-100-python/meta.
FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree "
    "orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum "
    "rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider "
    "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
COARSE_NAMES = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables "
    "household_electrical_devices household_furniture insects large_carnivores "
    "large_man-made_outdoor_things "
    "large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals "
    "non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2"
).split()
# FINE_TO_COARSE[fine_label] = coarse_label, the official map (5 fine classes per superclass).
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
NUM_CLASSES = 100


class DataError(RuntimeError):
    """A dataset problem the user can fix; the message says how."""


# ----------------------------------------------------------------------------- official files
class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: a crafted file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path):
    try:
        obj = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as e:  # truncated, corrupt or crafted: the same advice fixes all three
        raise DataError(f"{path} is not a valid CIFAR-100 file ({e}); delete the "
                        "cifar-100-python folder to download it again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected the official dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar100(root, train):
    """Read cifar-100-python/{train,test} from `root` -> (uint8 (N,3,32,32), int64 fine labels).

    Any subset of the official files is accepted; shape, dtype and label range are checked.
    """
    path = Path(root) / "cifar-100-python" / ("train" if train else "test")
    d = _unpickle(path)
    if "data" not in d or "fine_labels" not in d:
        raise DataError(f"{path} lacks the 'data' or 'fine_labels' entry of the official format")
    x, y = np.asarray(d["data"]), np.asarray(d["fine_labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data is {x.dtype} {x.shape}, expected uint8 (N, 3072)")
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or len(y) == 0:
        raise DataError(f"{path}: {y.shape} fine labels for {len(x)} images")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DataError(f"{path}: fine labels span {y.min()}..{y.max()}, expected 0..99")
    return torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y.astype(np.int64))


def read_meta(root):
    """Fine and coarse class names from cifar-100-python/meta (checked against the constants)."""
    path = Path(root) / "cifar-100-python" / "meta"
    d = _unpickle(path)
    fine = [n.decode() if isinstance(n, bytes) else n for n in d.get("fine_label_names", [])]
    coarse = [n.decode() if isinstance(n, bytes) else n for n in d.get("coarse_label_names", [])]
    if fine != FINE_NAMES or coarse != COARSE_NAMES:
        raise DataError(f"{path}: class names differ from the official CIFAR-100 lists")
    return fine, coarse


def ensure_cifar100(root, download=True):
    """Make sure the official files are in `root`, downloading them with torchvision if absent."""
    folder = Path(root) / "cifar-100-python"
    if all((folder / f).exists() for f in ("train", "test", "meta")):
        read_meta(root)  # the class names tell CIFAR-100 from a look-alike folder
        return
    hint = (f"put the official cifar-100-python/ folder (train, test, meta) in "
            f"{Path(root).resolve()} or run offline with --dataset synthetic")
    if not download:
        raise DataError(f"CIFAR-100 not found; {hint}")
    try:
        import torchvision  # deferred: only this path needs it
        print(f"downloading CIFAR-100 to {root} ...", flush=True)
        torchvision.datasets.CIFAR100(root, train=True, download=True)  # checks the archive's MD5
    except Exception as e:
        raise DataError(f"CIFAR-100 download failed ({type(e).__name__}: {e}); {hint}") from None
    read_meta(root)


# ----------------------------------------------------------------------------- synthetic stand-in
# Superclass c wears texture _TEXTURES[c // 2] at a period of (5, 10)[c % 2] px; the k-th fine
# class of a superclass, in label order, is the object _SHAPES[k] on that texture.
_TEXTURES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "waves", "grid",
             "checkerboard", "dots", "honeycomb", "rings", "plaid")
_SHAPES = ("disk", "bar", "triangle", "cross", "ring")
_PX = torch.arange(32.0) - 15.5  # pixel centres from the image centre, px


def synthetic_cifar100(n, split_seed):
    """A stand-in that only a network that sees texture and shape can solve: n uint8 images
    (n,3,32,32) and int64 labels, with CIFAR-100's class names and superclass map.

    The superclass is a texture over the whole image: 10 kinds (_TEXTURES) at a period of 5 or
    10 px. The fine class is the outline of an object on it (_SHAPES: disk, bar, triangle,
    cross, ring) in the opposite hue and a lighter or darker grey, so the five classes of a
    superclass share their texture and differ in shape. Hue and grey level are random per
    image and the texture has zero mean, so the mean colour says nothing of the class, and
    every texture has the same contrast (RMS), so neither does each channel's spread; the
    texture is band-limited and never clipped, so a blur (sigma 5 px) leaves the object's
    silhouette and no trace of the superclass (tests/test_data.py measures both).

    Every cue survives the recipes' augmentations, as an object's class does: textures and
    shapes are mirror-symmetric or come both ways (a flip turns one diagonal into the other);
    orientations differ by 45 deg or more, against a 15 deg rotation plus 5 deg of tilt here;
    the periods differ 2x, against a 15 % zoom plus 8 % jitter here; a 4 px crop moves an
    object that stays within 3 px of the centre; colour jitter changes neither a luminance
    pattern nor an outline. The classes are the same for every split; `split_seed` picks the
    images.
    """
    coarse = torch.tensor(FINE_TO_COARSE)
    shape_of = torch.zeros(NUM_CLASSES, dtype=torch.long)  # rank of a class in its superclass
    for c in range(20):
        members = (coarse == c).nonzero().flatten()
        shape_of[members] = torch.arange(len(members))
    g = torch.Generator().manual_seed(split_seed)
    y = torch.randperm(n, generator=g) % NUM_CLASSES
    x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for i in range(0, n, 8192):  # bounded memory: ~0.2 GB of float32 per chunk
        yb = y[i:i + 8192]
        b, c = len(yb), coarse[yb]
        q = torch.rand(b, 17, generator=g)  # every per-image random number, uniform in [0, 1)
        k = 2 * math.pi / (torch.where(c % 2 == 0, 5.0, 10.0) * (0.92 + 0.16 * q[:, 0]))  # rad/px
        tilt = math.radians(5) * (2 * q[:, 1] - 1)  # rad
        t = _grouped(c // 2, lambda kind, j: _texture(kind, k[j], tilt[j], q[j, 2:10]))
        t = t - t.mean((1, 2), keepdim=True)
        t = t / t.pow(2).mean((1, 2), keepdim=True).sqrt()  # zero mean, unit RMS: one contrast
        radius = 7.5 + 2.5 * q[:, 10]  # px, of the disk of the object's area
        centre = 3 * (2 * q[:, 11:13] - 1)  # px from the image centre
        inside = _grouped(shape_of[yb], lambda kind, j: _shape(kind, centre[j], radius[j]))
        # colours: the background a random hue of chroma 0.03-0.06 at a grey level of 0.4-0.6,
        # the object the opposite hue 0.1 lighter or darker; all within 0.34-0.66, so that the
        # texture (RMS 0.11, peaks at most 3.1x that: 0.34) never clips: clipping would fold
        # its harmonics into a coarse moire
        hue = torch.cos(2 * math.pi * q[:, 14, None] + torch.tensor([0, -2, 2]) * math.pi / 3)
        hue = (0.03 + 0.03 * q[:, 15, None]) * hue
        level = 0.4 + 0.2 * q[:, 16, None]
        bg, fg = level + hue, level - hue + torch.where(level < 0.5, 0.1, -0.1)
        lum = 0.11 * t + 0.01 * torch.randn(b, 32, 32, generator=g)  # texture + pixel noise
        img = torch.addcmul(bg[:, :, None, None], (fg - bg)[:, :, None, None], inside[:, None])
        img += lum[:, None]
        x[i:i + b] = img.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x, y


def _grouped(group, fn):
    """fn(kind, index) for each kind's images at once, back in the original order."""
    order = torch.argsort(group, stable=True)
    parts = order.split(torch.bincount(group).tolist())
    return torch.cat([fn(kind, j) for kind, j in enumerate(parts) if len(j)])[order.argsort()]


def _wave(k, angle, phase):
    """(m,) -> (m, 32, 32): k (u cos angle + v sin angle) + phase, u right and v down, rad."""
    along_u = (k * torch.cos(angle))[:, None, None] * _PX
    along_v = (k * torch.sin(angle))[:, None] * _PX + phase[:, None]
    return along_u + along_v[:, :, None]


def _texture(kind, k, tilt, q):
    """Texture `kind` at wave number k (rad/px), tilted by `tilt` (rad); q: (m, 8) uniforms.

    Each is built from cosines of wave number k, at most squared, so no frequency exceeds 2k
    (the waves' wobble adds sidebands past it below 1 %): at the shortest period, 4.6 px, that
    is 0.43 cycles/px, under the pixel grid's 0.5, so no harmonic folds back into a coarse
    moire that a blur would keep.
    """
    ph = 2 * math.pi * q
    cos = lambda j, angle, kk=k: torch.cos(_wave(kk, tilt + angle, ph[:, j]))  # noqa: E731
    right = math.pi / 2
    if kind == 0:
        return cos(0, right)  # the wave runs down: horizontal stripes
    if kind == 1:
        return cos(0, 0.0)
    if kind == 2:  # a flip turns one diagonal into the other, so the class holds both
        return cos(0, torch.where(q[:, 1] < 0.5, -1.0, 1.0) * right / 2)
    if kind == 3:  # horizontal stripes bent by a sine twice as long, up to 45 degrees
        return torch.cos(_wave(k, tilt + right, ph[:, 0])
                         + 2 * torch.sin(_wave(k / 2, tilt, ph[:, 1])))
    if kind == 4:  # bright lines both ways
        return (1 + cos(0, 0.0)) ** 2 + (1 + cos(1, right)) ** 2
    if kind == 5:  # squares of side period / sqrt(2): the fundamental is at the period
        return cos(0, 0.0, k / 2 ** 0.5) * cos(1, right, k / 2 ** 0.5)
    if kind == 6:  # bright dots on a square lattice
        return (1 + cos(0, 0.0)) * (1 + cos(1, right))
    if kind == 7:  # three gratings 60 degrees apart, phased to draw dark dots in a bright mesh
        return -(cos(0, 0.0) + cos(1, math.pi / 3)
                 + torch.cos(_wave(k, tilt + 2 * math.pi / 3, ph[:, 1] - ph[:, 0])))
    if kind == 8:  # concentric rings about a point up to 6 px from the centre
        cu, cv = 12 * q[:, 1:3].T - 6
        r2 = ((_PX - cu[:, None]) ** 2)[:, None, :] + ((_PX - cv[:, None]) ** 2)[:, :, None]
        return torch.cos(k[:, None, None] * r2.sqrt() + ph[:, 0, None, None])
    return sum(cos(j, j * math.pi / 4) for j in range(4))  # plaid: four orientations at once


def _shape(kind, centre, radius):
    """(m, 32, 32) bool: shape `kind` of about a disk's area, axis-aligned and mirror-symmetric."""
    u = (_PX - centre[:, 0, None]) / radius[:, None]  # (m, 32), in radii
    v = (_PX - centre[:, 1, None]) / radius[:, None]
    u, v = u[:, None, :], v[:, :, None]
    if kind == 0:
        return u ** 2 + v ** 2 < 1
    if kind == 1:  # lying flat, 2.6 x 1 radii
        return (u.abs() < 1.3) & (v.abs() < 0.5)
    if kind == 2:  # apex up; height 2.2, base 2.6 radii
        return (v.abs() < 1.1) & (u.abs() < (v + 1.1) * 1.3 / 2.2)
    if kind == 3:
        return ((u.abs() < 0.35) & (v.abs() < 1.15)) | ((v.abs() < 0.35) & (u.abs() < 1.15))
    r2 = u ** 2 + v ** 2
    return (r2 < 1.15 ** 2) & (r2 > 0.6 ** 2)


# ----------------------------------------------------------------------------- splits
def load_splits(dataset, data_dir, subset=0, val_split=0, download=True):
    """-> {"train": (x, y), "val": (x, y) or None, "test": (x, y)}, uint8 images on the CPU.

    subset: keep this many training images (and a fifth as many test images), drawn by a fixed
        permutation, so a small run still sees every class.
    val_split: carve this many images from the training set as a fixed validation set.
    """
    if subset < 0:
        raise DataError(f"--subset {subset}: use 0 (every image) or a positive count")
    if dataset == "synthetic":
        n_train = subset or 50_000
        train, test = synthetic_cifar100(n_train, 1), synthetic_cifar100(max(n_train // 5, 100), 2)
    elif dataset == "cifar100":
        ensure_cifar100(data_dir, download)
        train, test = read_cifar100(data_dir, True), read_cifar100(data_dir, False)
        if subset:
            train = _take(train, subset, seed=0)
            test = _take(test, max(subset // 5, 100), seed=0)
    else:
        raise DataError(f"unknown dataset {dataset!r}; use cifar100 or synthetic")
    val = None
    if val_split:
        if not 0 < val_split < len(train[0]):
            raise DataError(f"--val-split {val_split} must be between 1 and {len(train[0]) - 1}, "
                            f"the number of training images less one")
        order = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(0))
        val = tuple(t[order[:val_split]] for t in train)
        train = tuple(t[order[val_split:]] for t in train)
    return {"train": train, "val": val, "test": test}


def _take(split, n, seed):
    order = torch.randperm(len(split[0]), generator=torch.Generator().manual_seed(seed))[:n]
    return tuple(t[order] for t in split)
