"""The command line shared by the five runners (``scripts/run_<task>.py``): flags, model loading, one run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataError, load_items
from .records import ConfigMismatch, RecordStore, config_name
from .tasks import TASKS, get_task

PAPER_STEPS_PER_BLOCK = 8  # the paper's runners: steps=8 per block (their sampler counts steps per block)
PAPER_BLOCK_LENGTH = 32


def build_parser(task_name: str | None = None) -> argparse.ArgumentParser:
    title = TASKS[task_name].title if task_name else "a benchmark"
    p = argparse.ArgumentParser(
        description=f"Evaluate a LLaDA-BS model on {title} by generation (the paper's protocol by default: chat "
        "template, letter answers, gen_length 32 (64 for GPQA), 8 steps per 32-token block, temperature 0, float32).",
    )
    if task_name is None:
        p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--model_name", required=True, help="a LLaDA-BS model directory (scripts/prepare_model.py) or hub id")
    p.add_argument("--exact_ratio", type=float, default=0.2, help="hybrid_exact_ratio in [0, 1]; 1 = exact attention")
    p.add_argument("--chebyshev_degree", type=int, default=6, help="hybrid_chebyshev_degree >= 1")
    p.add_argument("--configs", nargs="+", default=None, metavar="RATIO:DEGREE",
                   help="several attention configurations in one process (model loaded once), e.g. "
                   "--configs exact 0.2:4 0.2:6; replaces --exact_ratio/--chebyshev_degree")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--batch_size", type=int, default=8, help="prompts per generate() call (results do not change)")
    p.add_argument("--steps", type=int, default=None,
                   help="TOTAL denoising steps (default: 8 per block, the paper's setting)")
    p.add_argument("--gen_length", type=int, default=None, help="answer tokens (default: the task's, 32 or 64)")
    p.add_argument("--block_length", type=int, default=PAPER_BLOCK_LENGTH)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"])
    p.add_argument("--cfg_scale", type=float, default=0.0)
    p.add_argument("--out_dir", default="results", help="results go to OUT_DIR/<task>/<config>/")
    p.add_argument("--data_path", default=None,
                   help="local data instead of the hub: a json/jsonl/parquet file, or a directory with <task>.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32 as the paper's runners; bfloat16 halves memory and time on a GPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--no_chat", action="store_true", help="send the prompt raw, without the chat template")
    p.add_argument("--no_progress", action="store_true")
    return p


def parse_configs(a) -> list[tuple[float, int]]:
    """``--configs`` (``exact`` or ``RATIO:DEGREE`` each) or the single ``--exact_ratio``/``--chebyshev_degree``."""
    if not a.configs:
        return [(a.exact_ratio, a.chebyshev_degree)]
    out = []
    for c in a.configs:
        if c == "exact":
            out.append((1.0, 6))
            continue
        try:
            ratio, degree = c.split(":")
            out.append((float(ratio), int(degree)))
        except ValueError:
            raise ValueError(f"--configs entry {c!r} is not 'exact' or RATIO:DEGREE (e.g. 0.2:6)") from None
    return out


def settings_from_args(a, task, exact_ratio: float, chebyshev_degree: int) -> dict:
    from hybrid_attention import validate_chebyshev_degree, validate_exact_ratio

    gen_length = a.gen_length or task.gen_length
    if gen_length % a.block_length:
        raise ValueError(f"--gen_length ({gen_length}) must be a multiple of --block_length ({a.block_length})")
    steps = a.steps if a.steps is not None else PAPER_STEPS_PER_BLOCK * (gen_length // a.block_length)
    data = str(Path(a.data_path).resolve()) if a.data_path else f"hub:{task.hub_id}/{task.hub_config}/{task.split}"
    model = str(Path(a.model_name).resolve()) if Path(a.model_name).exists() else a.model_name
    for name, value in (("--limit", a.limit), ("--batch_size", a.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    return {
        "task": task.name,
        "model": model,
        "exact_ratio": validate_exact_ratio(exact_ratio, "--exact_ratio"),
        "chebyshev_degree": validate_chebyshev_degree(chebyshev_degree, "--chebyshev_degree"),
        "steps": steps,
        "gen_length": gen_length,
        "block_length": a.block_length,
        "temperature": a.temperature,
        "remasking": a.remasking,
        "cfg_scale": a.cfg_scale,
        "dtype": a.dtype,
        "seed": a.seed,
        "data": data,
        "chat": not a.no_chat,
        "limit": a.limit,
        "batch_size": a.batch_size,
    }


def load_bs_model(name: str, dtype: str, device: str):
    """The model and tokenizer, refusing a directory that is not a LLaDA-BS model (no hybrid fields)."""
    from transformers import AutoConfig

    from generate import load_model_and_tokenizer

    if Path(name).exists() or name.startswith((".", "/", "~")):
        if not (Path(name) / "config.json").is_file():
            raise ValueError(f"{name} is not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not read the config of {name}: {err}") from None
    if not hasattr(config, "hybrid_exact_ratio") or not hasattr(config, "hybrid_chebyshev_degree"):
        raise ValueError(
            f"{name} is not a LLaDA-BS model: its config has no hybrid_exact_ratio / hybrid_chebyshev_degree "
            "(an official LLaDA directory?). Build one with: python scripts/prepare_model.py --source "
            f"{name} --out DIR"
        )
    return load_model_and_tokenizer(name, dtype, device)


def main(task_name: str | None = None, argv=None) -> list[dict]:
    """Parse the flags, load data and model (once), run every configuration (resuming), print a line each.

    Exits with status 2 and a one-line message on a bad flag, missing data, a model that is not a LLaDA-BS
    directory, or an output directory written by another configuration. Returns the summaries (rank 0).
    """
    a = build_parser(task_name).parse_args(argv)
    try:
        task = get_task(task_name or a.task)
        runs = [settings_from_args(a, task, r, d) for r, d in parse_configs(a)]
        items = load_items(task, a.data_path, a.limit)
    except (ValueError, DataError) as err:
        _fail(err)
    import torch
    from accelerate import PartialState

    # one process, or one of several under `accelerate launch --multi_gpu` / `torchrun`; without CUDA, accelerate
    # joins the processes (gloo) only when told it runs on CPU
    state = PartialState(cpu=a.device == "cpu" or not torch.cuda.is_available())
    if state.num_processes > 1:
        device = str(state.device)
    elif a.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = a.device
    default_sampler = {"steps": PAPER_STEPS_PER_BLOCK * (task.gen_length // PAPER_BLOCK_LENGTH),
                       "gen_length": task.gen_length, "block_length": PAPER_BLOCK_LENGTH,
                       "temperature": 0.0, "remasking": "low_confidence", "cfg_scale": 0.0}
    try:  # claim every output directory before the (slow) model load: a mismatch fails at once
        stores = [RecordStore(Path(a.out_dir) / task.name / config_name(s, default_sampler), s,
                              state.process_index, state.num_processes) for s in runs]
        model, tokenizer = load_bs_model(a.model_name, a.dtype, device)
    except (ValueError, ConfigMismatch) as err:
        _fail(err)
    from .runner import evaluate

    summaries = []
    for settings, store in zip(runs, stores):
        model.config.hybrid_exact_ratio = settings["exact_ratio"]
        model.config.hybrid_chebyshev_degree = settings["chebyshev_degree"]
        torch.manual_seed(settings["seed"])
        summary = evaluate(task, items, model, tokenizer, settings, store, batch_size=a.batch_size,
                           chat=settings["chat"], rank=state.process_index, world_size=state.num_processes,
                           wait_for_everyone=state.wait_for_everyone, progress=not a.no_progress)
        if summary is not None:
            summaries.append(summary)
            print(f"{task.title} [{store.dir.name}]: accuracy {summary['accuracy']:.4f} +- {summary['stderr']:.4f} "
                  f"(n={summary['n']}, unparsed {summary['unparsed']}) -> {store.dir / 'summary.json'}", flush=True)
    return summaries


def _fail(err):
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)
