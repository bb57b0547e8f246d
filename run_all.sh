#!/usr/bin/env bash
# The benchmark: train, evaluate and measure each model folder and a plain torchvision baseline,
# compare the repo's loop with the baseline's at one recipe (learning parity), then write
# results/benchmark.md, benchmark.json and benchmark.png. Run `bash run_all.sh --help`.
#
#   bash run_all.sh --quick                  # offline, synthetic data, CPU-sized: see --help
#   bash run_all.sh --seeds 3                # the folders' full recipes on CIFAR-100 (GPU days)
#   MODELS="resnet18 baseline" EPOCHS=30 bash run_all.sh --redo resnet18
#   bash run_all.sh --gpu-throughput         # warm-up + timed epoch, 50,000 images, +- compile
#
# Bash orchestrates; each model's own train.py (the baseline: benchmark/baseline.py) trains,
# benchmark/measure.py measures the finished run, benchmark/report.py writes the tables and the
# figure. Everything below is in functions and the last line runs main, so editing this file
# during a run cannot derail it.
set -o pipefail

usage() {
  cat <<'EOF'
usage: bash run_all.sh [options]      (each option can also be set by the variable in caps)

  --quick                QUICK=1     offline smoke benchmark: synthetic data, 500 images (450
                                     train + 50 val) / 100 test (--test-subset), 2 epochs,
                                     batch 50, inference batch 25; parity at 1,500 images, 5
                                     epochs, batch 32 (each still overridable); about 10 min on
                                     a 2-core CPU
  --models "A B"         MODELS      default: resnet18 resnet34 se_res_inception baseline
                                     (also: resnet18-matched, resnet18 with crop + flip only)
  --seeds K              SEEDS       train every model K times (default 1): run k uses the
                                     seed of run 0 (the recipe's) + k; the table gives top-1
                                     as mean +- std and speeds as means over the K runs
  --epochs N             EPOCHS      all models (default: each folder's recipe; the baseline
                                     follows resnet18's)
  --batch-size N         BATCH_SIZE  all models (default: each folder's recipe)
  --subset N             SUBSET      training images, as many of each class (0 = all); the
                                     test set stays whole unless --test-subset
  --test-subset N        TEST_SUBSET test images, as many of each class (default 0 = all
                                     10,000; in quick mode 100); every step and the parity
                                     runs score the same images
  --val-split N          VAL_SPLIT   of the training images, held out to choose best.pt on
                                     (default: a tenth, 5,000 of 50,000; 0 = none: no best.pt,
                                     the final epoch is the result; never the test set)
  --dataset D            DATASET     cifar100 (default) or synthetic
  --data-dir DIR         DATA_DIR    holds cifar-100-python/ (default: the repo's data/)
  --device D             DEVICE      auto (default), cpu, cuda, mps
  --compile              COMPILE=1   torch.compile every model
  --workers N            WORKERS     the baseline's DataLoader workers (default 2)
  --no-extras            EXTRAS=0    skip gradcam.py and evaluate_superclass.py (the table does
                                     not need them)
  --infer-batch N        INFER_BATCH batch of the timed inference pass over the test split
                                     (default 500)
  --no-parity            PARITY=0    skip the learning-parity runs: resnet18 with crop + flip
                                     only (resnet18-matched) and with its full recipe, each
                                     against the baseline at the same recipe and step count
  --parity-subset N      PARITY_SUBSET      their sizes (default: the options above; in
  --parity-epochs N      PARITY_EPOCHS      quick mode 1500, 5 and 32), with a tenth of the
  --parity-batch-size N  PARITY_BATCH_SIZE  images held out as in --val-split
  --results DIR          RESULTS     default: results/ in the repo
  --redo [MODEL,...]     REDO        run these models again (no list, 1 or "all": every model);
                                     otherwise a run that finished with the same settings is
                                     skipped
  --gpu-throughput                   per model at its recipe's batch size and precision: 1
                                     warm-up + 1 timed epoch on the 50,000-image synthetic set
                                     (+ the 10,000-image evaluation), eager and with --compile,
                                     into RESULTS/gpu-throughput/{eager,compile}/, summed up in
                                     RESULTS/gpu-throughput/throughput.md; no extras, no parity.
                                     A dry run: --gpu-throughput --device cpu --subset 20
                                     --batch-size 10
  TRAIN_ARGS_<model>="..."           extra flags for that model's train.py (baseline:
                                     baseline.py; resnet18-matched: TRAIN_ARGS_resnet18)
  PYTHON                             the interpreter (default: python)
EOF
}

# resnet18-matched: resnet18's recipe with the baseline's augmentation, crop + flip and plain
# cross-entropy (no label smoothing, mixing, rotation, colour jitter, erasing or dropout)
MATCHED_FLAGS=(--label-smoothing 0 --cutmix-alpha 0 --mixup-alpha 0 --rotate 0 --jitter 0 0 0 0
               --erase-p 0 --dropout 0)

now() { local t=${EPOCHREALTIME:-$(date +%s)}; echo "${t/,/.}"; }  # seconds; "," in some locales

load1() {  # the 1-minute load average ("-" where /proc/loadavg is missing)
  local l=-
  [[ -r /proc/loadavg ]] && read -r l _ </proc/loadavg
  echo "$l"
}

whole() {  # whole NAME VALUE: exit with a one-line error unless VALUE is a whole number >= 0
  [[ $2 =~ ^[0-9]+$ ]] || { echo "error: $1 must be a whole number, not '$2'" >&2; exit 2; }
}

parse_args() {
  QUICK=${QUICK:-0} COMPILE=${COMPILE:-0} EXTRAS=${EXTRAS:-1} PARITY=${PARITY:-1}
  GPU_THROUGHPUT=${GPU_THROUGHPUT:-0}
  while (($#)); do
    case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --flag=value: --flag value
    case $1 in
      -h|--help) usage; exit 0 ;;
      --quick) QUICK=1 ;;
      --compile) COMPILE=1 ;;
      --no-extras) EXTRAS=0 ;;
      --no-parity) PARITY=0 ;;
      --gpu-throughput) GPU_THROUGHPUT=1 ;;
      --redo) if [[ $# -gt 1 && $2 != --* ]]; then REDO=$2; shift; else REDO=all; fi ;;
      --models|--seeds|--epochs|--batch-size|--subset|--test-subset|--val-split|--dataset|\
      --data-dir|--device|--workers|--infer-batch|--results|--parity-subset|--parity-epochs|\
      --parity-batch-size)
        [[ $# -gt 1 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
        printf -v "$(tr 'a-z-' 'A-Z_' <<<"${1#--}")" '%s' "$2"  # --batch-size 8: BATCH_SIZE=8
        shift ;;
      *) echo "error: unknown option $1 (see bash run_all.sh --help)" >&2; exit 2 ;;
    esac
    shift
  done

  MODELS=${MODELS:-resnet18 resnet34 se_res_inception baseline}
  MODELS=${MODELS//,/ }
  if [[ $GPU_THROUGHPUT == 1 ]]; then  # epoch 1 warms up (cuDNN, compilation), epoch 2 is timed
    DATASET=synthetic SUBSET=${SUBSET:-0} EPOCHS=${EPOCHS:-2} DEVICE=${DEVICE:-cuda}
    VAL_SPLIT=${VAL_SPLIT:-0} EXTRAS=0 PARITY=0
  elif [[ $QUICK == 1 ]]; then  # sized to finish well inside 15 minutes on 2 CPU cores
    DATASET=${DATASET:-synthetic} SUBSET=${SUBSET:-500} EPOCHS=${EPOCHS:-2}
    BATCH_SIZE=${BATCH_SIZE:-50} INFER_BATCH=${INFER_BATCH:-25}
    TEST_SUBSET=${TEST_SUBSET:-100}  # one image a class: a smoke test, not a measurement
    # parity: enough steps (210) for resnet18 to leave chance behind on the synthetic set
    PARITY_SUBSET=${PARITY_SUBSET:-1500} PARITY_EPOCHS=${PARITY_EPOCHS:-5}
    PARITY_BATCH_SIZE=${PARITY_BATCH_SIZE:-32}
  fi
  DATASET=${DATASET:-cifar100} DEVICE=${DEVICE:-auto} WORKERS=${WORKERS:-2}
  INFER_BATCH=${INFER_BATCH:-500} RESULTS=${RESULTS:-$ROOT/results} SEEDS=${SEEDS:-1}
  PARITY_SUBSET=${PARITY_SUBSET:-$SUBSET} PARITY_EPOCHS=${PARITY_EPOCHS:-$EPOCHS}
  PARITY_BATCH_SIZE=${PARITY_BATCH_SIZE:-$BATCH_SIZE}
  local v
  for v in SEEDS SUBSET TEST_SUBSET VAL_SPLIT PARITY_SUBSET; do
    [[ -n ${!v} ]] && whole "--$(tr 'A-Z_' 'a-z-' <<<"$v")" "${!v}"
  done
  ((SEEDS >= 1)) || { echo "error: --seeds must be at least 1" >&2; exit 2; }
  VAL_SPLIT=${VAL_SPLIT:-$(tenth "$SUBSET")}
  PARITY_VAL_SPLIT=$(tenth "$PARITY_SUBSET")
  [[ $PARITY_SUBSET == "$SUBSET" ]] && PARITY_VAL_SPLIT=$VAL_SPLIT

  local m known
  for m in $MODELS; do
    if [[ $m != baseline && $m != resnet18-matched && ! -f $ROOT/$m/train.py ]]; then
      known=$(cd "$ROOT" && ls -d -- */train.py 2>/dev/null | sed 's|/train.py||' | tr '\n' ' ')
      echo "error: unknown model '$m'; choose from: ${known}baseline resnet18-matched" >&2
      exit 2
    fi
  done
}

tenth() {  # tenth SUBSET: the default validation split, a tenth of the training images
  if [[ -n $1 && $1 != 0 ]]; then echo $(($1 / 10)); else echo 5000; fi
}

redo_wanted() {  # redo_wanted MODEL: was the model named by --redo / REDO?
  [[ $REDO == 1 || $REDO == all ]] && return 0
  [[ " ${REDO//,/ } " == *" $1 "* ]]
}

# step TAG DIR NAME CMD...: run CMD with its output in RESULTS/logs/TAG.NAME.log, and add
# "name status seconds log load" to DIR/steps.tsv (load: 1-min load average at the end; above
# the number of cores, other processes competed for the CPU and the timings suffered)
step() {
  local tag=$1 dir=$2 name=$3 log="$RESULTS/logs/$1.$3.log" t0 rc secs status=ok
  shift 3
  printf '  %-28s %-20s ' "$tag" "$name"
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
    FAILURES+=("$tag failed at step '$name' (exit $rc); log: $log")
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$log" "$(load1)" >>"$dir/steps.tsv"
  return $rc
}

# seed_flag DIR K: run K > 0 of a model trains with run 0's seed (the recipe's) + K
seed_flag() {
  local s0=0
  (($2 == 0)) && return 0
  if [[ -f $1/seed0/args.json ]]; then
    s0=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["seed"])' \
      "$1/seed0/args.json") || s0=0
  fi
  echo "--seed $((s0 + $2))"
}

# run_model MODEL K KIND: run k of one model, unless it finished earlier with these settings.
# KIND main: train, evaluate (+ extras), measure into RESULTS/runs/MODEL/seedK;
# KIND parity: train alone, at the parity sizes, into RESULTS/parity/MODEL/seedK.
run_model() {
  local m=$1 k=$2 kind=$3 base script tag dir settings folder=$1
  local -a flags extra py=("$PYTHON" -u)
  [[ $m == resnet18-matched ]] && folder=resnet18
  local extra_var="TRAIN_ARGS_$folder"
  read -r -a extra <<<"${!extra_var}"
  [[ $m == resnet18-matched ]] && extra=("${MATCHED_FLAGS[@]}" "${extra[@]}")
  base=$RESULTS/runs/$m tag=$m.seed$k
  [[ $kind == parity ]] && base=$RESULTS/parity/$m tag=parity.$m.seed$k
  dir=$base/seed$k
  script=$ROOT/$folder/train.py
  [[ $m == baseline ]] && script=$ROOT/benchmark/baseline.py extra=(--workers "$WORKERS"
                                                                      "${extra[@]}")
  flags=(--dataset "$DATASET" --device "$DEVICE" --out-dir "$dir")
  if [[ $kind == parity ]]; then
    [[ -n $PARITY_SUBSET ]] && flags+=(--subset "$PARITY_SUBSET")
    [[ -n $PARITY_EPOCHS ]] && flags+=(--epochs "$PARITY_EPOCHS")
    [[ -n $PARITY_BATCH_SIZE ]] && flags+=(--batch-size "$PARITY_BATCH_SIZE")
    flags+=(--val-split "$PARITY_VAL_SPLIT")
  else
    [[ -n $SUBSET ]] && flags+=(--subset "$SUBSET")
    [[ -n $EPOCHS ]] && flags+=(--epochs "$EPOCHS")
    [[ -n $BATCH_SIZE ]] && flags+=(--batch-size "$BATCH_SIZE")
    flags+=(--val-split "$VAL_SPLIT")
  fi
  # the same test images for the main and the parity runs (evaluate.py, gradcam.py and
  # measure.py take the checkpoint's)
  [[ -n $TEST_SUBSET ]] && flags+=(--test-subset "$TEST_SUBSET")
  [[ -n $DATA_DIR ]] && flags+=(--data-dir "$DATA_DIR")
  [[ $COMPILE == 1 ]] && flags+=(--compile)
  # shellcheck disable=SC2046  # seed_flag prints nothing or "--seed N"
  flags+=("${extra[@]}" $(seed_flag "$base" "$k"))
  settings="${flags[*]} | $kind extras=$EXTRAS gpu=$GPU_THROUGHPUT infer_batch=$INFER_BATCH"
  if [[ -f $dir/done ]] && ! redo_wanted "$m"; then
    if [[ $(cat "$dir/done") == "$settings" ]]; then
      printf '  %-28s skipped: finished earlier with these settings (--redo %s to run again)\n' \
        "$tag" "$m"
      return 0
    fi
    printf '  %-28s results there are for other settings: running it again\n' "$tag"
  fi
  rm -rf -- "$dir"
  mkdir -p "$dir" "$RESULTS/logs"
  step "$tag" "$dir" train "${py[@]}" "$script" "${flags[@]}" || return 1
  if [[ $kind == main ]]; then
    local eval_flags=(--checkpoint "$dir/last.pt" --device "$DEVICE")
    if [[ $m != baseline && $GPU_THROUGHPUT == 0 ]]; then  # the folder's scripts still work
      step "$tag" "$dir" evaluate "${py[@]}" "$ROOT/$folder/evaluate.py" "${eval_flags[@]}" \
        --out-dir "$dir/eval" || return 1
    fi
    if [[ $EXTRAS == 1 && -f $ROOT/$folder/evaluate_superclass.py ]]; then
      step "$tag" "$dir" evaluate_superclass "${py[@]}" "$ROOT/$folder/evaluate_superclass.py" \
        "${eval_flags[@]}" --out-dir "$dir/superclass" || return 1
    fi
    if [[ $EXTRAS == 1 && $m != baseline && -f $ROOT/$folder/gradcam.py ]]; then
      step "$tag" "$dir" gradcam "${py[@]}" "$ROOT/$folder/gradcam.py" "${eval_flags[@]}" \
        --out-dir "$dir/gradcam" || return 1
    fi
    step "$tag" "$dir" measure "${py[@]}" "$ROOT/benchmark/measure.py" "$folder" \
      --run-dir "$dir" --infer-batch "$INFER_BATCH" || return 1
  fi
  echo "$settings" >"$dir/.done.tmp" && mv -f "$dir/.done.tmp" "$dir/done"  # atomic
}

# benchmark: every model and seed into RESULTS, the parity runs, then the report
benchmark() {
  local settings t0 m k v parity_kind=parity report_flags=()
  settings="$DATASET data"
  [[ -n $SUBSET && $SUBSET != 0 ]] && settings+=", subset of $SUBSET training images"
  settings+=" ($VAL_SPLIT held out for validation)"
  [[ -n $TEST_SUBSET && $TEST_SUBSET != 0 ]] && settings+=", $TEST_SUBSET test images"
  settings+=", epochs ${EPOCHS:-per recipe}, batch ${BATCH_SIZE:-per recipe}, device $DEVICE"
  [[ $COMPILE == 1 ]] && settings+=", torch.compile"
  ((SEEDS > 1)) && settings+=", $SEEDS seeds"
  settings+=", inference batch $INFER_BATCH"
  [[ $QUICK == 1 ]] && settings="quick mode: $settings"
  # the same sizes as the main runs: parity's resnet18 and baseline are the main runs
  [[ "$PARITY_SUBSET/$PARITY_EPOCHS/$PARITY_BATCH_SIZE/$PARITY_VAL_SPLIT" == \
     "$SUBSET/$EPOCHS/$BATCH_SIZE/$VAL_SPLIT" ]] && parity_kind=main
  mkdir -p "$RESULTS/logs" || exit 1
  echo "== run_all.sh: $MODELS"
  echo "   $settings"
  echo "   results in $RESULTS (a log per step in $RESULTS/logs/)"
  t0=$(now)
  for ((k = 0; k < SEEDS; k++)); do
    for m in $MODELS; do
      run_model "$m" "$k" main
    done
  done
  if [[ $PARITY == 1 ]]; then
    echo "== learning parity: resnet18 against the baseline, ${PARITY_SUBSET:-all} images" \
      "(${PARITY_VAL_SPLIT} held out), ${PARITY_EPOCHS:-recipe} epochs," \
      "batch ${PARITY_BATCH_SIZE:-recipe}"
    for ((k = 0; k < SEEDS; k++)); do
      for v in resnet18-matched resnet18 baseline; do
        run_model "$v" "$k" "$parity_kind"
      done
    done
    report_flags=(--parity "$RESULTS/$([[ $parity_kind == main ]] && echo runs || echo parity)")
  fi
  "$PYTHON" "$ROOT/benchmark/report.py" --results "$RESULTS" --models "$MODELS" \
    --seeds "$SEEDS" "${report_flags[@]}" --command "$COMMAND" --settings "$settings" \
    >"$RESULTS/logs/report.log" 2>&1 \
    || FAILURES+=("the report failed; log: $RESULTS/logs/report.log")
  cat "$RESULTS/logs/report.log"
  echo "== run_all.sh: $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s in all"
}

main() {
  local v f base
  COMMAND="bash run_all.sh $*"  # as typed, with the settings that came from the environment
  for v in PYTHON QUICK MODELS SEEDS EPOCHS BATCH_SIZE SUBSET TEST_SUBSET VAL_SPLIT DATASET \
           DATA_DIR DEVICE COMPILE WORKERS EXTRAS INFER_BATCH PARITY PARITY_SUBSET \
           PARITY_EPOCHS PARITY_BATCH_SIZE RESULTS REDO GPU_THROUGHPUT; do
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
    RESULTS=$base
    "$PYTHON" "$ROOT/benchmark/report.py" --throughput "$base/gpu-throughput" \
      --command "$COMMAND" || FAILURES+=("the throughput summary failed")
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
