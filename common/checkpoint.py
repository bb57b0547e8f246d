"""Checkpoints that survive crashes and load without unpickling code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`. It carries the architecture name and the factory arguments,
so evaluate.py and gradcam.py rebuild the model from the file alone.
"""
import os
import random
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint problem the user can fix; the message says how."""


def save_checkpoint(state, path):
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A failure at any point (full disk, Ctrl-C) leaves the previous file intact and raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path, map_location="cpu"):
    """Load with weights_only=True; a missing, truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or pass --checkpoint PATH")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:200]}); it may be "
                              "truncated or corrupt: use another one, e.g. best.pt") from None
    return ckpt


def model_state(ckpt):
    """The state dict inside a full checkpoint, or the file itself if it is a bare state dict."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt
    raise CheckpointError("the file holds neither a training checkpoint nor a state dict")


def check_compatible(ckpt, **expected):
    """Refuse a checkpoint whose arch / num_classes / dataset (...) differ from this run's."""
    for key, want in expected.items():
        have = ckpt.get(key)
        if have != want:
            raise CheckpointError(f"checkpoint has {key}={have!r} but this run has {key}={want!r}; "
                                  "point --resume at a checkpoint of the same setup, "
                                  "or drop --resume")


def rng_state():
    """Python, numpy, torch (and CUDA) generator states, in weights_only-loadable form."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "cached": cached}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
