"""Measure one finished benchmark run and write <run-dir>/measure.json.

The training figures are the run's own, read from the epoch rows train.py / baseline.py wrote
(metrics.npz); nothing here trains:
- train img/s = train_images / train_time of the last epoch (the training phase alone, GPU-
  synchronised; with 2 or more epochs the first epoch's warm-up and compilation are left out);
  epoch time = that epoch's `time` (training + evaluation); peak memory = the largest
  `peak_mem_mb` over the epochs (CUDA: the allocator's peak, reset every epoch; CPU: the peak
  resident set of the training process);
- training TFLOP/s ~ 3 x forward FLOPs per image x train img/s (a backward pass costs about two
  forwards), and on a GPU in PEAK_TFLOPS its share of that card's dense bf16 peak.

Computed here from last.pt, rebuilt by importing the folder's model.py as a module (the baseline:
benchmark/baseline_model.py) and calling the factory that the checkpoint names as its `arch`:
- parameters, and forward FLOPs of one 32x32 image (torch.utils.flop_counter at batch 1: 2 FLOPs
  per multiply-add of convolutions and matrix products; batch norm, activations, pooling are not
  counted);
- inference img/s: common.inference.predict over the test split on the run's device, precision
  and memory layout (eager, never compiled), timed after one untimed warm-up batch;
- top-1 re-count and superclass top-1 of last.pt, float32 as evaluate.py computes them; test
  top-1 of best.pt and the split that picked it (val with --val-split, test with
  --select-on-test); a run with neither has no best.pt, and those figures are None.

With --training-only (benchmark/gpu_check.sh) the second part is skipped: no data set, no
inference, no top-1 re-count; only the parameters, FLOPs and the training figures.

    python benchmark/measure.py resnet18 --run-dir results/runs/resnet18/seed0
"""
import importlib.util
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `common` resolves from any working directory

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import baseline_model  # noqa: E402  (benchmark/baseline_model.py: the baseline's network)
from common import data, runtime  # noqa: E402
from common.augment import Normalize  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from common.flags import Parser, ranged  # noqa: E402
from common.inference import data_of, load_model, predict, stats_of  # noqa: E402
from common.metrics import MetricsTracker, write_json  # noqa: E402
from common.report import superclass_accuracy  # noqa: E402

# Dense bf16 tensor-core peaks in TFLOP/s, by GPU name; the first matching pattern wins. Vendor
# figures, not measured here: NVIDIA's H100 (2023), H200 (2024), A100 (2021), A10 (2021), L4
# (2023), T4 (2019) and V100 (2020) datasheets. Where a datasheet states only the figure "with
# sparsity" (H100, H200, A10, L4) the dense peak is half of it. T4 and V100 have no bf16: their
# fp16 tensor-core peak. A GPU not listed gets no ratio.
PEAK_TFLOPS = [
    (r"H100.*PCIe", 756),     # H100 PCIe: 1,513 with sparsity
    (r"NVL", None),           # H100 NVL / H200 NVL: other clocks and power, not tabulated here
    (r"H100|H200", 989),      # H100 SXM5 and H200 SXM: 1,979 with sparsity
    (r"A100", 312),           # A100 SXM4 and PCIe: 312 dense
    (r"\bA10G?\b", 125),      # A10 (and AWS's A10G, which the brief equates to it): 250 sparse
    (r"\bL4\b", 121),         # L4: 242 with sparsity
    (r"\bT4\b", 65),          # T4: fp16 65
    (r"V100.*PCIE", 112),     # V100 PCIe: fp16 tensor 112
    (r"V100", 125),           # V100 SXM2: fp16 tensor 125
]

parser = Parser(__doc__.split("\n\n")[0])
parser.add_argument("model", help="the model folder whose model.py builds the network "
                    "(resnet18, ...), or baseline")
parser.add_argument("--run-dir", required=True, help="what train.py / baseline.py wrote")
parser.add_argument("--infer-batch", type=ranged(int, 1), default=500,
                    help="images per forward pass of the timed inference")
parser.add_argument("--training-only", action="store_true",
                    help="the training figures alone: no data, no inference, no re-count")


def peak_tflops(gpu_name):
    """The dense bf16 peak of a GPU named like torch.cuda.get_device_name(), or None."""
    for pattern, peak in PEAK_TFLOPS:
        if gpu_name and re.search(pattern, gpu_name, re.IGNORECASE):
            return peak
    return None


def train_figures(rows):
    """The epoch rows (metrics.npz columns) -> the run's training figures."""
    last = {k: float(v[-1]) for k, v in rows.items()}
    if not last.get("train_time", 0) > 0:
        raise ValueError("metrics.npz has no train_time: train the run again with a current "
                         "train.py")
    return {"epochs": int(last["epoch"]), "epoch_train_images": int(last["train_images"]),
            "train_img_s": last["train_images"] / last["train_time"],
            "train_time_s": last["train_time"], "epoch_s": last["time"],
            "save_s": last.get("save_time", float("nan")),  # the loop's share of last.pt
            "peak_memory_mb": float(max(rows["peak_mem_mb"])),
            "final_test_top1": last["test_top1"], "final_test_top5": last["test_top5"]}


def flops_per_image(model):
    """Forward FLOPs of one 32x32 image, counted on a float32 CPU copy of the model."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def time_inference(model, x, to_input, device, batch_size, dtype):
    """-> (softmax (N, C) on the CPU, img/s) of common.inference.predict over all of x.

    One batch runs first, untimed (cuDNN's algorithm search, lazy allocations). predict returns
    CPU tensors, so each call ends only when the device has finished.
    """
    predict(model, x[:batch_size], to_input, device, batch_size, dtype=dtype)
    t0 = time.perf_counter()
    probs = predict(model, x, to_input, device, batch_size, dtype=dtype)
    return probs, len(x) / (time.perf_counter() - t0)


def main(args):
    run_dir = Path(args.run_dir)
    if args.model == "baseline":
        module = baseline_model
    elif (ROOT / args.model / "model.py").is_file():
        path = ROOT / args.model / "model.py"  # a library module; every folder has one
        spec = importlib.util.spec_from_file_location(f"{args.model}_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        raise ValueError(f"unknown model {args.model!r}: no {args.model}/model.py")
    if not (run_dir / "metrics.npz").is_file():
        raise ValueError(f"{run_dir} holds no metrics.npz: train the model first")
    ckpt = load_checkpoint(run_dir / "last.pt")
    arch = ckpt.get("arch")
    if not callable(getattr(module, str(arch), None)):
        raise ValueError(f"{module.__file__} defines no factory {arch!r}, the arch of "
                         f"{run_dir / 'last.pt'}")
    model = load_model(ckpt, getattr(module, arch), run_dir / "last.pt")
    run = ckpt["args"]
    result = {"model": args.model, "arch": arch, "run_dir": str(run_dir.resolve()),
              **train_figures(MetricsTracker.load(run_dir))}
    params = sum(p.numel() for p in model.parameters())
    flops = flops_per_image(model)

    device = runtime.pick_device(run.get("device", "auto"))
    dtype = runtime.amp_dtype(run.get("amp", "auto"), device)
    channels_last = (device.type == "cuda" if run.get("channels_last") is None
                     else run["channels_last"])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    tflops = 3 * flops * result["train_img_s"] / 1e12
    peak = peak_tflops(gpu)
    result.update({
        "device": str(device), "gpu": gpu, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "amp": str(dtype).replace("torch.", "") if dtype
        else "off", "channels_last": channels_last, "compile": bool(run.get("compile")),
        "dataset": run.get("dataset"), "batch_size": run.get("batch_size"),
        "seed": run.get("seed"), "params": params, "flops_per_image": flops,
        "train_tflops": tflops, "peak_tflops": peak,
        "peak_share": tflops / peak if peak else None,
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS"})
    if not args.training_only:
        result.update(inference_figures(module, arch, run_dir, model, ckpt, device, dtype,
                                        channels_last, args.infer_batch))
    write_json(result, run_dir / "measure.json")

    print(f"{args.model} ({arch}): {params:,} parameters, {flops / 1e9:.3f} GFLOPs per image")
    print(f"training, epoch {result['epochs']}: {result['train_img_s']:.1f} img/s "
          f"({result['epoch_train_images']:,} images in {result['train_time_s']:.1f} s; "
          f"{result['epoch_s']:.1f} s with evaluation, checkpoint {result['save_s']:.2f} s), "
          f"{tflops:.3f} TFLOP/s"
          + (f" = {100 * tflops / peak:.1f} % of the {gpu}'s {peak} bf16 peak" if peak else "")
          + f"; peak memory {result['peak_memory_mb']:,.0f} MB")
    if not args.training_only:
        r = result
        print(f"inference: {r['infer_img_s']:.1f} img/s ({r['test_images']} test images, "
              f"batch {args.infer_batch})")
        print(f"last.pt: top-1 {r['top1_check']:.2f}% (the run logged "
              f"{r['final_test_top1']:.2f}%), superclass {r['superclass_top1']:.2f}%"
              + (f"; best.pt (epoch {r['best_epoch']}, picked on {r['best_split']}): top-1 "
                 f"{r['best_test_top1']:.2f}%" if r["best_epoch"] is not None else ""))
    print(f"wrote {run_dir / 'measure.json'}")
    return result


def inference_figures(module, arch, run_dir, model, ckpt, device, dtype, channels_last,
                      infer_batch):
    """Inference img/s over the test split, last.pt's top-1 and superclass top-1 in float32,
    best.pt's test top-1 and the split that picked it."""
    run = ckpt["args"]
    normalize = Normalize(*stats_of(ckpt, (data.CIFAR100_MEAN, data.CIFAR100_STD)))
    to_input = ((lambda xb: normalize(xb).contiguous(memory_format=torch.channels_last))
                if channels_last else normalize)
    model = model.to(device, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)
    splits = data.load_splits(**data_of(ckpt), subset=run.get("subset", 0),
                              val_split=run.get("val_split", 0))
    x, y = splits["test"]
    probs, infer_ips = time_inference(model, x, to_input, device, infer_batch, dtype)
    if dtype is not None:  # the accuracy figures in float32, as evaluate.py computes them
        probs = predict(model, x, to_input, device, infer_batch)
    pred = probs.argmax(1)
    top1 = 100 * (pred == y).double().mean().item()
    superclass = superclass_accuracy(pred, y, data.FINE_TO_COARSE)

    best = {"best_epoch": None, "best_split": None, "best_test_top1": None}
    if (run_dir / "best.pt").is_file():
        best_ckpt = load_checkpoint(run_dir / "best.pt")
        best_model = load_model(best_ckpt, getattr(module, arch), run_dir / "best.pt")
        best_top1 = top1  # the last epoch was the best: the same weights
        if best_ckpt["epoch"] != ckpt["epoch"]:
            best_pred = predict(best_model.to(device), x, normalize, device, infer_batch)
            best_top1 = 100 * (best_pred.argmax(1) == y).double().mean().item()
        best = {"best_epoch": best_ckpt["epoch"], "best_split": best_ckpt["best"]["split"],
                "best_test_top1": best_top1}
    return {"train_images": len(splits["train"][1]),
            "val_images": len(splits["val"][1]) if splits["val"] is not None else 0,
            "test_images": len(y), "infer_img_s": infer_ips, "infer_batch": infer_batch,
            "top1_check": top1, "superclass_top1": superclass, **best}


if __name__ == "__main__":
    try:
        main(parser.parse_args())
    except (data.DataError, CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
