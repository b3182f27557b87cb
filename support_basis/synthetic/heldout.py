"""The held-out evaluation files of the synthetic tasks, in every runner's hub schema (see
``scripts/make_synthetic_data.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .problems import KINDS, heldout_problems
from .schemas import OFFICIAL_FILES, SCHEMA_WRITERS, to_row

MMLU_DEV_PER_SUBJECT = 5  # official MMLU's shots: the first five dev rows of the item's subject


def write_heldout(out: Path, n: int, seed: int, kinds=KINDS) -> list[Path]:
    """Write the files (each atomically) and return their paths."""
    per_kind = [heldout_problems(kind, n, seed) for kind in kinds]
    problems = [group[i] for i in range(n) for group in per_kind]  # interleaved: any --limit keeps every kind
    files = {task: [to_row(p, task, i) for i, p in enumerate(problems)] for task in (*SCHEMA_WRITERS, *OFFICIAL_FILES)}
    # official MMLU's dev split: five other held-out problems per kind (never one of the test questions)
    asked = {p.question for p in problems}
    dev = [p for kind in kinds for p in [q for q in heldout_problems(kind, n + MMLU_DEV_PER_SUBJECT, seed)
                                         if q.question not in asked][:MMLU_DEV_PER_SUBJECT]]
    files["mmlu_dev"] = [to_row(p, "mmlu", i) for i, p in enumerate(dev)]
    if "recall" in kinds:
        files["recall_free"] = [{"id": p.uid, "prompt": p.question, "answer": p.answer}
                                for p in heldout_problems("recall", n, seed)]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in files.items():
        path = out / f"{name}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
        written.append(path)
    return written
