"""Use a trained checkpoint: which data it was trained on, batched prediction, one image file.

With checkpoint.load_model (which rebuilds the network) this is all that evaluate.py, gradcam.py,
evaluate_superclass.py and app.py need:

    model, ckpt = load_model(path, resnet18, device=device)    # common/checkpoint.py
    x, y = data.load_splits(**data_of(ckpt))["test"]            # the split it was trained against
    probs = predict(model, x, normalize, device)                # (N, 100) softmax on the CPU
"""
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def data_of(ckpt, dataset=None, data_dir=None, subset=None):
    """load_splits' arguments for the data a checkpoint was trained on; a value given here wins.

    A checkpoint without training flags (a bare state dict) means CIFAR-100 in the repo's data/.
    """
    trained = ckpt.get("args", {})
    return {"dataset": dataset or trained.get("dataset") or ckpt.get("dataset", "cifar100"),
            "data_dir": data_dir or trained.get("data_dir") or str(DEFAULT_DATA_DIR),
            "subset": subset if subset is not None else trained.get("subset", 0)}


@torch.no_grad()
def predict(model, x, normalize, device, batch_size=500, tta=False, dtype=None):
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
