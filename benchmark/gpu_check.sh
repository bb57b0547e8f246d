#!/usr/bin/env bash
# The GPU check: everything a lent GPU should run, in one command, its results in one folder.
#   1. the CUDA tests (python -m pytest -m cuda): each folder's recipe on CUDA, the training step
#      at every precision x memory layout (+ torch.compile) against CPU fp32, Ctrl-C + --resume,
#      checkpoints across devices, evaluate.py / gradcam.py / evaluate_superclass.py on CUDA;
#   2. throughput: run_all.sh --gpu-throughput -- per model at its recipe's batch and precision,
#      one warm-up and one timed epoch on the 50,000-image synthetic set plus the 10,000-image
#      evaluation, eager and --compile, and the plain DataLoader baseline: img/s, s/epoch, peak
#      memory, TFLOP/s against the card's bf16 peak;
#   3. torchrun --nproc_per_node=1 against plain python, resnet18, seconds per timed epoch.
#
#   bash benchmark/gpu_check.sh                  # one GPU (target <= 7 min on an H100; untimed)
#   bash benchmark/gpu_check.sh --device cpu     # dry run on a tiny subset (a test runs it)
#   MODELS=resnet18 bash benchmark/gpu_check.sh  # fewer models (run_all.sh's MODELS)
#   bash benchmark/gpu_check.sh --only tests,torchrun   # some sections (tests, throughput,
#                                                       # torchrun), e.g. to split the check
#                                                       # over two calls of a 10-minute limit
#
# OUT (default results/gpu-check) receives every log and table; on the device machine point it at
# $OUT. PYTHON (default: python, else python3) is the interpreter.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=cuda
ONLY=tests,throughput,torchrun
while (($#)); do
  case $1 in
    --device) DEVICE=${2:?--device needs cuda or cpu}; shift ;;
    --only) ONLY=${2:?--only needs sections, e.g. tests,throughput}; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see bash benchmark/gpu_check.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $DEVICE == cuda || $DEVICE == cpu ]] || { echo "error: --device cuda or cpu" >&2; exit 2; }
for section in ${ONLY//,/ }; do
  [[ $section =~ ^(tests|throughput|torchrun)$ ]] \
    || { echo "error: unknown section '$section'; --only takes tests,throughput,torchrun" >&2
         exit 2; }
done
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
# the dry run checks the script's plumbing, not speed: --compile still travels through every
# step, but compiling on a CPU would take minutes, so torch.compile is switched off there
[[ $DEVICE == cpu ]] && export TORCH_COMPILE_DISABLE=1
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
OUT=${OUT:-$ROOT/results/gpu-check}
mkdir -p "$OUT" || exit 1
export PYTHONUNBUFFERED=1
status=0
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

stamp "machine" | tee -a "$OUT/summary.txt"  # a second call appends
{ "$PYTHON" - <<'EOF'
import platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
print(f"{gpu} | torch {torch.__version__} | CUDA {torch.version.cuda} | "
      f"python {platform.python_version()} | {platform.machine()}")
EOF
  date -u +"date %Y-%m-%d %H:%M UTC"
  echo "command: bash benchmark/gpu_check.sh --device $DEVICE --only $ONLY"
} | tee -a "$OUT/summary.txt"

if wanted tests; then
  stamp "1. CUDA tests" | tee -a "$OUT/summary.txt"
  (cd "$ROOT" && "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py) \
    >"$OUT/cuda_tests.log" 2>&1 || status=1
  grep -E "^(FAILED|ERROR) |^[0-9]+ (passed|failed|skipped)|(passed|failed|skipped|error)s? in " \
    "$OUT/cuda_tests.log" | tee -a "$OUT/summary.txt"
fi

if wanted throughput; then
  stamp "2. throughput" | tee -a "$OUT/summary.txt"
  tiny=()
  [[ $DEVICE == cpu ]] && tiny=(--subset 40 --batch-size 20)  # the dry run: shapes, not speed
  PYTHON=$PYTHON bash "$ROOT/run_all.sh" --gpu-throughput --device "$DEVICE" "${tiny[@]}" \
    --results "$OUT/throughput" >"$OUT/throughput.log" 2>&1 || status=1
  cat "$OUT/throughput/gpu-throughput/throughput.md" 2>/dev/null | tee -a "$OUT/summary.txt" \
    || tail -n 5 "$OUT/throughput.log" | tee -a "$OUT/summary.txt"
fi

if wanted torchrun; then
  stamp "3. torchrun --nproc_per_node=1 vs python (resnet18, seconds per timed epoch)" \
    | tee -a "$OUT/summary.txt"
  flags=(--dataset synthetic --epochs 2 --device "$DEVICE" --val-split 0 --progress-every 1000)
  [[ $DEVICE == cpu ]] && flags+=(--subset 40 --batch-size 20)
  for launcher in python torchrun; do
    rm -rf "$OUT/launch_$launcher"
    if [[ $launcher == python ]]; then
      cmd=("$PYTHON" "$ROOT/resnet18/train.py")
    else
      cmd=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1
           "$ROOT/resnet18/train.py")
    fi
    "${cmd[@]}" "${flags[@]}" --out-dir "$OUT/launch_$launcher" \
      >"$OUT/launch_$launcher.log" 2>&1 || status=1
  done
  "$PYTHON" - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt" || status=1
import sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
t = {}
for launcher in ("python", "torchrun"):
    with np.load(out / f"launch_{launcher}" / "metrics.npz") as m:
        t[launcher] = (float(m["time"][-1]), float(m["train_time"][-1]))
    print(f"{launcher:>8}: epoch {t[launcher][0]:.2f} s (training {t[launcher][1]:.2f} s)")
ratio = t["torchrun"][0] / t["python"][0]
print(f"torchrun / python: {ratio:.3f} per epoch; target <= 1.03: "
      + ("met" if ratio <= 1.03 else "NOT met"))
EOF
fi

stamp "done (exit $status); logs and tables in $OUT" | tee -a "$OUT/summary.txt"
exit $status
