"""Use a trained checkpoint: rebuild its network, find the data it was trained against, batched
prediction, one image file. With checkpoint.load_checkpoint this is all that evaluate.py,
gradcam.py, evaluate_superclass.py and app.py need:

    ckpt = load_checkpoint(path)                                # common/checkpoint.py
    model = load_model(ckpt, resnet18, path, device=device)     # the network, in eval mode
    x, y = data.load_splits(**data_of(ckpt), train=False)["test"]  # what it was scored on
    normalize = Normalize(*stats_of(ckpt, (CIFAR100_MEAN, CIFAR100_STD)))  # augment, data
    probs = predict(model, x, normalize, device)                # (N, 100) softmax on the CPU
"""
from pathlib import Path

import numpy as np
import torch


def load_model(ckpt, factory, path, ema=False, args_of_state=None, device="cpu"):
    """Rebuild factory(**model_args) from a load_checkpoint dict -> the model in eval mode on
    `device`. Our checkpoints name their arch, which must be the factory's name; another layout
    (arch None) gets args_of_state(state dict) as model_args, or the factory's defaults.
    ema: the exponential moving average's weights instead of the model's."""
    arch, state = factory.__name__, ckpt.get("model")
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds neither a training checkpoint, a state dict nor a "
                         "{'model_state_dict': ...} dict")
    if ckpt.get("arch") not in (None, arch):
        raise ValueError(f"{path} holds a {ckpt['arch']!r} model; use the scripts of that "
                         f"model's folder (these rebuild {arch})")
    if ema:
        if not ckpt.get("ema"):
            raise ValueError(f"{path} has no EMA weights; drop --ema or train with --ema")
        # AveragedModel keeps the network under "module." next to its "n_averaged" counter
        state = {k[7:]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    model_args = ckpt.get("model_args") or (args_of_state(state) if args_of_state else {})
    model = factory(**model_args)
    ours = model.state_dict()
    differ = {"missing": [k for k in ours if k not in state],
              "unexpected": [k for k in state if k not in ours],
              "of another shape": [k for k in ours if k in state and
                                   getattr(state[k], "shape", None) != ours[k].shape]}
    if any(differ.values()):  # a few names of each kind, on one line
        raise ValueError(f"{path} does not fit {arch}({model_args}): " + "; ".join(
            f"{len(v)} {kind}: {', '.join(v[:3])}{' ...' * (len(v) > 3)}"
            for kind, v in differ.items() if v))
    model.load_state_dict(state)
    return model.to(device).eval()


def stats_of(ckpt, default):
    """The per-channel (mean, std) a checkpoint's network was trained with: its training images'
    own, stored in its args; `default` for a checkpoint that stored none (older runs, other
    layouts: CIFAR-100's constants)."""
    return tuple(ckpt.get("args", {}).get("normalize") or default)


def data_of(ckpt, dataset=None, data_dir=None, test_subset=None):
    """load_splits' arguments for the test images a checkpoint was scored on during training;
    a value given here wins. Its --data-dir is taken as it was given (None: the repo's data/);
    one that is not on this machine (a run copied from elsewhere) is not downloaded into: that
    is a one-line error asking for --data-dir. A bare state dict means CIFAR-100 in data/."""
    trained = ckpt.get("args", {})
    dataset = dataset or trained.get("dataset") or ckpt.get("dataset") or "cifar100"
    download = data_dir is not None or trained.get("data_dir") is None
    data_dir = data_dir or trained.get("data_dir")
    if dataset == "cifar100" and not download and not Path(data_dir).is_dir():
        raise ValueError(f"the run was trained on CIFAR-100 in {data_dir}, which is not on this "
                         "machine: pass --data-dir DIR (CIFAR-100 is downloaded there if absent)")
    return {"dataset": dataset, "data_dir": data_dir, "download": download,
            "test_subset": trained.get("test_subset", 0) if test_subset is None else test_subset}


@torch.no_grad()
def predict(model, x, normalize, device, batch_size=1000, tta=False, dtype=None):
    """uint8 images (N,3,H,W) -> softmax probabilities (N, C), float32 on the CPU.

    normalize: uint8 batch -> model input (augment.Normalize); tta: average over a horizontal
    flip; dtype: autocast precision (None = float32, as evaluate.py reports).
    """
    model.eval()
    probs = []
    for i in range(0, len(x), batch_size):
        xb = normalize(x[i:i + batch_size].to(device))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            p = model(xb).float().softmax(1)
            if tta:
                p = (p + model(xb.flip(3)).float().softmax(1)) / 2
        probs.append(p.cpu())
    return torch.cat(probs) if probs else torch.zeros(0, 0)


def read_image(path, size=32):
    """Any image file -> uint8 (3, size, size): the centre square, resized with antialiasing.

    EXIF rotation is applied (phone photos), transparency is laid over white, greyscale and
    palette images become RGB. A file that is not an image raises ValueError with the reason.
    """
    from PIL import Image, ImageOps  # Pillow comes with torchvision and matplotlib
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no image file at {path}")
    try:
        with Image.open(path) as im:
            im.draft("RGB", (4 * size, 4 * size))  # JPEG: decode at reduced size, much faster
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                im = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im)
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            im = im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read {path.name} as an image ({type(e).__name__}: {e})") \
            from None
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()  # (3, H, W)
