"""Checkpoints that survive crashes and load without unpickling code (`torch.load(...,
weights_only=True)`): dicts of tensors, numbers, strings, lists and dicts. TrainState, the whole
training state, writes one (rank 0, atomically) and --resume restores it. Its keys:

    format                CHECKPOINT_FORMAT; --resume refuses another (the weights still load)
    arch, num_classes,    the run's fingerprint: --resume and --init refuse another
    dataset, model_args   (check_compatible); inference.load_model rebuilds arch(**model_args)
    model, ema            state dicts of the bare network (no DDP or compile wrapper), runtime.EMA
    optimizer, scheduler, scaler, tracker: their state dicts (tracker: metrics.npz's rows)
    epoch, step           epochs finished; steps of the next one taken (> 0 after a Ctrl-C)
    running_sums          per rank, [loss x images, correct, images] of that unfinished epoch
    best                  {"epoch", "top1", "split"}: what best.pt holds (split None: none)
    args                  every flag (and the normalization): --resume restores them
    rng                   per rank: torch's CPU and accelerator generator states
"""
import os
import shutil
import threading
import time
from pathlib import Path

import torch

CHECKPOINT_FORMAT = 2  # 2: per-rank rng and running_sums lists (torchrun), 2026-11-28


class CheckpointError(RuntimeError):
    """A checkpoint problem the user can fix; the message says how."""


def save_checkpoint(state, path):
    """Write to a temporary file beside `path`, fsync, rename over `path`: a failure at any
    point (full disk, Ctrl-C) leaves the previous file intact and raises."""
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
    """dst becomes the same file as src, atomically: a hard link (no second write), or a copy."""
    tmp = Path(dst).with_name(f".{Path(dst).name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_checkpoint(path, map_location="cpu"):
    """Load with weights_only=True -> a dict; a missing, truncated or foreign file raises
    CheckpointError. A bare state dict, or the `{"model_state_dict": ...}` that the SE-Res-Inception
    V2 and Enhanced ResNet34 projects save, comes as {"arch": None, "model": state, "args": {}}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or pass --checkpoint PATH")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:200]}); it may be "
                              "truncated or corrupt: use another one, e.g. last.pt") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint's dict")
    state = ckpt.get("model_state_dict", ckpt)
    if not (isinstance(state, dict) and state and all(map(torch.is_tensor, state.values()))):
        return ckpt  # ours (or another dict, which the reader checks)
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP's, torch.compile's wrappers
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {"arch": None, "model": state, "args": {}}


def load_weights(model, state, what):
    """model.load_state_dict(state), or a one-line CheckpointError naming what differs."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} holds no network weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch lists every missing, unexpected and misshapen key
        raise CheckpointError(f"{what} does not fit: {' '.join(str(e).split())[:400]}") from None


def check_compatible(ckpt, **expected):
    """Refuse a checkpoint whose arch / num_classes / dataset (...) differ from this run's."""
    for key, want in expected.items():
        have = ckpt.get(key)
        if have != want:
            raise CheckpointError(f"checkpoint has {key}={have!r} but this run has {key}={want!r}; "
                                  "use a checkpoint of the same setup (or drop the flag)")


def rng_state(device=None):
    """torch's CPU and `device`'s generator states (CUDA: this rank's GPU only, as a resume may
    see fewer): the only ones training uses (data order, augmentation, mixing: seeded per batch)."""
    kind, state = torch.device(device or "cpu").type, {"torch": torch.get_rng_state()}
    if kind == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif kind == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device=None):
    """The inverse of rng_state. Each state is cloned onto the host first: a saved checkpoint's
    tensors are views into one packed buffer (to_host), and torch's setters read a view's
    storage from its start, not from the view (a crash, or another rank's state)."""
    own = {k: v.cpu().clone() for k, v in state.items() if torch.is_tensor(v)}
    torch.set_rng_state(own["torch"])
    kind = torch.device(device or "cpu").type
    if kind == "cuda" and "cuda" in own:
        torch.cuda.set_rng_state(own["cuda"], device)
    elif kind == "mps" and "mps" in own:
        torch.mps.set_rng_state(own["mps"])


def _map(obj, fn):
    """obj's tree (dicts, lists, tuples) with fn(tensor) in place of each tensor."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return [_map(v, fn) for v in obj] if isinstance(obj, (list, tuple)) else obj


def to_host(obj):
    """-> (a CPU copy of a checkpoint's tree, wait): a snapshot, complete once wait() returns, that
    training may go on changing. One buffer and one transfer per (device, dtype), pinned and not
    waited for on CUDA, not ~180 copies that would each make the host wait for the GPU."""
    groups, events = {}, []
    _map(obj, lambda t: groups.setdefault((t.device, t.dtype), []).append(t.detach()))
    for key, tensors in groups.items():
        cuda = key[0].type == "cuda"
        flat = torch.cat([t.reshape(-1) for t in tensors])  # on the tensors' device
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=cuda)
        host.copy_(flat, non_blocking=cuda)
        if cuda:
            events.append(torch.cuda.current_stream().record_event())
        groups[key] = iter(host.split([t.numel() for t in tensors]))
    copy = _map(obj, lambda t: next(groups[(t.device, t.dtype)]).view(t.shape))
    return copy, lambda: [event.synchronize() for event in events]


class TrainState:
    """What last.pt holds (the keys above) and --resume restores; `parts` maps each state-dict key
    to its object (ema may be None). Under torchrun every rank calls state_dict() (`gather`
    collects their RNG states and sums); rank 0 writes, on a thread."""

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
        return state | {name: None if part is None else part.state_dict()
                        for name, part in self.parts.items()}

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
        for name, part in self.parts.items():  # each moves the tensors it needs to its device
            if part is not None and ck.get(name):  # {}: a bf16 or CPU run's scaler, kept fresh
                part.load_state_dict(ck[name])
        same_world = len(ck["rng"]) == self.world  # one entry per rank that wrote it
        set_rng_state(ck["rng"][self.rank if same_world else 0], self.device)
        sums = ck["running_sums"]
        if sums is not None:  # the unfinished epoch's sums: each rank its own, or all on rank 0
            sums = sums[self.rank] if same_world else (
                [sum(col) for col in zip(*sums)] if self.rank == 0 else None)
        self.epoch, self.step, self.best, self.sums = ck["epoch"], ck["step"], ck["best"], sums

    def resume(self, path):
        """load_state_dict of the checkpoint at path, read on the CPU: RNG states stay on the
        host, and AdamW's step counters too (on the GPU each step would read them back)."""
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        print(f"resumed from {path} at epoch {self.epoch} batch {self.step}")

    def save(self, out_dir, names, sums=None):
        """Write out_dir/names[0] (names[1:] become links to it) on a thread -> the seconds the
        caller spent. Every rank calls it; wait() joins the thread and raises its error."""
        start = time.perf_counter()
        state = self.state_dict(sums)
        if self.rank == 0:
            self.wait()
            paths = [Path(out_dir) / n for n in names]
            self._writer = threading.Thread(target=self._write, args=(*to_host(state), paths))
            self._writer.start()
        return time.perf_counter() - start

    def _write(self, state, copied, paths):
        try:
            copied()  # the copy to the host is complete
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
        error, self._error = self._error, None
        if error is not None:
            raise error
