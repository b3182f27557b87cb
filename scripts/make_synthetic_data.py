#!/usr/bin/env python
"""Write the held-out synthetic evaluation data for the shipped tiny model, in every runner's hub schema.

    python scripts/make_synthetic_data.py --out data/synthetic [--n 200] [--seed 1234] [--kinds recall,largest]

Writes ``OUT/<task>.jsonl`` for the five runners (arc_challenge, arc_easy, gpqa, hellaswag, mmlu: the same
problems, each in its task's schema, ``n`` per kind interleaved kind by kind, the kind as the item's subject)
and ``OUT/recall_free.jsonl``
(``{"id", "prompt", "answer"}``: the recall questions alone, for free-form exact match). Every problem is in the
fixed held-out split that training never sees (``support_basis/synthetic/problems.py``). Deterministic.

    python scripts/run_arc_challenge.py --model_name checkpoints/llada-tiny --data_path OUT --configs exact 0.2:6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support_basis.errors import ArgumentParser  # noqa: E402
from support_basis.synthetic import KINDS, SCHEMA_WRITERS, heldout_problems, to_row  # noqa: E402


def write_heldout(out: Path, n: int, seed: int, kinds=KINDS) -> list[Path]:
    """Write the files (each atomically) and return their paths."""
    per_kind = [heldout_problems(kind, n, seed) for kind in kinds]
    problems = [group[i] for i in range(n) for group in per_kind]  # interleaved: any --limit keeps every kind
    files = {task: [to_row(p, task, i) for i, p in enumerate(problems)] for task in SCHEMA_WRITERS}
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


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write (created if missing)")
    p.add_argument("--n", type=int, default=200, help="held-out problems per kind (default 200)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    a = p.parse_args(argv)
    if not 1 <= a.n <= 5000:
        p.error(f"--n must be in 1..5000; got {a.n}")
    kinds = tuple(a.kinds.split(","))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        p.error(f"--kinds: unknown kind(s) {', '.join(bad)}; the kinds are {', '.join(KINDS)}")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {a.out} is a file; give a directory")
    paths = write_heldout(out, a.n, a.seed, kinds)
    print(f"wrote {len(paths)} files ({a.n} held-out problems per kind, kinds {', '.join(kinds)}) to {out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
