#!/usr/bin/env bash
# The prepared GPU check: the fused kernel's tests on CUDA, then bench/gpu_check.py (the op at the LLaDA-8B shape
# up to L = 32768, a random LLaDA-8B-shaped forward, generate() with the dual cache, and bench/triton_static.py's
# estimate for this device's own architecture beside the measured times). At most 8 minutes on one H100.
#
#   bash bench/gpu_check.sh            # on a CUDA machine with the project installed (README's set-up line)
#   bash bench/gpu_check.sh --smoke    # the same steps at toy sizes on a CPU (tests under Triton's interpreter)
#
# Prints the test summary, readable tables, and last one JSON line. Exit status 2 without CUDA (unless --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if [ "${1:-}" = "--smoke" ]; then
    export TRITON_INTERPRET=1
else
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" || {
        echo "gpu_check.sh: error: no CUDA device here; run it on a GPU machine (or --smoke on a CPU)" >&2; exit 2; }
    export TRITON_INTERPRET=0   # the kernel on the GPU itself (tests/conftest.py keeps a value that is set)
fi
echo "== the fused kernel's tests ($([ "$TRITON_INTERPRET" = 1 ] && echo interpreter || echo CUDA))"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_hybrid_triton.py tests/test_kernel_switch.py
echo "== measurements"
"$PYTHON" bench/gpu_check.py "$@"
