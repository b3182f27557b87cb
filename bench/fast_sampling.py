#!/usr/bin/env python
"""Fast sampling: tokens/s, NFE and accuracy of {no cache, prefix cache, dual cache} x {fixed schedule, threshold
0.9, factor 1.0}, with exact and hybrid (0.2, degree 6) attention.

    python bench/fast_sampling.py                    # speed (mid-size random model) + accuracy (trained tiny model)
    python bench/fast_sampling.py --quick            # a short smoke run of both parts
    python bench/fast_sampling.py --part speed       # or: accuracy, errors
    python bench/fast_sampling.py --part speed --attentions exact --settings none:fixed,dual:fixed,dual:threshold

Parts:

- ``speed``: the random mid-size LLaDA (8 layers, d_model 1024, fp32), one prompt of ``--prompt-length`` random
  tokens, gen_length 256, block 32, batch 1; the baseline is today's sampler (no cache, fixed schedule, one token
  per step: steps = gen_length). A random model is never confident, so there the threshold and factor rules
  reveal one token per step (NFE = gen_length): its rows show the cache's share of the speed-up.
- ``accuracy``: the trained tiny model (``--model-dir``, default ``support_basis/checkpoints/llada-tiny``) on held-out synthetic
  multiple-choice items (``scripts/make_synthetic_data.py``), through the evaluation loop of the runners
  (``support_basis.evaluation.runner``): accuracy, mean NFE, items/s and tokens/s per setting; there the
  threshold and factor rules do fire, so its rows show the share of parallel decoding.
- ``streaming``: decoding only what matters on the trained tiny model (held-out items, gen 128 and 256): plain
  (no cache, one token per step), Fast-dLLM (dual cache + threshold 0.9), each of early stop, the suffix window
  (W = 32, tail 1), DPad's Gaussian dropout (W = 64) and the context-aware threshold (alpha 0.3) on top of it,
  and early stop + window + alpha together: accuracy, mean NFE, tokens/s, speed-up over plain and Fast-dLLM.
- ``pruned``: the random mid-size model at gen 512 and 1024: one full forward of the first block's sequence
  against the pruned one (prompt, block, W = 32 and the last position), exact and hybrid.
- ``errors``: the hybrid attention's relative error against exact attention for one block's query rows, per
  layer, with thresholds placed as without a cache (over the whole sequence's scores) and as with one (over the
  block's rows only), on the same keys/values.

Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, add_kernel_flag, emit_json, kernel_ran, machine, print_table, random_llada

from support_basis.sampling import generate

CACHES = ("none", "prefix", "dual")
RULES = {"fixed": {}, "threshold 0.9": {"threshold": 0.9}, "factor 1.0": {"factor": 1.0}}
ATTENTIONS = {"exact": 1.0, "hybrid 0.2/6": 0.2}


def _choice(name: str, options) -> str:
    """``name`` or the one option it starts (``hybrid`` -> ``hybrid 0.2/6``); SystemExit naming the options."""
    found = [o for o in options if o == name or o.startswith(name)]
    if len(found) != 1:
        raise SystemExit(f"error: {name!r} is not one of {', '.join(options)}")
    return found[0]


def speed_rows(model, prompt, gen_length, block_length, attentions, settings):
    """Batch-1 generation of ``prompt (1, P)`` for every (cache, rule) in ``settings``: seconds, NFE, tokens/s,
    speed-up over the first setting."""
    rows = []
    for attention in attentions:
        model.config.hybrid_exact_ratio = ATTENTIONS[attention]
        base = None
        for cache, rule in settings:
            t0 = time.perf_counter()
            _, nfe = generate(model, prompt, steps=gen_length, gen_length=gen_length, block_length=block_length,
                              cache=cache, return_nfe=True, **RULES[rule])
            seconds = time.perf_counter() - t0
            row = dict(attention=attention, cache=cache, rule=rule, nfe=int(nfe[0]), seconds=seconds,
                       tokens_per_s=gen_length / seconds)
            base = base or row["tokens_per_s"]
            row["speedup"] = row["tokens_per_s"] / base
            rows.append(row)
            print(f"  {attention:>13} {cache:>7} {rule:>14}: NFE {row['nfe']:4d}  {seconds:7.1f} s  "
                  f"{row['tokens_per_s']:7.2f} tokens/s  {row['speedup']:5.2f}x", flush=True)
    return rows


def accuracy_rows(model, tokenizer, task_name, data_dir, limit, gen_length, block_length, batch_size, attentions,
                  caches, rules):
    """The runners' evaluation loop on the held-out items under every setting."""
    from support_basis.evaluation.data import load_items
    from support_basis.evaluation.records import RecordStore
    from support_basis.evaluation.runner import evaluate
    from support_basis.evaluation.tasks import get_task

    task = get_task(task_name)
    items = load_items(task, str(data_dir), limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for attention in attentions:
            model.config.hybrid_exact_ratio = ATTENTIONS[attention]
            base = None
            for cache in caches:
                for rule in rules:
                    settings = dict(task=task.name, model=str(model.name_or_path), exact_ratio=ATTENTIONS[attention],
                                    chebyshev_degree=model.config.hybrid_chebyshev_degree, steps=gen_length,
                                    gen_length=gen_length, block_length=block_length, temperature=0.0,
                                    remasking="low_confidence", cfg_scale=0.0, cache=cache,
                                    threshold=RULES[rule].get("threshold"), factor=RULES[rule].get("factor"),
                                    dtype="float32", seed=0, data=str(data_dir), chat=True, limit=limit,
                                    batch_size=batch_size)
                    store = RecordStore(Path(tmp) / f"{attention}-{cache}-{rule}".replace(" ", "_"), settings)
                    s = evaluate(task, items, model, tokenizer, settings, store, batch_size=batch_size,
                                 progress=False)
                    parsed = {i: r["parsed"] for i, r in store.finished().items()}
                    row = dict(attention=attention, cache=cache, rule=rule, accuracy=s["accuracy"],
                               stderr=s["stderr"], n=s["n"], nfe=s["mean_nfe"], items_per_s=s["items_per_s"],
                               tokens_per_s=s["items_per_s"] * gen_length, parsed=parsed)
                    base = base or row
                    row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
                    row["delta_points"] = 100 * (row["accuracy"] - base["accuracy"])
                    # the same items: how many answers the setting changed against the baseline sampler
                    row["changed"] = sum(parsed[i] != base["parsed"][i] for i in parsed)
                    rows.append(row)
                    print(f"  {attention:>13} {cache:>7} {rule:>14}: accuracy {100 * row['accuracy']:6.2f} "
                          f"({row['delta_points']:+.2f}, {row['changed']} answers changed)  NFE {row['nfe']:6.1f}  "
                          f"{row['tokens_per_s']:8.1f} tokens/s  {row['speedup']:5.2f}x", flush=True)
    for row in rows:
        del row["parsed"]
    return rows


def attention_error_rows(model, ids, start, end, ratio=0.2, degree=6):
    """Per layer: relative Frobenius error of the hybrid output for query rows ``[start, end)`` against float64
    exact attention, thresholds placed over all rows (no cache) or over these rows only (cache)."""
    module = sys.modules[type(model).__module__]
    op = module.hybrid_attention
    captured = []

    def capture(q, k, v, mask, **kwargs):
        captured.append((q, k, v, mask))
        return op(q, k, v, mask, **kwargs)

    model.config.hybrid_exact_ratio = 1.0
    module.hybrid_attention = capture
    try:
        model(ids)
    finally:
        module.hybrid_attention = op
    rows = []
    for layer, (q, k, v, mask) in enumerate(captured):
        group = q.shape[1] // k.shape[1]
        kd, vd = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
        qw = q[:, :, start:end]
        exact = torch.softmax(qw.double() @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ vd
        whole = op(q, k, v, mask, exact_ratio=ratio, chebyshev_degree=degree)[:, :, start:end]
        window = op(qw, k, v, None if mask is None else mask[..., start:end, :], exact_ratio=ratio,
                    chebyshev_degree=degree)

        def rel(x):
            return float((x.double() - exact).norm() / exact.norm())

        rows.append(dict(layer=layer, no_cache=rel(whole), cache=rel(window)))
    return rows



def error_table(model, ids, start, block_length, label):
    """``attention_error_rows`` for the block at ``start``, printed as a table; returns the rows."""
    rows = attention_error_rows(model, ids, start, start + block_length)
    print(f"## hybrid 0.2/6 attention error vs exact, block rows [{start}, {start + block_length}) of "
          f"{ids.shape[1]} ({label})")
    print_table(rows, [("layer", "layer", "d"), ("no_cache", "no cache", ".2e"), ("cache", "cache", ".2e")])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="all", choices=["all", "speed", "accuracy", "errors", "streaming", "pruned"])
    p.add_argument("--plain-attentions", default="exact,hybrid 0.2/6",
                   help="streaming part: the attentions whose plain (one token per forward) row runs (the slowest)")
    p.add_argument("--gen-lengths", type=int, nargs="+", default=None,
                   help="streaming part: answer lengths (default 128 256); pruned part: (default 512 1024)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: gen_length 64, prompt 32, exact attention and 2 rules for speed; 24 items")
    p.add_argument("--attentions", default=",".join(ATTENTIONS), help="speed part: subset of exact,hybrid")
    p.add_argument("--settings", default=None,
                   help="speed part: CACHE:RULE pairs (rules fixed, threshold, factor), e.g. none:fixed,dual:threshold;"
                   " default all 9 (the first is the speed-up's baseline)")
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--prompt-length", type=int, default=128, help="speed part: prompt tokens (default 128)")
    p.add_argument("--model-dir", default=str(REPO / "support_basis" / "checkpoints" / "llada-tiny"),
                   help="accuracy part: the trained tiny model (default support_basis/checkpoints/llada-tiny)")
    p.add_argument("--data", default=None,
                   help="accuracy part: held-out data dir (default: LIMIT/5 problems of each kind, written to a temp "
                   "dir with scripts/make_synthetic_data.py's seed 1234)")
    p.add_argument("--task", default="arc_challenge", help="accuracy part: the runner schema to use")
    p.add_argument("--limit", type=int, default=200, help="accuracy part: items (default 200)")
    p.add_argument("--batch-size", type=int, default=8, help="accuracy part: prompts per batch (default 8)")
    add_kernel_flag(p)
    a = p.parse_args(argv)
    if a.quick:
        a.gen_length, a.prompt_length, a.limit = 64, 32, 24
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = dict(bench="fast_sampling", machine=machine(), device=device, gen_length=a.gen_length,
               block_length=a.block_length, kernel=kernel_ran(a.kernel, device))
    print(f"# fast sampling: gen_length {a.gen_length}, block {a.block_length}; hybrid rows run kernel "
          f"{kernel_ran(a.kernel, device)}; {machine()}")

    if a.part in ("all", "speed", "errors"):
        model = random_llada("mid", device, torch.float32, hybrid_kernel=a.kernel)
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, model.config.vocab_size - 1000, (1, a.prompt_length), generator=g).to(device)
        with torch.no_grad():
            generate(model, prompt, steps=2, gen_length=a.block_length, block_length=a.block_length, cache="dual")
            model.config.hybrid_exact_ratio = 0.2  # warm-up: kernels (built or compiled once) and allocator
            generate(model, prompt, steps=2, gen_length=a.block_length, block_length=a.block_length, cache="dual")
        if a.part in ("all", "speed"):
            print(f"## speed: random mid-size LLaDA (8 layers, d_model 1024), fp32, batch 1, prompt "
                  f"{a.prompt_length} tokens, steps = gen_length")
            attentions = ["exact"] if a.quick else [_choice(x, ATTENTIONS) for x in a.attentions.split(",")]
            rules = ["fixed", "threshold 0.9"] if a.quick else list(RULES)
            settings = [(c, r) for c in CACHES for r in rules]
            if a.settings:
                settings = [(_choice(s.split(":")[0], CACHES), _choice(s.split(":")[-1], RULES))
                            for s in a.settings.split(",")]
            with torch.no_grad():
                rows = speed_rows(model, prompt, a.gen_length, a.block_length, attentions, settings)
            print_table(rows, [("attention", "attention", "s"), ("cache", "cache", "s"), ("rule", "rule", "s"),
                               ("nfe", "NFE", "d"), ("seconds", "seconds", ".1f"),
                               ("tokens_per_s", "tokens/s", ".2f"), ("speedup", "speed-up", ".2f")])
            out["speed"] = rows
            dual = {r["attention"]: r["speedup"] for r in rows if r["cache"] == "dual" and r["rule"] == "threshold 0.9"}
            out["targets"] = {"dual_threshold_ge_5x": all(v >= 5 for v in dual.values()) if dual else None}
        if a.part in ("all", "errors"):
            ids = _mid_state(prompt, model.config, a.gen_length, a.block_length, g)
            start = a.prompt_length + 3 * a.block_length if a.gen_length >= 4 * a.block_length else a.prompt_length
            with torch.no_grad():
                out["attention_error_mid"] = error_table(model, ids, start, a.block_length, "random mid-size model")
        del model

    if a.part == "pruned":
        out["pruned"] = pruned_rows(device, a.gen_lengths or [512, 1024], a.block_length, a.prompt_length, a.kernel)
    if a.part in ("all", "accuracy", "errors", "streaming"):
        model_dir = Path(a.model_dir)
        if not (model_dir / "config.json").is_file():
            print(f"## accuracy: skipped, {model_dir} does not exist yet (the trained tiny model; see issue 9)")
            out["accuracy"] = None
        else:
            out.update(_trained_parts(a, model_dir, device))
    emit_json(out)


STREAMING = {  # name -> generate() options (the runners' settings keys); steps = gen_length throughout
    "plain": {},
    "fast-dllm": {"cache": "dual", "threshold": 0.9},
    "+early stop": {"cache": "dual", "threshold": 0.9, "early_stop": True},
    "+window 32": {"cache": "dual", "threshold": 0.9, "suffix_window": 32},
    "+dropout gauss 64": {"cache": "dual", "threshold": 0.9, "suffix_window": 64, "suffix_dropout": "gaussian"},
    "+alpha 0.3": {"cache": "dual", "threshold": 0.9, "threshold_alpha": 0.3},
    "all (stop+window+alpha)": {"cache": "dual", "threshold": 0.9, "early_stop": True, "suffix_window": 32,
                                "threshold_alpha": 0.3},
}


def streaming_table(model, tokenizer, a, data) -> list[dict]:
    """The streaming part: every STREAMING setting x attention x answer length through the runners' loop."""
    from support_basis.evaluation.data import load_items
    from support_basis.evaluation.records import RecordStore
    from support_basis.evaluation.runner import evaluate
    from support_basis.evaluation.tasks import get_task

    task = get_task(a.task)
    items = load_items(task, str(data), a.limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gen_length in a.gen_lengths or [128, 256]:
            for attention, ratio in ATTENTIONS.items():
                model.config.hybrid_exact_ratio = ratio
                base = {}
                for name, options in STREAMING.items():
                    if name == "plain" and attention not in a.plain_attentions.split(","):
                        continue  # the slowest row by far (one token per forward): asked for per attention
                    settings = dict(task=task.name, model=str(model.name_or_path), exact_ratio=ratio,
                                    chebyshev_degree=model.config.hybrid_chebyshev_degree, steps=gen_length,
                                    gen_length=gen_length, block_length=a.block_length, temperature=0.0,
                                    remasking="low_confidence", cfg_scale=0.0, dtype="float32", seed=0,
                                    data=str(data), chat=True, limit=a.limit, batch_size=a.batch_size, **options)
                    store = RecordStore(Path(tmp) / f"{gen_length}-{attention}-{name}".replace(" ", "_"), settings)
                    s = evaluate(task, items, model, tokenizer, settings, store, batch_size=a.batch_size,
                                 progress=False)
                    row = dict(gen_length=gen_length, attention=attention, setting=name, accuracy=s["accuracy"],
                               n=s["n"], nfe=s["mean_nfe"], tokens_per_s=s["items_per_s"] * gen_length)
                    if name in ("plain", "fast-dllm"):
                        base[name] = row
                    row["x_plain"] = row["tokens_per_s"] / base["plain"]["tokens_per_s"] if "plain" in base else None
                    row["x_fast"] = (row["tokens_per_s"] / base["fast-dllm"]["tokens_per_s"] if "fast-dllm" in base
                                     else None)
                    rows.append(row)
                    print(f"  gen {gen_length} {attention:>13} {name:>24}: accuracy {100 * row['accuracy']:6.2f}  "
                          f"NFE {row['nfe']:6.2f}  {row['tokens_per_s']:9.1f} tokens/s  x{row['x_plain'] or 0:.1f} plain",
                          flush=True)
    print_table(rows, [("gen_length", "gen", "d"), ("attention", "attention", "s"), ("setting", "setting", "s"),
                       ("accuracy", "accuracy", ".4f"), ("nfe", "mean NFE", ".2f"),
                       ("tokens_per_s", "tokens/s", ".1f"), ("x_plain", "x plain", ".1f"),
                       ("x_fast", "x Fast-dLLM", ".2f")])
    return rows


def pruned_rows(device, gen_lengths, block_length, prompt_length, kernel, window=32, repeats=3) -> list[dict]:
    """One forward of the first block's full sequence against the pruned one, on the random mid-size model."""
    model = random_llada("mid", device, torch.float32, hybrid_kernel=kernel)
    g = torch.Generator().manual_seed(0)
    rows = []
    for gen_length in gen_lengths:
        total = prompt_length + gen_length
        ids = torch.randint(0, model.config.vocab_size - 1000, (1, total), generator=g).to(device)
        end = prompt_length + block_length
        keep = torch.cat([torch.arange(end + window), torch.tensor([total - 1])]).to(device)
        for attention, ratio in ATTENTIONS.items():
            model.config.hybrid_exact_ratio = ratio
            times = {}
            for name, (x, pos) in {"full": (ids, None), "pruned": (ids[:, keep], keep[None])}.items():
                with torch.no_grad():
                    model(x, position_ids=pos)  # warm
                    best = math.inf
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        model(x, position_ids=pos)
                        best = min(best, time.perf_counter() - t0)
                times[name] = best
            rows.append(dict(gen_length=gen_length, attention=attention, full_tokens=total, pruned_tokens=len(keep),
                             full_ms=1e3 * times["full"], pruned_ms=1e3 * times["pruned"],
                             ratio=times["full"] / times["pruned"]))
            print(f"  {rows[-1]}", flush=True)
    print_table(rows, [("gen_length", "gen", "d"), ("attention", "attention", "s"), ("full_tokens", "full tokens", "d"),
                       ("pruned_tokens", "pruned tokens", "d"), ("full_ms", "full ms", ".1f"),
                       ("pruned_ms", "pruned ms", ".1f"), ("ratio", "full/pruned", ".2f")])
    return rows


def _mid_state(prompt, config, gen_length, block_length, g):
    """A sequence in mid-generation: the prompt, three blocks of (random) revealed tokens, then masks."""
    revealed = min(gen_length, 3 * block_length)
    answer = torch.full((1, gen_length), config.mask_token_id, dtype=torch.long)
    answer[:, :revealed] = torch.randint(0, config.vocab_size - 1000, (1, revealed), generator=g)
    return torch.cat([prompt.cpu(), answer], 1).to(prompt.device)


def _trained_parts(a, model_dir, device):
    from support_basis.loading import load_model_and_tokenizer, tokenize_prompts

    out = {}
    model, tokenizer = load_model_and_tokenizer(str(model_dir), "float32", device, hybrid_kernel=a.kernel)
    data = Path(a.data) if a.data else Path(tempfile.mkdtemp(prefix="heldout-"))
    if not a.data:
        from support_basis.synthetic import KINDS, write_heldout

        write_heldout(data, n=max(1, a.limit // len(KINDS)), seed=1234)  # every kind alike (the file is by kind)
    with torch.no_grad():
        if a.part == "streaming":
            out["streaming"] = streaming_table(model, tokenizer, a, data)
        if a.part in ("all", "accuracy"):
            print(f"## accuracy: {model_dir} on {a.limit} held-out {a.task} items, batch {a.batch_size}, "
                  "steps = gen_length")
            rows = accuracy_rows(model, tokenizer, a.task, data, a.limit, a.gen_length, a.block_length, a.batch_size,
                                 list(ATTENTIONS), CACHES, list(RULES))
            print_table(rows, [("attention", "attention", "s"), ("cache", "cache", "s"), ("rule", "rule", "s"),
                               ("accuracy", "accuracy", ".4f"), ("delta_points", "delta pts", "+.2f"),
                               ("changed", "changed", "d"),
                               ("nfe", "mean NFE", ".1f"), ("tokens_per_s", "tokens/s", ".1f"),
                               ("speedup", "speed-up", ".2f")])
            out["accuracy"] = rows
            worst = {r["attention"]: min(x["delta_points"] for x in rows if x["attention"] == r["attention"])
                     for r in rows}
            out["accuracy_targets"] = {"within_2_points": all(v >= -2 for v in worst.values())}
        if a.part in ("all", "errors"):
            from support_basis.evaluation.data import load_items
            from support_basis.evaluation.tasks import get_task

            item = load_items(get_task(a.task), str(data), 1)[0]
            ids = torch.tensor(tokenize_prompts(tokenizer, [item.prompt], True), device=model.device)
            p = ids.shape[1]
            model.config.hybrid_exact_ratio = 1.0
            # the sequence when `done` blocks are revealed (one token per step) and the next is still masked
            done = max(0, min(3, a.gen_length // a.block_length - 1))
            states = [torch.cat([ids, ids.new_full((1, a.gen_length), model.config.mask_token_id)], 1)]
            generate(model, ids, steps=a.gen_length, gen_length=a.gen_length, block_length=a.block_length,
                     callback=lambda step, x: states.append(x.clone()) if step == done * a.block_length else None)
            out["attention_error_trained"] = error_table(model, states[-1], p + done * a.block_length,
                                                         a.block_length,
                                                         f"trained tiny model, a held-out item after {done} blocks")
    return out


if __name__ == "__main__":
    main()
