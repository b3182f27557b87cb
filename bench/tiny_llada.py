#!/usr/bin/env python
"""The first downstream table: the shipped trained tiny LLaDA on held-out synthetic questions, exact vs hybrid.

    python bench/tiny_llada.py                       # the grid: exact + ratio {0.05,0.1,0.2,0.4} x degree {2,4,6}
    python bench/tiny_llada.py --limit 100 --ratios 0.2 --degrees 6      # a quick look

Multiple choice: ``run_all.sh --smoke`` (the unchanged ARC-Challenge runner: the paper's ARC prompt, chat template,
gen_length 32, 8 steps, greedy, float32) on ``--limit`` held-out items (200 per kind by default, kinds
interleaved), scored with the runners' reader parser (the model answers with the option's text; the paper's
letter-only parser would score none of it). Free-form: exact match of the recall questions asked alone (same
sampler setting). Prints accuracy +- standard error per kind and configuration, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from _common import REPO, emit_json, machine, print_table

CKPT = REPO / "support_basis" / "checkpoints" / "llada-tiny"


def run_grid(out: Path, limit: int, ratios: str, degrees: str) -> dict:
    """Run (or resume) run_all.sh --smoke on ARC-Challenge-format synthetic data; return summaries by config."""
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--tasks", "arc_challenge", "--ratios", ratios,
                    "--degrees", degrees, "--limit", str(limit), "--out", str(out), "--batch-size", "32"],
                   check=True, env=env, cwd=REPO)
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "arc_challenge").glob("*/summary.json"))}


def free_form(configs: list[tuple[float, int]], n: int, data: Path) -> dict:
    """Exact match of free-form recall, per configuration (the model loaded once)."""
    import torch

    from support_basis.loading import encode_prompts, load_model_and_tokenizer
    from support_basis.sampling import generate

    rows = [json.loads(x) for x in (data / "recall_free.jsonl").read_text().splitlines()[:n]]
    model, tok = load_model_and_tokenizer(str(CKPT), "float32", "cpu")  # the package's code
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    out = {}
    for ratio, degree in configs:
        model.config.hybrid_exact_ratio, model.config.hybrid_chebyshev_degree = ratio, degree
        right = 0
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            ids, mask = encode_prompts(tok, [r["prompt"] for r in chunk], True, "cpu")
            with torch.no_grad():
                x = generate(model, ids, mask, steps=8, gen_length=32, block_length=32, eot_token_id=eot,
                             confidence_eos_eot_inf=True)
            got = tok.batch_decode(x[:, ids.shape[1]:], skip_special_tokens=True)
            right += sum(g.strip() == r["answer"] for g, r in zip(got, chunk))
        acc = right / len(rows)
        out["exact" if ratio >= 1 else f"ratio{ratio:g}_deg{degree}"] = {
            "n": len(rows), "accuracy": acc, "stderr": math.sqrt(acc * (1 - acc) / len(rows))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "results-smoke" / "tiny-grid"), help="run_all.sh output directory")
    p.add_argument("--limit", type=int, default=1000, help="held-out multiple-choice items (default 1000)")
    p.add_argument("--ratios", default="0.05 0.1 0.2 0.4")
    p.add_argument("--degrees", default="2 4 6")
    p.add_argument("--free-form", type=int, default=200, help="free-form recall questions (default 200)")
    a = p.parse_args(argv)
    if a.limit < 1 or a.free_form < 1:
        p.error("--limit and --free-form must be >= 1")
    out = Path(a.out)
    summaries = run_grid(out, a.limit, a.ratios, a.degrees)
    kinds = sorted({k for s in summaries.values() for k in s.get("per_subject", {})})
    print(f"# trained tiny LLaDA ({CKPT.relative_to(REPO)}), held-out synthetic multiple choice, ARC-Challenge "
          f"runner defaults, reader parser; {machine()}")
    rows = []
    for name, s in summaries.items():
        row = {"config": name, "n": s["n"], "all": s["accuracy"], "all_se": s["stderr"]}
        for k in kinds:
            sub = s["per_subject"][k]
            row[k] = sub["accuracy"]
            row[k + "_se"] = math.sqrt(sub["accuracy"] * (1 - sub["accuracy"]) / sub["n"])
        rows.append(row)
    rows.sort(key=lambda r: (r["config"] != "exact", r["config"]))
    print_table(rows, [("config", "config", "s"), ("n", "n", "d"), ("all", "all", ".3f"), ("all_se", "+-", ".3f")]
                + [c for k in kinds for c in ((k, k, ".3f"), (k + "_se", "+-", ".3f"))])
    configs = [(1.0, 6)] + [(float(r), int(d)) for r in a.ratios.split() for d in a.degrees.split()]
    data = out / "synthetic-heldout"
    free = free_form(configs, a.free_form, data)
    print("\n# free-form recall, exact match")
    print_table([{"config": k, **v} for k, v in free.items()],
                [("config", "config", "s"), ("n", "n", "d"), ("accuracy", "exact match", ".3f"),
                 ("stderr", "+-", ".3f")])
    emit_json({"benchmark": "tiny_llada", "machine": machine(), "multiple_choice": rows, "free_form": free})


if __name__ == "__main__":
    main()
