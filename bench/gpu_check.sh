#!/usr/bin/env bash
# One GPU check, under 10 minutes: experiment=best at its full budget with its PublicTest accuracy,
# analyze.py of that run on the GPU, a training step of every model in bf16-mixed and 16-mixed, the
# throughput table, and trainer=ddp on the GPUs present. The best first: a later step that fails or
# runs long cannot cost its number.
#
# The GPU machine has torch, Lightning, torchmetrics, torchvision and matplotlib but no hydra-core,
# omegaconf, antlr4 or captum, and no network: carry their wheels in the git-ignored .whl/ first,
#   mkdir -p .whl && cp ../shared/wheels/gpu-py312/*.whl .whl/
# Real data, the first found: $FER2013_PATH; shared/data/fer2013/fer2013-dev.csv.gz of the checkout;
# .data/fer2013-dev.xz, packed here by bench/pack_data.py (the 84 MB CSV does not fit the 64 MiB a
# device call carries). Without any, experiment=best runs on synthetic faces (its speed, not its accuracy).
#   bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --dry-run  # print the steps and their time limits, run nothing
# Runs go to $WORK (default /tmp/gpu_check); $OUT (default outputs/gpu_check) receives at most 8 files:
# summary.txt, logs.txt (every step's log), the best run's metrics.json and history.csv, its
# analysis.json, and its best.ckpt without optimizer state, split into parts under 15 MiB
# (cat best.ckpt.part-* > best.ckpt puts it together).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
WORK=${WORK:-/tmp/gpu_check}
PY=${PYTHON:-python3}
DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
mkdir -p "$OUT" "$WORK"
SUMMARY=$OUT/summary.txt
LOGS=$OUT/logs.txt
: >"$SUMMARY"
: >"$LOGS"
START=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME SECONDS COMMAND...: run under a time limit, log to $LOGS, note its status.
step() {
    local name=$1 limit=$2
    shift 2
    note "== $name (limit ${limit}s, at $((SECONDS - START))s): $*"
    ((DRY)) && return 0
    echo "===== $name: $*" >>"$LOGS"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    grep -v -i "warn" "$WORK/$name.log" | tail -n 25
    cat "$WORK/$name.log" >>"$LOGS"
    note "   $name: rc=$rc after $((SECONDS - START))s"
}

if ((!DRY)) && ! $PY -c "import hydra, omegaconf, captum" 2>/dev/null; then
    ls .whl/*.whl >/dev/null 2>&1 || { note "no .whl/*.whl: copy ../shared/wheels/gpu-py312/*.whl to .whl/ first"; exit 1; }
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
if ((!DRY)); then
    $PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'GPUs', torch.cuda.device_count(), torch.cuda.get_device_name(0))" | tee -a "$SUMMARY"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee -a "$SUMMARY"
fi

CACHE="data.cache_dir=$WORK/cache"
SYN="data=synthetic data.path='synthetic://800?seed=0' $CACHE callbacks.rich_progress_bar=null"
MODELS=$(ls conf/model/*.yaml | xargs -n1 basename | sed 's/\.yaml$//' | paste -sd, -)

# 0. The data, decoded into the cache so that the best run's time is its own.
DATA=${FER2013_PATH:-shared/data/fer2013/fer2013-dev.csv.gz}
if [[ ! -f $DATA && -f .data/fer2013-dev.xz ]]; then
    DATA=$WORK/fer2013-dev.csv
    ((DRY)) || $PY bench/pack_data.py unpack .data/fer2013-dev.xz "$DATA" | tee -a "$SUMMARY"
fi
if [[ -f $DATA ]] || ((DRY)); then
    BEST_DATA="data.path=$DATA"
    ((DRY)) || $PY -m fer.data "$DATA" --cache-dir "$WORK/cache" | tee -a "$SUMMARY"
else
    note "   no FER2013 at $DATA: experiment=best runs on synthetic faces (speed only, no accuracy)"
    BEST_DATA="data.path='synthetic://30000?seed=0' data.splits.test=PublicTest"
fi

# 1. experiment=best at its full budget (a 240 s schedule, a 270 s hard stop).
step best 330 $PY train.py experiment=best $BEST_DATA $CACHE logger=csv \
    callbacks.rich_progress_bar=null hydra.run.dir="$WORK/best"
if ((!DRY)); then
    $PY - "$WORK/best/metrics.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
m = json.load(open(sys.argv[1]))
print(f"   best: {m['test_split']} acc {m['test'].get('test/acc', float('nan')):.4f} "
      f"(without TTA {m['test'].get('test/acc_no_tta', float('nan')):.4f}), val {m['best'].get('val/acc', 0):.4f} "
      f"at epoch {m['best'].get('epoch')}, {m['epochs']} epochs, fit {m['fit_time_s']} s, run {m['run_time_s']} s")
EOF
    cp "$WORK/best/metrics.json" "$OUT/best_metrics.json"
    cp "$WORK/best/history.csv" "$OUT/best_history.csv"
    # The weights without the optimizer state, in parts the device tool brings back (16 MiB a file).
    $PY -c "import sys, torch; c = torch.load(sys.argv[1], weights_only=True); c.pop('optimizer_states', None); torch.save(c, sys.argv[2])" \
        "$WORK/best/checkpoints/best.ckpt" "$WORK/best.ckpt" && split -b 15M "$WORK/best.ckpt" "$OUT/best.ckpt.part-"
fi

# 2. analyze.py of the best run on the GPU, default settings.
step analyze 60 $PY analyze.py run="$WORK/best" device=cuda out="$WORK/analysis"
((DRY)) || cp "$WORK/analysis/analysis.json" "$OUT/analysis.json"

# 3. One training step of every model, in both mixed precisions (one process, a Hydra multirun).
step steps 90 $PY train.py -m $SYN trainer=gpu debug=fast trainer.limit_train_batches=1 \
    trainer.limit_val_batches=1 trainer.limit_test_batches=1 "model=$MODELS" trainer.precision=bf16-mixed,16-mixed \
    logger=csv hydra.sweep.dir="$WORK/steps"
((DRY)) || step steps_summary 30 $PY analyze.py sweep="$WORK/steps"

# 4. The throughput table, on the GPU, with fer vs the plain loop for cnn4 and vggnet (without
# torch.compile, whose compilation would not fit the step's minute).
step throughput 60 $PY bench/bench_throughput.py --device cuda --batch-size 256 --batches 10 --warmup 3 \
    --compare cnn4 vggnet --no-compile

# 5. DDP on every GPU present (one GPU: a one-process DDP run).
step ddp 45 $PY train.py $SYN trainer=ddp debug=fast trainer.max_epochs=1 hydra.run.dir="$WORK/ddp"

note "total $((SECONDS - START)) s"
