#!/usr/bin/env python
"""Masked-diffusion SFT of a LLaDA(-BS) model directory: LLaDA's objective, seeded, resumable, atomic checkpoints.

    # the shipped tiny model (support_basis/checkpoints/llada-tiny), from scratch on the synthetic tasks, on a CPU:
    python scripts/make_tiny_model.py /tmp/llada-tiny-init --tokenizer-corpus synthetic --vocab-size 2560 \\
        --d-model 128 --n-layers 4 --n-heads 4 --mlp-hidden-size 512 --max-sequence-length 512 --rope-theta 10000 \\
        --weight-tying
    python scripts/train_llada.py --model /tmp/llada-tiny-init --out support_basis/checkpoints/llada-tiny \\
        --steps 15000 --batch-size 32 --lr 1e-3 --eval-every 1000 --eval-n 16 --save-every 500 --threads 2 --force

    # SFT of LLaDA-8B-Instruct-BS on a GPU, from a JSONL file of {"prompt", "response"} or {"messages"} rows:
    python scripts/train_llada.py --model models/LLaDA-8B-Instruct-BS --data sft.jsonl --out runs/sft \\
        --precision bf16 --batch-size 1 --grad-accum 64 --lr 1e-5 --warmup 50 --steps 2000 --min-response 64

Objective (``support_basis/training/loss.py``): prompt tokens never masked; each response token (answer,
``<|eot_id|>``, EOS filling to the batch's length) masked with probability ``t ~ U(eps, 1)`` drawn per sequence;
cross-entropy on the masked tokens weighted by ``1/t`` and normalised by the response length. Attention is exact
while training (``hybrid_exact_ratio`` is set to 1 for the run and restored in the exported config).

Every batch and every mask draw is a function of ``(--seed, step)``, so a run killed at any point and continued
with ``--resume`` ends with the same weights as an uninterrupted run. ``OUT.state/state.pt`` (weights, optimizer,
step, learning curve) is replaced atomically every ``--save-every`` steps; ``OUT`` (a complete model directory
with ``training_log.jsonl``) is swapped in atomically at the same time.

Nothing it did not write is deleted: an existing ``--out`` that is not a model directory written by training (or
holds other files) is refused unless ``--force``, an ``--out`` that contains ``--model`` is refused, the staging
directories are its own (``.OUT.partial-*``, never a user's ``OUT.partial``), and ``OUT.state/lock`` keeps a
second run off the same ``--out`` (it names the process holding it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from support_basis.errors import ArgumentParser, cli  # no torch import: --help is quick


PRECISIONS = ("fp32", "bf16-autocast", "bf16")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the LLaDA-BS model directory to start from")
    p.add_argument("--out", required=True, help="where the trained model directory is written")
    p.add_argument("--data", default="synthetic", help="'synthetic' (the built-in task family) or a JSONL file")
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps (default 5000)")
    p.add_argument("--batch-size", type=int, default=48, help="sequences per micro-batch (default 48)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay down to lr * this (default 0.1)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (default 200)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    p.add_argument("--eps", type=float, default=1e-3, help="smallest masking probability (LLaDA: 1e-3)")
    p.add_argument("--pretrain-share", type=float, default=0.0,
                   help="share of micro-batches trained with LLaDA's pre-training objective instead (every token, "
                   "prompt included, may be masked); default 0 = pure SFT")
    p.add_argument("--min-response", type=int, default=0,
                   help="JSONL data: fill every response with EOS to at least this many tokens")
    p.add_argument("--kinds", default=None, help="synthetic data: comma-separated subset of the task kinds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=250, help="checkpoint interval in steps (default 250)")
    p.add_argument("--eval-every", type=int, default=500,
                   help="synthetic data: held-out accuracy every N steps for the learning curve (0 = off)")
    p.add_argument("--eval-n", type=int, default=32, help="held-out problems per kind in those evaluations")
    p.add_argument("--log-every", type=int, default=50, help="learning-curve interval in steps (default 50)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="checkpoint and exit after this many steps of this invocation (time-limited jobs); "
                   "continue with --resume")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 weights; fp32 weights with bf16 autocast (GPU); or bf16 weights (GPU, large models)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state/state.pt")
    p.add_argument("--force", action="store_true",
                   help="let an existing --out that training did not write be replaced at the first save (its "
                   "contents are deleted then)")
    p.add_argument("--no-progress", action="store_true")
    return p


def check_args(p: ArgumentParser, a) -> None:
    """Every flag checked before anything heavy is imported or loaded (one line, exit 2)."""
    for name in ("steps", "batch_size", "grad_accum", "save_every", "eval_n", "log_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(a, name)}")
    for name in ("warmup", "eval_every", "min_response"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0; got {getattr(a, name)}")
    if not (math.isfinite(a.lr) and 0 < a.lr <= 1):
        p.error(f"--lr must be in (0, 1]; got {a.lr}")
    if not 0 <= a.min_lr_ratio <= 1:
        p.error(f"--min-lr-ratio must be in [0, 1]; got {a.min_lr_ratio}")
    if not (math.isfinite(a.weight_decay) and a.weight_decay >= 0):
        p.error(f"--weight-decay must be >= 0; got {a.weight_decay}")
    if not (math.isfinite(a.grad_clip) and a.grad_clip >= 0):
        p.error(f"--grad-clip must be >= 0 (0 = off); got {a.grad_clip}")
    if not 0 <= a.pretrain_share <= 1:
        p.error(f"--pretrain-share must be in [0, 1]; got {a.pretrain_share}")
    if not 0 < a.eps < 1:
        p.error(f"--eps must be in (0, 1); got {a.eps}")
    if a.stop_after is not None and a.stop_after < 1:
        p.error(f"--stop-after must be >= 1; got {a.stop_after}")
    if a.save_every % a.log_every:
        p.error(f"--save-every ({a.save_every}) must be a multiple of --log-every ({a.log_every}), so that a resumed "
                "run logs the same curve")
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1; got {a.threads}")
    model = Path(a.model)
    from support_basis.errors import UserError
    from support_basis.model_dir import check_model_dir

    try:  # the one check every entry point makes: files, config ranges, weights against the config, tokenizer
        check_model_dir(a.model, "--model")
    except UserError as err:
        p.error(str(err))
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {a.out} is a file; give a directory path")
    if out.resolve() == model.resolve():
        p.error(f"--out {a.out} is the --model directory; write the trained model elsewhere")
    if out.resolve() in model.resolve().parents:
        p.error(f"--out {a.out} contains the --model directory ({a.model}): the first save would replace it; "
                "write the trained model elsewhere")
    from support_basis.training.checkpoint import foreign_entries

    foreign = foreign_entries(out)
    if foreign and not a.force:
        p.error(f"--out {a.out} exists and holds what training did not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); give a new directory, or --force to let the first save "
                "replace it")
    state = state_path(out)
    finished = [n for n in ("model.safetensors", "model.safetensors.index.json") if (out / n).is_file()]
    if finished and not a.resume and not a.force:  # a model from an earlier run (or the shipped one): never replaced
        p.error(f"--out {a.out} holds a finished model ({finished[0]}) that this run did not start; give a new "
                "directory, --resume to continue the run that wrote it, or --force to replace it")
    if a.resume and not state.is_file():
        p.error(f"--resume: no checkpoint at {state}; start without --resume")
    if not a.resume and state.is_file():
        p.error(f"{state} exists: add --resume to continue that run, or delete {state.parent} to start over")
    if a.data != "synthetic" and not Path(a.data).is_file():
        p.error(f"--data {a.data}: no such file; give 'synthetic' or a JSONL file of prompt/response rows")
    if a.kinds is not None:
        from support_basis.synthetic import KINDS

        bad = [k for k in a.kinds.split(",") if k not in KINDS]
        if bad or not a.kinds:
            p.error(f"--kinds {a.kinds}: unknown kind(s) {', '.join(bad)}; the kinds are {', '.join(KINDS)}")
    if a.device.startswith("cuda") or a.precision != "fp32":
        import torch

        if a.device.startswith("cuda") and not torch.cuda.is_available():
            p.error(f"--device {a.device}: CUDA is not available on this machine; use --device cpu")
        if a.precision != "fp32" and not (torch.cuda.is_available() and a.device != "cpu"):
            p.error(f"--precision {a.precision} needs a GPU; use --precision fp32 on a CPU")


def state_path(out: Path) -> Path:
    return Path(str(Path(out)) + ".state") / "state.pt"


# The arguments a resumed run must share with the run it continues (the rest may change, e.g. --save-every).
RUN_IDENTITY = ("model", "data", "steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup",
                "weight_decay", "grad_clip", "eps", "pretrain_share", "min_response", "kinds", "seed", "precision")


def lr_at(step: int, a) -> float:
    """Linear warm-up to ``--lr``, then cosine decay to ``--lr * --min-lr-ratio`` at ``--steps``."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    progress = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@cli
def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a)

    from support_basis.training.checkpoint import RunLock

    lock = RunLock(Path(a.out))
    holder = lock.acquire()
    if holder is not None:
        p.error(f"--out {a.out} is being trained by {holder} ({lock.path}); wait for it, or use another --out")
    try:
        return _run(p, a)
    finally:
        lock.release(keep_if=state_path(Path(a.out)))


def _run(p: ArgumentParser, a) -> int:
    """The training run itself, under the lock on ``--out``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from support_basis.llada import register_auto_classes
    from support_basis.llada.configuration_llada import ConfigValueError
    from support_basis.loading import load_weights
    from support_basis.model_dir import load_config

    from support_basis.training.checkpoint import export_model, load_state, save_state
    from support_basis.training.data import DataError, Encoder, JsonlSource, SyntheticSource
    from support_basis.training.loss import sft_loss

    if a.threads:
        torch.set_num_threads(a.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    identity = {k: getattr(a, k) for k in RUN_IDENTITY} | {"model": str(Path(a.model).resolve())}
    state = None
    if a.resume:
        state = load_state(state_path(Path(a.out)))
        changed = {k: (state["args"].get(k), v) for k, v in identity.items() if state["args"].get(k) != v}
        if changed:
            k, (old, new) = next(iter(changed.items()))
            p.error(f"--resume: --{k.replace('_', '-')} was {old!r} in the run being resumed, now {new!r}; "
                    "resume with the same settings or start a new --out")

    try:  # the tokenizer and the data first: a bad data file is refused before the weights load
        register_auto_classes()  # the tokenizer's config lookup finds the package's "llada"
        tokenizer = AutoTokenizer.from_pretrained(a.model)
    except (OSError, ValueError) as err:
        p.error(f"--model {a.model}: cannot be loaded ({str(err).splitlines()[0]})")
    encoder = Encoder(tokenizer)
    try:
        if a.data == "synthetic":
            from support_basis.synthetic import KINDS

            source = SyntheticSource(encoder, a.seed, tuple(a.kinds.split(",")) if a.kinds else KINDS)
        else:
            source = JsonlSource(a.data, encoder, a.seed, a.min_response)
            source.check_lengths(load_config(a.model).max_sequence_length)  # a row too long fails now, not mid-run
    except DataError as err:
        p.error(str(err))
    try:
        model = load_weights(a.model, load_config(a.model),
                             torch.bfloat16 if a.precision == "bf16" else torch.float32)
    except (OSError, ConfigValueError) as err:
        p.error(f"--model {a.model}: cannot be loaded ({str(err).splitlines()[0]})")

    ratio = model.config.hybrid_exact_ratio
    model.config.hybrid_exact_ratio = 1.0  # train with exact attention; the export keeps the configured knobs
    model.to(device).train()
    trained = list(model.named_parameters())
    decay = [q for n, q in trained if q.dim() >= 2]
    no_decay = [q for n, q in trained if q.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    log: list[dict] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, log = state["step"], state["log"]
    elapsed0 = log[-1]["elapsed_s"] if log else 0.0
    t0 = time.time()
    mask_id = model.config.mask_token_id
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16-autocast")
    gen = torch.Generator(device=device)

    def checkpoint(step):
        cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_state(state_path(Path(a.out)), {"model": cpu_state, "optimizer": optimizer.state_dict(), "step": step,
                                             "log": log, "args": identity})
        model.config.hybrid_exact_ratio = ratio
        try:
            export_model(Path(a.out), model, tokenizer, Path(a.model),
                         {"training_log.jsonl": "".join(json.dumps(r) + "\n" for r in log),
                          "training_args.json": json.dumps(vars(a), indent=2, sort_keys=True) + "\n"})
        finally:
            model.config.hybrid_exact_ratio = 1.0

    bar = tqdm(range(start, a.steps), initial=start, total=a.steps, disable=a.no_progress, desc="train",
               dynamic_ncols=True)
    window, done = [], start
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, a)
        total = 0.0
        for micro in range(a.grad_accum):
            ids, response = source.batch(step * a.grad_accum + micro, a.batch_size, step / a.steps)
            gen.manual_seed(hash((a.seed, step, micro)) & 0x7FFFFFFF)
            if a.pretrain_share and torch.rand((), generator=gen) < a.pretrain_share:
                response = torch.ones_like(response)  # pre-training: the whole sequence is the "response"
            with autocast:
                loss = sft_loss(model, ids.to(device), response.to(device), mask_id, a.eps, gen)
            (loss / a.grad_accum).backward()
            total += float(loss.detach()) / a.grad_accum
        if not math.isfinite(total):
            raise FloatingPointError(f"loss is {total} at step {step}; lower --lr or check the data")
        if a.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(total)
        bar.set_postfix(loss=f"{sum(window[-50:]) / len(window[-50:]):.4f}", lr=f"{lr_at(step, a):.2e}")
        done = step + 1
        if done % a.log_every == 0 or done == a.steps:
            entry = {"step": done, "loss": sum(window) / len(window), "lr": lr_at(step, a),
                     "elapsed_s": round(elapsed0 + time.time() - t0, 1)}
            window = []
            if a.data == "synthetic" and a.eval_every and (done % a.eval_every == 0 or done == a.steps):
                from support_basis.training.evaluate import quick_eval

                entry["heldout"] = quick_eval(model, tokenizer, a.eval_n, source.kinds)
                bar.write(f"step {done}: loss {entry['loss']:.4f} held-out " +
                          " ".join(f"{k} {v:.2f}" for k, v in entry["heldout"].items()))
            log.append(entry)
        if done % a.save_every == 0 or done == a.steps or (a.stop_after and done - start == a.stop_after):
            checkpoint(done)
        if a.stop_after and done - start == a.stop_after:
            break
    bar.close()
    print(f"trained {done} of {a.steps} steps in {(elapsed0 + time.time() - t0) / 60:.1f} min; model written to "
          f"{a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
