"""Checkpoints that survive crashes, load without unpickling code, and rebuild their model.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`. train.py writes it (rank 0 only, atomically); its keys:

    format                CHECKPOINT_FORMAT; --resume refuses another (the weights still load)
    arch, num_classes,    the run's fingerprint: --resume refuses a checkpoint whose fingerprint
    dataset, model_args   differs (check_compatible); load_model rebuilds factory(**model_args)
    model                 state dict of the bare network (never a DDP or torch.compile wrapper)
    ema                   runtime.EMA's (an AveragedModel's) state dict ("module."-prefixed +
                          n_averaged), or None
    optimizer, scheduler, scaler      state dicts, read by --resume
    epoch                 epochs finished
    step                  optimizer steps of epoch `epoch` + 1 already taken: 0 at an epoch's
                          end, > 0 when Ctrl-C stopped the run inside an epoch
    running_sums          [loss x images, correct, images] of that unfinished epoch, else None
    tracker               {"rows": [one dict per finished epoch]}: metrics.npz rebuilt on resume
    best                  {"epoch", "top1", "split"}: what best.pt holds and why
    args                  every flag of the run: --resume restores the ones not given again,
                          evaluate.py / gradcam.py / app.py find the data and model from them
    rng                   Python, numpy, torch (and CUDA) generator states

load_model also reads two other layouts: a bare state dict (the factory's default arguments) and
the `{"model_state_dict": ...}` dicts the source projects save (seeds 000 and 003).
"""
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


CHECKPOINT_FORMAT = 2  # 2: per-rank rng and running_sums lists (torchrun), 2026-11-28


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


def copy_checkpoint(src, dst):
    """dst becomes the same file as src, atomically: a hard link (no second write of hundreds of
    MB), or a copy where the file system has no links."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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


def load_model(path, factory, ema=False, args_of_state=None, device="cpu"):
    """Rebuild `factory(**model_args)` from a checkpoint -> (model in eval mode on `device`, the
    checkpoint as a dict in this module's layout). The checkpoint's arch must be the factory's
    name. ema: the EMA weights instead. args_of_state(state_dict) -> model_args, for files that
    carry no model_args (a bare state dict); without it they get the factory's defaults."""
    arch = factory.__name__
    ckpt = load_checkpoint(path)
    if not (isinstance(ckpt, dict) and "arch" in ckpt and "model" in ckpt):
        state = model_weights(ckpt, path)
        model_args = args_of_state(state) if args_of_state else {}
        ckpt = {"arch": arch, "model_args": model_args, "args": {}, "model": state}
    if ckpt["arch"] != arch:
        raise CheckpointError(f"{path} holds a {ckpt['arch']!r} model; use the scripts of that "
                              f"model's folder (these rebuild {arch})")
    state = ckpt["model"]
    if ema:
        if not ckpt.get("ema"):
            raise CheckpointError(f"{path} has no EMA weights; drop --ema or train with --ema")
        # AveragedModel keeps the network under "module." next to its "n_averaged" counter
        state = {k[7:]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    model = factory(**ckpt.get("model_args", {}))
    load_weights(model, state, f"{path}", f"{arch}({ckpt.get('model_args', {})})")
    return model.to(device).eval(), ckpt


def load_weights(model, state, path, what):
    """model.load_state_dict(state), or a CheckpointError that names the keys and shapes that
    do not match (at most three of each kind): `path` does not fit `what`."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
              if k in state and torch.is_tensor(state[k]) and state[k].shape != v.shape]
    if missing or extra or shapes:
        show = lambda names: ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")  # noqa
        kinds = (("missing", missing), ("unexpected", extra),
                 ("of another shape (file vs model)", shapes))
        raise CheckpointError(f"{path} does not fit {what}: " + "; ".join(
            f"{len(names)} {label}: {show(names)}" for label, names in kinds if names))
    model.load_state_dict(state)


def model_weights(obj, path="the file"):
    """The network's state dict in any of the three layouts: ours ("model"), a bare state dict,
    {"model_state_dict": ...}; wrapper prefixes ("module." of DataParallel/DDP, "_orig_mod." of
    torch.compile) removed."""
    if isinstance(obj, dict) and "arch" in obj and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        obj = obj["model_state_dict"]
    if not (isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values())):
        raise CheckpointError(f"{path} holds neither a training checkpoint, a state dict nor a "
                              "{'model_state_dict': ...} dict")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def check_compatible(ckpt, **expected):
    """Refuse a checkpoint whose arch / num_classes / dataset (...) differ from this run's."""
    for key, want in expected.items():
        have = ckpt.get(key)
        if have != want:
            raise CheckpointError(f"checkpoint has {key}={have!r} but this run has {key}={want!r}; "
                                  "use a checkpoint of the same setup (or drop the flag)")


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
