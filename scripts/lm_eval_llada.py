#!/usr/bin/env python
"""lm-evaluation-harness's command line with the LLaDA-BS backend (``--model llada_bs``) registered.

lm-eval 0.4 finds models only in its own registry and has no plugin mechanism, so this wrapper imports
``support_basis.lm_eval_llada`` (which registers ``llada_bs``) and hands every argument, unchanged, to lm-eval's
own entry point: anything that works with ``lm_eval ...`` works with ``python scripts/lm_eval_llada.py ...``.

    python scripts/lm_eval_llada.py --model llada_bs \\
        --model_args pretrained=models/LLaDA-8B-Instruct-BS,exact_ratio=0.2,chebyshev_degree=6,mc_num=128,cfg=0.5 \\
        --tasks arc_challenge --num_fewshot 0 --batch_size 32
    accelerate launch --num_processes 8 scripts/lm_eval_llada.py --model llada_bs ...   # one process per GPU

See ``support_basis/lm_eval_llada.py`` for the model arguments and the README for LLaDA's official settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import support_basis.lm_eval_llada  # noqa: F401  (registers --model llada_bs)
    except ImportError as err:
        raise SystemExit(f"error: {err}") from None
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
