"""CIFAR-100 data: constants, the official-file reader, download, a synthetic stand-in, splits.

Every split is a pair (uint8 images (N, 3, 32, 32), int64 fine labels (N,)) on the CPU; the
loader and the augmentation that feed them to a model are in augment.py.
"""
import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
def synthetic_cifar100(n, split_seed):
    """A learnable stand-in with CIFAR-100's shapes: n uint8 images (n,3,32,32), int64 labels.

    Each superclass has a smooth random colour pattern; each of its 5 fine classes adds a weaker
    pattern of its own, so superclasses are more alike within than across. Every image is its
    class pattern at a random offset and contrast, plus pixel noise. The class patterns are the
    same for every split; `split_seed` only changes which images are drawn.
    """
    g = torch.Generator().manual_seed(1234)  # class patterns: fixed, the "world" of the dataset
    coarse = torch.rand(20, 3, 4, 4, generator=g)
    fine = torch.rand(NUM_CLASSES, 3, 8, 8, generator=g) - 0.5
    low = coarse[list(FINE_TO_COARSE)]  # (100, 3, 4, 4)
    protos = (F.interpolate(low, size=40, mode="bicubic", align_corners=False)
              + 0.6 * F.interpolate(fine, size=40, mode="bicubic", align_corners=False))
    g = torch.Generator().manual_seed(split_seed)
    y = torch.randperm(n, generator=g) % NUM_CLASSES
    x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    span = torch.arange(32)
    for i in range(0, n, 4096):  # bounded memory for the 50,000-image set
        yb = y[i:i + 4096]
        b = len(yb)
        oy, ox = torch.randint(0, 9, (2, b), generator=g)  # a 32x32 window of the 40x40 pattern
        rows = (oy[:, None] + span)[:, None, :, None].expand(b, 3, 32, 40)
        cols = (ox[:, None] + span)[:, None, None, :].expand(b, 3, 32, 32)
        win = protos[yb].gather(2, rows).gather(3, cols)
        contrast = 0.6 + 0.8 * torch.rand(b, 1, 1, 1, generator=g)
        mean = win.mean((2, 3), keepdim=True)  # keep each class's colour, vary its contrast
        img = mean + contrast * (win - mean)
        img = img + 0.12 * torch.randn(b, 3, 32, 32, generator=g)
        x[i:i + b] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return x, y


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
