#!/usr/bin/env python
"""Write the held-out synthetic evaluation data for the shipped tiny model, in every runner's hub schema.

    python scripts/make_synthetic_data.py --out data/synthetic [--n 200] [--seed 1234] [--kinds recall,largest]

Writes ``OUT/<task>.jsonl`` for the five runners (arc_challenge, arc_easy, gpqa, hellaswag, mmlu: the same
problems, each in its task's schema, ``n`` per kind interleaved kind by kind, the kind as the item's subject)
the official protocol's files (``arc_challenge_validation``, ``gpqa_diamond``, ``mmlu_dev``: five other problems
per kind as MMLU's few-shot split, ``gsm8k``: the answer as a worked solution ending in ``#### N``) and
``OUT/recall_free.jsonl``
(``{"id", "prompt", "answer"}``: the recall questions alone, for free-form exact match). Every problem is in the
fixed held-out split that training never sees (``support_basis/synthetic/problems.py``). Deterministic.

    python scripts/run_arc_challenge.py --model_name support_basis/checkpoints/llada-tiny --data_path OUT --configs exact 0.2:6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from support_basis.errors import ArgumentParser, cli
from support_basis.synthetic import KINDS, write_heldout  # noqa: F401  (re-exported)


@cli
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
