"""torchrun: everything distributed is here, and in the few lines of train.py that call it.

Under plain `python` every function is a no-op (or returns its input). Under torchrun each rank
holds a DistributedDataParallel replica, trains on its slice of every global batch, and rank 0
alone writes. CIFAR100_FORCE_DDP=1 sets up the group and DDP in a one-process torchrun job too,
so one GPU (or the CPU, over gloo) can check the whole distributed path."""
import contextlib
import gc
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def init(device):
    """-> (rank, world size, this rank's device). Plain `python`: (0, 1, device). Under torchrun
    (RANK, WORLD_SIZE, LOCAL_RANK set): join the group, NCCL with one GPU a rank, or gloo."""
    forced = os.environ.get("CIFAR100_FORCE_DDP") == "1" and "RANK" in os.environ  # torchrun's
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not forced:
        return 0, 1, device
    if device.type == "mps":
        raise ValueError("torchrun needs CUDA or the CPU (MPS has no process-group backend); "
                         "use --device cpu or plain python")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def close():
    """Leave the process group once every rank is done (a rank that leaves while another still
    uses it can abort the job). After an error the process just exits; torchrun ends the rest."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()  # now, not at exit, where a gloo thread holding a tensor can abort a good run


def _grouped():
    """A process group exists: torchrun with 2+ ranks, or a forced one-rank group."""
    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(t):
    """All-reduce (sum) a tensor in place across ranks; a no-op in a single process."""
    if _grouped():
        dist.all_reduce(t)
    return t


def any_rank(*flags):
    """[flag is True on some rank, ...]: every rank takes the same decision (stop, NaN)."""
    if not _grouped():
        return list(flags)
    t = torch.tensor([int(bool(f)) for f in flags],
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in a single process."""
    if not _grouped():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module):
    """Rank 0's buffers (BatchNorm statistics, which each rank updates from its own slice) to
    every rank: evaluation uses the weights rank 0 saves."""
    if _grouped():
        for b in module.buffers():
            dist.broadcast(b, 0)


def data_parallel(model, device, sync_bn=False):
    """DistributedDataParallel around `model` under torchrun (one GPU per rank on CUDA); the
    model itself otherwise. sync_bn: BatchNorm over the global batch (CUDA only)."""
    if not _grouped():
        return model
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps modules in place
    elif sync_bn and dist.get_rank() == 0:
        print("--sync-bn: SyncBatchNorm needs CUDA; BatchNorm statistics stay per rank")
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def local_rank_zero_first():
    """`with local_rank_zero_first(): load or download the data`: local rank 0 of each machine
    runs it first, the others after, so no two write the same files. The wait has its own gloo
    group (any device), a 2-hour timeout for slow downloads; if rank 0 fails, torchrun ends all."""
    leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
    group = dist.new_group(backend="gloo", timeout=timedelta(hours=2)) if _grouped() else None
    if group is not None and not leader:
        dist.barrier(group)
    yield
    if group is not None and leader:
        dist.barrier(group)
