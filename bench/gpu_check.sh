#!/usr/bin/env bash
# One GPU check, under 8 minutes: a training step of every model in bf16-mixed and 16-mixed, the
# throughput table, experiment=best at its full 5-minute budget with its PublicTest accuracy,
# trainer=ddp on the GPUs present, and analyze.py on the GPU. Results go to $OUT (default
# outputs/gpu_check): one log per step and summary.txt.
#
# The GPU machine has torch, Lightning, torchmetrics, torchvision and matplotlib but no hydra-core,
# omegaconf, antlr4 or captum, and no network: carry their wheels in the git-ignored .whl/ first,
#   mkdir -p .whl && cp ../shared/wheels/gpu-py312/*.whl .whl/
# Real data: FER2013_PATH, else shared/data/fer2013/fer2013-dev.csv.gz of the checkout; without it
# experiment=best runs on synthetic faces (its speed, not its accuracy).
#   bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --dry-run  # print the steps and their time limits, run nothing
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
PY=${PYTHON:-python3}
DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
START=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME SECONDS COMMAND...: run under a time limit, log to $OUT/NAME.log, note its status.
step() {
    local name=$1 limit=$2
    shift 2
    note "== $name (limit ${limit}s, at $((SECONDS - START))s): $*"
    ((DRY)) && return 0
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    note "   $name: rc=$rc after $((SECONDS - START))s"
}

if ((!DRY)) && ! $PY -c "import hydra, omegaconf, captum" 2>/dev/null; then
    ls .whl/*.whl >/dev/null 2>&1 || { note "no .whl/*.whl: copy ../shared/wheels/gpu-py312/*.whl to .whl/ first"; exit 1; }
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
((DRY)) || $PY -c "import torch; print('torch', torch.__version__, 'GPUs', torch.cuda.device_count(), torch.cuda.get_device_name(0))" | tee -a "$SUMMARY"

SYN="data=synthetic data.path=synthetic://800?seed=0 data.cache_dir=/tmp/fer_cache callbacks.rich_progress_bar=null"
MODELS=$(ls conf/model/*.yaml | xargs -n1 basename | sed 's/\.yaml$//' | paste -sd, -)

# 1. One training step of every model, in both mixed precisions (one process, a Hydra multirun).
step steps 45 $PY train.py -m $SYN trainer=gpu debug=fast trainer.limit_train_batches=1 \
    trainer.limit_val_batches=1 trainer.limit_test_batches=1 "model=$MODELS" trainer.precision=bf16-mixed,16-mixed \
    logger=csv hydra.sweep.dir="$OUT/steps"
((DRY)) || $PY analyze.py sweep="$OUT/steps" >"$OUT/steps_summary.log" 2>&1

# 2. The throughput table, on the GPU, with fer vs the plain loop for cnn4 and vggnet.
step throughput 45 $PY bench/bench_throughput.py --device cuda --batch-size 256 --batches 10 --warmup 3 \
    --compare cnn4 vggnet

# 3. experiment=best at its full budget (trainer.max_time 5 minutes), real data when present.
DATA=${FER2013_PATH:-shared/data/fer2013/fer2013-dev.csv.gz}
if [[ -f $DATA ]]; then
    BEST_DATA="data.path=$DATA"
else
    note "   no FER2013 at $DATA: experiment=best runs on synthetic faces (speed only, no accuracy)"
    BEST_DATA="data.path=synthetic://30000?seed=0 data.splits.test=PublicTest"
fi
step best 330 $PY train.py experiment=best $BEST_DATA data.cache_dir=/tmp/fer_cache \
    callbacks.rich_progress_bar=null hydra.run.dir="$OUT/best"
((DRY)) || $PY - "$OUT/best/metrics.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
m = json.load(open(sys.argv[1]))
print(f"   best: {m['test_split']} acc {m['test'].get('test/acc', float('nan')):.4f} "
      f"(without TTA {m['test'].get('test/acc_no_tta', float('nan')):.4f}), val {m['best'].get('val/acc', 0):.4f} "
      f"at epoch {m['best'].get('epoch')}, {m['epochs']} epochs, fit {m['fit_time_s']} s, run {m['run_time_s']} s")
EOF

# 4. DDP on every GPU present (one GPU: a one-process DDP run).
step ddp 25 $PY train.py $SYN trainer=ddp debug=fast trainer.max_epochs=1 hydra.run.dir="$OUT/ddp"

# 5. analyze.py on the GPU, of the best run (a fast analysis).
step analyze 25 $PY analyze.py run="$OUT/best" device=cuda out="$OUT/analysis" analysis.metric_images=14 \
    analysis.filters=4 analysis.am_steps=8 analysis.attribution.nt_samples=2 analysis.attribution.ig_steps=8

note "total $((SECONDS - START)) s"
