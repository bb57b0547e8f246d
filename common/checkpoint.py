"""Checkpoints that survive crashes, load without unpickling code, and rebuild their model; and
TrainState, the whole training state that train.py saves and --resume restores.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`. TrainState writes it (rank 0 only, atomically); its keys:

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
    rng                   per rank: Python, numpy, torch (and its GPU's) generator states

load_model also reads two other layouts: a bare state dict (the factory's default arguments) and
the `{"model_state_dict": ...}` dicts the source projects save (seeds 000 and 003).
"""
import os
import random
import shutil
import threading
import time
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


def rng_state(device=None):
    """Python, numpy, torch and, on a CUDA device, that device's generator states, in
    weights_only-loadable form (only this rank's GPU: a resume may see fewer GPUs)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "cached": cached}}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device=None):
    """The inverse of rng_state; tensors on any device are read back on the host."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # format 2 saved every visible GPU's: take this device's, if any
        index = (torch.device(device).index or 0) if device is not None else 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(cuda.cpu(), device)


def to_host(obj):
    """A copy of a checkpoint's tree with every tensor copied to the CPU: a snapshot that training
    may go on changing in place while a thread writes it."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_host(v) for v in obj]
    return obj


class TrainState:
    """The whole training state in one object: what last.pt holds and --resume restores.

    parts: {"model": bare network, "ema", "optimizer", "scheduler", "scaler", "tracker"}, each
    with state_dict()/load_state_dict() (ema may be None). Next to them: the epoch and step
    reached, the best epoch so far and, for a run stopped inside an epoch, each rank's running
    sums. state_dict() is a collective under torchrun (every rank calls it: `gather` collects each
    rank's RNG state and sums); save() writes from a background thread, on rank 0 only.
    """

    def __init__(self, fingerprint, args, parts, device, rank=0, world=1, gather=None):
        self.fingerprint, self.args, self.parts, self.device = fingerprint, args, parts, device
        self.rank, self.world, self.gather = rank, world, gather or (lambda obj: [obj])
        self.epoch, self.step, self.sums = 0, 0, None  # sums: this rank's, of epoch `epoch` + 1
        self.best = {"epoch": 0, "top1": -1.0, "split": "test"}
        self._writer, self._error = None, None

    def state_dict(self, sums=None):
        per_rank = self.gather((rng_state(self.device), sums))
        state = {"format": CHECKPOINT_FORMAT, **self.fingerprint, "epoch": self.epoch,
                 "step": self.step, "best": dict(self.best), "args": dict(vars(self.args)),
                 "running_sums": None if sums is None else [s for _, s in per_rank],
                 "rng": [r for r, _ in per_rank]}
        for name, part in self.parts.items():
            state[name] = None if part is None else part.state_dict()
        return state

    def load_state_dict(self, ck):
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("the checkpoint was written by an older train.py; its weights "
                                  "still load in evaluate.py or as --init CKPT, but it cannot be "
                                  "resumed")
        check_compatible(ck, **self.fingerprint)
        saved = ck["args"]
        if (self.args.epochs, self.args.batch_size) != (saved["epochs"], saved["batch_size"]):
            raise ValueError(f"the lr schedule was laid out for --epochs {saved['epochs']} "
                             f"--batch-size {saved['batch_size']}; resume with those values")
        for name, part in self.parts.items():
            # an empty scaler state: written by a bf16 or CPU run, where no GradScaler is used;
            # a fresh scale is right for a resume in fp16
            if part is not None and ck.get(name) is not None and ck[name] != {}:
                part.load_state_dict(ck[name])  # each moves the tensors it needs to its device
        same_world = len(ck["rng"]) == self.world  # one entry per rank that wrote it
        set_rng_state(ck["rng"][self.rank if same_world else 0], self.device)
        sums = ck["running_sums"]
        if sums is not None:  # the unfinished epoch's sums: each rank its own, or all on rank 0
            sums = sums[self.rank] if same_world else (
                np.sum(sums, 0).tolist() if self.rank == 0 else None)
        self.epoch, self.step, self.best, self.sums = ck["epoch"], ck["step"], ck["best"], sums

    def resume(self, path):
        """load_state_dict of the checkpoint at path, read on the CPU: RNG states must stay on
        the host, and AdamW's step counters too (on the GPU each step would read them back)."""
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        print(f"resumed from {path} at epoch {self.epoch} batch {self.step}")

    def save(self, out_dir, names, sums=None):
        """Write out_dir/names[0] (names[1:] become links to it) -> seconds the caller spent.
        Every rank calls it. The state is copied to the host at once and written from a thread,
        so training goes on during the write; wait() joins it and raises what it raised."""
        start = time.perf_counter()
        state = self.state_dict(sums)
        if self.rank == 0:
            self.wait()
            paths = [Path(out_dir) / n for n in names]
            self._writer = threading.Thread(target=self._write, args=(to_host(state), paths))
            self._writer.start()
        return time.perf_counter() - start

    def _write(self, state, paths):
        try:
            save_checkpoint(state, paths[0])
            for path in paths[1:]:  # best.pt, epoch_N.pt: links to the same file
                copy_checkpoint(paths[0], path)
        except BaseException as e:  # raised in the training thread by wait()
            self._error = e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.wait()

    def wait(self):
        """Block until the last save() is on disk; raise its error (a full disk) if it failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        error, self._error = self._error, None
        if error is not None:
            raise error
