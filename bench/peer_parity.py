#!/usr/bin/env python
"""Token and NFE parity of the sampler's early stop, pruned suffix and context-aware threshold with the peers' own
code, run from a fetched checkout (never copied here) on the shipped tiny LLaDA.

    python bench/peer_parity.py --streaming PATH/Streaming-dLLM            # its LLaDA-1.5/generate.py
    python bench/peer_parity.py --dpad PATH/DPad                            # its llada/generate_dropout.py
    python bench/peer_parity.py --streaming PATH --gen-lengths 64 128 256 --n 8

Streaming-dLLM's ``generate_with_prefix_cache`` (window + tail via ``deterministic_window_tail_sampler``, early
stop on EOS, ``context_aware_threshold``) runs in a subprocess whose working directory is the peer's
``LLaDA-1.5`` folder (its own imports resolve there), on this project's tiny LLaDA through a thin adapter that
speaks the peer's model protocol (``model(x, use_cache, position_ids, past_key_values)`` with a list of per-layer
``(k, v)`` truncated to the prefix): the adapter fills this model's window call (``past_key_values`` +
``cache_position``) and gives the mask token a -inf logit as this sampler does, so the model's arithmetic is the
same on both sides and only the algorithms are compared. Ours
is ``generate(cache="prefix", suffix_window=W, suffix_tail=1, early_stop=True, threshold=T, threshold_alpha=A)``
with EOS as the only stop token and no EOS-last ranking (the peer has neither).

DPad's ``generate`` and ``generate_with_dual_cache`` (suffix dropout, early termination) run the same way (their
folder ``llada``; their model protocol: ``q_indices`` are the positions, ``replace_position`` the dual cache's
block), with the uniform schedule: both sides draw the kept indices from torch's global CPU generator, seeded
alike before each prompt (``torch.manual_seed``), so the index sets are equal by construction. The Gaussian
schedule cannot run there on a CPU: its ``pdf`` is built with ``device='cuda'``. Needs ``einops`` (DPad's model
module imports it). Each peer is skipped (one line) when its path is absent. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import emit_json, machine, print_table

# runs in the peer's folder: its generate.py and sampler.py import from there
PEER = r'''
import json, sys, types
import torch
from support_basis.loading import load_model_and_tokenizer
from support_basis.sampling import returned_cache

job = json.loads(sys.stdin.read())
model, _ = load_model_and_tokenizer(job["model"], "float32", "cpu")
model.config.hybrid_exact_ratio = job["ratio"]


def no_mask(logits):
    """The mask token's logit at -inf, as this project's sampler sets it: a trained LLaDA never predicts it (this
    changes nothing there), a random model may, and the peers would then loop on a position that never unmasks."""
    logits[..., job["mask_id"]] = -torch.inf
    return logits


class Adapter:
    """The peer's model protocol over this project's LLaDA: a full forward returns the cache; a call with the
    prefix cache computes the window after it at the given positions."""
    device = torch.device("cpu")

    def __call__(self, x, use_cache=False, position_ids=None, past_key_values=None):
        with torch.no_grad():
            if past_key_values is None:
                out = model(x, position_ids=position_ids, use_cache=use_cache)
                return types.SimpleNamespace(logits=no_mask(out.logits), past_key_values=returned_cache(out))
            start = past_key_values[0][0].shape[2]
            pad = lambda t: torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], x.shape[1], t.shape[3])], 2)
            cache = tuple((pad(k), pad(v)) for k, v in past_key_values)
            out = model(x, past_key_values=cache, cache_position=start,
                        position_ids=position_ids[:, start : start + x.shape[1]])
            return types.SimpleNamespace(logits=no_mask(out.logits))


class DPadAdapter:
    """DPad's model protocol: ``q_indices`` are the positions; with ``past_key_values`` the block at
    ``replace_position`` is computed against the cached pruned sequence (the dual cache)."""
    device = torch.device("cpu")

    def __call__(self, x, use_cache=False, q_indices=None, k_indices=None, seq_len=None, update_rope=None,
                 past_key_values=None, replace_position=None):
        with torch.no_grad():
            if past_key_values is None:
                out = model(x, position_ids=q_indices, use_cache=use_cache)
                return types.SimpleNamespace(logits=no_mask(out.logits),
                                             past_key_values=returned_cache(out) if use_cache else None)
            start = int(replace_position[0].nonzero()[0])
            out = model(x, past_key_values=past_key_values, cache_position=start, position_ids=q_indices)
            return types.SimpleNamespace(logits=no_mask(out.logits), past_key_values=past_key_values)


if job["peer"] == "dpad":
    import generate_dropout
    fn = generate_dropout.generate_with_dual_cache if job["cache"] == "dual" else generate_dropout.generate
    results = []
    for ids in job["prompts"]:
        torch.manual_seed(job["seed"])
        x, nfe = fn(DPadAdapter(), torch.tensor([ids]), steps=job["gen_length"], gen_length=job["gen_length"],
                    block_length=job["block_length"], mask_id=job["mask_id"], eos_id=job["eos_id"],
                    threshold=job["threshold"], dropout="uniform", preserved_tokens=job["keep"],
                    window=job["window"], early_termination=True)
        results.append({"tokens": x[0, len(ids):].tolist(), "nfe": int(nfe)})
    print(json.dumps(results))
    sys.exit(0)

from generate import generate_with_prefix_cache
results = []
for ids in job["prompts"]:
    prompt = torch.tensor([ids])
    x, nfe = generate_with_prefix_cache(Adapter(), prompt, steps=job["gen_length"], gen_length=job["gen_length"],
                                        block_length=job["block_length"], mask_id=job["mask_id"],
                                        eos_id=job["eos_id"], threshold=job["threshold"], window_size=job["window"],
                                        confidence_alpha=job["alpha"])
    results.append({"tokens": x[0, len(ids):].tolist(), "nfe": int(nfe)})
print(json.dumps(results))
'''


def prompts(tokenizer, n: int) -> list[list[int]]:
    """``n`` held-out synthetic questions (kinds interleaved), through the chat template."""
    from support_basis.loading import tokenize_prompts
    from support_basis.synthetic import KINDS
    from support_basis.synthetic.problems import heldout_problems

    per_kind = [heldout_problems(kind, n, seed=77) for kind in KINDS]
    questions = [p.question for group in zip(*per_kind) for p in group][:n]
    return tokenize_prompts(tokenizer, questions, chat=True)


def ours(model, ids, job) -> list[dict]:
    import torch

    from support_basis.sampling import generate
    from support_basis.suffix import SuffixRule

    out = []
    if job["peer"] == "dpad":  # the kept indices from the global CPU generator, seeded as the peer's side
        for prompt in ids:
            torch.manual_seed(job["seed"])
            x, nfe = generate(model, torch.tensor([prompt]), steps=job["gen_length"], gen_length=job["gen_length"],
                              block_length=job["block_length"], cache=job["cache"], threshold=job["threshold"],
                              suffix_rule=SuffixRule(window=job["window"], dropout="uniform", keep=job["keep"]),
                              early_stop=True, eot_token_id=None, eos_token_id=job["eos_id"], return_nfe=True)
            out.append({"tokens": x[0, len(prompt):].tolist(), "nfe": int(nfe[0])})
        return out
    for prompt in ids:
        x, nfe = generate(model, torch.tensor([prompt]), steps=job["gen_length"], gen_length=job["gen_length"],
                          block_length=job["block_length"], cache="prefix", threshold=job["threshold"],
                          threshold_alpha=job["alpha"] if job["threshold"] is not None else None,
                          suffix_window=job["window"], suffix_tail=1, early_stop=True, eot_token_id=None,
                          eos_token_id=job["eos_id"], return_nfe=True)
        out.append({"tokens": x[0, len(prompt):].tolist(), "nfe": int(nfe[0])})
    return out


def peer(folder: Path, job: dict) -> list[dict]:
    res = subprocess.run([sys.executable, "-c", PEER], cwd=folder, input=json.dumps(job), capture_output=True,
                         text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"peer_parity.py: the peer's code failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streaming", default=None, help="a checkout of xiaoshideta/Streaming-dLLM")
    p.add_argument("--dpad", default=None, help="a checkout of Crys-Chen/DPad")
    p.add_argument("--model", default=None, help="model directory (default: the shipped tiny LLaDA)")
    p.add_argument("--gen-lengths", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--window", type=int, default=32, help="the peers' window (default 32, Streaming-dLLM's)")
    p.add_argument("--keep", type=int, default=8, help="DPad's uniform preserved_tokens (default 8)")
    p.add_argument("--thresholds", default="none,0.9", help="comma list: none (the fixed schedule) and/or T")
    p.add_argument("--alpha", type=float, default=0.3, help="Streaming-dLLM's confidence_alpha (default 0.3)")
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.2], help="exact ratios (attention)")
    p.add_argument("--n", type=int, default=8, help="held-out prompts per setting")
    a = p.parse_args(argv)
    peers = []
    for flag, name, sub, modes in (("streaming", "Streaming-dLLM", "LLaDA-1.5", ["prefix"]),
                                   ("dpad", "DPad", "llada", ["none", "dual"])):
        path = getattr(a, flag)
        folder = Path(path or "").expanduser() / sub
        if path is None or not folder.is_dir():
            print(f"peer_parity.py: {name} skipped: no checkout at {path!r} (pass --{flag} PATH)", file=sys.stderr)
            continue
        peers += [(flag, name, folder, mode) for mode in modes]
    if not peers:
        return 0
    from support_basis.loading import DEFAULT_MODEL, load_model_and_tokenizer

    model_dir = a.model or str(DEFAULT_MODEL)
    model, tokenizer = load_model_and_tokenizer(model_dir, "float32", "cpu")
    ids = prompts(tokenizer, a.n)
    rows = []
    for flag, name, folder, cache in peers:
        for ratio in a.ratios:
            model.config.hybrid_exact_ratio = ratio
            for gen_length in a.gen_lengths:
                for t in a.thresholds.split(","):
                    threshold = None if t == "none" else float(t)
                    job = dict(peer=flag, cache=cache, model=model_dir, ratio=ratio, prompts=ids,
                               gen_length=gen_length, block_length=a.block_length, mask_id=model.config.mask_token_id,
                               eos_id=model.config.eos_token_id, threshold=threshold, window=a.window, alpha=a.alpha,
                               keep=a.keep, seed=0)
                    theirs, mine = peer(folder, job), ours(model, ids, job)
                    rows.append(dict(peer=name, cache=cache, attention="exact" if ratio >= 1 else f"hybrid {ratio:g}/6",
                                     gen_length=gen_length, threshold=t, prompts=len(ids),
                                     same_tokens=sum(x["tokens"] == y["tokens"] for x, y in zip(theirs, mine)),
                                     same_nfe=sum(x["nfe"] == y["nfe"] for x, y in zip(theirs, mine)),
                                     nfe_ours=sum(y["nfe"] for y in mine) / len(mine),
                                     nfe_peer=sum(x["nfe"] for x in theirs) / len(theirs)))
                    print(f"  {rows[-1]}", flush=True)
    print_table(rows, [("peer", "peer", "s"), ("cache", "cache", "s"), ("attention", "attention", "s"),
                       ("gen_length", "gen", "d"), ("threshold", "threshold", "s"), ("prompts", "prompts", "d"),
                       ("same_tokens", "same tokens", "d"), ("same_nfe", "same NFE", "d"),
                       ("nfe_ours", "NFE ours", ".2f"), ("nfe_peer", "NFE peer", ".2f")])
    emit_json(dict(bench="peer_parity", machine=machine(), model=model_dir, window=a.window, tail=1,
                   alpha=a.alpha, keep=a.keep, rows=rows,
                   parity=all(r["same_tokens"] == r["prompts"] == r["same_nfe"] for r in rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
