#!/usr/bin/env python
"""Hybrid attention vs SDPA (and vs the published implementation): time, error, memory; then a model forward.

    python bench/attention.py                     # CPU fp32, L = 256 ... 4096 (about 3 minutes on 2 cores)
    python bench/attention.py --lengths 1024 --skip-e2e

Per length (B=1, H=32, D=128; fp32 on CPU, bf16 on CUDA when present): SDPA ms, hybrid ms and their ratio (medians over interleaved rounds);
relative Frobenius error of the output against float64 exact attention at (ratio, degree) = (0.2, 4) and
(0.2, 6); peak extra memory of the hybrid call; the published implementation's time and error (up to
``--paper-max-len``). Then one forward of a random mid-size LLaDA (8 layers, d_model 1024) at L=1024, exact vs
hybrid. Inputs are Gaussian with scores of standard deviation ``--score-std``. Prints a table, then one JSON
line.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from _common import PeakMemory, best_ms, emit_json, interleaved_ms, machine, print_table, random_llada
from paper_baseline import paper_hybrid_attention  # noqa: E402

from hybrid_attention import hybrid_attention  # noqa: E402  (path set by _common)


def exact_float64(q, k, v) -> torch.Tensor:
    """Exact softmax attention in float64, one head at a time (bounded memory)."""
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    for h in range(q.shape[1]):
        s = q[:, h].double() @ k[:, h].double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        out[:, h] = torch.softmax(s, -1) @ v[:, h].double()
    return out


def rel_err(out, ref) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def attention_row(l, heads, dim, device, dtype, score_std, paper_max_len, repeats):
    g = torch.Generator(device="cpu").manual_seed(l)
    # q.k / sqrt(D) has standard deviation score_std when q has std score_std and k has std 1
    q = (torch.randn(1, heads, l, dim, generator=g) * score_std).to(device, dtype)
    k = torch.randn(1, heads, l, dim, generator=g).to(device, dtype)
    v = torch.randn(1, heads, l, dim, generator=g).to(device, dtype)
    rounds = repeats if l <= 1024 else max(2, repeats - 2)
    times = interleaved_ms({"sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
                            "hybrid": lambda: hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6)},
                           device, rounds)
    ratios = sorted(h / s for s, h in zip(times["sdpa"], times["hybrid"]))
    with PeakMemory(device) as mem:
        out6 = hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6)
    ref = exact_float64(q, k, v)
    row = dict(
        L=l,
        sdpa_ms=statistics.median(times["sdpa"]),
        hybrid_ms=statistics.median(times["hybrid"]),
        ratio=statistics.median(ratios),  # median over rounds of the per-round ratio
        err_deg4=rel_err(hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=4), ref),
        err_deg6=rel_err(out6, ref),
        peak_mb=mem.mb,
    )
    if l <= paper_max_len:
        qp, kp, vp = q.float(), k.float(), v.float()
        row["paper_ms"] = best_ms(lambda: paper_hybrid_attention(qp, kp, vp), device, 1)
        row["paper_ratio"] = row["paper_ms"] / row["sdpa_ms"]
        row["paper_err_deg6"] = rel_err(paper_hybrid_attention(qp, kp, vp, 0.2, 6), ref)
    return row


def end_to_end(device, dtype, length, repeats):
    """One forward of the random mid-size LLaDA (8 layers, d_model 1024) at ``length``: exact vs hybrid."""
    model = random_llada("mid", device, dtype)
    cfg = model.config
    ids = torch.randint(0, cfg.vocab_size, (1, length), device=device)

    def forward():
        with torch.no_grad():
            model(ids)

    def with_ratio(ratio):
        def run():
            model.config.hybrid_exact_ratio = ratio
            forward()
        return run

    times = interleaved_ms({"exact": with_ratio(1.0), "hybrid": with_ratio(0.2)}, device, max(2, repeats - 2))
    ratios = [h / e for e, h in zip(times["exact"], times["hybrid"])]
    return dict(L=length, exact_ms=statistics.median(times["exact"]), hybrid_ms=statistics.median(times["hybrid"]),
                ratio=statistics.median(ratios))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="default 256..4096 (CPU), ..16384 (CUDA)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--score-std", type=float, default=1.0, help="standard deviation of the attention scores")
    p.add_argument("--paper-max-len", type=int, default=2048, help="longest L for the published implementation")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (fewer above L=1024)")
    p.add_argument("--skip-e2e", action="store_true")
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lengths = a.lengths or ([256, 512, 1024, 2048, 4096] + ([8192, 16384] if device == "cuda" else []))
    print(f"# attention: B=1 H={a.heads} D={a.dim} {str(dtype)[6:]} on {device}; {machine()}")
    rows = []
    for l in lengths:
        rows.append(attention_row(l, a.heads, a.dim, device, dtype, a.score_std, a.paper_max_len, a.repeats))
        print(f"  L={l} done", flush=True)
    print_table(rows, [("L", "L", "d"), ("sdpa_ms", "SDPA ms", ".1f"), ("hybrid_ms", "hybrid ms", ".1f"),
                       ("ratio", "hyb/SDPA", ".2f"), ("err_deg4", "err(.2,4)", ".2e"),
                       ("err_deg6", "err(.2,6)", ".2e"), ("peak_mb", "peak MB", ".0f"),
                       ("paper_ms", "paper ms", ".0f"), ("paper_ratio", "paper/SDPA", ".1f"),
                       ("paper_err_deg6", "paper err", ".2e")])
    e2e = None
    if not a.skip_e2e:
        e2e = end_to_end(device, dtype, 1024, a.repeats)
        print(f"\n# end-to-end forward, random LLaDA 8 layers d_model 1024, L=1024: exact {e2e['exact_ms']:.0f} ms, "
              f"hybrid {e2e['hybrid_ms']:.0f} ms, ratio {e2e['ratio']:.2f}")
    long_rows = [r for r in rows if r["L"] >= 1024]
    at4096 = [r for r in rows if r["L"] == 4096]
    targets = {
        "hybrid_le_2x_sdpa_at_L_ge_1024": all(r["ratio"] <= 2.0 for r in long_rows) if long_rows else None,
        "peak_mb_at_4096_lt_1024": (at4096[0]["peak_mb"] < 1024) if at4096 and at4096[0]["peak_mb"] else None,
        "e2e_le_1p3x_exact": (e2e["ratio"] <= 1.3) if e2e else None,
    }
    emit_json(dict(bench="attention", machine=machine(), device=device, dtype=str(dtype), score_std=a.score_std,
                   rows=rows, e2e=e2e, targets=targets))


if __name__ == "__main__":
    main()
