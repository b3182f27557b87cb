"""Where a run's results live: ``<out_dir>/<task>/<config>/``.

    run.json        the settings that define the run (a directory belongs to exactly one configuration)
    records.jsonl   one JSON line per item, written (and fsync-ed) as soon as the item is finished
    summary.json    accuracy, standard error, counts, settings, timing; written when the run completes

With several processes each rank appends to ``records.rank<r>.jsonl``; the last step merges every shard into
``records.jsonl`` sorted by item index, so the directory ends identical to a single-process run. Re-running the
same command resumes: items already in any of these files are skipped. A line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

# Settings that change what an item's record is; the rest (batch size, limit, ...) may vary between resumes.
IDENTITY_KEYS = ("task", "model", "exact_ratio", "chebyshev_degree", "steps", "gen_length", "block_length",
                 "temperature", "remasking", "cfg_scale", "dtype", "seed", "data", "chat")


class ConfigMismatch(Exception):
    """The output directory was written by a run with other settings."""


_SHORT = {"steps": "steps", "gen_length": "gen", "block_length": "block", "temperature": "temp",
          "remasking": "", "cfg_scale": "cfg"}


def config_name(settings: dict, default_sampler: dict) -> str:
    """``exact`` or ``ratio0.2_deg6``; sampler settings that differ from the task's defaults are appended
    (``ratio0.2_deg6__steps16_temp0.5``)."""
    r = settings["exact_ratio"]
    name = "exact" if r >= 1 else f"ratio{r:g}_deg{settings['chebyshev_degree']}"
    changed = [f"{_SHORT[k]}{settings[k]:g}" if isinstance(settings[k], (int, float)) else f"{settings[k]}"
               for k, default in default_sampler.items() if settings[k] != default]
    return name + ("__" + "_".join(changed) if changed else "")


class RecordStore:
    def __init__(self, run_dir: Path, settings: dict, rank: int = 0, world_size: int = 1):
        self.dir = Path(run_dir)
        self.rank, self.world_size = rank, world_size
        self.dir.mkdir(parents=True, exist_ok=True)
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
            previous = json.loads(path.read_text())
            diff = {k: (previous.get(k), v) for k, v in self._identity.items() if previous.get(k) != v}
            if diff:
                detail = "; ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
                raise ConfigMismatch(
                    f"{self.dir} holds results of a different configuration ({detail}). Use another --out_dir, "
                    "or delete that directory to start over."
                )

    def _write_claim(self):
        path = self.dir / "run.json"
        if not path.exists():
            _atomic_write(path, json.dumps(self._identity, indent=2, sort_keys=True) + "\n")

    def finished(self) -> dict[int, dict]:
        """Every record already written (by any rank, or merged), keyed by item index."""
        done = {}
        for f in sorted(self.dir.glob("records*.jsonl")):
            for rec in _read_jsonl(f):
                done[rec["idx"]] = rec
        return done

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


def score(records: list[dict]) -> dict:
    """Accuracy, its binomial standard error, counts; per subject where records carry one."""
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    acc = correct / n if n else math.nan
    out = {"n": n, "correct": correct, "accuracy": acc, "stderr": math.sqrt(acc * (1 - acc) / n) if n else math.nan,
           "unparsed": sum(r["parsed"] is None for r in records)}
    by_subject = defaultdict(list)
    for r in records:
        if r.get("subject"):
            by_subject[r["subject"]].append(r)
    if by_subject:
        out["per_subject"] = {
            s: {"n": len(rs), "accuracy": sum(bool(r["correct"]) for r in rs) / len(rs)}
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


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line a crash cut short: that item is simply redone
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
