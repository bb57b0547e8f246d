#!/usr/bin/env bash
# The benchmark: train, evaluate and measure each model folder and a plain torchvision baseline,
# then write results/benchmark.md, benchmark.json and benchmark.png. Run `bash run_all.sh --help`.
#
#   bash run_all.sh --quick                  # offline, synthetic data, CPU-sized: see --help
#   bash run_all.sh                          # the folders' full recipes on CIFAR-100 (a GPU, days)
#   MODELS="resnet18 baseline" EPOCHS=30 bash run_all.sh --redo resnet18
#   bash run_all.sh --gpu-throughput         # 1 epoch each on 50,000 synthetic images, +- compile
#
# Bash orchestrates; benchmark/baseline.py trains the baseline, benchmark/measure.py measures one
# trained model, benchmark/report.py writes the table and the figure. Everything below is in
# functions and the last line runs main, so editing this file during a run cannot derail it.
set -o pipefail

usage() {
  cat <<'EOF'
usage: bash run_all.sh [options]      (each option can also be set by the variable in caps)

  --quick                QUICK=1     offline smoke benchmark: synthetic data, 500 train / 100 test
                                     images, 2 epochs, batch 50, timed loop 2 + 10 steps,
                                     inference batch 25 (each still overridable); about 6 min
                                     on a 2-core CPU
  --models "A B"         MODELS      default: resnet18 resnet34 se_res_inception baseline
  --epochs N             EPOCHS      all models (default: each folder's recipe; the baseline
                                     follows resnet18's)
  --batch-size N         BATCH_SIZE  all models (default: each folder's recipe)
  --subset N             SUBSET      training images (0 = all; the test set is N/5, at least 100)
  --dataset D            DATASET     cifar100 (default) or synthetic
  --data-dir DIR         DATA_DIR    holds cifar-100-python/ (default: the repo's data/)
  --device D             DEVICE      auto (default), cpu, cuda, mps
  --compile              COMPILE=1   torch.compile every model
  --workers N            WORKERS     the baseline's DataLoader workers (default 2)
  --no-extras            EXTRAS=0    skip gradcam.py and evaluate_superclass.py (the table does
                                     not need them)
  --warmup N, --steps N  WARMUP, STEPS   the timed training loop (default 5 + 20 steps)
  --infer-batch N        INFER_BATCH     batch of the timed inference pass over the test split
                                         (default 500)
  --results DIR          RESULTS     default: results/ in the repo
  --redo [MODEL,...]     REDO        run these models again (no list, 1 or "all": every model);
                                     otherwise a model whose run finished with the same
                                     settings is skipped
  --gpu-throughput                   1 epoch per model on 50,000 synthetic images on CUDA (AMP
                                     and channels_last on, as train.py does on CUDA), once eager
                                     and once with --compile: RESULTS/gpu-throughput/{eager,compile}
  TRAIN_ARGS_<model>="..."           extra flags for that model's train.py (baseline: baseline.py)
  PYTHON                             the interpreter (default: python)
EOF
}

now() { local t=${EPOCHREALTIME:-$(date +%s)}; echo "${t/,/.}"; }  # seconds; "," in some locales

load1() {  # the 1-minute load average ("-" where /proc/loadavg is missing)
  local l=-
  [[ -r /proc/loadavg ]] && read -r l _ </proc/loadavg
  echo "$l"
}

parse_args() {
  QUICK=${QUICK:-0} COMPILE=${COMPILE:-0} EXTRAS=${EXTRAS:-1} GPU_THROUGHPUT=0
  while (($#)); do
    case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --flag=value: --flag value
    case $1 in
      -h|--help) usage; exit 0 ;;
      --quick) QUICK=1 ;;
      --compile) COMPILE=1 ;;
      --no-extras) EXTRAS=0 ;;
      --gpu-throughput) GPU_THROUGHPUT=1 ;;
      --redo) if [[ $# -gt 1 && $2 != --* ]]; then REDO=$2; shift; else REDO=all; fi ;;
      --models|--epochs|--batch-size|--subset|--dataset|--data-dir|--device|--workers|\
      --warmup|--steps|--infer-batch|--results)
        [[ $# -gt 1 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
        printf -v "$(tr 'a-z-' 'A-Z_' <<<"${1#--}")" '%s' "$2"  # --batch-size 8: BATCH_SIZE=8
        shift ;;
      *) echo "error: unknown option $1 (see bash run_all.sh --help)" >&2; exit 2 ;;
    esac
    shift
  done

  MODELS=${MODELS:-resnet18 resnet34 se_res_inception baseline}
  MODELS=${MODELS//,/ }
  if [[ $GPU_THROUGHPUT == 1 ]]; then
    DATASET=synthetic SUBSET=${SUBSET:-0} EPOCHS=${EPOCHS:-1} DEVICE=${DEVICE:-cuda}
  elif [[ $QUICK == 1 ]]; then  # sized to finish well inside 15 minutes on 2 CPU cores
    DATASET=${DATASET:-synthetic} SUBSET=${SUBSET:-500} EPOCHS=${EPOCHS:-2}
    BATCH_SIZE=${BATCH_SIZE:-50} WARMUP=${WARMUP:-2} STEPS=${STEPS:-10}
    INFER_BATCH=${INFER_BATCH:-25}
  fi
  DATASET=${DATASET:-cifar100} DEVICE=${DEVICE:-auto} WORKERS=${WORKERS:-2}
  WARMUP=${WARMUP:-5} STEPS=${STEPS:-20} INFER_BATCH=${INFER_BATCH:-500}
  RESULTS=${RESULTS:-$ROOT/results}

  local m known
  for m in $MODELS; do
    if [[ $m != baseline && ! -f $ROOT/$m/train.py ]]; then
      known=$(cd "$ROOT" && ls -d -- */train.py 2>/dev/null | sed 's|/train.py||' | tr '\n' ' ')
      echo "error: unknown model '$m'; choose from: ${known}baseline" >&2
      exit 2
    fi
  done
}

redo_wanted() {  # redo_wanted MODEL: was the model named by --redo / REDO?
  [[ $REDO == 1 || $REDO == all ]] && return 0
  [[ " ${REDO//,/ } " == *" $1 "* ]]
}

# step MODEL NAME CMD...: run CMD with its output in RESULTS/logs/MODEL.NAME.log, and add
# "name status seconds log load" to the model's steps.tsv (load: 1-min load average at the end;
# above the number of cores, other processes competed for the CPU and the timings suffered)
step() {
  local m=$1 name=$2 log="$RESULTS/logs/$1.$2.log" t0 rc secs status=ok
  shift 2
  printf '  %-18s %-20s ' "$m" "$name"
  t0=$(now)
  "$@" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  if ((rc == 0)); then
    printf 'ok %8ss\n' "$secs"
  else
    status=failed
    printf 'FAILED (exit %s) after %ss; the end of %s:\n' "$rc" "$secs" "$log"
    tail -n 3 "$log" | sed 's/^/      /'
    FAILURES+=("$m failed at step '$name' (exit $rc); log: $log")
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$log" "$(load1)" \
    >>"$RESULTS/runs/$m/steps.tsv"
  return $rc
}

# run_model MODEL: train, evaluate, explain and measure one model, unless done with these settings
run_model() {
  local m=$1 dir="$RESULTS/runs/$1" extra_var="TRAIN_ARGS_$1" settings
  local -a flags extra
  read -r -a extra <<<"${!extra_var}"
  settings="dataset=$DATASET subset=${SUBSET:-recipe} epochs=${EPOCHS:-recipe}"
  settings+=" batch=${BATCH_SIZE:-recipe} device=$DEVICE compile=$COMPILE data_dir=$DATA_DIR"
  settings+=" timed=$WARMUP+$STEPS infer_batch=$INFER_BATCH extra=${!extra_var}"
  [[ $m == baseline ]] && settings+=" workers=$WORKERS"
  if [[ -f $dir/done ]] && ! redo_wanted "$m"; then
    if [[ $(cat "$dir/done") == "$settings" ]]; then
      printf '  %-18s skipped: finished earlier with these settings (--redo %s to run again)\n' \
        "$m" "$m"
      return 0
    fi
    printf '  %-18s results there are for other settings: running it again\n' "$m"
  fi
  rm -rf -- "$dir"
  mkdir -p "$dir" "$RESULTS/logs"
  flags=(--dataset "$DATASET" --device "$DEVICE" --out-dir "$dir")
  [[ -n $SUBSET ]] && flags+=(--subset "$SUBSET")
  [[ -n $EPOCHS ]] && flags+=(--epochs "$EPOCHS")
  [[ -n $BATCH_SIZE ]] && flags+=(--batch-size "$BATCH_SIZE")
  [[ -n $DATA_DIR ]] && flags+=(--data-dir "$DATA_DIR")
  [[ $COMPILE == 1 ]] && flags+=(--compile)
  local py=("$PYTHON" -u) eval_flags=(--checkpoint "$dir/last.pt" --device "$DEVICE")
  if [[ $m == baseline ]]; then  # baseline.py evaluates its final epoch itself
    step "$m" train "${py[@]}" "$ROOT/benchmark/baseline.py" "${flags[@]}" \
      --workers "$WORKERS" "${extra[@]}" || return 1
  else
    step "$m" train "${py[@]}" "$ROOT/$m/train.py" "${flags[@]}" "${extra[@]}" || return 1
    step "$m" evaluate "${py[@]}" "$ROOT/$m/evaluate.py" "${eval_flags[@]}" \
      --out-dir "$dir/eval" || return 1
    if [[ $EXTRAS == 1 && -f $ROOT/$m/evaluate_superclass.py ]]; then
      step "$m" evaluate_superclass "${py[@]}" "$ROOT/$m/evaluate_superclass.py" \
        "${eval_flags[@]}" --out-dir "$dir/superclass" || return 1
    fi
    if [[ $EXTRAS == 1 && -f $ROOT/$m/gradcam.py ]]; then
      step "$m" gradcam "${py[@]}" "$ROOT/$m/gradcam.py" "${eval_flags[@]}" \
        --out-dir "$dir/gradcam" || return 1
    fi
  fi
  step "$m" measure "${py[@]}" "$ROOT/benchmark/measure.py" "$m" --run-dir "$dir" \
    --warmup "$WARMUP" --steps "$STEPS" --infer-batch "$INFER_BATCH" || return 1
  echo "$settings" >"$dir/done"
}

# benchmark: every model into RESULTS, then the report
benchmark() {
  local settings t0 m
  settings="$DATASET data"
  [[ -n $SUBSET && $SUBSET != 0 ]] && settings+=", subset of $SUBSET training images"
  settings+=", epochs ${EPOCHS:-per recipe}, batch ${BATCH_SIZE:-per recipe}, device $DEVICE"
  [[ $COMPILE == 1 ]] && settings+=", torch.compile"
  settings+=", timed loop $WARMUP warm-up + $STEPS steps, inference batch $INFER_BATCH"
  [[ $QUICK == 1 ]] && settings="quick mode: $settings"
  mkdir -p "$RESULTS/logs" || exit 1
  echo "== run_all.sh: $MODELS"
  echo "   $settings"
  echo "   results in $RESULTS (a log per step in $RESULTS/logs/)"
  t0=$(now)
  for m in $MODELS; do
    run_model "$m"
  done
  "$PYTHON" "$ROOT/benchmark/report.py" --results "$RESULTS" --models "$MODELS" \
    --command "$COMMAND" --settings "$settings" >"$RESULTS/logs/report.log" 2>&1 \
    || FAILURES+=("the report failed; log: $RESULTS/logs/report.log")
  cat "$RESULTS/logs/report.log"
  echo "== run_all.sh: $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s in all"
}

main() {
  local v f base
  COMMAND="bash run_all.sh $*"  # as typed, with the settings that came from the environment
  for v in PYTHON QUICK MODELS EPOCHS BATCH_SIZE SUBSET DATASET DATA_DIR DEVICE COMPILE \
           WORKERS EXTRAS WARMUP STEPS INFER_BATCH RESULTS REDO; do
    [[ -n ${!v+set} ]] && COMMAND="$v=\"${!v}\" $COMMAND"
  done
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  PYTHON=${PYTHON:-python}
  parse_args "$@"

  FAILURES=()
  if [[ $GPU_THROUGHPUT == 1 ]]; then
    base=$RESULTS
    for COMPILE in 0 1; do
      RESULTS=$base/gpu-throughput/$( ((COMPILE)) && echo compile || echo eager)
      benchmark
    done
  else
    benchmark
  fi
  if ((${#FAILURES[@]})); then
    for f in "${FAILURES[@]}"; do
      echo "error: $f" >&2
    done
    return 1
  fi
}

main "$@"; exit
