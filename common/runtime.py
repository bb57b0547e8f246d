"""Device, precision, optimizer and schedule choices shared by the three train.py files."""
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
    """auto = bf16 on CUDA GPUs that have it (no loss scaling needed), fp16 on older ones;
    off on CPU and MPS, where autocast is rarely faster."""
    if name == "off" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
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
