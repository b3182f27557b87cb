"""The evaluation loop shared by every benchmark: batch, generate, parse, record, resume, shard, summarise."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from generate import generate, left_pad, pad_id_of, tokenize_prompts

from ..reporting import machine
from .answers import parse_choice
from .records import RecordStore, score
from .tasks import Item, Task


def evaluate(
    task: Task,
    items: list[Item],
    model,
    tokenizer,
    settings: dict,
    store: RecordStore,
    *,
    batch_size: int = 1,
    chat: bool = True,
    rank: int = 0,
    world_size: int = 1,
    wait_for_everyone=lambda: None,
    progress: bool = True,
) -> dict | None:
    """Answer every unfinished item of this rank's shard, appending records as batches finish.

    Items are sharded round-robin by index (``idx % world_size == rank``) and, within a shard, batched by prompt
    length to keep padding small; results do not depend on the batching (padding never reaches attention).
    Returns the summary on rank 0 (after merging every rank's records), ``None`` elsewhere.
    """
    done = store.finished()
    mine = [it for it in items if it.idx % world_size == rank and it.idx not in done]
    device = next(model.parameters()).device
    tokens = dict(zip((it.idx for it in mine), tokenize_prompts(tokenizer, [it.prompt for it in mine], chat)))
    mine.sort(key=lambda it: len(tokens[it.idx]))
    pad_id = pad_id_of(tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    generator = torch.Generator(device=device).manual_seed(settings["seed"] + rank)
    bar = tqdm(total=len(mine), desc=f"{task.name} {store.dir.name}", unit="item", disable=not progress or rank != 0,
               dynamic_ncols=True)
    seen = [r["correct"] for r in done.values()]
    t0 = time.perf_counter()
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size]
        ids, mask = (t.to(device) for t in left_pad([tokens[it.idx] for it in batch], pad_id))
        out = generate(model, ids, mask, steps=settings["steps"], gen_length=settings["gen_length"],
                       block_length=settings["block_length"], temperature=settings["temperature"],
                       cfg_scale=settings["cfg_scale"], remasking=settings["remasking"], eot_token_id=eot,
                       generator=generator)
        answers = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        records = [_record(task, it, text) for it, text in zip(batch, answers)]
        store.append(records)
        seen.extend(r["correct"] for r in records)
        bar.update(len(batch))
        bar.set_postfix(acc=f"{sum(seen) / len(seen):.3f}", n=len(seen))
    bar.close()
    wait_for_everyone()
    seconds = time.perf_counter() - t0  # includes waiting for the slowest rank
    if rank != 0:
        return None
    records = store.merge()
    new = len(records) - len(done)
    summary = {
        "task": task.name,
        "title": task.title,
        "config": store.dir.name,
        **score(records),
        "settings": settings,
        "model": settings["model"],
        "dataset": settings["data"],
        "items_this_run": new,
        "resumed_items": len(done),
        "wall_seconds": seconds,
        "items_per_s": new / seconds if new and seconds > 0 else None,
        "world_size": world_size,
        "machine": machine(),
    }
    store.write_summary(summary)
    return summary


def _record(task: Task, item: Item, raw: str) -> dict:
    parsed = parse_choice(raw, len(item.choices), list(item.choices))
    rec = {"idx": item.idx, "id": item.id, "task": task.name, "gold": item.gold, "parsed": parsed,
           "correct": parsed == item.gold, "raw_output": raw, "choices": list(item.choices)}
    if item.subject is not None:
        rec["subject"] = item.subject
    return rec
