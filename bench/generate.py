#!/usr/bin/env python
"""Sampler throughput: tokens/s and forward passes/s, batch 1 vs batch 8 (padded), exact vs hybrid attention.

    python bench/generate.py                 # CPU: random mid-size LLaDA (8 layers, d_model 1024), fp32
    python bench/generate.py --size full     # the LLaDA-8B shape with random weights (bf16; meant for a GPU)
    python bench/generate.py --size small    # 4 layers x 256: where batching pays on a CPU

Eight prompts of different lengths (random tokens, 48..160) answered with the paper's setting (gen_length 32,
8 steps, block 32): one at a time (batch 1) and as one left-padded batch of 8. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_kernel_flag, emit_json, kernel_ran, machine, print_table, random_llada, sync

from support_basis.loading import left_pad
from support_basis.sampling import generate


def prompts(n: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(48, 160, n).long().tolist()
    return [torch.randint(0, vocab - 1000, (l,), generator=g) for l in lengths]


def run(model, seqs, batch_size, steps, gen_length, block_length, device):
    """Answer every prompt in batches; return (seconds, forward passes)."""
    calls = 0
    t0 = time.perf_counter()
    for i in range(0, len(seqs), batch_size):
        ids, mask = (t.to(device) for t in left_pad(seqs[i : i + batch_size], model.config.pad_token_id))
        generate(model, ids, mask if batch_size > 1 else None, steps=steps, gen_length=gen_length,
                 block_length=block_length)
        calls += steps
    sync(device)
    return time.perf_counter() - t0, calls


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid", choices=["small", "mid", "full"],
                   help="random model: small (4 x 256), mid (8 layers x 1024, default), full (the LLaDA-8B shape)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=32)
    add_kernel_flag(p)
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if (device == "cuda" or a.size == "full") else torch.float32
    model = random_llada(a.size, device, dtype, hybrid_kernel=a.kernel)
    seqs = prompts(a.prompts, model.config.vocab_size)
    shape = {"full": "LLaDA-8B shape", "mid": "mid-size (8 layers, d_model 1024)", "small": "small (4 layers, d_model 256)"}[a.size]
    print(f"# generate: random {shape}, {str(dtype)[6:]} on {device}; {a.prompts} prompts of 48..160 tokens, "
          f"gen_length {a.gen_length}, steps {a.steps}, block {a.block_length}; {machine()}")
    run(model, seqs[:2], 2, 2, a.block_length, a.block_length, device)  # warm-up (kernels, compilation)
    rows = []
    for attention, ratio in (("exact", 1.0), ("hybrid 0.2/6", 0.2)):
        model.config.hybrid_exact_ratio = ratio
        for batch in (1, 8):
            seconds, forwards = run(model, seqs, batch, a.steps, a.gen_length, a.block_length, device)
            rows.append(dict(attention=attention, kernel="sdpa" if ratio == 1 else kernel_ran(a.kernel, device, dtype),
                             batch=batch, seconds=seconds,
                             tokens_per_s=len(seqs) * a.gen_length / seconds, forwards_per_s=forwards / seconds))
    print_table(rows, [("attention", "attention", "s"), ("kernel", "kernel", "s"), ("batch", "batch", "d"), ("seconds", "seconds", ".2f"),
                       ("tokens_per_s", "tokens/s", ".1f"), ("forwards_per_s", "forwards/s", ".2f")])
    speedup = {r["attention"]: None for r in rows}
    for name in speedup:
        by_batch = {r["batch"]: r["tokens_per_s"] for r in rows if r["attention"] == name}
        speedup[name] = by_batch[8] / by_batch[1]
        print(f"batch 8 / batch 1 tokens/s, {name}: {speedup[name]:.2f}x")
    emit_json(dict(bench="generate", machine=machine(), device=device, dtype=str(dtype), size=a.size,
                   rows=rows, batch8_over_batch1=speedup,
                   targets={"batch8_ge_3x_batch1": all(v >= 3 for v in speedup.values())}))


if __name__ == "__main__":
    main()
