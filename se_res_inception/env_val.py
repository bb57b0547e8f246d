"""Check what this machine offers for training (the "SE-Res-Inception V2" CIFAR-100 project's
env_val.py, which checked CUDA only).

Prints the torch, CUDA and cuDNN versions and the device, then runs a tiny forward/backward (one
narrow Res-Inception block on 8 images of 32x32) in fp32 and under each option train.py offers:
AMP fp16 (with a grad scaler), AMP bf16, channels_last and torch.compile. Each check is timed and
caught, so a missing feature is a line in the report, not a crash. Ends with a one-line verdict.

    python se_res_inception/env_val.py            # torch.compile: about a minute on 2 CPU cores
    python se_res_inception/env_val.py --skip-compile --device cpu
"""
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import runtime  # noqa: E402
from common.flags import Parser  # noqa: E402
from model import ResInceptionBlock  # noqa: E402


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--skip-compile", action="store_true", help="skip the torch.compile check")
    return p


def tiny_model():
    """Stem -> one Res-Inception block (16 -> 32 channels, SE, drop path) -> linear head."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         ResInceptionBlock(16, (8, 8, 8, 4, 8, 8), drop_path=0.1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def step(device, dtype=None, channels_last=False, compile=False):
    """One training step of the tiny model; raises if anything fails or turns non-finite."""
    torch.manual_seed(0)
    model = tiny_model().to(device)
    x = torch.randn(8, 3, 32, 32, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = run(x)
        loss = F.cross_entropy(logits.float(), torch.arange(8, device=device) % 10)
    if dtype is not None and logits.dtype != dtype:
        raise RuntimeError(f"autocast left the logits in {logits.dtype}, not {dtype}")
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    if not loss.isfinite() or bad:
        raise RuntimeError(f"non-finite loss or gradients ({bad[:3]})")
    if device.type == "cuda":
        torch.cuda.synchronize()


def check(name, fn):
    t = time.time()
    try:
        fn()
        ok, note = True, f"works ({time.time() - t:.1f} s)"
    except Exception as e:  # the report is the point: any failure becomes one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        ok, note = False, f"FAILS: {type(e).__name__}: {msg[:150]}"
    print(f"  {name:<16}{note}", flush=True)
    return ok


def main(args):
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"built for CUDA {torch.version.cuda or 'none'}")
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    gpus = f", {torch.cuda.device_count()} GPU(s), cuDNN {cudnn}" if cuda else ""
    print(f"CUDA available: {cuda}{gpus}")
    print(f"MPS available: {torch.backends.mps.is_available()}; CPU threads: "
          f"{torch.get_num_threads()}")
    try:
        device = runtime.pick_device(args.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        print(f"device: cuda, {p.name}, compute capability {p.major}.{p.minor}, "
              f"{p.total_memory / 2**30:.1f} GiB, bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        print(f"device: {device.type}")
    auto = runtime.amp_dtype("auto", device)
    print(f"train.py --amp auto here: {str(auto).replace('torch.', '') if auto else 'off'}")

    print("a training step of a tiny Res-Inception model:")
    ok = {"fp32": check("fp32", lambda: step(device)),
          "fp16": check("AMP fp16", lambda: step(device, torch.float16)),
          "bf16": check("AMP bf16", lambda: step(device, torch.bfloat16)),
          "channels_last": check("channels_last", lambda: step(device, channels_last=True))}
    if not args.skip_compile:
        ok["compile"] = check("torch.compile", lambda: step(device, compile=True))

    works = [k for k, v in ok.items() if v and k != "fp32"]
    fails = [k for k, v in ok.items() if not v]
    if not ok["fp32"]:
        verdict = f"NOT READY: even an fp32 step fails on {device.type}; fix the install first"
    elif device.type == "cuda":
        verdict = (f"READY for the recipe on {torch.cuda.get_device_name(device)}: "
                   f"python se_res_inception/train.py (--amp auto picks {str(auto)[6:]})"
                   + (f"; avoid: {', '.join(fails)}" if fails else ""))
    else:
        verdict = (f"{device.type.upper()} only ({', '.join(works) or 'fp32 only'} work): every "
                   "script runs, but the recipe (200 epochs, 2 GMACs per image) needs a CUDA GPU; "
                   "try it with --dataset synthetic --subset 100 --test-subset 100 "
                   "--batch-size 50 --epochs 1")
    print(f"verdict: {verdict}")
    return 0 if ok["fp32"] else 1


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
