"""CIFAR-100 data: constants, the official-file reader, download, the splits a run uses.

A split is (uint8 images (N, 3, 32, 32), int64 fine labels (N,)) on the CPU; loader.py batches it.
"""
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from common import synthetic

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # --data-dir not given
# Per-channel mean/std of the 50,000 CIFAR-100 training images, pixels scaled to [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# The official label order (alphabetical), as in cifar-100-python/meta.
FINE_NAMES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge
bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
COARSE_NAMES = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split()
# FINE_TO_COARSE[fine_label] = coarse_label, the official map (5 fine classes per superclass).
FINE_TO_COARSE = (  # 20 labels a row
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
NUM_CLASSES = 100


class DataError(RuntimeError):
    """A dataset problem the user can fix; the message says how."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: a crafted file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3 writes bytes in protocol-2 pickles

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
    """root/cifar-100-python/{train,test} -> (uint8 (N,3,32,32), int64 labels (N,)), checked."""
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
    names = [[n.decode() if isinstance(n, bytes) else n for n in d.get(key, [])]
             for key in ("fine_label_names", "coarse_label_names")]
    if names != [FINE_NAMES, COARSE_NAMES]:
        raise DataError(f"{path}: class names differ from the official CIFAR-100 lists")
    return tuple(names)


def ensure_cifar100(root, download=True):
    """Make sure the official files are in `root`, downloaded by torchvision if `download`."""
    folder = Path(root) / "cifar-100-python"
    if not all((folder / f).exists() for f in ("train", "test", "meta")):
        hint = (f"put the official cifar-100-python/ folder (train, test, meta) in "
                f"{Path(root).resolve()}, pass --data-dir DIR where it is, or run offline with "
                "--dataset synthetic")
        if not download:
            raise DataError(f"CIFAR-100 not found; {hint}")
        try:
            import torchvision  # deferred: only this path needs it
            print(f"downloading CIFAR-100 (161 MB) to {Path(root).resolve()} ...", flush=True)
            torchvision.datasets.CIFAR100(root, train=True, download=True)  # checks its MD5
        except Exception as e:
            failure = f"{type(e).__name__}: {e}"
            raise DataError(f"CIFAR-100 download failed ({failure}); {hint}") from None
    read_meta(root)  # the class names tell CIFAR-100 from a look-alike folder


def class_names(dataset):
    """(fine names, superclass names) of the same labels: CIFAR-100's, or the synthetic set's."""
    return (synthetic.names(FINE_TO_COARSE) if dataset == "synthetic"
            else (FINE_NAMES, COARSE_NAMES))


def synthetic_cifar100(n, split_seed, masks=False):
    """n images of the synthetic stand-in with CIFAR-100's labels (synthetic.images)."""
    return synthetic.images(n, split_seed, FINE_TO_COARSE, masks)


def load_splits(dataset, data_dir=None, subset=0, test_subset=0, val_split=0, download=True,
                masks=False, train=True):
    """-> {"train", "val" (None without val_split), "test": (x, y) uint8 images on the CPU,
    "test_masks": the synthetic test objects' pixels (masks=True) or None, "sizes": a line}.

    subset / test_subset: keep that many training / test images (0: all); val_split: hold out
    that many training images. Each is drawn with the same count of every class, give or take one;
    the synthetic set is drawn at that size. train=False: the test split alone, train and val None.
    """
    for flag, n in (("--subset", subset), ("--test-subset", test_subset)):
        if n < 0:
            raise DataError(f"{flag} {n}: use 0 (every image) or a positive count")
    test_masks = None
    wanted = train  # the flag; `train` names the split below
    if dataset == "synthetic":
        train = synthetic_cifar100(subset or 50_000, 1) if wanted else None
        *test, test_masks = synthetic_cifar100(test_subset or 10_000, 2, masks=True)
        of = {"train": 50_000, "test": 10_000}
    elif dataset == "cifar100":
        data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
        ensure_cifar100(data_dir, download)
        train = read_cifar100(data_dir, True) if wanted else None
        test = read_cifar100(data_dir, False)
        of = {"train": len(train[1]) if wanted else None, "test": len(test[1])}
        train = _take(train, subset, "--subset") if wanted else None
        test = _take(test, test_subset, "--test-subset")
    else:
        raise DataError(f"unknown dataset {dataset!r}; use cifar100 or synthetic")
    val = None
    if wanted and val_split:
        if not 0 < val_split < len(train[1]):
            raise DataError(f"--val-split {val_split} must be between 1 and {len(train[1]) - 1}, "
                            "the number of training images less one")
        held = torch.isin(torch.arange(len(train[1])), _stratified(train[1], val_split))
        val, train = tuple(t[held] for t in train), tuple(t[~held] for t in train)
    sizes = f"test {len(test[1]):,} of {of['test']:,}"
    if wanted:
        counts = train[1].bincount()
        per_class = "-".join(map(str, sorted({int(counts.min()), int(counts.max())})))
        sizes = (f"train {len(train[1]):,} of {of['train']:,} ({per_class} per class)"
                 + (f", val {len(val[1]):,}" if val else "") + f", {sizes}")
    return {"train": train, "val": val, "test": tuple(test), "sizes": sizes,
            "test_masks": test_masks if masks else None}


def channel_stats(x):
    """Exact per-channel (mean, std) of uint8 images (N, 3, H, W) on [0, 1], from histograms."""
    v = torch.arange(256.0) / 255
    hist = [torch.bincount(x[:, c].flatten(), minlength=256).float() for c in range(3)]
    mean = [float((h * v).sum() / h.sum()) for h in hist]
    std = [float((h * (v - m) ** 2).sum() / h.sum()) ** 0.5 for h, m in zip(hist, mean)]
    return tuple(mean), tuple(std)


def _take(split, n, flag):
    """n images of a split, stratified (the whole split for n = 0)."""
    if n < 0 or n > len(split[1]):
        raise DataError(f"{flag} {n}: use 0 (every image) up to {len(split[1])}")
    return split if n in (0, len(split[1])) else tuple(t[_stratified(split[1], n)] for t in split)


def _stratified(y, n, seed=0):
    """Sorted indices of n of the labels y, as many of each class as possible (the counts differ
    by at most one), each class's images in a fixed random order."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    classes = y[order]
    by_class = torch.argsort(classes, stable=True)  # grouped by class, random within a class
    start = torch.cumsum(torch.bincount(classes), 0) - torch.bincount(classes)
    rank = torch.empty_like(classes)
    rank[by_class] = torch.arange(len(y)) - start[classes[by_class]]  # place within its class
    tie = torch.randperm(int(y.max()) + 1, generator=g)[classes]  # which classes get one more
    return order[torch.argsort(rank * len(tie) + tie)[:n]].sort().values
