"""Broken inputs for the error tests (tests/test_errors*.py): damaged copies of the tiny model directory, official
layouts for prepare_model.py, broken data files. Each builder writes real files, as a user would have them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support_basis.llada import CODE_FILES

OFFICIAL_ONLY_KEYS = ("hybrid_exact_ratio", "hybrid_chebyshev_degree", "hybrid_num_samples", "auto_map")


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def shard(d: Path, parts: int = 2) -> dict:
    """Split ``d/model.safetensors`` into ``parts`` shards + an index (the official layout); returns the map."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    names = sorted(state)
    weight_map = {}
    for i in range(parts):
        name = f"model-{i + 1:05d}-of-{parts:05d}.safetensors"
        part = names[i::parts]
        save_file({k: state[k].to(torch.float32).contiguous() for k in part}, d / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def official_layout(tiny: Path, dst: Path, *, sharded: bool = False) -> Path:
    """The tiny model as GSAI-ML publishes LLaDA: no hybrid fields, no auto_map, no code files of this project."""
    copy_model(tiny, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k in OFFICIAL_ONLY_KEYS:
        cfg.pop(k, None)
    (dst / "config.json").write_text(json.dumps(cfg))
    for f in CODE_FILES:
        (dst / f).unlink()
    if sharded:
        shard(dst)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def foreign_tokenizer(d: Path, vocab_size: int = 700) -> None:
    """Replace the tokenizer by a bigger one: its special tokens get ids beyond the model's embedding rows."""
    from support_basis.tiny_model import build_tokenizer, write_tokenizer_config

    build_tokenizer(vocab_size).save_pretrained(d)
    write_tokenizer_config(d, 1024)


def broken_models(tiny: Path, root: Path) -> dict[str, Path]:
    """Damaged copies of the tiny LLaDA-BS directory, by what is wrong with them."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}

    def variant(name, edit):
        d = copy_model(tiny, root / name)
        edit(d)
        out[name] = d

    out["official"] = official_layout(tiny, root / "official")
    variant("truncated", lambda d: truncate(d / "model.safetensors"))
    variant("garbage", lambda d: (d / "model.safetensors").write_bytes(b"this is not a safetensors file\n"))
    variant("no_tokenizer", lambda d: (d / "tokenizer.json").unlink())
    variant("bad_hybrid", lambda d: edit_config(d, hybrid_exact_ratio=1.5))
    variant("bad_json", lambda d: (d / "config.json").write_text('{"model_type": "llada",'))
    variant("bad_tokenizer_config", lambda d: (d / "tokenizer_config.json").write_text("{oops"))
    variant("no_code", lambda d: (d / "hybrid_attention.py").unlink())

    def stale(d):
        single = (d / "model.safetensors").read_bytes()
        shard(d)
        (d / "model.safetensors").write_bytes(single)

    variant("stale_single", stale)

    def missing_shard(d):
        shard(d)
        (d / "model-00002-of-00002.safetensors").unlink()

    variant("missing_shard", missing_shard)

    def mixed_shards(d):
        weight_map = shard(d)
        swapped = {k: ("model-00002-of-00002.safetensors" if v.startswith("model-00001") else
                       "model-00001-of-00002.safetensors") for k, v in weight_map.items()}
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": swapped}))

    variant("mixed_shards", mixed_shards)

    def truncated_shard(d):
        shard(d)
        truncate(d / "model-00001-of-00002.safetensors", 0.9)

    variant("truncated_shard", truncated_shard)
    variant("foreign_tokenizer", foreign_tokenizer)
    # a config that does not describe its weights, or describes nothing usable
    variant("layers_mismatch", lambda d: edit_config(d, n_layers=3))
    variant("width_mismatch", lambda d: edit_config(d, d_model=48, n_heads=4))
    variant("tying_mismatch", lambda d: edit_config(d, weight_tying=True, tie_word_embeddings=True))
    variant("tensor_missing", drop_tensor)
    variant("no_rope_theta", lambda d: _drop_config_key(d, "rope_theta"))
    variant("rope_theta_zero", lambda d: edit_config(d, rope_theta=0))
    variant("heads_zero", lambda d: edit_config(d, n_heads=0))
    variant("mask_not_tokenizers", lambda d: edit_config(d, mask_token_id=json.loads(
        (d / "config.json").read_text())["eos_token_id"]))
    return out


def _drop_config_key(d: Path, key: str) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop(key)
    (d / "config.json").write_text(json.dumps(cfg))


def drop_tensor(d: Path) -> None:
    """``model.safetensors`` without one block's attention output projection."""
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    state.pop(next(k for k in sorted(state) if k.endswith("attn_out.weight")))
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})


def official_sources(tiny: Path, root: Path) -> dict[str, Path]:
    """Official-layout checkpoints for prepare_model.py --source, good and broken."""
    root.mkdir(parents=True, exist_ok=True)
    out = {"good": official_layout(tiny, root / "good", sharded=True)}

    def variant(name, edit):
        d = official_layout(tiny, root / name)
        edit(d)
        out[name] = d

    def truncated_shard(d):
        shard(d)
        truncate(d / "model-00002-of-00002.safetensors", 0.99)

    def mixed_shards(d):
        weight_map = shard(d)
        names = sorted(weight_map)
        # names[0] lies in shard 1, names[1] in shard 2 (see shard()): the index now misplaces both
        weight_map[names[0]], weight_map[names[1]] = weight_map[names[1]], weight_map[names[0]]
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    def stale(d):
        single = (d / "model.safetensors").read_bytes()
        shard(d)
        (d / "model.safetensors").write_bytes(single)

    variant("truncated_shard", truncated_shard)
    variant("mixed_shards", mixed_shards)
    variant("stale_single", stale)
    variant("bad_json", lambda d: (d / "config.json").write_text("not json"))
    variant("no_tokenizer", lambda d: (d / "tokenizer.json").unlink())
    variant("unsupported", lambda d: edit_config(d, block_type="sequential"))
    return out


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def broken_data(fixtures: Path, root: Path) -> dict[str, Path]:
    """Data directories (``DIR/<task>.jsonl``) with one fault each."""
    arc = [json.loads(line) for line in (fixtures / "arc_easy.jsonl").read_text().splitlines()]
    hella = json.loads((fixtures / "hellaswag.jsonl").read_text().splitlines()[0])
    mmlu = json.loads((fixtures / "mmlu.jsonl").read_text().splitlines()[0])
    gpqa = json.loads((fixtures / "gpqa.jsonl").read_text().splitlines()[0])
    out = {
        "broken_line": write_jsonl(root / "broken_line" / "arc_easy.jsonl", [arc[0], '{"question": "x", oops']),
        "not_object": write_jsonl(root / "not_object" / "arc_easy.jsonl", [arc[0], "[1, 2, 3]"]),
        "missing_field": write_jsonl(root / "missing_field" / "arc_easy.jsonl", [{"question": "q"}]),
        "bad_key": write_jsonl(root / "bad_key" / "arc_easy.jsonl", [{**arc[0], "answerKey": "Z"}]),
        "empty": write_jsonl(root / "empty" / "arc_easy.jsonl", []),
        "hellaswag_label": write_jsonl(root / "hellaswag_label" / "hellaswag.jsonl", [{**hella, "label": "7"}]),
        "hellaswag_negative": write_jsonl(root / "hellaswag_negative" / "hellaswag.jsonl", [{**hella, "label": -1}]),
        "mmlu_answer": write_jsonl(root / "mmlu_answer" / "mmlu.jsonl", [{**mmlu, "answer": 4}]),
        "mmlu_negative": write_jsonl(root / "mmlu_negative" / "mmlu.jsonl", [{**mmlu, "answer": -1}]),
        "mmlu_text": write_jsonl(root / "mmlu_text" / "mmlu.jsonl", [{**mmlu, "answer": "B"}]),
        # rows that cannot be right: scored before, silently
        "arc_fewer_texts": write_jsonl(root / "arc_fewer_texts" / "arc_easy.jsonl", [
            {**arc[0], "choices": {"label": list(arc[0]["choices"]["label"]),
                                   "text": list(arc[0]["choices"]["text"])[:-1]}}]),
        "arc_null_question": write_jsonl(root / "arc_null_question" / "arc_easy.jsonl", [{**arc[0], "question": None}]),
        "arc_duplicate_id": write_jsonl(root / "arc_duplicate_id" / "arc_easy.jsonl", [arc[0], arc[0]]),
        "mmlu_choices_string": write_jsonl(root / "mmlu_choices_string" / "mmlu.jsonl", [{**mmlu, "choices": "ABCD"}]),
        "mmlu_subject_number": write_jsonl(root / "mmlu_subject_number" / "mmlu.jsonl", [{**mmlu, "subject": 7}]),
        "gpqa_correct_twice": write_jsonl(root / "gpqa_correct_twice" / "gpqa.jsonl", [
            {**gpqa, "Incorrect Answer 2": gpqa["Correct Answer"]}]),
        "hellaswag_empty_ending": write_jsonl(root / "hellaswag_empty_ending" / "hellaswag.jsonl", [
            {**hella, "endings": [*hella["endings"][:3], " "]}]),
    }
    bad_utf8 = root / "not_utf8" / "arc_easy.jsonl"
    bad_utf8.parent.mkdir(parents=True)
    bad_utf8.write_bytes(json.dumps(arc[0]).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    out["not_utf8"] = bad_utf8
    as_list = root / "json_list" / "arc_easy.json"
    as_list.parent.mkdir(parents=True)
    as_list.write_text("[1, 2]")
    out["json_list"] = as_list
    return {k: v.parent for k, v in out.items()}
