#!/usr/bin/env python
"""lm-evaluation-harness's command line with the LLaDA-BS backend (``--model llada_bs``) registered.

Every argument goes, unchanged, to lm-eval's own entry point: anything that works with ``lm_eval ...`` works with
``python scripts/lm_eval_llada.py ...``; bad model arguments, unknown tasks and unreachable task data are one line
on stderr with exit status 2 (``support_basis/lm_eval_cli.py``).

    python scripts/lm_eval_llada.py --model llada_bs \\
        --model_args pretrained=models/LLaDA-8B-Instruct-BS,exact_ratio=0.2,chebyshev_degree=6,mc_num=128,cfg=0.5 \\
        --tasks arc_challenge --num_fewshot 0 --batch_size 32
    accelerate launch --num_processes 8 scripts/lm_eval_llada.py --model llada_bs ...   # one process per GPU

See ``support_basis/lm_eval_llada.py`` for the model arguments and the README for LLaDA's official settings.
"""

from support_basis.lm_eval_cli import main

if __name__ == "__main__":
    main()
