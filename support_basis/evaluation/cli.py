"""The command line shared by the five runners (``scripts/run_<task>.py``): flags, model loading, one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ArgumentParser, UserError, check_output_dir, cli, number, positive_int
from ..llada.configuration_llada import KERNELS
from ..locking import DirLock
from ..model_dir import check_device, check_model_dir
from .answers import PARSERS
from .data import load_items
from .records import RecordStore, config_name
from .tasks import TASKS, get_task

from .protocols import PROTOCOLS, default_sampler


def build_parser(task_name: str | None = None) -> argparse.ArgumentParser:
    title = TASKS[task_name].title if task_name else "a benchmark"
    p = ArgumentParser(
        description=f"Evaluate a LLaDA-BS model on {title} by generation. --protocol paper (the default of the "
        "multiple-choice runners): the support-basis paper's prompts, gen_length 32 (64 for GPQA), 8 steps per "
        "32-token block; --protocol official (GSM8K's only one): LLaDA-8B-Instruct's published OpenCompass runs "
        "(their prompts, shots, splits, sampler settings and answer extraction). Temperature 0, chat template.",
    )
    if task_name is None:
        p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--protocol", default=None, choices=PROTOCOLS,
                   help="paper or official (default: paper; official for GSM8K); part of a run's identity")
    p.add_argument("--model_name", required=True, help="a LLaDA-BS model directory (scripts/prepare_model.py) or hub id")
    p.add_argument("--exact_ratio", type=float, default=0.2, help="hybrid_exact_ratio in [0, 1]; 1 = exact attention")
    p.add_argument("--chebyshev_degree", type=int, default=6, help="hybrid_chebyshev_degree in [1, 1024]")
    p.add_argument("--exact_split", type=float, default=0.5,
                   help="hybrid_exact_split: share of the exact budget for the largest scores (0.5 = paper)")
    p.add_argument("--fit", default="chebyshev", help="hybrid_fit: chebyshev (the paper) or empirical")
    p.add_argument("--kernel", default=None, choices=KERNELS,
                   help="hybrid_kernel: what computes the attention weights (default: the model's, normally auto; "
                   "the same definition whichever runs, so not part of a run's identity)")
    p.add_argument("--configs", nargs="+", default=None, metavar="RATIO:DEGREE",
                   help="several attention configurations in one process (model loaded once), e.g. "
                   "--configs exact 0.2:4 0.2:6; replaces --exact_ratio/--chebyshev_degree")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N items")
    p.add_argument("--batch_size", type=positive_int, default=8,
                   help="prompts per generate() call (results do not change)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="TOTAL denoising steps (default: the protocol's: paper 8 per block, official gen_length)")
    p.add_argument("--gen_length", type=positive_int, default=None,
                   help="answer tokens (default: the protocol's: paper 32 or 64; official 3 to 512, per task)")
    p.add_argument("--block_length", type=positive_int, default=None,
                   help="tokens per block (default: the protocol's: paper 32; official the gen_length)")
    p.add_argument("--confidence_eos_eot_inf", type=int, default=None, choices=[0, 1],
                   help="1: reveal predicted EOS/EoT last (LLaDA's option; default: the protocol's: official GPQA "
                   "and GSM8K 1, else 0)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"])
    p.add_argument("--cfg_scale", type=float, default=0.0)
    p.add_argument("--cache", default="none", choices=["none", "prefix", "dual"],
                   help="key/value cache of the fast sampler (generate.py): none (default), prefix, dual")
    p.add_argument("--threshold", type=float, default=None,
                   help="reveal every position with confidence >= THRESHOLD in (0, 1] per step (e.g. 0.9)")
    p.add_argument("--factor", type=float, default=None,
                   help="adaptive parallel decoding factor > 0 (e.g. 1.0); excludes --threshold")
    p.add_argument("--early_stop", type=int, default=0, choices=[0, 1],
                   help="1: stop an item once a revealed block holds EOS/EoT (its later positions become EOS)")
    p.add_argument("--suffix_window", type=int, default=None,
                   help="each forward computes only the next W masked positions after the block (Streaming-dLLM)")
    p.add_argument("--suffix_tail", type=int, default=None,
                   help="with --suffix_window/--suffix_dropout: also the last T positions (default 1; 0 with dropout)")
    p.add_argument("--suffix_dropout", default=None, choices=["gaussian", "uniform"],
                   help="DPad's suffix dropout over the first --suffix_window positions, drawn from --seed")
    p.add_argument("--threshold_alpha", type=float, default=None,
                   help="with --threshold T: T * (1 - A * (1 - masked share)), A in [0, 1] (Streaming-dLLM)")
    p.add_argument("--out_dir", default="results", help="results go to OUT_DIR/<task>/<config>/")
    p.add_argument("--data_path", default=None,
                   help="local data instead of the hub: a json/jsonl/parquet file, or a directory with <task>.jsonl "
                   "(official: arc_challenge_validation.jsonl, gpqa_diamond.jsonl, mmlu.jsonl + mmlu_dev.jsonl)")
    p.add_argument("--fewshot_path", default=None,
                   help="official MMLU's few-shot examples (cais/mmlu dev split) as a local file (default: "
                   "mmlu_dev.jsonl beside --data_path, else the hub)")
    p.add_argument("--seed", type=number(0, 2**63 - 1, integer=True), default=0,
                   help="seed of the sampling noise (temperature > 0 or random remasking), per item")
    p.add_argument("--answer_parser", default=None, choices=PARSERS,
                   help="how summary.json's accuracy reads an answer: reader (as a person would; the paper "
                   "protocol's default), paper (the paper's runners: the first standalone A-E), opencompass (what "
                   "the published figures scored; the official protocol's default), GSM8K also flexible/strict "
                   "(lm-eval's); records and summary.md carry every reading")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32 as the paper's runners; bfloat16 halves memory and time on a GPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--no_chat", action="store_true",
                   help="send the prompt raw, without the chat template (paper protocol only)")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--check_flags", action="store_true",
                   help="check every flag and --out_dir, then exit: no model loaded, no data read, nothing written "
                   "(run_all.sh runs it for each task before it starts)")
    return p


def parse_configs(a) -> list[tuple[float, int]]:
    """``--configs`` (``exact`` or ``RATIO:DEGREE`` each) or the single ``--exact_ratio``/``--chebyshev_degree``.
    A configuration listed twice (``0.2:4 0.20:4``, or ``exact 1:4``: exact attention has no degree) runs once."""
    if not a.configs:
        return [(a.exact_ratio, a.chebyshev_degree)]
    out = []
    for c in a.configs:
        try:
            ratio, degree = (1.0, 6) if c == "exact" else c.split(":")
            pair = (float(ratio), int(degree))
        except ValueError:
            raise ValueError(f"--configs entry {c!r} is not 'exact' or RATIO:DEGREE (e.g. 0.2:6)") from None
        pair = (1.0, 6) if pair[0] == 1 else pair
        if pair not in out:
            out.append(pair)
    return out


STREAMING_DEFAULTS = {"early_stop": False, "suffix_window": None, "suffix_tail": None, "suffix_dropout": None,
                      "threshold_alpha": None}
"""The sampler's decode-only-what-matters options (``support_basis.sampling.generate``) and their off values."""
STREAMING_KEYS = tuple(STREAMING_DEFAULTS)


def settings_from_args(a, task, exact_ratio: float, chebyshev_degree: int) -> dict:
    from ..llada.configuration_llada import (
        validate_chebyshev_degree,
        validate_exact_ratio,
        validate_exact_split,
        validate_fit,
    )
    from ..sampling import check_fast_sampling

    check_fast_sampling(a.cache, a.threshold, a.factor, a.remasking, flags={
        "cache": "--cache", "threshold": "--threshold", "factor": "--factor", "remasking": "--remasking"})
    protocol = protocol_of(a, task)
    spec = task.source(protocol)
    if protocol == "official" and a.no_chat:
        raise ValueError("--no_chat: the official protocol sends every prompt through the chat template, as the "
                         "published runs did; drop --no_chat or use --protocol paper")
    if a.fewshot_path and not spec.shots_split:
        raise ValueError(f"--fewshot_path: {task.name} under --protocol {protocol} takes no few-shot examples from "
                         "a split (only official MMLU does); drop it")
    parser = a.answer_parser or ("opencompass" if protocol == "official" else task.parsers[0])
    if parser not in task.parsers:
        raise ValueError(f"--answer_parser {parser}: {task.title} answers are read by {', '.join(task.parsers)}")
    base = default_sampler(task.name, protocol, task.gen_length)
    steps, gen_length, block_length = _schedule(a, protocol, base)
    eos_last = base.confidence_eos_eot_inf if a.confidence_eos_eot_inf is None else bool(a.confidence_eos_eot_inf)
    if a.data_path:
        data = str(Path(a.data_path).resolve())
    else:
        data = f"hub:{task.hub_id}/{spec.hub_config}/{spec.split}"
    if spec.shots_split:
        data += " + shots " + (str(Path(a.fewshot_path).resolve()) if a.fewshot_path
                               else "beside it" if a.data_path else f"hub:{spec.shots_split}")
    model = str(Path(a.model_name).resolve()) if Path(a.model_name).exists() else a.model_name
    from .records import model_fingerprint

    split, fit = validate_exact_split(a.exact_split, "--exact_split"), validate_fit(a.fit, "--fit")
    return {
        "task": task.name,
        "protocol": protocol,
        "model": model,
        "exact_ratio": validate_exact_ratio(exact_ratio, "--exact_ratio"),
        "chebyshev_degree": validate_chebyshev_degree(chebyshev_degree, "--chebyshev_degree"),
        # exact attention (ratio 1) ignores both: keep them at the paper's values so its directory is shared
        "exact_split": split if exact_ratio < 1 else 0.5,
        "fit": fit if exact_ratio < 1 else "chebyshev",
        "steps": steps,
        "gen_length": gen_length,
        "block_length": block_length,
        "temperature": a.temperature,
        "remasking": a.remasking,
        "cfg_scale": a.cfg_scale,
        "cache": a.cache,
        "threshold": a.threshold,
        "factor": a.factor,
        **{k: (bool(getattr(a, k)) if k == "early_stop" else getattr(a, k)) for k in STREAMING_KEYS},
        "confidence_eos_eot_inf": eos_last,
        "dtype": a.dtype,
        "seed": a.seed,
        "data": data,
        "chat": not a.no_chat,
        "limit": a.limit,
        "batch_size": a.batch_size,
        "answer_parser": parser,
        "model_fp": model_fingerprint(model),  # the weights themselves: a model retrained in place is another run
    }


def _schedule(a, protocol: str, base) -> tuple[int, int, int]:
    """``(steps, gen_length, block_length)`` of a run: the flags, else the protocol's (``base``), checked with the
    decode-only-what-matters options (``ValueError`` naming the flag)."""
    from ..sampling import check_schedule, check_streaming
    from ..suffix import SuffixRule

    gen_length = a.gen_length or base.gen_length
    # a changed answer length keeps the protocol's shape: the paper's 32-token blocks, or one block (official)
    block_length = a.block_length or (base.block_length if protocol == "paper" or not a.gen_length else gen_length)
    if gen_length % block_length:
        raise ValueError(f"--gen_length ({gen_length}) must be a multiple of --block_length ({block_length})")
    if a.steps is not None:
        steps = a.steps
    elif protocol == "paper":
        steps = (base.steps // (base.gen_length // base.block_length)) * (gen_length // block_length)
    else:
        steps = gen_length  # the published runs: one token per step
    check_schedule(steps, gen_length, block_length, a.remasking, a.temperature, a.cfg_scale)
    check_streaming(SuffixRule(a.suffix_window, a.suffix_tail, a.suffix_dropout), gen_length, block_length,
                    a.threshold, a.threshold_alpha,
                    flags={k: f"--{k}" for k in STREAMING_KEYS if k != "early_stop"} | {"threshold": "--threshold"})
    if steps > gen_length:  # a step reveals at least one token: the rest would only repeat forwards
        raise ValueError(f"--steps ({steps}) is more than the answer length ({gen_length} tokens): at most "
                         f"{gen_length} steps reveal anything; give --steps {gen_length} or fewer")
    return steps, gen_length, block_length


def protocol_of(a, task) -> str:
    """The protocol a run follows: ``--protocol``, else the task's first (paper; GSM8K: official)."""
    return a.protocol or next(iter(task.protocols))


def default_settings(task, protocol: str) -> dict:
    """The sampler settings a run of ``protocol`` has unless flags change them (a config name lists the others)."""
    base = default_sampler(task.name, protocol, task.gen_length)
    return {"steps": base.steps, "gen_length": base.gen_length, "block_length": base.block_length,
            "temperature": 0.0, "remasking": "low_confidence", "cfg_scale": 0.0, "cache": "none", "threshold": None,
            "factor": None, "confidence_eos_eot_inf": base.confidence_eos_eot_inf, **STREAMING_DEFAULTS}


@cli
def main(task_name: str | None = None, argv=None) -> list[dict]:
    """Parse the flags, load data and model (once), run every configuration (resuming), print a line each.

    Everything a person can get wrong is checked before the model loads (flags, --out_dir, the model directory,
    --device, the data, the output directories' earlier runs) and reported as one line on stderr with exit
    status 2 (``support_basis.errors``); nothing is written before the first record. Returns the summaries
    (rank 0).
    """
    a = build_parser(task_name).parse_args(argv)
    try:
        task = get_task(task_name or a.task)
        runs = [settings_from_args(a, task, r, d) for r, d in parse_configs(a)]
    except ValueError as err:
        raise UserError(str(err)) from None
    check_output_dir(a.out_dir, "--out_dir")
    if a.check_flags:
        return []
    check_model_dir(a.model_name, "--model_name")
    device_type = check_device(a.device).split(":")[0]
    if a.kernel:
        from ..llada.hybrid_attention import kernel_problem

        if kernel_problem(a.kernel, device_type):
            raise UserError(f"--kernel {a.kernel}: {kernel_problem(a.kernel, device_type)}")
    items = load_items(task, a.data_path, a.limit, runs[0]["protocol"], a.fewshot_path)
    import torch
    from accelerate import PartialState

    from ..process_group import import_before_joining

    import_before_joining()  # before the group exists (see support_basis/process_group.py)
    # one process, or one of several under `accelerate launch --multi_gpu` / `torchrun`; without CUDA, accelerate
    # joins the processes (gloo) only when told it runs on CPU
    state = PartialState(cpu=a.device == "cpu" or not torch.cuda.is_available())
    if state.num_processes > 1:
        device = str(state.device)
    elif a.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = a.device
    defaults = default_settings(task, runs[0]["protocol"])
    # check every output directory's earlier runs before the (slow) model load: a mismatch fails at once
    stores = [RecordStore(Path(a.out_dir) / task.name / config_name(s, defaults), s,
                          state.process_index, state.num_processes) for s in runs]
    for store in stores:
        store.check_items(items, complete=a.limit is None or len(items) < a.limit)
    lock = _lock_task_folder(Path(a.out_dir), task.name) if state.process_index == 0 else None
    try:
        return _run_configs(a, task, runs, stores, items, device, state)
    finally:
        if lock is not None:
            lock.release()


def _lock_task_folder(out_dir: Path, task: str) -> "TaskLock":
    """One run per ``OUT/<task>`` at a time (the ranks of one run share it): a :class:`UserError` naming the
    holder, before the model loads."""
    lock = TaskLock(out_dir, task)
    holder = lock.acquire()
    if holder is not None:
        raise UserError(f"--out_dir {out_dir}: {task} is being written by {holder} ({lock.path}); wait for that "
                        "run to finish (a rerun then resumes), or give another --out_dir")
    return lock


class TaskLock(DirLock):
    """The lock file ``OUT/<task>/.lock``; released, it is removed with the folders it alone made (a run refused
    after taking it leaves nothing behind)."""

    def __init__(self, out_dir: Path, task: str):
        super().__init__(out_dir / task / ".lock")
        self._made = [d for d in (out_dir, out_dir / task) if not d.exists()]

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            for folder in reversed(self._made):
                try:
                    folder.rmdir()  # only if empty: a run's records stay
                except OSError:
                    pass
        super().release()


def _run_configs(a, task, runs, stores, items, device, state) -> list[dict]:
    """Load the model once and evaluate every configuration (rank 0 returns the summaries)."""
    import torch

    from ..process_group import leave_process_group
    from ..loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(a.model_name, a.dtype, device, "--model_name", hybrid_kernel=a.kernel)
    from .runner import evaluate

    summaries = []
    try:
        for settings, store in zip(runs, stores):
            model.config.hybrid_exact_ratio = settings["exact_ratio"]
            model.config.hybrid_chebyshev_degree = settings["chebyshev_degree"]
            model.config.hybrid_exact_split = settings["exact_split"]
            model.config.hybrid_fit = settings["fit"]
            torch.manual_seed(settings["seed"])
            summary = evaluate(task, items, model, tokenizer, settings, store, batch_size=a.batch_size,
                               chat=settings["chat"], rank=state.process_index, world_size=state.num_processes,
                               wait_for_everyone=state.wait_for_everyone, progress=not a.no_progress)
            if summary is not None:
                summaries.append(summary)
                others = "; ".join(f"{q} {summary['by_parser'][q]['accuracy']:.4f}" for q in task.parsers
                                   if q != summary["answer_parser"])
                print(f"{task.title} [{store.dir.name}]: accuracy {summary['accuracy']:.4f} +- "
                      f"{summary['stderr']:.4f} ({summary['answer_parser']}; n={summary['n']}, unparsed "
                      f"{summary['unparsed']}; {others}) -> {store.dir / 'summary.json'}", flush=True)
    finally:
        leave_process_group()  # before interpreter shutdown (see support_basis/process_group.py)
    return summaries


def console_main() -> int:
    """``llada-eval``: :func:`main` as a console script, whose return value is the exit status (the summaries
    are printed, not returned: a list would be printed to stderr with status 1)."""
    main()
    return 0
