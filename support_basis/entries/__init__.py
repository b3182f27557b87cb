"""Entry distributions of the pre-RoPE queries and keys of a transformer (the paper's sub-Gaussian evidence).

The support-basis paper (arXiv 2510.01643) argues that the entries of Q and K are sub-Gaussian, so that only a
small fraction of them exceeds ``sqrt(log n)`` (n = sequence length) and the rest is in the bounded regime where a
low-degree polynomial approximates ``exp`` well. This package measures that claim on a real model:

    detect_family / find_projections    which modules produce q and k (per family, or a fused QKV and its split)
    capture_qk                          forward hooks -> per layer the q / k rows of the REAL tokens (no padding)
    entry_statistics                    moments, tail fractions against a Gaussian of the same variance, max |x|,
                                        an empirical sub-Gaussian variance proxy
    analyse                             capture + statistics + deterministic plotting subsamples, layer by layer
    plot_layer_histograms / plot_summary / plot_kde_overlay     matplotlib (Agg) figures
    text_batches / image_batches        model inputs (built-in English passages, or synthetic images)
    load_model                          AutoModel (or AutoModelForCausalLM) with dtype / device / remote code

What is recorded: the OUTPUT of the q and k projections (``nn.Linear``), i.e. before RoPE, before any head split,
and before the ``1/sqrt(head_dim)`` score scaling. OPT multiplies q by ``head_dim**-0.5`` inside its attention,
after ``q_proj``; the recorded q is the projection output without that factor (the CSV says so per row).

Threshold: ``n`` is a sequence length (tokens, or CLS + patches for ViT); by default the LONGEST input sequence of
the run (the size of the largest attention matrix) and ``sqrt(ln n)`` uses the natural log. Each CSV row states
the n it used.

Variance proxy (what exactly is estimated). For the centred entries ``y = x - mean(x)`` of one (layer, q/k) the
empirical log-MGF is ``phi(l) = log mean(exp(l * y))``. A distribution is sub-Gaussian with variance proxy
``s^2`` iff ``phi(l) <= l^2 s^2 / 2`` for every ``l``; the estimate is

    var_proxy = max over the grid G of 2 * phi(l) / l^2,
    G = { +-c / std : c = c_max * k / K, k = 1..K } (K = 20 per sign),  c_max = clip(sqrt(ln(N) / 2), 1, 4)

with N the number of entries. Limits: (i) any finite sample is bounded, hence sub-Gaussian; the number is the
smallest proxy that the *empirical* distribution needs on the probed range ``|l| <= c_max / std``, a lower bound
of the sample's best proxy over all ``l``, and only an estimate of the population's; (ii) ``c_max`` is tied to N so
that the Monte-Carlo error of ``mean(exp(l y))`` stays about ``N**-1/4`` relative for Gaussian data (larger ``l``
is dominated by a handful of extreme entries); (iii) the supremum over ALL l is >= the variance (``2 phi(l)/l^2
-> var`` as ``l -> 0``); the grid starts at ``c_max / K``, so bounded, light-tailed data can come out a hair below
the variance (uniform / Rademacher: ~0.998). ``var_proxy / var`` close to 1 means Gaussian-like tails on the
probed range (a Gaussian gives 1 +- ~1 %); clearly above 1 means tails heavier than a Gaussian of the same
variance (a Laplace's MGF blows up at ``|l| std = sqrt(2)``: 200k Laplace samples give ~3-5, Student-t(5) ~6-18,
and the value grows with N because the population has no finite proxy); (iv) it pools all channels and heads of a
layer: a few outlier channels show up as kurtosis and a large proxy, not as a per-channel diagnosis.
"""

from __future__ import annotations

from .analysis import CSV_COLUMNS, AnalysisResult, analyse
from .capture import capture_qk
from .families import (
    FAMILIES,
    KINDS,
    FamilySpec,
    LayerProjection,
    UnsupportedModelError,
    detect_family,
    find_projections,
    fused_split_sizes,
    parse_layers,
)
from .inputs import BUILTIN_TEXTS, image_batches, load_model, load_texts, max_positions, synthetic_images, text_batches
from .report import (
    format_table,
    plot_kde_overlay,
    plot_layer_histograms,
    plot_summary,
    summary_line,
    write_csv,
    write_json,
)
from .stats import deterministic_subsample, entry_statistics, gaussian_abs_tail, subgaussian_variance_proxy

__all__ = ['max_positions', 'FAMILIES', 'FamilySpec', 'LayerProjection', 'UnsupportedModelError', 'BUILTIN_TEXTS', 'CSV_COLUMNS', 'detect_family', 'find_projections', 'fused_split_sizes', 'parse_layers', 'capture_qk', 'entry_statistics', 'gaussian_abs_tail', 'subgaussian_variance_proxy', 'deterministic_subsample', 'analyse', 'AnalysisResult', 'text_batches', 'image_batches', 'synthetic_images', 'load_texts', 'load_model', 'write_csv', 'write_json', 'plot_layer_histograms', 'plot_summary', 'plot_kde_overlay', 'format_table', 'summary_line', 'KINDS']
