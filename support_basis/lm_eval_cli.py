"""lm-evaluation-harness's command line with the ``llada_bs`` backend registered, its expected failures as one line.

``scripts/lm_eval_llada.py`` is :func:`main`. lm-eval 0.4 has no plugin mechanism, so this imports
:mod:`support_basis.lm_eval_llada` (which registers ``llada_bs``) and hands every argument, unchanged, to lm-eval's
own entry point. Around it, three failures a user meets are one line on stderr with exit status 2 instead of
lm-eval's traceback:

- a bad ``llada_bs`` model argument or model directory: checked here before lm-eval starts (:func:`check_llada_args`);
- a task name lm-eval does not know, or no task at all (``--tasks``): lm-eval finds it before loading the model;
  reworded here;
- a task whose data is on the Hugging Face Hub, with the Hub out of reach and the data not in the cache: reworded
  here (``datasets`` raises it after the model has loaded; set ``HF_DATASETS_OFFLINE=1`` to skip its retries).
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError, cli
from .process_group import leave_process_group

_WHERE_TASKS = ("`python scripts/lm_eval_llada.py ls tasks` lists the names, and a task of your own is its YAML file "
                "(--tasks path/to/task.yaml) or a folder of them (--include_path DIR)")


def check_llada_args(argv: list[str]) -> None:
    """With ``--model llada_bs``, check its model arguments (and the model directory) before lm-eval starts, so a
    bad one is one line in a second instead of a traceback after lm-eval has indexed its tasks. Parses only the
    flags lm-eval passes to the model (``--model/-M``, ``--model_args/-a``, ``--device``, ``--batch_size/-b``,
    ``--max_batch_size``), with lm-eval's own parser for ``--model_args``; lm-eval parses everything again."""
    from lm_eval._cli.utils import MergeDictAction

    from . import lm_eval_llada as backend

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


def lm_eval_failure(err: Exception) -> str | None:
    """lm-eval's expected failures as one line saying what to do; ``None`` for anything else (its traceback
    stays). Matches lm-eval's own wording ("Tasks not found: a, b", 0.4.9 to 0.4.13) and ``datasets``'
    ``ConnectionError`` ("Couldn't reach 'org/name' on the Hub (...)"); "No tasks specified" (``--tasks ""``)."""
    text = " ".join(str(err).split())
    if isinstance(err, ValueError) and text.startswith("Tasks not found"):
        names = text.split(":", 1)[1].split(". ")[0].strip() if ":" in text else "?"
        return f"--tasks: lm-eval has no task named {names}; {_WHERE_TASKS}"
    if isinstance(err, ValueError) and text.startswith("No tasks specified"):  # --tasks "" or a folder without YAML
        return f"--tasks names no task (an empty list, or a folder holding no task YAML); {_WHERE_TASKS}"
    if isinstance(err, ConnectionError) and text.startswith("Couldn't reach"):  # datasets' words for a dataset
        import datasets

        why = "offline mode is on" if datasets.config.HF_HUB_OFFLINE else "the Hub is out of reach"
        retries = "" if datasets.config.HF_HUB_OFFLINE else " and set HF_DATASETS_OFFLINE=1 to skip the retries"
        return (f"{text}: the task's data comes from the Hugging Face Hub, {why}, and it is not in the datasets "
                f"cache ({datasets.config.HF_DATASETS_CACHE}); run once with the Hub reachable (or point "
                f"HF_DATASETS_CACHE at a cache that holds it){retries}; offline, the project's runners read local "
                "files (--data_path)")
    return None


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from . import lm_eval_llada  # noqa: F401  (registers --model llada_bs)
    except ImportError as err:
        raise UserError(str(err)) from None
    check_llada_args(argv)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except (ValueError, ConnectionError) as err:
        message = lm_eval_failure(err)
        if message is None:
            raise
        raise UserError(message) from None
    finally:
        leave_process_group()
