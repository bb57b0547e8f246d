"""Device, precision, optimizer, schedule, Ctrl-C and memory: the run-time choices of train.py."""
import signal
import sys
import threading

import torch


def pick_device(name="auto"):
    """auto = CUDA, else MPS, else CPU (with a warning: a full recipe on CPU takes days)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        print("warning: no CUDA GPU found, running on the CPU")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def amp_dtype(name, device):
    """auto = bf16 on CUDA GPUs that compute it natively (compute capability 8.0+: A100, A10G,
    RTX 30xx, H100), fp16 with loss scaling on older ones (T4, V100); off on CPU and MPS, where
    autocast is rarely faster. torch.cuda.is_bf16_supported() is not the test: it also says yes
    where bf16 is only emulated, which is slower than fp16 there."""
    if name == "off" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if native_bf16 else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[name]


def build_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                               nesterov=args.nesterov, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


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


class StopOnCtrlC:
    """`with StopOnCtrlC() as stop:` ... `if stop:` -- the first Ctrl-C (SIGINT) or SIGTERM asks
    the loop to stop at its next check; a second Ctrl-C raises KeyboardInterrupt at once. The
    previous handlers come back on exit. Outside the main thread it installs nothing."""

    def __init__(self, message="Ctrl-C: stopping after this step (Ctrl-C again to abort)"):
        self.message, self.requested, self.previous = message, False, {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}", flush=True)

    def __bool__(self):
        return self.requested

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def peak_memory_mb(device):
    """CUDA: the allocator's peak since the last torch.cuda.reset_peak_memory_stats(); else the
    peak resident set of this process so far (Python and torch included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
