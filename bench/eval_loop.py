#!/usr/bin/env python
"""Throughput of the evaluation loop (support_basis.evaluation.runner): items/s at batch 1 vs batch 8.

    python bench/eval_loop.py               # CPU: random mid-size LLaDA (8 layers, d_model 1024), fp32
    python bench/eval_loop.py --size full   # the LLaDA-8B shape with random weights, bf16 (meant for a GPU)

The items are this project's fixture questions of all five tasks (their real prompts, through the chat template
and a small BPE tokenizer), answered with the paper's setting (gen_length 32, 8 steps, block 32) and recorded as
a real run does (records.jsonl in a temporary directory). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, add_kernel_flag, emit_json, kernel_ran, machine, print_table, random_llada, sync

from support_basis.evaluation.data import load_items
from support_basis.evaluation.records import RecordStore
from support_basis.evaluation.runner import evaluate
from support_basis.evaluation.tasks import PAPER_TASKS as TASKS
from support_basis.tiny_model import build_tokenizer


def fixture_items(repeat: int):
    """(task, items) for every task, the fixture questions repeated ``repeat`` times (fresh indices)."""
    out = []
    for name, task in TASKS.items():
        base = load_items(task, str(REPO / "tests" / "fixtures" / "data"))
        items = [type(it)(i, f"{it.id}#{i}", it.prompt, it.choices, it.gold, it.subject)
                 for i, it in enumerate(base * repeat)]
        out.append((task, items))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid", choices=["small", "mid", "full"],
                   help="random model: small (4 x 256), mid (8 layers x 1024, default), full (the LLaDA-8B shape)")
    p.add_argument("--repeat", type=int, default=1, help="repeat the fixture questions (default 1: 25 items)")
    add_kernel_flag(p)
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if (device == "cuda" or a.size == "full") else torch.float32
    tokenizer = build_tokenizer(512)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|mdm_mask|>", "<|endoftext|>")}
    model = random_llada(a.size, device, dtype, mask_token_id=ids["<|mdm_mask|>"],
                         eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"], hybrid_kernel=a.kernel)
    work = fixture_items(a.repeat)
    n_items = sum(len(items) for _, items in work)
    shape = {"full": "LLaDA-8B shape", "mid": "mid-size (8 layers, d_model 1024)", "small": "small (4 layers, d_model 256)"}[a.size]
    print(f"# eval loop: random {shape}, {str(dtype)[6:]} on {device}; {n_items} fixture items of 5 tasks; "
          f"gen_length 32 (64 GPQA), 8 steps per block; {machine()}")
    rows = []
    for attention, ratio in (("exact", 1.0), ("hybrid 0.2/6", 0.2)):
        model.config.hybrid_exact_ratio = ratio
        for batch in (1, 8):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                for task, items in work:
                    settings = dict(task=task.name, model="random", exact_ratio=ratio, chebyshev_degree=6,
                                    steps=8 * task.gen_length // 32, gen_length=task.gen_length, block_length=32,
                                    temperature=0.0, remasking="low_confidence", cfg_scale=0.0, dtype=str(dtype),
                                    seed=0, data="fixtures", chat=True)
                    store = RecordStore(Path(tmp) / task.name, settings)
                    evaluate(task, items, model, tokenizer, settings, store, batch_size=batch, progress=False)
                sync(device)
                seconds = time.perf_counter() - t0
            rows.append(dict(attention=attention, kernel="sdpa" if ratio == 1 else kernel_ran(a.kernel, device, dtype),
                             batch=batch, seconds=seconds, items_per_s=n_items / seconds))
    print_table(rows, [("attention", "attention", "s"), ("kernel", "kernel", "s"), ("batch", "batch", "d"), ("seconds", "seconds", ".1f"),
                       ("items_per_s", "items/s", ".2f")])
    speedup = {}
    for name in dict.fromkeys(r["attention"] for r in rows):
        by = {r["batch"]: r["items_per_s"] for r in rows if r["attention"] == name}
        speedup[name] = by[8] / by[1]
        print(f"batch 8 / batch 1 items/s, {name}: {speedup[name]:.2f}x")
    emit_json(dict(bench="eval_loop", machine=machine(), device=device, dtype=str(dtype), size=a.size,
                   items=n_items, rows=rows, batch8_over_batch1=speedup))


if __name__ == "__main__":
    main()
