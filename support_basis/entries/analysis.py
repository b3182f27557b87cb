"""The whole analysis: capture, statistics and plotting subsamples, layer by layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .capture import capture_qk
from .families import FAMILIES, KINDS, detect_family, find_projections
from .stats import deterministic_subsample, entry_statistics

CSV_COLUMNS = [
    "model", "family", "layer", "kind", "module", "count", "tokens", "sequences", "n", "sqrt_ln_n", "mean", "std",
    "skewness", "excess_kurtosis", "frac_gt_sqrt_ln_n", "gauss_frac_gt_sqrt_ln_n", "tail_ratio_sqrt_ln_n",
    "frac_gt_3std", "gauss_frac_gt_3std", "tail_ratio_3std", "frac_gt_4std", "gauss_frac_gt_4std", "max_abs",
    "max_abs_over_sqrt_ln_n", "abs_q999", "var_proxy", "var_proxy_ratio", "var_proxy_lambda_std",
    "var_proxy_lambda_max_std", "n_definition", "entries",
]


@dataclass
class AnalysisResult:
    """``rows``: one dict per (layer, kind) with ``CSV_COLUMNS`` keys, sorted by layer then q, k. ``samples``:
    ``{(kind, layer): float64 array}`` deterministic plotting subsamples. ``meta``: run-level facts (n, its
    definition, sequence lengths summary, family, note)."""

    rows: list[dict]
    samples: dict[tuple[str, int], np.ndarray]
    meta: dict = field(default_factory=dict)


def analyse(
    model: nn.Module,
    batches: Iterable[tuple[dict, torch.Tensor | None]],
    *,
    family: str | None = None,
    layers: Sequence[int] | None = None,
    n: int | None = None,
    plot_samples: int = 200_000,
    seed: int = 0,
    model_name: str = "",
    store_dtype: torch.dtype | None = None,
) -> AnalysisResult:
    """Capture q / k of ``layers`` (default all) on ``batches`` and compute ``entry_statistics`` per (layer, kind).

    ``n`` defaults to the longest real sequence of the run. Raw entries are freed layer by layer once their
    statistics and their plotting subsample (``plot_samples`` entries, seeded by ``seed``, layer and kind) exist.
    """
    family = family or detect_family(model)
    projections = find_projections(model, family)
    by_layer = {p.layer: p for p in projections}
    layers = list(by_layer) if layers is None else list(layers)
    missing = [i for i in layers if i not in by_layer]
    if missing:
        raise ValueError(f"layers {missing} not found; the model has layers {sorted(by_layer)}")
    entries, seq_lengths = capture_qk(model, projections, batches, layers, store_dtype=store_dtype)
    if not seq_lengths:
        raise ValueError("no input sequence was run (empty inputs?)")
    n_def = "longest input sequence (real tokens, padding excluded); natural log"
    if n is None:
        n = max(seq_lengths)
    else:
        n_def = "given by the user (--n); natural log"
    spec = FAMILIES[family]
    rows, samples = [], {}
    for layer in sorted(layers):
        for ki, kind in enumerate(KINDS):
            x = entries.pop((kind, layer))
            p = by_layer[layer]
            st = entry_statistics(x, n)
            samples[(kind, layer)] = deterministic_subsample(x, plot_samples, seed * 1_000_003 + 2 * layer + ki)
            module = (p.q_name if kind == "q" else p.k_name) + (f" [{kind} slice of fused QKV]" if p.fused else "")
            rows.append(
                {
                    "model": model_name,
                    "family": family,
                    "layer": layer,
                    "kind": kind,
                    "module": module,
                    "tokens": int(x.shape[0]) if x.dim() == 2 else 0,
                    "sequences": len(seq_lengths),
                    **st,
                    "n_definition": n_def,
                    "entries": spec.note,
                }
            )
            del x
    meta = {
        "model": model_name,
        "family": family,
        "family_description": spec.description,
        "entries": spec.note,
        "n": int(n),
        "sqrt_ln_n": math.sqrt(math.log(n)),
        "n_definition": n_def,
        "sequences": len(seq_lengths),
        "tokens": int(sum(seq_lengths)),
        "seq_len_min": int(min(seq_lengths)),
        "seq_len_max": int(max(seq_lengths)),
        "seq_len_mean": float(np.mean(seq_lengths)),
        "layers": sorted(layers),
        "num_layers": len(projections),
        "plot_samples": plot_samples,
    }
    return AnalysisResult(rows, samples, meta)


