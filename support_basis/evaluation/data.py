"""Loading a task's records: from the hub by id, or from local files in the hub's schema."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError, iter_jsonl, read_text
from .tasks import Item, Task

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(UserError):
    """The data cannot be had or read; the message says what to do."""


def load_items(task: Task, data_path: str | None = None, limit: int | None = None) -> list[Item]:
    """The task's items in split order (``limit``: the first N). ``data_path``: a local file, or a directory
    holding ``<task>.jsonl`` / ``.json`` / ``.parquet`` (or a ``<task>/`` folder of them), in the hub schema."""
    rows, source = (_local_rows(task, Path(data_path)) if data_path else _hub_rows(task))
    if limit is not None:
        rows = rows[:limit]
    items = []
    for idx, row in enumerate(rows):
        missing = [f for f in task.fields if f not in row]
        if missing:
            raise DataError(
                f"{source}: record {idx} has no field {', '.join(map(repr, missing))}; {task.title} records need "
                f"{', '.join(task.fields)} (the schema of {task.hub_id})"
            )
        try:
            items.append(task.make_item(idx, row))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise DataError(f"{source}: record {idx} is not a valid {task.title} item: {err}") from None
    if not items:
        raise DataError(f"{source}: no {task.title} records")
    first = {}
    for item in items:  # an id twice would be scored twice (and resumed as one)
        if item.id in first:
            raise DataError(f"{source}: records {first[item.id]} and {item.idx} have the same id {item.id!r}; remove "
                            "the duplicate row")
        first[item.id] = item.idx
    return items


def _local_files(task: Task, path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        for suffix in LOCAL_SUFFIXES:
            if (path / f"{task.name}{suffix}").is_file():
                return [path / f"{task.name}{suffix}"]
        sub = path / task.name
        if sub.is_dir():
            files = sorted(f for f in sub.iterdir() if f.suffix in LOCAL_SUFFIXES)
            if files:
                return files
    raise DataError(
        f"no local {task.title} data at {path}: expected a file, or {path}/{task.name}.jsonl (or .json / .parquet), "
        f"or a folder {path}/{task.name}/ of such files, in the schema of {task.hub_id}"
    )


def _local_rows(task: Task, path: Path) -> tuple[list[dict], str]:
    files = _local_files(task, path)
    kinds = {f.suffix for f in files}
    if len(kinds) > 1:
        raise DataError(f"{path}: mixed file types {sorted(kinds)}; use one format")
    source = str(files[0] if len(files) == 1 else path)
    if ".parquet" in kinds:
        from datasets import load_dataset

        try:
            return list(load_dataset("parquet", data_files=[str(f) for f in files], split="train")), source
        except Exception as err:
            raise DataError(f"could not read {source}: {type(err).__name__}: {err}") from None
    rows = []
    for f in files:  # json / jsonl: read directly (no Arrow cache to build), errors name the file and line
        text = read_text(f)
        if f.suffix == ".jsonl" or not text.lstrip().startswith("["):
            rows.extend(row for _, row in iter_jsonl(f, fix="fix or remove that line"))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{f} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
        bad = next((i for i, row in enumerate(value) if not isinstance(row, dict)), None)
        if bad is not None:
            raise DataError(f"{f}: element {bad} of the list is a {type(value[bad]).__name__}, not a record (a JSON "
                            "object in the hub schema)")
        rows.extend(value)
    return rows, source


def _hub_rows(task: Task) -> tuple[list[dict], str]:
    from datasets import load_dataset

    name = f"{task.hub_id}" + (f" ({task.hub_config})" if task.hub_config else "")
    try:
        ds = load_dataset(task.hub_id, task.hub_config, split=task.split)
    except Exception as err:
        text = f"{type(err).__name__}: {err}"
        if task.gated and any(w in text.lower() for w in ("gated", "401", "403", "authenticat", "access")):
            raise DataError(
                f"{name} is a gated dataset and this machine has no access ({text}). Accept its terms at "
                f"https://huggingface.co/datasets/{task.hub_id}, then run `huggingface-cli login` (or set HF_TOKEN); "
                f"or pass --data_path with a local copy ({task.name}.jsonl in the hub schema)."
            ) from None
        raise DataError(
            f"could not load {name}, split {task.split!r}, from the Hugging Face hub ({text}). On a machine with "
            f"internet: python -c \"from datasets import load_dataset; load_dataset('{task.hub_id}', "
            f"{task.hub_config!r}, split='{task.split}').to_json('DATA/{task.name}.jsonl')\"; then pass "
            "--data_path DATA."
        ) from None
    return list(ds), name
