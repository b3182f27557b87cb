"""Where a run's results live: ``<out_dir>/<task>/<config>/``.

    run.json        the settings that define the run (a directory belongs to exactly one configuration), with
                    ``model_fp``, a fingerprint of the model's weights (a model retrained in place is another run)
    records.jsonl   one JSON line per item, written (and fsync-ed) as soon as the item is finished
    summary.json    accuracy, standard error, counts, settings, timing; written when the run completes

With several processes each rank appends to ``records.rank<r>.jsonl``; the last step merges every shard into
``records.jsonl`` sorted by item index, so the directory ends identical to a single-process run. Re-running the
same command resumes: items already in any of these files are skipped. A line cut short by a crash is ignored.

Nothing is created before the first record: a run that fails earlier leaves no directory behind. Every record
carries ``item_fp``, a fingerprint of its item (prompt, choices, answer key); a record is reused only for the same
item, so a directory whose records came from other data (the data file changed) is refused, not silently reused.
The summary scores exactly the items of the current run (``--limit`` may shrink or grow between resumes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from ..errors import UserError, read_json_object, read_text
from .answers import PARSERS, paper_choice

# Settings that change what an item's record is; the rest (batch size, limit, ...) may vary between resumes.
IDENTITY_KEYS = ("task", "model", "exact_ratio", "chebyshev_degree", "steps", "gen_length", "block_length",
                 "temperature", "remasking", "cfg_scale", "dtype", "seed", "data", "chat", "cache", "threshold",
                 "factor", "exact_split", "fit", "model_fp", "protocol", "confidence_eos_eot_inf", "early_stop",
                 "suffix_window", "suffix_tail", "suffix_dropout", "threshold_alpha")
# identity keys added later: a run.json written before them holds their default (model_fp: unknown, not compared)
_UNKNOWN = object()
IDENTITY_DEFAULTS = {"cache": "none", "threshold": None, "factor": None, "exact_split": 0.5, "fit": "chebyshev",
                     "model_fp": _UNKNOWN, "protocol": "paper", "confidence_eos_eot_inf": False, "early_stop": False,
                     "suffix_window": None, "suffix_tail": None, "suffix_dropout": None, "threshold_alpha": None}


def model_fingerprint(model: str) -> str | None:
    """16 hex digits identifying a local model directory's weights: every safetensors file's name, size and
    header, and three 64 kB samples of its data (start, middle, end), so a model retrained in the same path (same
    shapes, new values) is told apart, in milliseconds even for LLaDA-8B's 16 GB. ``None`` for a hub id or a
    directory without safetensors weights."""
    path = Path(model)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            for start in (0, size // 2, max(0, size - 65536)):
                fh.seek(start)
                h.update(fh.read(65536))
    return h.hexdigest()[:16]


class ConfigMismatch(UserError):
    """The output directory was written by a run with other settings (or from other data)."""


def item_fingerprint(item) -> str:
    """16 hex digits identifying an item's content: id, prompt, choices, answer key, subject and (where there is
    one) the conversation before the prompt (a single-turn item's fingerprint is what it was before turns)."""
    content = [item.id, item.prompt, list(item.choices), item.gold, item.subject]
    if getattr(item, "history", ()):
        content.append([list(turn) for turn in item.history])
    text = json.dumps(content, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_SHORT = {"steps": "steps", "gen_length": "gen", "block_length": "block", "temperature": "temp",
          "remasking": "", "cfg_scale": "cfg", "cache": "cache-", "threshold": "thr", "factor": "fac",
          "confidence_eos_eot_inf": "eoslast", "early_stop": "eosstop", "suffix_window": "win",
          "suffix_tail": "tail", "suffix_dropout": "drop", "threshold_alpha": "alpha"}


def config_name(settings: dict, default_sampler: dict) -> str:
    """``exact`` or ``ratio0.2_deg6``, after ``official_`` under the official protocol; sampler settings that
    differ from the protocol's defaults for the task are appended (``ratio0.2_deg6__steps16_temp0.5``)."""
    r = settings["exact_ratio"]
    name = "exact" if r >= 1 else f"ratio{r:g}_deg{settings['chebyshev_degree']}"
    if settings.get("protocol", "paper") != "paper":
        name = f"{settings['protocol']}_{name}"
    if r < 1 and settings.get("exact_split", 0.5) != 0.5:  # the op's knobs beyond the paper, when set
        name += f"_split{settings['exact_split']:g}"
    if r < 1 and settings.get("fit", "chebyshev") != "chebyshev":
        name += f"_{settings['fit']}"
    changed = [f"{_SHORT[k]}{settings[k]:g}" if isinstance(settings[k], (int, float))
               else f"{_SHORT[k]}{settings[k]}" for k, default in default_sampler.items() if settings.get(k, default) != default]
    return name + ("__" + "_".join(changed) if changed else "")


class RecordStore:
    def __init__(self, run_dir: Path, settings: dict, rank: int = 0, world_size: int = 1):
        self.dir = Path(run_dir)
        self.rank, self.world_size = rank, world_size
        self._claim(settings)
        own = "records.jsonl" if world_size == 1 else f"records.rank{rank}.jsonl"
        self.path = self.dir / own
        _drop_torn_tail(self.path)

    def _claim(self, settings: dict):
        """Refuse a directory of another configuration. The claim itself (run.json) is written with the first
        record, so a run that fails before producing anything leaves no claim behind."""
        self._identity = {k: settings.get(k) for k in IDENTITY_KEYS}
        path = self.dir / "run.json"
        if path.exists():
            previous = read_json_object(path, fix=f"delete {self.dir} to start over")
            previous = {k: previous.get(k, IDENTITY_DEFAULTS.get(k)) for k in IDENTITY_KEYS}
            diff = {k: (previous[k], v) for k, v in self._identity.items()
                    if previous[k] is not _UNKNOWN and previous[k] != v}
            if set(diff) == {"model_fp"}:
                raise ConfigMismatch(
                    f"{self.dir} holds results of another model at {self._identity['model']}: its weights changed "
                    f"since (fingerprint {diff['model_fp'][0]} there, {diff['model_fp'][1]} now). Use another "
                    "--out_dir, or delete that directory to start over."
                )
            if diff:
                detail = "; ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
                raise ConfigMismatch(
                    f"{self.dir} holds results of a different configuration ({detail}). Use another --out_dir, "
                    "or delete that directory to start over."
                )
        elif any(self.dir.glob("records*.jsonl")):
            raise ConfigMismatch(
                f"{self.dir} holds records but no run.json: nothing says which model and settings wrote them. "
                "Restore run.json, or delete that directory to start over."
            )

    def _write_claim(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "run.json"
        if not path.exists():
            _atomic_write(path, json.dumps(self._identity, indent=2, sort_keys=True) + "\n")

    def finished(self) -> dict[int, dict]:
        """Every record already written (by any rank, or merged), keyed by item index. An index twice in one file,
        or with two different records, is a :class:`UserError` naming the file and the line (the same record in
        a shard and in the merged file is what a crash during the merge leaves: kept)."""
        done = {}
        for f in sorted(self.dir.glob("records*.jsonl")):
            seen = set()
            for number, rec in _read_jsonl(f, numbered=True):
                idx = rec["idx"]
                if idx in seen or (idx in done and done[idx] != rec):
                    what = "repeats item" if idx in seen else "conflicts with another record of item"
                    raise UserError(f"{f}, line {number} {what} {idx}; remove the line that does not belong (or "
                                    f"delete {self.dir} to start over)")
                seen.add(idx)
                done[idx] = rec
        return done

    def check_items(self, items, complete: bool = False) -> None:
        """Refuse (:class:`ConfigMismatch`) records made from other data than ``items`` (same index, other item);
        with ``complete`` (``items`` is the whole data, no ``--limit`` cut it) also records of items past its end."""
        done = self.finished()
        beyond = sorted(i for i in done if i >= len(items)) if complete else []
        if beyond:
            raise ConfigMismatch(
                f"{self.dir} holds records of items the data does not have (item {beyond[0]}; the data has "
                f"{len(items)}): the data file changed? Use another --out_dir, or delete that directory to start over."
            )
        for item in items:
            rec = done.get(item.idx)
            if rec is not None and rec.get("item_fp") != item_fingerprint(item):
                raise ConfigMismatch(
                    f"{self.dir} holds records made from other data: item {item.idx} ({item.id!r}) differs from the "
                    "data now (the data file changed?). Use another --out_dir, or delete that directory to start over."
                )

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        self._write_claim()
        with open(self.path, "a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def merge(self) -> list[dict]:
        """(rank 0, after every rank is done) All records sorted by index into ``records.jsonl``; shards removed."""
        self._write_claim()
        finished = self.finished()
        records = [finished[i] for i in sorted(finished)]
        _atomic_write(self.dir / "records.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        for shard in self.dir.glob("records.rank*.jsonl"):
            shard.unlink()
        return records

    def write_summary(self, summary: dict) -> Path:
        path = self.dir / "summary.json"
        _atomic_write(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return path


def parse_of(record: dict, parser: str = "reader") -> str | None:
    """What ``parser`` read in a record: ``parsed_<parser>``, or ``parsed`` for the task's first parser; for records
    written before a multiple-choice parser was stored, derived from the raw output."""
    if f"parsed_{parser}" in record:
        return record[f"parsed_{parser}"]
    if parser == _parsers(record)[0]:
        return record["parsed"]
    return _derived(record, parser)[0]


def correct_of(record: dict, parser: str = "reader") -> bool:
    """Whether ``parser``'s reading of a record is right (``correct_<parser>``, ``correct`` for the first parser,
    derived from the raw output for older records)."""
    if f"correct_{parser}" in record:
        return bool(record[f"correct_{parser}"])
    if parser == _parsers(record)[0]:
        return bool(record["correct"]) if "correct" in record else record["parsed"] == record["gold"]
    return _derived(record, parser)[1]


def _parsers(record: dict) -> tuple[str, ...]:
    from .tasks import TASKS

    task = TASKS.get(record.get("task"))
    return task.parsers if task is not None else PARSERS[:2]


def _derived(record: dict, parser: str) -> tuple[str | None, bool]:
    from .items import Item
    from .tasks import TASKS

    task = TASKS.get(record.get("task"))
    if task is None and parser == "paper":  # a record older than the task field: a multiple-choice one
        found = paper_choice(record.get("raw_output", ""))
        return found, found == record["gold"]
    if task is None or parser not in task.parsers:
        raise ValueError(f"parser {parser!r} does not read {record.get('task')!r} answers")
    item = Item(record["idx"], record.get("id", ""), "", tuple(record.get("choices", ())), record["gold"])
    return task.read(item, record.get("raw_output", ""))[parser]


def score(records: list[dict], parser: str = "reader", parsers: tuple[str, ...] | None = None) -> dict:
    """Accuracy, its binomial standard error, counts (per subject where records carry one, with the mean over
    subjects as ``macro_accuracy``) under ``parser``, plus ``by_parser``: the same under each of ``parsers``
    (default: the readings of the records' task)."""
    if parsers is None:
        parsers = _parsers(records[0]) if records else PARSERS[:2]
    if parser not in parsers:
        raise ValueError(f"parser must be one of {', '.join(parsers)}; got {parser!r}")
    by_subject = defaultdict(list)
    for r in records:
        if r.get("subject"):
            by_subject[r["subject"]].append(r)
    by_parser = {}
    n = len(records)
    for name in parsers:
        correct = sum(correct_of(r, name) for r in records)
        acc = correct / n if n else math.nan
        by_parser[name] = {"correct": correct, "accuracy": acc,
                           "stderr": math.sqrt(acc * (1 - acc) / n) if n else math.nan,
                           "unparsed": sum(parse_of(r, name) is None for r in records)}
        if by_subject:
            by_parser[name]["macro_accuracy"] = sum(sum(correct_of(r, name) for r in rs) / len(rs)
                                                    for rs in by_subject.values()) / len(by_subject)
    out = {"n": n, **by_parser[parser], "answer_parser": parser, "by_parser": by_parser}
    if by_subject:
        out["per_subject"] = {
            s: {"n": len(rs), "accuracy": sum(correct_of(r, parser) for r in rs) / len(rs)}
            for s, rs in sorted(by_subject.items())
        }
    return out


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline (appending to it would corrupt the next record)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _read_jsonl(path: Path, numbered: bool = False) -> list:
    """The records of one file (``(line number, record)`` pairs with ``numbered``). A last line without its
    newline that is not JSON is the line a crash cut short (that item is simply redone); any other line that is
    not a record is a :class:`UserError` naming the line."""
    text = read_text(path)
    lines = text.split("\n")
    out = []
    fix = f"repair or remove that line (or delete {path.parent} to start over)"
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: torn by a crash
                continue
            raise UserError(f"{path}, line {number}: not valid JSON (column {err.colno}: {err.msg}); {fix}") from None
        if not isinstance(rec, dict) or isinstance(rec.get("idx"), bool) or not isinstance(rec.get("idx"), int):
            raise UserError(f"{path}, line {number}: not a record (a JSON object with an integer idx); {fix}")
        out.append((number, rec) if numbered else rec)
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
