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

import argparse
import os
import sys

from support_basis.errors import UserError, cli
from support_basis.process_group import leave_process_group



def check_llada_args(argv: list[str]) -> None:
    """With ``--model llada_bs``, check its model arguments (and the model directory) before lm-eval starts, so a
    bad one is one line in a second instead of a traceback after lm-eval has indexed its tasks. Parses only the
    flags lm-eval passes to the model (``--model/-M``, ``--model_args/-a``, ``--device``, ``--batch_size/-b``,
    ``--max_batch_size``), with lm-eval's own parser for ``--model_args``; lm-eval parses everything again."""
    from lm_eval._cli.utils import MergeDictAction

    import support_basis.lm_eval_llada as backend

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", "-M")
    p.add_argument("--model_args", "-a", nargs="+", action=MergeDictAction, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--batch_size", "-b", default=None)
    p.add_argument("--max_batch_size", type=int, default=None)
    try:
        known, _ = p.parse_known_args(argv[1:] if argv[:1] == ["run"] else argv)
    except (SystemExit, ValueError):  # malformed: lm-eval's own parser reports it
        return
    if known.model != backend.MODEL_NAME:
        return
    backend.LLaDABSEvalHarness.check_arguments(
        dict(known.model_args or {}),
        {"device": known.device, "batch_size": known.batch_size, "max_batch_size": known.max_batch_size})


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import support_basis.lm_eval_llada  # noqa: F401  (registers --model llada_bs)
    except ImportError as err:
        raise UserError(str(err)) from None
    check_llada_args(argv)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    finally:
        leave_process_group()


if __name__ == "__main__":
    main()
