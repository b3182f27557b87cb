#!/usr/bin/env bash
# The paper's downstream grid plus the exact-attention baseline: every task x every configuration, then a table.
#
#   bash run_all.sh --model models/LLaDA-8B-Instruct-BS            # exact + (ratio 0.2, degree 4 and 6), 5 tasks
#   bash run_all.sh --smoke                                         # shipped tiny LLaDA + synthetic data, CPU
#   bash run_all.sh --protocol official --dtype bfloat16 --no-hybrid   # reproduce the published exact figures
#
# Options (each overrides a default; so does the environment variable RUN_ALL_<NAME> given in brackets, e.g.
# RUN_ALL_MODEL; no other variable is read; lists take spaces or commas; relative paths are the caller's):
#   --model DIR        LLaDA-BS model directory or hub id     (RUN_ALL_MODEL, default models/LLaDA-8B-Instruct-BS)
#   --protocol P       paper (the support-basis paper's runners) | official (LLaDA-8B-Instruct's published
#                      OpenCompass runs)                                          (RUN_ALL_PROTOCOL, default paper)
#   --tasks "..."      subset of: arc_challenge arc_easy gpqa hellaswag mmlu gsm8k (gsm8k: official only)  (RUN_ALL_TASKS;
#                      default: paper the five multiple-choice tasks, official arc_challenge gpqa hellaswag mmlu gsm8k)
#   --ratios "..."     exact ratios of the hybrid runs          (RUN_ALL_RATIOS, default "0.2")
#   --degrees "..."    Chebyshev degrees of the hybrid runs     (RUN_ALL_DEGREES, default "4 6")
#   --no-exact         skip the exact-attention baseline      --no-hybrid   run the exact baseline only
#   --limit N          first N items of each task                (RUN_ALL_LIMIT)
#   --out DIR          output directory                           (RUN_ALL_OUT, default results)
#   --data-dir DIR     local data: DIR/<task>.jsonl in the hub schema (RUN_ALL_DATA_DIR; default: the hub)
#   --batch-size N     (RUN_ALL_BATCH_SIZE, default 8)   --dtype D (RUN_ALL_DTYPE, default float32, as the paper)
#   --cache MODE       fast sampler's key/value cache: none | prefix | dual   (RUN_ALL_CACHE, default none)
#   --threshold T      reveal every position with confidence >= T per step   (RUN_ALL_THRESHOLD, default off)
#   --factor F         adaptive parallel decoding factor                       (RUN_ALL_FACTOR, default off)
#   --kernel K         hybrid_kernel: auto | triton | native | compiled | eager (RUN_ALL_KERNEL, default: the model's)
#   --early-stop       stop an item once a revealed block holds EOS/EoT; --suffix-window W / --suffix-tail T /
#   --suffix-dropout gaussian|uniform / --threshold-alpha A: the pruned suffix and the context-aware threshold
#                      (generate.py --help; flags only)
#   -- ARGS...         anything after -- goes to every runner (e.g. -- --steps 16, or -- --gen_length 256
#                      --block_length 32 for the Fast-dLLM GSM8K setting with --cache dual --threshold 0.9)
# Each run resumes where it stopped; a finished run is skipped in seconds.
set -euo pipefail
set -f  # the lists (--tasks, --ratios, ...) are split on spaces, never expanded as file patterns
CALLER=$PWD  # relative paths the user gives (and the default --out) are the caller's
REPO=$(cd "$(dirname "$0")" && pwd)
cd "$REPO"

# only this script's own RUN_ALL_* variables: a generic MODEL, CACHE or PYTHON in the environment is not a setting
GIVEN=" ${RUN_ALL_MODEL+model} ${RUN_ALL_OUT+out} ${RUN_ALL_DATA_DIR+data} "  # what the user set: --smoke keeps it
MODEL=${RUN_ALL_MODEL:-models/LLaDA-8B-Instruct-BS}
PROTOCOL=${RUN_ALL_PROTOCOL:-paper}
TASKS=${RUN_ALL_TASKS:-}
RATIOS=${RUN_ALL_RATIOS:-"0.2"}
DEGREES=${RUN_ALL_DEGREES:-"4 6"}
LIMIT=${RUN_ALL_LIMIT:-}
OUT=${RUN_ALL_OUT:-results}
DATA_DIR=${RUN_ALL_DATA_DIR:-}
BATCH_SIZE=${RUN_ALL_BATCH_SIZE:-8}
DTYPE=${RUN_ALL_DTYPE:-float32}
CACHE=${RUN_ALL_CACHE:-none}
THRESHOLD=${RUN_ALL_THRESHOLD:-}
FACTOR=${RUN_ALL_FACTOR:-}
KERNEL=${RUN_ALL_KERNEL:-}
EXACT=1
HYBRID=1
SMOKE=0
EXTRA=()
STREAM=()  # the sampler's early-stop / pruned-suffix / context-aware-threshold flags, passed to every runner
PYTHON=${RUN_ALL_PYTHON:-python}  # the interpreter that runs the runners (the project's environment)
# errors are one line on stderr with exit status 2, as in every command line of this project (README)
die() { echo "run_all.sh: error: $*" >&2; exit 2; }
abs_path() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }

while [ $# -gt 0 ]; do
    case "$1" in  # an option that takes a value needs one (add new ones here)
        --model|--protocol|--tasks|--ratios|--degrees|--limit|--out|--data-dir|--batch-size|--dtype|--cache|--threshold|--factor|--kernel|--suffix-window|--suffix-tail|--suffix-dropout|--threshold-alpha)
            { [ $# -ge 2 ] && [[ "$2" != --* ]]; } || die "$1 needs a value (see --help)" ;;
    esac
    case "$1" in
        --model) MODEL=$2; GIVEN+=" model "; shift 2 ;;
        --protocol) PROTOCOL=$2; shift 2 ;;
        --tasks) TASKS=$2; shift 2 ;;
        --ratios) RATIOS=$2; shift 2 ;;
        --degrees) DEGREES=$2; shift 2 ;;
        --no-exact) EXACT=0; shift ;;
        --no-hybrid) HYBRID=0; shift ;;
        --limit) LIMIT=$2; shift 2 ;;
        --out) OUT=$2; GIVEN+=" out "; shift 2 ;;
        --data-dir) DATA_DIR=$2; GIVEN+=" data "; shift 2 ;;
        --batch-size) BATCH_SIZE=$2; shift 2 ;;
        --dtype) DTYPE=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --threshold) THRESHOLD=$2; shift 2 ;;
        --factor) FACTOR=$2; shift 2 ;;
        --kernel) KERNEL=$2; shift 2 ;;
        --early-stop) STREAM+=(--early_stop 1); shift ;;
        --suffix-window|--suffix-tail|--suffix-dropout|--threshold-alpha) STREAM+=("--$(tr - _ <<< "${1#--}")" "$2"); shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# checked before anything runs (the smoke model included)
# a list takes spaces or commas; a name given twice runs once
words() { local w seen=" "; local -a ws; IFS=$', \t' read -ra ws <<< "$1"; for w in "${ws[@]}"; do [[ "$seen" == *" $w "* ]] || seen+="$w "; done; echo $seen; }
case "$PROTOCOL" in
    paper) TASKS=${TASKS:-"arc_challenge arc_easy gpqa hellaswag mmlu"} ;;
    official) TASKS=${TASKS:-"arc_challenge gpqa hellaswag mmlu gsm8k"} ;;
    *) die "--protocol must be paper or official; got '$PROTOCOL'" ;;
esac
TASKS=$(words "$TASKS"); RATIOS=$(words "$RATIOS"); DEGREES=$(words "$DEGREES")
for task in $TASKS; do
    [ -f "scripts/run_$task.py" ] || die "unknown task '$task' (tasks: arc_challenge arc_easy gpqa hellaswag mmlu gsm8k)"
    [ "$PROTOCOL/$task" != "paper/gsm8k" ] || die "gsm8k has no paper protocol (its worked solutions need the official 512-token answers); run it with --protocol official"
    [ "$PROTOCOL/$task" != "official/arc_easy" ] || die "arc_easy has no official setting (LLaDA published no ARC-E figure for the Instruct model); drop it from --tasks or use --protocol paper"
done
[ -n "$TASKS" ] || die "--tasks is empty; name at least one of arc_challenge arc_easy gpqa hellaswag mmlu gsm8k"
for r in $RATIOS; do [[ "$r" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || die "--ratios: '$r' is not a number (exact ratios in [0, 1], e.g. \"0.1 0.2\")"; done
for d in $DEGREES; do [[ "$d" =~ ^[0-9]+$ ]] || die "--degrees: '$d' is not a whole number (Chebyshev degrees, e.g. \"4 6\")"; done
[ -z "$LIMIT" ] || [[ "$LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--limit must be a positive integer; got '$LIMIT'"
[[ "$BATCH_SIZE" =~ ^[1-9][0-9]*$ ]] || die "--batch-size must be a positive integer; got '$BATCH_SIZE'"

configs=()
[ "$EXACT" = 1 ] && configs+=("exact")
[ "$HYBRID" = 1 ] && for r in $RATIOS; do for d in $DEGREES; do configs+=("$r:$d"); done; done
[ ${#configs[@]} -gt 0 ] || die "no configuration to run: --no-exact with --no-hybrid (or empty --ratios or --degrees)"

if [ "$SMOKE" = 1 ]; then
    # Everything offline on CPU: the shipped tiny LLaDA trained on synthetic tasks (support_basis/checkpoints/llada-tiny) and
    # held-out synthetic questions in each task's schema (scripts/make_synthetic_data.py; kinds interleaved, so
    # --limit keeps every kind). Its accuracies are real: the table of README's "trained tiny LLaDA" comes from here.
    # A --model, --out or --data-dir the user gave is kept. Both are made below, once every flag is checked.
    [[ "$GIVEN" == *" out "* ]] || OUT=${OUT/#results/results-smoke}
    OUT=$(abs_path "$OUT")  # the smoke model and data below live in it
    [[ "$GIVEN" == *" model "* ]] || MODEL=$REPO/support_basis/checkpoints/llada-tiny
    # the official prompts (GPQA's five examples, GSM8K's four worked solutions) are ~1.5k tokens: more than the
    # trained tiny model's 512-token window. A tiny random model with a 4096-token window runs them instead (its
    # answers are noise: this checks the pipeline), with 32-token answers to stay quick on a CPU.
    SMOKE_MODEL=""
    if [ "$PROTOCOL" = official ]; then
        [[ "$GIVEN" == *" model "* ]] || { MODEL="$OUT/tiny-random-4k"; SMOKE_MODEL=$MODEL; }
        [[ " ${EXTRA[*]} " == *" --gen_length "* ]] || EXTRA+=(--gen_length 32)
    fi
    LIMIT=${LIMIT:-20}
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    [[ "$GIVEN" == *" data "* ]] || DATA_DIR="$OUT/synthetic-heldout"
fi

# a relative path is the caller's: --out and --data-dir always, --model where it names something there (else a hub id)
OUT=$(abs_path "$OUT")
[ -z "$DATA_DIR" ] || DATA_DIR=$(abs_path "$DATA_DIR")
if [[ "$MODEL" == ./* || "$MODEL" == ../* || "$MODEL" == ~* ]] || [ -e "$CALLER/$MODEL" ]; then MODEL=$(abs_path "$MODEL"); fi

common=(--model_name "$MODEL" --protocol "$PROTOCOL" --out_dir "$OUT" --batch_size "$BATCH_SIZE" --dtype "$DTYPE"
        --no_progress)
[ -n "$LIMIT" ] && common+=(--limit "$LIMIT")
[ -n "$DATA_DIR" ] && common+=(--data_path "$DATA_DIR")
common+=(--cache "$CACHE")
[ -n "$THRESHOLD" ] && common+=(--threshold "$THRESHOLD")
[ -n "$FACTOR" ] && common+=(--factor "$FACTOR")
[ -n "$KERNEL" ] && common+=(--kernel "$KERNEL")
common+=(${STREAM[@]+"${STREAM[@]}"})

# every runner checks its flags (and those after --) before anything is written, about 2 s each
for task in $TASKS; do
    "$PYTHON" "scripts/run_$task.py" "${common[@]}" --configs "${configs[@]}" "${EXTRA[@]}" --check_flags
done
# one run_all.sh per --out at a time (each runner also locks its task folder); the lock drops when this script exits,
# and a --out made only to hold it is removed again if nothing else was written (a runner refused its input)
[ -d "$OUT" ] && OUT_EXISTED=1 || OUT_EXISTED=0
unlock() { [ "$OUT_EXISTED" = 1 ] || [ -n "$(ls -A "$OUT" 2>/dev/null | grep -vx '.run_all.lock')" ] || rm -rf "$OUT"; }
mkdir -p "$OUT"
trap unlock EXIT
exec 9>>"$OUT/.run_all.lock"
flock -n 9 || die "--out $OUT is being written by another run_all.sh ($(cat "$OUT/.run_all.lock" 2>/dev/null)); wait for it to finish (a rerun then resumes), or give another --out"
echo "process $$ on $(hostname)" > "$OUT/.run_all.lock"
if [ "$SMOKE" = 1 ]; then
    [ -z "$SMOKE_MODEL" ] || [ -f "$SMOKE_MODEL/config.json" ] || \
        "$PYTHON" scripts/make_tiny_model.py "$SMOKE_MODEL" --max-sequence-length 4096 >/dev/null
    [[ "$GIVEN" == *" data "* ]] || [ -f "$DATA_DIR/gsm8k.jsonl" ] || "$PYTHON" scripts/make_synthetic_data.py --out "$DATA_DIR"
fi

for task in $TASKS; do  # one process per task: the model is loaded once for all its configurations
    "$PYTHON" "scripts/run_$task.py" "${common[@]}" --configs "${configs[@]}" "${EXTRA[@]}"
done

"$PYTHON" scripts/summarize_results.py "$OUT"
