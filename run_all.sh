#!/usr/bin/env bash
# The paper's downstream grid plus the exact-attention baseline: every task x every configuration, then a table.
#
#   bash run_all.sh --model models/LLaDA-8B-Instruct-BS            # exact + (ratio 0.2, degree 4 and 6), 5 tasks
#   bash run_all.sh --smoke                                         # tiny random model + fixture data, ~1 min, CPU
#
# Options (each overrides a default; environment variables of the same name in capitals work too):
#   --model DIR        LLaDA-BS model directory or hub id     (MODEL, default models/LLaDA-8B-Instruct-BS)
#   --tasks "..."      subset of: arc_challenge arc_easy gpqa hellaswag mmlu                  (TASKS)
#   --ratios "..."     exact ratios of the hybrid runs          (RATIOS, default "0.2")
#   --degrees "..."    Chebyshev degrees of the hybrid runs     (DEGREES, default "4 6")
#   --no-exact         skip the exact-attention baseline
#   --limit N          first N items of each task                (LIMIT)
#   --out DIR          output directory                           (OUT, default results)
#   --data-dir DIR     local data: DIR/<task>.jsonl in the hub schema (DATA_DIR; default: the hub)
#   --batch-size N     (BATCH_SIZE, default 8)   --dtype D (DTYPE, default float32, as the paper)
#   -- ARGS...         anything after -- goes to every runner (e.g. -- --steps 16)
# Each run resumes where it stopped; a finished run is skipped in seconds.
set -euo pipefail
cd "$(dirname "$0")"

MODEL=${MODEL:-models/LLaDA-8B-Instruct-BS}
TASKS=${TASKS:-"arc_challenge arc_easy gpqa hellaswag mmlu"}
RATIOS=${RATIOS:-"0.2"}
DEGREES=${DEGREES:-"4 6"}
LIMIT=${LIMIT:-}
OUT=${OUT:-results}
DATA_DIR=${DATA_DIR:-}
BATCH_SIZE=${BATCH_SIZE:-8}
DTYPE=${DTYPE:-float32}
EXACT=1
SMOKE=0
EXTRA=()
PYTHON=${PYTHON:-python}

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --tasks) TASKS=$2; shift 2 ;;
        --ratios) RATIOS=$2; shift 2 ;;
        --degrees) DEGREES=$2; shift 2 ;;
        --no-exact) EXACT=0; shift ;;
        --limit) LIMIT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --data-dir) DATA_DIR=$2; shift 2 ;;
        --batch-size) BATCH_SIZE=$2; shift 2 ;;
        --dtype) DTYPE=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$SMOKE" = 1 ]; then
    # Everything offline on CPU: a tiny random model (its answers are noise) and this project's fixture data.
    OUT=${OUT/#results/results-smoke}
    MODEL="$OUT/tiny-llada-bs"
    DATA_DIR=tests/fixtures/data
    LIMIT=${LIMIT:-4}
    export HYBRID_ATTENTION_COMPILE=0 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    [ -f "$MODEL/config.json" ] || "$PYTHON" scripts/make_tiny_model.py "$MODEL"
fi

for task in $TASKS; do
    [ -f "scripts/run_$task.py" ] || { echo "run_all.sh: unknown task '$task' (tasks: arc_challenge arc_easy gpqa hellaswag mmlu)" >&2; exit 2; }
done

configs=()
[ "$EXACT" = 1 ] && configs+=("exact")
for r in $RATIOS; do for d in $DEGREES; do configs+=("$r:$d"); done; done

common=(--model_name "$MODEL" --out_dir "$OUT" --batch_size "$BATCH_SIZE" --dtype "$DTYPE" --no_progress)
[ -n "$LIMIT" ] && common+=(--limit "$LIMIT")
[ -n "$DATA_DIR" ] && common+=(--data_path "$DATA_DIR")

for task in $TASKS; do  # one process per task: the model is loaded once for all its configurations
    "$PYTHON" "scripts/run_$task.py" "${common[@]}" --configs "${configs[@]}" "${EXTRA[@]}"
done

"$PYTHON" scripts/summarize_results.py "$OUT"
