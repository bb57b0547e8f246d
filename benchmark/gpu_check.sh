#!/usr/bin/env bash
# The GPU check: what a lent GPU must show, sized to the lending (15 minutes of device time in
# all, its start-up included; at most 10 minutes a command; 8 files back from $OUT).
#
#   OUT=$OUT PYTHON=python3 bash benchmark/gpu_check.sh --part correctness   # one device call
#   OUT=$OUT PYTHON=python3 bash benchmark/gpu_check.sh --part throughput    # a second one
#   bash benchmark/gpu_check.sh                    # both parts, one after the other
#   bash benchmark/gpu_check.sh --device cpu       # the dry run: tiny sizes, compilation off
#
# correctness: python -m pytest -m cuda on tests/test_cuda.py and, at the same time (the GPU
#   has room for both), tests/test_force_ddp.py: each folder's recipe trains on CUDA and its
#   checkpoint evaluates on the CPU and back; the training step at every precision x memory
#   layout, and compiled at the recipe's bf16 + channels_last, against CPU fp32 with every
#   dropout off (tolerances derived in test_cuda.py); no host sync per step; Ctrl-C + --resume
#   bit-exact (--deterministic); DistributedDataParallel on one GPU (CIFAR100_FORCE_DDP=1 under
#   torchrun --nproc_per_node=1: an NCCL process group, DDP with device_ids, the collectives
#   counted), stopped by Ctrl-C inside epoch 2, resumed, bit-exact against the straight run.
# throughput: each at its recipe's batch size and precision on the 50,000-image synthetic set
#   (+ the 10,000-image evaluation every epoch): resnet18 eager and --compile, 3 epochs, the
#   last one timed (the first warms up; train.py draws its training-curve figure on a thread
#   after the first, which slows the second: a 150-epoch run draws one every 30 s, so the third
#   is the typical epoch), resnet34 and se_res_inception eager (one epoch, its warm-up
#   included), the plain loop (benchmark/baseline.py at resnet18's recipe, 2 epochs, the
#   second timed; it draws no figure); measure.py
#   --training-only reads each run's own epoch rows; report.py --throughput writes the table
#   and says of each target met or NOT met: resnet18 <= 1.0 s an epoch eager, <= 0.6 s
#   compiled, >= 3x the plain loop's img/s.
#
# Estimated time on one H100 (no GPU has been lent yet: estimates, not measurements). A process
# costs ~5 s before its first step (~7 s with the full data set): Python + torch (2.4 s of CPU
# time on this repo's 2-core VM), CUDA and cuDNN start-up (~1-2 s), and the 60,000 synthetic
# images of a full-size run (4.0 s of CPU time on one core here; 1-2 s on the device's 16).
# Epochs are short: resnet18 is 1.11 GFLOPs per 32x32 image forward (0.56 G multiply-adds,
# torch.utils.flop_counter), ~3x that to train, so 167 TFLOP an epoch of 50,000 images; at
# 15-40 % of the H100's 989 TFLOP/s dense bf16 peak, 0.4-1.1 s. resnet34 (enhanced, 2.92
# GFLOPs) is 438 TFLOP an epoch, se_res_inception (3.99 GFLOPs, many small convolutions) 600:
# 2-4 s and 4-10 s at batch 128. Cold torch.compile, from public reports: a ResNet-50 training
# graph took 28 s (pytorch/benchmark#1547, 2023; the cold-start dashboard about twice that), a
# ResNet forward graph ~15 s (pytorch/pytorch#103453); the augmentation graph compiled in 18 s
# on 2 CPU cores (benchmark/NOTES.md) and compiles in parallel on the device's 16.
#   correctness (test_cuda.py; test_force_ddp.py runs beside it)              ~3.3 min
#     3 recipes x 2 epochs of 256 images                       3 x  8 s       25 s
#     their checkpoints: evaluate on CPU and CUDA, gradcam.py  3 x  8 s       25 s
#     a CPU checkpoint evaluated on CUDA                        2 processes    12 s
#     the step: a CPU run draws the batch; 6 precision x       3 x 13 s
#       layout cases on CUDA; resnet18 compiled once           + 40-60 s     90 s
#     Ctrl-C + --resume, --deterministic                        3 processes    24 s
#     host syncs per step, 20 vs 60 steps                       2 processes    16 s
#     (beside them: forced DDP, 3 torchrun launches            3 x 10 s      30 s)
#   throughput                                                                ~3.1 min
#     resnet18 eager, 3 epochs + measure.py                    7 + 4 + 4 s   15 s
#     resnet18 --compile: augmentation ~10 s, training graph
#       40-60 s, evaluation graph ~15 s; 3 epochs; measure.py                100 s
#     resnet34 eager, 1 epoch + measure.py                     7 + 5 + 4 s   16 s
#     se_res_inception eager, 1 epoch + measure.py             7 + 10 + 4 s  21 s
#     plain loop, 2 epochs of per-image PIL transforms in 2
#       worker processes (4,700 img/s each on one core of the
#       CI VM: 3-5 s an epoch) + evaluation + measure.py                     29 s
#   both parts                                                                ~6.4 min
# Each part also stops itself after PART_LIMIT seconds (default 480), so that a 10-minute device
# call always gets its files back, and a throughput run after ~3x its estimate, so that a hung
# one leaves time for the next: what did not finish is reported as failed.
#
# $OUT receives 6 files at most: summary.txt (written first: the machine, then one line per
# check as it ends -- met / NOT met / failed / skipped, with its figure), correctness.log,
# ddp.log, throughput.log, throughput.md, throughput.json. Run directories, checkpoints,
# compile caches and pytest's temporary files go to a scratch directory (mktemp -d), removed
# at the end. PYTHON (default: python, else python3) is the interpreter.
set -uo pipefail
# Everything below is in functions and the last line runs main, so that editing this file while
# it runs cannot derail the run (bash reads a script as it goes).

parse_args() {
  DEVICE=cuda PART=both
  while (($#)); do
    case $1 in
      --device) DEVICE=${2:?--device needs cuda or cpu}; shift ;;
      --part) PART=${2:?--part needs correctness, throughput or both}; shift ;;
      -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;  # the header above
      *) echo "error: unknown option $1 (see bash benchmark/gpu_check.sh --help)" >&2; exit 2 ;;
    esac
    shift
  done
  [[ $DEVICE == cuda || $DEVICE == cpu ]] || { echo "error: --device cuda or cpu" >&2; exit 2; }
  [[ $PART =~ ^(correctness|throughput|both)$ ]] \
    || { echo "error: --part correctness, throughput or both, not '$PART'" >&2; exit 2; }
}

# set_up: $OUT, the scratch directory (removed at exit), the environment of every run
set_up() {
  PYTHON=${PYTHON:-$(command -v python || command -v python3)}
  OUT=${OUT:-$ROOT/results/gpu-check}
  PART_LIMIT=${PART_LIMIT:-480}  # seconds
  mkdir -p "$OUT" || exit 1
  SCRATCH=$(mktemp -d) || exit 1
  trap 'rm -rf "$SCRATCH"' EXIT
  # every compilation starts cold (the estimates above are cold) and leaves nothing behind; so
  # do the temporary files of everything run here (torchrun's among them). Keep $SCRATCH short:
  # DataLoader workers put a socket in TMPDIR, and a socket path over 107 characters hangs them
  export TORCHINDUCTOR_CACHE_DIR=$SCRATCH/inductor TRITON_CACHE_DIR=$SCRATCH/triton
  export TMPDIR=$SCRATCH/tmp
  mkdir -p "$TMPDIR" || exit 1
  export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
  if [[ $DEVICE == cpu ]]; then
    # the dry run checks the plumbing, not speed: --compile still travels through every step,
    # but compiling on a CPU takes minutes, so torch.compile is off; the CUDA tests run on
    # the CPU
    export TORCH_COMPILE_DISABLE=1 GPU_CHECK_DEVICE=cpu
  fi
  SUMMARY=$OUT/summary.txt
}

say() { echo "$*" | tee -a "$SUMMARY"; }
stamp() { say "== $(date -u +%H:%M:%S) $*"; }

# machine: summary.txt's first lines, what ran where
machine() {
  "$PYTHON" - "$COMMAND" <<'EOF' | tee "$SUMMARY"
import platform, sys, time
import torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
print(f"machine: {gpu} | torch {torch.__version__} | CUDA {torch.version.cuda} | "
      f"python {platform.python_version()} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
print(f"command: {sys.argv[1]}")
EOF
}

# check_lines JUNIT_XML: one summary line per test -- met (passed), NOT met (an assertion
# failed), failed (an error), skipped -- with the figure a test records and its seconds
check_lines() {
  "$PYTHON" - "$1" <<'EOF'
import re
import sys
import xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    bad = case.find("failure") if case.find("failure") is not None else case.find("error")
    if case.find("skipped") is not None:
        verdict = "skipped (" + case.find("skipped").get("message", "") + ")"
    elif bad is not None:
        message = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
        crashed = re.search(r"failed \(-?\d+\):", message)  # conftest.run: a script's exit code
        kind = "NOT met" if message.startswith("AssertionError") and not crashed else "failed"
        verdict = f"{kind}: {message}"
    else:
        verdict = "met"
    figure = f"; {props['figure']}" if "figure" in props else ""
    print(f"{case.get('name')}: {verdict} ({float(case.get('time', 0)):.0f} s){figure}")
EOF
}

# run_pytest LOG JUNIT MARKERS FILE: pytest within what is left of the part's time
run_pytest() {
  local log=$1 junit=$2 markers=$3 file=$4 left=$((DEADLINE - SECONDS)) rc
  (cd "$ROOT" && timeout -k 10 "$left" "$PYTHON" -m pytest -m "$markers" -v -rA \
    -p no:cacheprovider --basetemp="$SCRATCH/pytest-$(basename "$file" .py)" \
    -o junit_family=xunit1 --junitxml="$junit" "$file") >"$log" 2>&1  # xunit1: figures
  rc=$?
  ((rc == 124 || rc == 137)) && echo "timed out after $left s (PART_LIMIT)" >>"$log"
  return $rc
}

correctness() {
  local t0=$SECONDS rc_cuda rc_ddp ddp_markers=cuda
  DEADLINE=$((SECONDS + PART_LIMIT))
  stamp "correctness (estimated ~3.3 min on one H100)"
  [[ $DEVICE == cpu ]] && ddp_markers=slow  # the dry run: test_force_ddp.py's CPU case
  run_pytest "$OUT/ddp.log" "$SCRATCH/ddp.xml" "$ddp_markers" tests/test_force_ddp.py &
  local ddp=$!
  run_pytest "$OUT/correctness.log" "$SCRATCH/cuda.xml" cuda tests/test_cuda.py
  rc_cuda=$?
  wait "$ddp"
  rc_ddp=$?
  for x in cuda:$rc_cuda:correctness ddp:$rc_ddp:ddp; do
    IFS=: read -r name rc log <<<"$x"
    if [[ -s $SCRATCH/$name.xml ]]; then
      check_lines "$SCRATCH/$name.xml" | tee -a "$SUMMARY"
    else
      say "$name tests: failed (exit $rc, no results; see $log.log)"
    fi
    ((rc == 0)) || status=1
  done
  say "correctness: $((SECONDS - t0)) s"
}

# throughput_run NAME MODEL CAP SCRIPT FLAGS...: train into $SCRATCH/runs/NAME (NAME:
# model-mode), then measure it; a failure leaves the reason in the run's `failed` file, for
# report.py. CAP: seconds the run may take on the GPU (~3x its estimate: a hung run must not
# eat the next ones' time); the dry run has only the part's limit
throughput_run() {
  local name=$1 model=$2 cap=$3 script=$4 dir=$SCRATCH/runs/$1 t0=$SECONDS left rc
  shift 4
  mkdir -p "$dir"
  left=$((DEADLINE - SECONDS))
  [[ $DEVICE == cuda ]] && ((cap < left)) && left=$cap
  if ((left < 15)); then
    echo "not run (the part's PART_LIMIT of $PART_LIMIT s was spent)" >"$dir/failed"
    say "$name: not run (PART_LIMIT)"
    status=1
    return
  fi
  echo "== $name: $script $* (within $left s)" >>"$OUT/throughput.log"
  timeout -k 10 "$left" "$PYTHON" "$ROOT/$script" "$@" --out-dir "$dir" \
    >>"$OUT/throughput.log" 2>&1
  rc=$?
  if ((rc == 0)); then
    timeout -k 10 60 "$PYTHON" "$ROOT/benchmark/measure.py" "$model" --run-dir "$dir" \
      --training-only >>"$OUT/throughput.log" 2>&1
    rc=$?
    ((rc == 0)) || echo "failed: measure.py exit $rc" >"$dir/failed"
  elif ((rc == 124 || rc == 137)); then
    echo "failed: timed out after $left s" >"$dir/failed"
  else
    echo "failed: $script exit $rc" >"$dir/failed"
  fi
  ((rc == 0)) || status=1
  say "$name: $( ((rc == 0)) && echo ok || cat "$dir/failed") ($((SECONDS - t0)) s)"
}

throughput() {
  local t0=$SECONDS flags base
  DEADLINE=$((SECONDS + PART_LIMIT))
  stamp "throughput (estimated ~3.1 min on one H100)"
  : >"$OUT/throughput.log"
  flags=(--dataset synthetic --device "$DEVICE" --progress-every 1000)
  base=(--dataset synthetic --device "$DEVICE")
  if [[ $DEVICE == cpu ]]; then  # the dry run: shapes and plumbing, not speed
    flags+=(--subset 20 --test-subset 20 --batch-size 10)
    base+=(--subset 20 --test-subset 20 --batch-size 10 --workers 1)
  fi
  # fastest first, so a part cut short still has figures; the compiled run last
  throughput_run resnet18-eager resnet18 60 resnet18/train.py "${flags[@]}" --epochs 3
  throughput_run baseline-eager baseline 90 benchmark/baseline.py "${base[@]}" --epochs 2
  throughput_run resnet34-eager resnet34 60 resnet34/train.py "${flags[@]}" --epochs 1
  throughput_run se_res_inception-eager se_res_inception 90 se_res_inception/train.py \
    "${flags[@]}" --epochs 1
  throughput_run resnet18-compile resnet18 300 resnet18/train.py "${flags[@]}" --epochs 3 \
    --compile
  "$PYTHON" "$ROOT/benchmark/report.py" --throughput "$SCRATCH/runs" --throughput-out "$OUT" \
    --command "$COMMAND" >>"$SCRATCH/report.txt" 2>&1 || status=1
  tee -a "$SUMMARY" <"$SCRATCH/report.txt"  # a target NOT met is a finding, not a failure
  say "throughput: $((SECONDS - t0)) s"
}

main() {
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  COMMAND="bash benchmark/gpu_check.sh $*"
  status=0
  parse_args "$@"
  set_up
  machine  # summary.txt first
  [[ $PART == correctness || $PART == both ]] && correctness
  [[ $PART == throughput || $PART == both ]] && throughput
  stamp "done (exit $status); $(ls "$OUT" | wc -l) files in $OUT"
  return $status
}

main "$@"; exit
