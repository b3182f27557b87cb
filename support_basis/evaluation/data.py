"""Loading a task's records: from the hub by id, or from local files in the hub's schema."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError, iter_jsonl, read_text
from .items import Item, RowError
from .tasks import Task

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(UserError):
    """The data cannot be had or read; the message says what to do."""


def load_items(task: Task, data_path: str | None = None, limit: int | None = None, protocol: str = "paper",
               fewshot_path: str | None = None) -> list[Item]:
    """The task's items under ``protocol`` in split order (``limit``: the first N). ``data_path``: a local file, or
    a directory holding ``<stem>.jsonl`` / ``.json`` / ``.parquet`` (or a ``<stem>/`` folder of them), in the hub
    schema, where ``<stem>`` is the protocol's (``Source.local``: the task's name, or e.g. ``gpqa_diamond``).
    A protocol whose prompt retrieves examples (official MMLU: the ``dev`` split) reads them from
    ``fewshot_path``, else from ``<data_path dir>/<shots stem>.jsonl``, else from the hub."""
    source_spec = task.source(protocol)
    rows, source = (_local_rows(task, Path(data_path), source_spec.local) if data_path
                    else _hub_rows(task, source_spec.hub_config, source_spec.split))
    if limit is not None and protocol == "paper":
        rows = rows[:limit]  # official items may depend on later rows' absence (ARC's left-out rows): cut after
    _check_fields(rows, source_spec.fields, source, task)
    shots = None
    if source_spec.shots_split:
        shots, shots_source = _shot_rows(task, source_spec, data_path, fewshot_path)
        _check_fields(shots, source_spec.fields, shots_source, task)
    try:
        items = source_spec.build(rows, shots)
    except RowError as err:
        raise DataError(f"{source}: record {err.index} is not a valid {task.title} item: {err}") from None
    if limit is not None:
        items = items[:limit]
    if not items:
        raise DataError(f"{source}: no {task.title} records")
    first = {}
    for item in items:  # an id twice would be scored twice (and resumed as one)
        if item.id in first:
            raise DataError(f"{source}: records {first[item.id]} and {item.idx} have the same id {item.id!r}; remove "
                            "the duplicate row")
        first[item.id] = item.idx
    return items


def _check_fields(rows: list[dict], fields, source: str, task: Task) -> None:
    for idx, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(
                f"{source}: record {idx} has no field {', '.join(map(repr, missing))}; {task.title} records need "
                f"{', '.join(fields)} (the schema of {task.hub_id})"
            )


def _shot_rows(task: Task, spec, data_path: str | None, fewshot_path: str | None) -> tuple[list[dict], str]:
    """The few-shot split's rows: ``fewshot_path``, or ``<stem>.jsonl`` beside the local data, or the hub."""
    if fewshot_path:
        return _local_rows(task, Path(fewshot_path), spec.shots_local)
    if data_path:
        folder = Path(data_path) if Path(data_path).is_dir() else Path(data_path).parent
        try:
            return _local_rows(task, folder, spec.shots_local)
        except DataError:
            raise DataError(
                f"no few-shot data for {task.title} at {folder}: the official prompt takes its examples from the "
                f"{spec.shots_split!r} split; put it at {folder}/{spec.shots_local}.jsonl (hub schema of "
                f"{task.hub_id}) or pass --fewshot_path FILE"
            ) from None
    return _hub_rows(task, spec.hub_config, spec.shots_split)


def _local_files(task: Task, path: Path, stem: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        for suffix in LOCAL_SUFFIXES:
            if (path / f"{stem}{suffix}").is_file():
                return [path / f"{stem}{suffix}"]
        sub = path / stem
        if sub.is_dir():
            files = sorted(f for f in sub.iterdir() if f.suffix in LOCAL_SUFFIXES)
            if files:
                return files
    raise DataError(
        f"no local {task.title} data at {path}: expected a file, or {path}/{stem}.jsonl (or .json / .parquet), "
        f"or a folder {path}/{stem}/ of such files, in the schema of {task.hub_id}"
    )


def _local_rows(task: Task, path: Path, stem: str) -> tuple[list[dict], str]:
    files = _local_files(task, path, stem)
    kinds = {f.suffix for f in files}
    if len(kinds) > 1:
        raise DataError(f"{path}: mixed file types {sorted(kinds)}; use one format")
    source = str(files[0] if len(files) == 1 else path)
    if ".parquet" in kinds:
        import pyarrow.parquet as pq  # read directly: no Arrow cache to build, no log line before the error

        rows = []
        for f in files:
            try:
                rows.extend(pq.read_table(f).to_pylist())
            except Exception as err:
                raise DataError(f"could not read {f}: {type(err).__name__}: {err}") from None
        return rows, source
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


def _hub_rows(task: Task, config: str | None, split: str) -> tuple[list[dict], str]:
    from datasets import load_dataset

    name = f"{task.hub_id}" + (f" ({config})" if config else "")
    try:
        ds = load_dataset(task.hub_id, config, split=split)
    except Exception as err:
        text = f"{type(err).__name__}: {err}"
        if task.gated and any(w in text.lower() for w in ("gated", "401", "403", "authenticat", "access")):
            raise DataError(
                f"{name} is a gated dataset and this machine has no access ({text}). Accept its terms at "
                f"https://huggingface.co/datasets/{task.hub_id}, then run `huggingface-cli login` (or set HF_TOKEN); "
                "or pass --data_path with a local copy (see the README's data section)."
            ) from None
        raise DataError(
            f"could not load {name}, split {split!r}, from the Hugging Face hub ({text}). On a machine with "
            f"internet: python -c \"from datasets import load_dataset; load_dataset('{task.hub_id}', "
            f"{config!r}, split='{split}').to_json('DATA/{_stem(task, config, split)}.jsonl')\"; then pass "
            "--data_path DATA."
        ) from None
    return list(ds), name


def _stem(task: Task, config: str | None, split: str) -> str:
    """The local file stem a runner looks for, for this hub config and split."""
    for spec in task.protocols.values():
        if (spec.hub_config, spec.split) == (config, split):
            return spec.local
        if (spec.hub_config, spec.shots_split) == (config, split):
            return spec.shots_local
    return task.name
