"""The run-time choices of train.py: device, precision, kernels, optimizer, schedule, EMA, Ctrl-C,
memory, TensorBoard (torchrun's are in distributed.py)."""
import os
import signal
import sys
import threading
import time

import torch
from torch.optim.swa_utils import AveragedModel


def pick_device(name="auto"):
    """auto = CUDA, else MPS, else CPU (with a warning: a full recipe on CPU takes days)."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        if not (cuda or mps):
            print("warning: no CUDA GPU found, running on the CPU")
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise ValueError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not mps:
        raise ValueError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def check_device(args, device):
    """Refuse, in one line, what Apple's MPS cannot do; the rest of the loop has MPS kernels in
    torch 2.6+ and no float64 (MPS has none). Checked in torch's docs and issues, not on a Mac."""
    old = tuple(map(int, torch.__version__.split("+")[0].split(".")[:2])) < (2, 8)
    problem = device.type == "mps" and (
        "--compile: torch.compile's MPS backend is a prototype" if args.compile else
        "--channels-last: BatchNorm on MPS computes wrong gradients in that layout"
        if args.channels_last else "--amp fp16: loss scaling on MPS needs torch 2.8 or newer"
        if args.amp == "fp16" and old else None)
    if problem:
        raise ValueError(f"{problem}; drop the flag, or use --device cpu")


def amp_dtype(name, device):
    """auto = bf16 on CUDA GPUs that compute it natively (compute capability 8.0+: A100, A10G,
    RTX 30xx, H100), fp16 with loss scaling on older ones (T4, V100); off on CPU and MPS, where
    autocast is rarely faster. Not torch.cuda.is_bf16_supported(): it says yes to emulated bf16."""
    if name == "auto" and device.type == "cuda":
        name = "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return {"auto": None, "off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def build_optimizer(args, params, device=None):
    """SGD or AdamW; on CUDA the fused kernels (one launch for all parameters, same update)."""
    fused = getattr(device, "type", None) == "cuda" or None  # None: torch's default (foreach)
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, fused=fused,
                               nesterov=args.nesterov, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, fused=fused)


def build_scheduler(args, optimizer, steps_per_epoch):
    """A schedule stepped once per batch, so every schedule is smooth at any epoch count."""
    total = args.epochs * steps_per_epoch
    S = torch.optim.lr_scheduler
    if args.scheduler == "onecycle":
        if float(args.pct_start * total) - 1 == 0:  # torch's warm-up phase would span 0 steps
            raise ValueError(f"--pct-start {args.pct_start} of {total} steps is exactly one "
                             "warm-up step, which OneCycleLR cannot schedule: change --epochs, "
                             "--subset or --batch-size")
        return S.OneCycleLR(optimizer, args.lr, total_steps=total, pct_start=args.pct_start,
                            div_factor=args.div_factor, final_div_factor=args.final_div_factor)
    if args.scheduler == "cosine":
        return S.CosineAnnealingLR(optimizer, total)
    if args.scheduler == "cosine-restarts":  # SGDR (Loshchilov & Hutter 2017): T0, T0*Tmult, ...
        return S.CosineAnnealingWarmRestarts(optimizer, args.t0 * steps_per_epoch, args.tmult)
    return S.StepLR(optimizer, args.step_epochs * steps_per_epoch, gamma=args.gamma)


class EMA(AveragedModel):
    """Exponential moving average of the weights and buffers, after every step: ema = decay *
    ema + (1 - decay) * model, the first update a copy. AveragedModel(model, use_buffers=True,
    multi_avg_fn=get_ema_multi_avg_fn(decay))'s numbers and state dict, with no wait for the GPU."""

    def __init__(self, model, decay):
        super().__init__(model, use_buffers=True)  # n_averaged: a CPU tensor, never on the GPU
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model):
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                         [t.detach() for t in (*model.parameters(), *model.buffers())]))
        if self.n_averaged == 0:
            torch._foreach_copy_([e for e, _ in pairs], [m for _, m in pairs])
        else:
            floats = [(e, m) for e, m in pairs if e.is_floating_point()]
            torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1 - self.decay)
            for e, m in pairs:  # integer buffers (BatchNorm's batch count), as torch does them
                if not e.is_floating_point():
                    e.copy_(e * self.decay + m * (1 - self.decay))
        self.n_averaged += 1


class StopOnCtrlC:
    """`with StopOnCtrlC() as stop:` ... `if stop:` -- the first Ctrl-C makes stop true; another,
    a second or more later, raises KeyboardInterrupt (torchrun forwards the terminal's Ctrl-C:
    each rank sees it twice in milliseconds). SIGTERM (torchrun's when a rank fails, `kill`'s)
    raises SystemExit, so `with` blocks unwind and a checkpoint being written is finished."""

    def __init__(self, message="Ctrl-C: stopping after this step (Ctrl-C again to abort)"):
        self.message, self.first, self.previous = message, None, {}

    def _handle(self, signum, frame):
        if self.first is None:
            self.first = time.monotonic()
            print(f"\n{self.message}", flush=True)
        elif time.monotonic() - self.first > 1.0:
            raise KeyboardInterrupt

    def __bool__(self):
        return self.first is not None

    @staticmethod
    def _terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the unwinding
        raise SystemExit(128 + signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # elsewhere: nothing to do
            self.previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._handle),
                             signal.SIGTERM: signal.signal(signal.SIGTERM, self._terminate)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():  # the handlers from before __enter__
            signal.signal(signum, handler)


def peak_memory_mb(device):
    """CUDA: the allocator's peak since the last call (one a row: each epoch's), then a new peak
    starts; elsewhere this process's peak resident set so far."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def tensorboard(log_dir):
    """A SummaryWriter for `log_dir`, or a one-line error saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: "
                         "pip install -r requirements-tensorboard.txt") from None
    return SummaryWriter(str(log_dir))


def log_scalars(writer, row):
    """One epoch's metrics row as TensorBoard scalars, tagged as in metrics.csv."""
    if writer is not None:
        for tag, value in row.items():
            writer.add_scalar(tag, value, int(row["epoch"]))
        writer.flush()


def set_kernels(deterministic=False, device=None):
    """Fast by default: cuDNN times its kernels for our fixed shapes and keeps the fastest
    (benchmark mode), which may differ from run to run. deterministic: reproducible kernels on
    CUDA (the CPU's already are; torch's deterministic mode made a CPU epoch 4x slower)."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    on_cuda = deterministic and getattr(device, "type", None) == "cuda"
    if on_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.use_deterministic_algorithms(on_cuda, warn_only=True)
