"""The evaluation loop shared by every benchmark: batch, generate, parse, record, resume, shard, summarise."""

from __future__ import annotations

import hashlib
import time

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..loading import left_pad, pad_id_of, tokenize_prompts
from ..model_dir import check_token_ids
from ..reporting import machine
from ..sampling import generate
from .records import RecordStore, item_fingerprint, score
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
    Sampled runs (temperature > 0 or random remasking) generate one item per call with noise seeded by the run's
    seed and the item (:func:`item_seed`), so they do not depend on batch size, resumption or process count either.
    Returns the summary on rank 0 (after merging every rank's records), ``None`` elsewhere; it scores exactly
    ``items`` (records of other items, e.g. beyond a smaller ``--limit``, stay in records.jsonl unscored).
    """
    wanted = {it.idx for it in items}
    store.check_items(items)
    done = {i: r for i, r in store.finished().items() if i in wanted}
    mine = [it for it in items if it.idx % world_size == rank and it.idx not in done]
    device = next(model.parameters()).device
    prompts = [it.messages() if it.history else it.prompt for it in mine]
    tokens = dict(zip((it.idx for it in mine), tokenize_prompts(tokenizer, prompts, chat)))
    _check_prompts(mine, tokens, model.config, settings["gen_length"])
    mine.sort(key=lambda it: len(tokens[it.idx]))
    pad_id = pad_id_of(tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    # sampled settings (and DPad's dropout, drawn once per call) run one item per call: a result never depends on
    # the batch it was decoded in
    sampled = settings["temperature"] > 0 or settings["remasking"] == "random" or bool(settings.get("suffix_dropout"))
    per_call = 1 if sampled else batch_size
    bar = tqdm(total=len(mine), desc=f"{task.name} {store.dir.name}", unit="item", disable=not progress or rank != 0,
               dynamic_ncols=True)
    seen = [r["correct"] for r in done.values()]
    t0 = time.perf_counter()
    for start in range(0, len(mine), per_call):
        batch = mine[start : start + per_call]
        generator = torch.Generator(device=device).manual_seed(item_seed(settings["seed"], batch[0])) \
            if sampled else None
        ids, mask = (t.to(device) for t in left_pad([tokens[it.idx] for it in batch], pad_id))
        out, nfe = generate(model, ids, mask, eot_token_id=eot, generator=generator, return_nfe=True,
                            **sampler_arguments(settings))
        answers = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        records = [{**_record(task, it, text), "nfe": int(n)} for it, text, n in zip(batch, answers, nfe.tolist())]
        store.append(records)
        seen.extend(r["correct"] for r in records)
        bar.update(len(batch))
        bar.set_postfix(acc=f"{sum(seen) / len(seen):.3f}", n=len(seen))
    bar.close()
    wait_for_everyone()
    seconds = time.perf_counter() - t0  # includes waiting for the slowest rank
    if rank != 0:
        return None
    return _summarise(task, settings, store, wanted, len(done), seconds, world_size)


def sampler_arguments(settings: dict) -> dict:
    """``generate()``'s keyword arguments for a run's settings (a run.json written before an option holds none)."""
    return dict(steps=settings["steps"], gen_length=settings["gen_length"], block_length=settings["block_length"],
                temperature=settings["temperature"], cfg_scale=settings["cfg_scale"],
                remasking=settings["remasking"], cache=settings.get("cache", "none"),
                threshold=settings.get("threshold"), factor=settings.get("factor"),
                confidence_eos_eot_inf=bool(settings.get("confidence_eos_eot_inf")),
                early_stop=bool(settings.get("early_stop")), suffix_window=settings.get("suffix_window"),
                suffix_tail=settings.get("suffix_tail"), suffix_dropout=settings.get("suffix_dropout"),
                threshold_alpha=settings.get("threshold_alpha"))


def _summarise(task: Task, settings: dict, store: RecordStore, wanted: set, resumed: int, seconds: float,
               world_size: int) -> dict:
    """Rank 0: score every rank's records of the ``wanted`` items and write ``summary.json``."""
    done = resumed
    records = [r for r in store.merge() if r["idx"] in wanted]
    new = len(records) - done
    summary = {
        "task": task.name,
        "title": task.source(settings.get("protocol", "paper")).title or task.title,
        "config": store.dir.name,
        "protocol": settings.get("protocol", "paper"),
        **score(records, settings.get("answer_parser", task.parsers[0]), task.parsers),
        "settings": settings,
        "model": settings["model"],
        "dataset": settings["data"],
        "items_this_run": new,
        "resumed_items": done,
        "wall_seconds": seconds,
        "items_per_s": new / seconds if new and seconds > 0 else None,
        "mean_nfe": _mean([r["nfe"] for r in records if "nfe" in r]),
        "world_size": world_size,
        "machine": machine(),
    }
    store.write_summary(summary)
    return summary


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def item_seed(seed: int, item: Item) -> int:
    """The seed of one item's sampling noise: a hash of the run's seed and the item (index and id), 63 bits."""
    digest = hashlib.sha256(f"{seed}:{item.idx}:{item.id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _check_prompts(items: list[Item], tokens: dict, config, gen_length: int) -> None:
    """Before the first generation: every prompt inside the vocabulary and short enough for the model."""
    check_token_ids([tokens[it.idx] for it in items], config,
                    [f"the prompt of item {it.idx} ({it.id!r})" for it in items])
    limit = getattr(config, "max_sequence_length", None)
    for it in items:
        if limit is not None and len(tokens[it.idx]) + gen_length > limit:
            raise UserError(f"item {it.idx} ({it.id!r}): its prompt is {len(tokens[it.idx])} tokens, with gen_length "
                            f"{gen_length} more than the model's max_sequence_length ({limit}); lower --gen_length "
                            "or drop the item from the data")


def _record(task: Task, item: Item, raw: str) -> dict:
    """One item's record: every reading of the answer (``task.parsers``): ``parsed``/``correct`` the first's
    (multiple choice: the reader's), ``parsed_<parser>``/``correct_<parser>`` the others' (e.g. ``parsed_paper``,
    the paper's first standalone A-E; ``parsed_opencompass``, what the official protocol scores); ``item_fp`` ties
    the record to the item's content."""
    reads = task.read(item, raw)
    first = task.parsers[0]
    rec = {"idx": item.idx, "id": item.id, "task": task.name, "gold": item.gold, "parsed": reads[first][0],
           "correct": reads[first][1]}
    for parser in task.parsers[1:]:
        rec[f"parsed_{parser}"], rec[f"correct_{parser}"] = reads[parser]
    rec.update({"raw_output": raw, "choices": list(item.choices), "item_fp": item_fingerprint(item)})
    if item.subject is not None:
        rec["subject"] = item.subject
    return rec
