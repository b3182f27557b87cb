"""Support-basis hybrid attention (Aliakbarpour, Braverman, Yin, Zhang; arXiv 2510.01643).

Softmax attention whose largest and smallest scores are weighted exactly with ``exp`` and whose dense middle is
weighted by a low-degree Chebyshev approximation of ``exp``. Torch, plus an optional native CPU kernel built from
the C source in this file; no transformers import: this file ships inside the self-contained
``LLaDA-8B-Instruct-BS`` model directory and is the one op used by the model, by the transformers attention
backend and by the benchmarks.

Contents
    hybrid_attention            the fast op (chunked, sync-free, bounded memory)
    hybrid_thresholds           the per-head thresholds the fast op uses (for tests and analysis)
    hybrid_attention_reference  a dense float64 mirror of the math, for tests
    validate_*                  the knob checks shared with the model config and the command lines
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.fx.experimental._config  # noqa: F401  (use_duck_shape, see _compiled_kernel)
import torch.nn.functional as F

__all__ = [
    "hybrid_attention",
    "hybrid_thresholds",
    "hybrid_attention_reference",
    "validate_exact_ratio",
    "validate_chebyshev_degree",
    "validate_num_samples",
    "validate_exact_split",
    "validate_fit",
    "DEFAULT_NUM_SAMPLES",
    "DEFAULT_EXACT_SPLIT",
    "DEFAULT_FIT",
    "FITS",
    "MAX_CHEBYSHEV_DEGREE",
    "MASKED_BIAS",
]

DEFAULT_NUM_SAMPLES = 8192
"""Scores sampled per (batch, head) to place the thresholds; a valid grid this small is enumerated exactly."""

DEFAULT_EXACT_SPLIT = 0.5
"""Share of the exact budget given to the largest scores (the paper splits it evenly)."""

FITS = ("chebyshev", "empirical")
"""``chebyshev``: least squares on Chebyshev nodes of the interval (the paper). ``empirical``: least squares on
the head's own (sampled) approximated scores, i.e. weighted by where the scores lie (see ``hybrid_attention``)."""

DEFAULT_FIT = "chebyshev"

MAX_CHEBYSHEV_DEGREE = 1024
"""Largest accepted degree: the fit's tables grow with the square of the degree (64 MB at 1024)."""

MASKED_BIAS = -1e30
"""An additive float bias at or below this value masks its pair (covers ``-inf`` and ``torch.finfo(dtype).min``)."""

# Scores materialised per chunk of (batch, head) pairs, and per row block handed to the torch kernels, in elements,
# per (device, kernel). CPU: 64 MB of fp32 scores per chunk for the native and the compiled kernel, processed whole:
# each chunk costs a few multi-threaded regions (two matmuls, the kernel), and where the cores are shared each
# region can wait a scheduler time slice for its threads, so fewer, larger chunks win (interleaved runs at L = 1024
# on the 2-core EPYC with other jobs running: 1.33x SDPA with 64 MB chunks, 1.64x with 16 MB, 5.2x with 4 MB).
# The eager torch kernel materialises ~7 block-sized temporaries: 16 MB chunks, 1 MB blocks. GPU: 1 GB chunks
# processed whole, so a forward launches a few kernels per layer.
_BUDGETS = {
    ("cpu", "native"): (1 << 24, 1 << 24),
    ("cpu", "compiled"): (1 << 24, 1 << 24),
    ("cpu", "eager"): (1 << 22, 1 << 18),
    ("gpu", "compiled"): (1 << 28, 1 << 28),
    ("gpu", "eager"): (1 << 28, 1 << 28),
}
_ROW_SCALE_CAP = 60.0  # exp(60) * |p| * n stays finite in fp32 for any n < 1e10
_WEIGHT_FLOOR = 1e-30  # positive floor of polynomial weights: a row whose polynomial is <= 0 everywhere stays defined
_INTERVAL_PAD = 1e-5  # relative padding of the interval's half-width (see _interval)
_FIT_NODES = 64  # Chebyshev nodes of the least-squares fit (more than enough for any usable degree)
_FIT_PRIOR = 1e-6  # weight of the Chebyshev-norm term that keeps the empirical fit well posed (see _fit_empirical)
# Degrees up to this are evaluated with Horner's rule in the monomial basis of t in [-1, 1] (one fused multiply-add
# per degree; monomial coefficients of a Chebyshev series grow like 2.4^g, which costs accuracy from degree ~10
# and overflows fp32 from ~140); above it, with Clenshaw's recurrence in the Chebyshev basis (stable at any degree).
_HORNER_MAX_DEGREE = 8


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (shared with the model config so every entry point reports a bad knob the same way)
# ----------------------------------------------------------------------------------------------------------------


def validate_exact_ratio(value, name: str = "hybrid_exact_ratio") -> float:
    """Return ``value`` as a float in [0, 1] or raise ``ValueError`` naming ``name``, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1] (1.0 means exact attention); got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (1.0 means exact attention); got {value!r}")
    return float(value)


def validate_chebyshev_degree(value, name: str = "hybrid_chebyshev_degree") -> int:
    """Return ``value`` as an int in [1, MAX_CHEBYSHEV_DEGREE] or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHEBYSHEV_DEGREE:
        raise ValueError(f"{name} must be an integer in [1, {MAX_CHEBYSHEV_DEGREE}]; got {value!r}")
    return int(value)


def validate_num_samples(value, name: str = "hybrid_num_samples") -> int:
    """Return ``value`` as an int >= 1 or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def validate_exact_split(value, name: str = "hybrid_exact_split") -> float:
    """Return ``value`` as a float in [0, 1] or raise ``ValueError`` naming ``name``, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1] (share of the exact budget given to the largest "
                         f"scores; 0.5 = the paper); got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (share of the exact budget given to the largest scores; "
                         f"0.5 = the paper); got {value!r}")
    return float(value)


def validate_fit(value, name: str = "hybrid_fit") -> str:
    """Return ``value`` if it is one of ``FITS`` or raise ``ValueError`` naming ``name``, the value and the choices."""
    if not isinstance(value, str) or value not in FITS:
        raise ValueError(f"{name} must be one of {', '.join(FITS)} (chebyshev = the paper); got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Fit of exp on one head's interval
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _chebyshev_tables(degree: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 tables for a degree-``degree`` fit on ``max(_FIT_NODES, 2 (g+1))`` Chebyshev nodes.

    Returns ``nodes (N,)`` and ``analysis (N, g+1)`` with ``c = f(nodes) @ analysis`` the least-squares Chebyshev
    coefficients (the basis is discretely orthogonal on these nodes, so the normal equations are diagonal).
    """
    n = max(_FIT_NODES, 2 * (degree + 1))
    nodes = torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(nodes)[:, None])
    analysis = basis * (2.0 / n)
    analysis[:, 0] *= 0.5
    return nodes.to(device), analysis.to(device)


@lru_cache(maxsize=None)
def _to_monomial(degree: int, device: torch.device) -> torch.Tensor:
    """``M (g+1, g+1)`` float64 with ``a = c @ M`` the monomial coefficients of the Chebyshev series ``c``."""
    m = torch.zeros(degree + 1, degree + 1, dtype=torch.float64)
    m[0, 0] = 1.0
    if degree >= 1:
        m[1, 1] = 1.0
    for k in range(2, degree + 1):  # T_k = 2 t T_{k-1} - T_{k-2}
        m[k, 1:] = 2.0 * m[k - 1, :-1]
        m[k] -= m[k - 2]
    return m.to(device)


def _fit_chebyshev(half: torch.Tensor, degree: int) -> torch.Tensor:
    """Chebyshev coefficients ``c (..., g+1)`` (float64) of the least-squares fit of ``exp(half * (t - 1))`` on
    Chebyshev nodes of [-1, 1]: with ``s = mid + half * t``, the paper's fit of ``exp(s - hi)`` on ``[lo, hi]``
    (the shape of ``exp`` on an interval depends only on its width, so ``half (...)`` alone fixes it)."""
    nodes, analysis = _chebyshev_tables(degree, half.device)
    return _small_matmul(torch.exp(half.double()[..., None] * (nodes - 1.0)), analysis)


def _small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (..., n) @ b (n, k)`` for the fit's small matrices, as one elementwise product and sum. On a CPU a BLAS
    call this small still enters a multi-threaded region, and on a machine whose other cores are busy each such
    region can wait a whole scheduler time slice (measured: ~15 ms per call, more than the op) for its threads."""
    return (a[..., :, None] * b).sum(-2)


def _chebyshev_norms(degree: int, device) -> torch.Tensor:
    """``<T_k, T_k>`` of the Chebyshev-weighted inner product on [-1, 1]: 1, 1/2, 1/2, ..."""
    d = torch.full((degree + 1,), 0.5, dtype=torch.float64, device=device)
    d[0] = 1.0
    return d


def _fit_empirical(half: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, degree: int) -> torch.Tensor:
    """Chebyshev coefficients ``c (P, g+1)`` of the least-squares fit of ``exp(half (t - 1))`` on the points ``t``.

    ``t (P, M)`` are a head's (sampled) approximated scores mapped to [-1, 1] and ``weight (P, M)`` their 0/1
    weights. Minimises ``mean_m w_m (p(t_m) - f(t_m))^2 + _FIT_PRIOR * ||p - f||_T^2`` with ``||.||_T`` the
    Chebyshev-weighted L2 norm on [-1, 1] (whose minimiser alone is the paper's fit): the small second term keeps
    the problem well posed where the points do not determine every coefficient (few or clustered points), and
    leaves the fit the paper's where a head has no approximated score. The normal equations come from the
    moments ``mean w T_k(t)``, ``k <= 2g`` (``T_i T_j = (T_{i+j} + T_{|i-j|}) / 2``), solved in float64 on the
    device without a host synchronisation.
    """
    half = half.double()
    t, w = t.double(), weight.double()
    w = w / w.sum(-1, keepdim=True).clamp_min(1.0)
    y = torch.exp(half[:, None] * (t - 1.0))
    moments, rhs = [w.sum(-1)], [(w * y).sum(-1)]
    t_prev, t_cur = torch.ones_like(t), t
    for k in range(1, 2 * degree + 1):
        moments.append((w * t_cur).sum(-1))
        if k <= degree:
            rhs.append((w * y * t_cur).sum(-1))
        t_prev, t_cur = t_cur, 2.0 * t * t_cur - t_prev
    mu = torch.stack(moments, -1)
    i = torch.arange(degree + 1, device=t.device)
    gram = 0.5 * (mu[:, i[:, None] + i[None, :]] + mu[:, (i[:, None] - i[None, :]).abs()])
    norms = _chebyshev_norms(degree, t.device)
    uniform = _fit_chebyshev(half, degree)
    gram = gram + torch.diag(_FIT_PRIOR * norms)
    b = torch.stack(rhs, -1) + _FIT_PRIOR * norms * uniform
    # The system is symmetric positive definite (a Gram matrix plus a positive prior): Cholesky, which reports a
    # failure (extreme scores: non-finite or numerically singular moments) in ``info`` instead of raising as LU
    # does. Those heads solve an identity system and fall back to the paper's fit below.
    eye = torch.eye(degree + 1, dtype=gram.dtype, device=gram.device)
    finite = torch.isfinite(gram).all(-1).all(-1) & torch.isfinite(b).all(-1)
    factor, info = torch.linalg.cholesky_ex(torch.where(finite[:, None, None], gram, eye))
    ok = finite & (info == 0)
    factor = torch.where(ok[:, None, None], factor, eye)
    c = torch.cholesky_solve(torch.where(ok[:, None], b, uniform)[..., None], factor)[..., 0]
    return torch.where(ok[:, None] & torch.isfinite(c).all(-1, keepdim=True), c, uniform)


def _evaluation_coefficients(c: torch.Tensor, degree: int) -> torch.Tensor:
    """The coefficients the weight kernels evaluate: monomial (Horner) up to ``_HORNER_MAX_DEGREE``, else ``c``."""
    return _small_matmul(c, _to_monomial(degree, c.device)) if degree <= _HORNER_MAX_DEGREE else c


def _exp_monomial_coefficients(half: torch.Tensor, degree: int) -> torch.Tensor:
    """Monomial coefficients ``a (..., g+1)`` with ``sum_k a_k t^k ~= exp(half * (t - 1))`` (the paper's fit)."""
    return (_fit_chebyshev(half, degree) @ _to_monomial(degree, half.device)).to(half.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Masks and the deterministic sample of score positions
# ----------------------------------------------------------------------------------------------------------------


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    """Scores and weights are fp32 for fp32/bf16/fp16 inputs; float64 inputs keep float64 (for references)."""
    return torch.float64 if query.dtype == torch.float64 else torch.float32


def _prepare_mask(
    mask: torch.Tensor | None, shape: tuple[int, int, int, int], dtype: torch.dtype = torch.float32
) -> torch.Tensor | None:
    """``mask`` as a 4-D tensor broadcastable to ``shape``: a boolean mask stays boolean (True = attend: one byte
    per pair, applied to each chunk of scores in place); a float mask becomes a ``dtype`` bias with ``-inf``
    exactly at its masked pairs (``<= MASKED_BIAS``). ``None`` stays ``None``."""
    if mask is None:
        return None
    if mask.dim() > 4:
        raise ValueError(f"attention_mask must have at most 4 dims, got shape {tuple(mask.shape)}")
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if any(m not in (1, s) for m, s in zip(mask.shape, shape)):
        raise ValueError(f"attention_mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk) = {shape}")
    if mask.dtype == torch.bool:
        return mask
    if not mask.is_floating_point():
        raise TypeError(f"attention_mask must be bool (True = attend) or a float bias, got dtype {mask.dtype}")
    bias = mask.to(dtype)
    return bias.masked_fill(bias <= MASKED_BIAS, -math.inf)


def _valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """Boolean validity of a prepared mask (True = the pair takes part)."""
    return mask if mask.dtype == torch.bool else mask > -math.inf


@lru_cache(maxsize=8)
def _jitter(num_samples: int, device: torch.device) -> torch.Tensor:
    """Fixed uniform offsets in [0, 1): the sample is random-looking but identical on every call."""
    g = torch.Generator().manual_seed(20251001)
    return torch.rand(num_samples, generator=g, dtype=torch.float64).to(device)


def _sample_positions(
    valid_rows: torch.Tensor, valid_cols: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat score positions ``(P, M)`` to sample, and which of them count ``(P, M)``.

    ``valid_rows (P, Lq)`` / ``valid_cols (P, Lk)`` flag the rows and columns with at least one valid pair. The
    sample lives on the grid of valid rows x valid columns, addressed by rank (the r-th valid row), so a sequence
    padded inside a batch is sampled exactly as it is alone. A grid of ``G <= M`` cells is enumerated ``M // G``
    times each (the thresholds are then the exact k-th values); a larger grid gets one jittered sample per stratum
    of ``G / M`` consecutive cells in row-major order.
    """
    lk = valid_cols.shape[-1]
    n_rows = valid_rows.sum(-1, keepdim=True)
    n_cols = valid_cols.sum(-1, keepdim=True)
    grid = n_rows * n_cols
    grid_1 = grid.clamp_min(1)
    m = torch.arange(num_samples, device=grid.device)
    small = grid <= num_samples
    cell_small = m % grid_1
    take_small = m < (num_samples // grid_1) * grid_1
    cell_big = ((m + _jitter(num_samples, grid.device)) * (grid_1.double() / num_samples)).long()
    cell = torch.where(small, cell_small, torch.minimum(cell_big, grid_1 - 1))
    take = torch.where(small, take_small, True) & (grid > 0)
    n_cols_1 = n_cols.clamp_min(1)
    # indices of valid rows/cols in order: a stable sort puts the True flags first, in position order
    row_of_rank = torch.argsort((~valid_rows).to(torch.uint8), dim=-1, stable=True)
    col_of_rank = torch.argsort((~valid_cols).to(torch.uint8), dim=-1, stable=True)
    rows = row_of_rank.gather(-1, torch.div(cell, n_cols_1, rounding_mode="floor"))
    cols = col_of_rank.gather(-1, cell % n_cols_1)
    return rows * lk + cols, take


@lru_cache(maxsize=32)
def _unmasked_positions(lq: int, lk: int, num_samples: int, device: torch.device) -> torch.Tensor:
    """Without a mask the sample depends on the shape alone: built once, kept compact (taken positions only)."""
    rows = torch.ones(1, lq, dtype=torch.bool, device="cpu")
    cols = torch.ones(1, lk, dtype=torch.bool, device="cpu")
    flat, take = _sample_positions(rows, cols, num_samples)
    return flat[take].view(1, 1, -1).to(device)


class _SamplePlan:
    """Sample positions for every (batch, head) of one call; broadcast over the dims the mask does not vary in.

    Without a mask every sampled position counts (``take is None``) and the sample size is a Python int, so
    the order statistics need no data-dependent rank.
    """

    def __init__(self, mask: torch.Tensor | None, shape: tuple[int, int, int, int], num_samples: int, device):
        b, h, lq, lk = shape
        # a grid of at most Lq*Lk valid cells is enumerated exactly by Lq*Lk samples: more would only repeat it
        num_samples = min(num_samples, lq * lk)
        if mask is None:
            self.flat, self.take = _unmasked_positions(lq, lk, num_samples, torch.device(device)), None
        else:
            valid = _valid_pairs(mask)
            bm, hm = valid.shape[:2]
            rows = valid.any(-1).expand(bm, hm, lq).reshape(bm * hm, lq)
            cols = valid.any(-2).expand(bm, hm, lk).reshape(bm * hm, lk)
            flat, take = _sample_positions(rows, cols, num_samples)
            self.flat, self.take = flat.view(bm, hm, -1), take.view(bm, hm, -1)

    def for_pairs(self, batch_ids: torch.Tensor, head_ids: torch.Tensor):
        """Positions ``(P, M)`` (and ``take``, or None) of the (batch, head) pairs ``batch_ids[i], head_ids[i]``."""
        if self.flat.shape[0] == 1 and self.flat.shape[1] == 1:
            return self.flat[0], None if self.take is None else self.take[0]
        bi = batch_ids if self.flat.shape[0] > 1 else torch.zeros_like(batch_ids)
        hi = head_ids if self.flat.shape[1] > 1 else torch.zeros_like(head_ids)
        return self.flat[bi, hi], None if self.take is None else self.take[bi, hi]


# ----------------------------------------------------------------------------------------------------------------
# The fast op
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples, exact_split, fit):
    if isinstance(exact_ratio, bool) or not isinstance(exact_ratio, (int, float)) or not exact_ratio >= 0:
        raise ValueError(f"exact_ratio must be a number >= 0 (>= 1 means exact attention); got {exact_ratio!r}")
    validate_chebyshev_degree(chebyshev_degree, "chebyshev_degree")
    validate_num_samples(num_samples, "num_samples")
    validate_exact_split(exact_split, "exact_split")
    validate_fit(fit, "fit")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            "query, key and value must be 4-D (B, H, L, D); got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    bq, h, _, d = query.shape
    bk, hkv, lk, dk = key.shape
    if (bk, hkv, lk) != tuple(value.shape[:3]) or bk != bq or dk != d:
        raise ValueError(
            f"incompatible shapes: query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if hkv == 0 or h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")


def hybrid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    chebyshev_degree: int,
    scaling: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_split: float = DEFAULT_EXACT_SPLIT,
    fit: str = DEFAULT_FIT,
) -> torch.Tensor:
    """Support-basis hybrid softmax attention.

    Shapes: ``query (B, H, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` with ``H % Hkv == 0``
    (grouped heads share key/value head ``h // (H // Hkv)``). ``attention_mask`` is ``None``, boolean
    (True = attend) or an additive float bias, broadcastable to ``(B, H, Lq, Lk)``; a bias ``<= MASKED_BIAS``
    (``-inf``, ``finfo.min``) masks its pair. Returns ``(B, H, Lq, Dv)`` in ``query.dtype``; an empty batch or
    ``Lq = 0`` gives the empty result and ``Lk = 0`` zeros, as SDPA does.

    Contract, per (b, h) over the VALID scores ``s = scaling * q.k + bias`` only (masked pairs never take part):

    - of the ``n`` valid scores, the ``floor((1 - exact_split) * exact_ratio * n)`` smallest and the
      ``floor(exact_split * exact_ratio * n)`` largest get exact weights ``exp(s - c)`` (``exact_split = 0.5``,
      the default, is the paper's ``floor(exact_ratio / 2 * n)`` at each end); every other score gets
      ``max(p(s), 0)``, where ``p`` is a degree-``chebyshev_degree`` least-squares approximation of ``exp(s - c)``
      on the interval ``[lo, hi]`` spanned by that head's approximated scores. ``c`` is a per-row stabilising
      shift (the row maximum) that cancels in the normalisation. The interval's half-width is padded by 1e-5 of
      itself (so rounding never pushes its endpoints out) and floored at ``1e-6 * max(1, |mid|)`` (so a
      degenerate interval stays usable).
    - the fit: ``fit="chebyshev"`` (default, the paper) is least squares on Chebyshev nodes of ``[lo, hi]``,
      i.e. uniform in the Chebyshev sense over the interval; ``fit="empirical"`` is least squares on the head's
      own sampled approximated scores (the sample below), so the polynomial is accurate where the head's scores
      actually lie, plus ``1e-6`` times the Chebyshev-norm distance to ``exp`` (which keeps it well posed; a
      head without approximated scores gets the paper's fit).
    - the polynomial is evaluated in fp32 with Horner's rule (monomial basis of the interval mapped to [-1, 1])
      up to degree 8 and with Clenshaw's recurrence in the Chebyshev basis above: stable at every accepted
      degree (1 ... ``MAX_CHEBYSHEV_DEGREE``).
    - rows are normalised to sum to 1; weights are never negative. If every weight of a row clamps to 0 (a
      polynomial <= 0 on all its scores) the row's approximated pairs share a tiny positive floor weight
      (``1e-30`` of the row scale) instead of dividing 0 by 0. Fully masked rows output 0.
    - ``exact_ratio >= 1`` is exact softmax attention (dispatched to ``scaled_dot_product_attention``);
      ``exact_ratio == 0`` approximates every score, on the exact ``[min, max]`` of each head's valid scores.
    - thresholds: the k-th smallest / largest values are read from a deterministic sample of
      ``M = num_samples`` score positions per (b, h), drawn on the grid of valid rows x valid columns by rank.
      When that grid has at most ``M`` cells it is enumerated evenly and the k-th values are exact; otherwise
      the sample is stratified (one jittered position per run of ``G / M`` consecutive cells) and the realised
      exact fraction has a standard deviation of about ``sqrt(exact_ratio * (1 - exact_ratio) / M)`` (0.0044
      at ratio 0.2 with the default ``M = 8192``; tested to stay within four of them). Padding a sequence
      inside a batch changes neither its sample nor its output.
    - scores and weights are fp32 whatever the input dtype (float64 inputs stay float64); no host
      synchronisation (no ``.item()``, no NumPy); polynomial coefficients are computed on the input's device.
    - autograd: gradients flow through every weight (exact and polynomial) and the values; the thresholds, the
      interval and the fit they define are treated as constants (a selection, like top-k), as in the reference.
    - memory: fp32 scores are materialised for a chunk of (batch, head) pairs at a time (64 MB on CPU, kept
      between calls per thread; 1 GB on GPU; at least one head: 256 MB at Lq = Lk = 8192), never as a full
      ``(B, H, Lq, Lk)`` tensor.
    - speed: the weights are computed by one of three kernels with the same definition (see ``_kernel``):
      a native C kernel on CPU (built on first use with the system C compiler in about a second and cached:
      one pass over the scores, row by row), a ``torch.compile``-d kernel (Triton on GPU by default; C++ on CPU
      with ``HYBRID_ATTENTION_COMPILE=1``), or eager torch (``HYBRID_ATTENTION_COMPILE=0``, autograd, float64).
    """
    _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples, exact_split, fit)
    b, h, lq, d = query.shape
    lk = key.shape[2]
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    if b * h * lq * lk == 0:  # nothing to attend to: SDPA's result (empty, or zeros for Lk = 0)
        return torch.zeros(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    if exact_ratio >= 1:
        return _exact_attention(query, key, value, attention_mask, scale)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    out = torch.empty(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    kernel = _kernel(query.device, _compute_dtype(query), track)
    out_pairs = out.view(b * h, lq, -1)
    values_pairs = value.flatten(0, 1)
    for pairs, scores, kv_pairs, batch_ids, head_ids in _score_chunks(query, key, mask, scale, kernel):
        lo, hi, sample, taken = _chunk_thresholds(
            scores, *plan.for_pairs(batch_ids, head_ids), exact_ratio, exact_split, fit == "empirical",
            native=kernel == "native",
        )
        poly = _polynomial(lo, hi, chebyshev_degree, scores.dtype, fit, sample, taken)
        values = (values_pairs[pairs] if key.shape[1] == h else values_pairs.index_select(0, kv_pairs))
        values = values.to(scores.dtype)
        if kernel == "native":
            _native_attention(scores, values, *poly, chebyshev_degree, out_pairs[pairs])
            continue
        block = _compiled_kernel() if kernel == "compiled" else _block_attention
        hc, _, lk = scores.shape
        rows = max(1, min(lq, _budgets(query.device, kernel)[1] // (hc * lk)))
        for r0 in range(0, lq, rows):
            r1 = min(lq, r0 + rows)
            out_pairs[pairs, r0:r1] = block(scores[:, r0:r1], values, *poly, chebyshev_degree)
    return out


def hybrid_thresholds(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    scaling: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    exact_split: float = DEFAULT_EXACT_SPLIT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-head interval ``(lo, hi)``, each ``(B, H)`` fp32, that ``hybrid_attention`` approximates on.

    Valid scores ``< lo`` or ``> hi`` are the exact ones. Same estimator, same chunking as the op.
    """
    _check_inputs(query, key, key, exact_ratio, 1, num_samples, exact_split, DEFAULT_FIT)
    b, h, lq, d = query.shape
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    lo = torch.zeros(b * h, dtype=_compute_dtype(query), device=query.device)
    hi = torch.zeros_like(lo)
    if b * h * lq * key.shape[2] == 0:
        return lo.view(b, h), hi.view(b, h)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    for pairs, scores, _, batch_ids, head_ids in _score_chunks(query, key, mask, scale):
        plan_pairs = plan.for_pairs(batch_ids, head_ids)
        lo[pairs], hi[pairs] = _chunk_thresholds(scores, *plan_pairs, min(exact_ratio, 1.0), exact_split, False)[:2]
    return lo.view(b, h), hi.view(b, h)


def _setup(query, key, attention_mask, num_samples):
    """The prepared mask and the sample plan of one call (shared by the op and ``hybrid_thresholds``)."""
    shape = (query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    mask = _prepare_mask(attention_mask, shape, _compute_dtype(query))
    return mask, _SamplePlan(mask, shape, num_samples, query.device)


def _exact_attention(query, key, value, attention_mask, scale):
    """Exact softmax attention via SDPA. Float biases are normalised first (``<= MASKED_BIAS`` -> ``-inf``) so a
    fully masked row outputs 0, as it does for a boolean mask."""
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        shape = tuple(query.shape[:3]) + (key.shape[2],)
        attention_mask = _prepare_mask(attention_mask, shape).to(query.dtype)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scale, enable_gqa=key.shape[1] != query.shape[1]
    )


def _budgets(device: torch.device, kernel: str) -> tuple[int, int]:
    """(score elements per chunk, weight elements per row block) for this device and kernel."""
    return _BUDGETS[("cpu" if device.type in ("cpu", "meta") else "gpu", kernel)]


def _score_chunks(query, key, mask, scale, kernel: str = "eager"):
    """Yield fp32 scores for chunks of (batch, head) pairs, with what each chunk needs.

    Pairs are flattened (``pair = b * H + h``) so that a chunk may span several sequences of a batch: the work per
    chunk (sampling, selection, the kernel launch) is then shared by a whole small batch. Yields
    ``(pairs: slice, scores (P, Lq, Lk), kv_pairs (P,), batch_ids (P,), head_ids (P,))``; ``kv_pairs`` index the
    flattened key/value pairs (grouped heads share theirs). Without autograd the scores are a contiguous buffer
    that the consumer may overwrite (the native kernel turns it into the weights in place).
    """
    b, h, lq, _ = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    group = h // hkv
    compute = _compute_dtype(query)
    # one pair at least: a head's scores are needed whole to place its thresholds (64 MB at L = 4096)
    chunk = max(1, min(b * h, _budgets(query.device, kernel)[0] // max(1, lq * lk)))
    queries = query.flatten(0, 1)
    keys = key.flatten(0, 1)
    pair_ids = torch.arange(b * h, device=query.device)
    # one buffer for every chunk: a fresh allocation per chunk costs page faults comparable to the matmul itself
    # (only without autograd: a matmul into a preallocated `out=` cannot be differentiated)
    track = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    buffer = None if track else _workspace(min(chunk, b * h), lq, lk, compute, query.device)
    for p0 in range(0, b * h, chunk):
        pairs = slice(p0, min(b * h, p0 + chunk))
        batch_ids = torch.div(pair_ids[pairs], h, rounding_mode="floor")
        head_ids = pair_ids[pairs] - batch_ids * h
        kv_pairs = batch_ids * hkv + torch.div(head_ids, group, rounding_mode="floor")
        q = queries[pairs].to(compute)
        k = (keys[pairs] if group == 1 else keys.index_select(0, kv_pairs)).to(compute)  # a view where possible
        out = {} if buffer is None else {"out": buffer[: q.shape[0]]}
        # the scale rides on the matmul (alpha): no scaled copy of q, no pass over the scores
        if mask is None or mask.dtype == torch.bool:
            if buffer is None:
                scores = torch.bmm(q * scale, k.transpose(1, 2))
            else:  # beta = 0: the buffer's old contents are ignored, NaN included
                scores = out["out"].baddbmm_(q, k.transpose(1, 2), beta=0.0, alpha=scale)
            if mask is not None:
                scores = scores.masked_fill_(~_rows_for_pairs(mask, batch_ids, head_ids), -math.inf)
        else:
            chunk_bias = _rows_for_pairs(mask, batch_ids, head_ids).expand(q.shape[0], lq, lk)
            scores = torch.baddbmm(chunk_bias, q, k.transpose(1, 2), alpha=scale, **out)
        yield pairs, scores, kv_pairs, batch_ids, head_ids


_WORKSPACE = threading.local()
_WORKSPACE_MAX = 1 << 24  # elements kept between calls, per thread (64 MB of fp32)


def _workspace(n: int, lq: int, lk: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised ``(n, Lq, Lk)`` buffer for the scores. On a CPU it is kept between calls (per thread, up
    to 64 MB): freshly allocated pages cost a page fault each, ~6 ms per call at L = 256 (as much as the whole
    weight computation). Elsewhere (the CUDA caching allocator already reuses memory) and above 64 MB, a fresh
    tensor."""
    numel = n * lq * lk
    if device.type != "cpu" or numel > _WORKSPACE_MAX:
        return torch.empty(n, lq, lk, dtype=dtype, device=device)
    cached = getattr(_WORKSPACE, "buffers", None)
    if cached is None:
        cached = _WORKSPACE.buffers = {}
    buffer = cached.get(dtype)
    if buffer is None or buffer.numel() < numel:
        buffer = cached[dtype] = torch.empty(numel, dtype=dtype)
    return buffer[:numel].view(n, lq, lk)


def _rows_for_pairs(mask: torch.Tensor, batch_ids: torch.Tensor, head_ids: torch.Tensor) -> torch.Tensor:
    """The rows ``(P or 1, Lq or 1, Lk or 1)`` of a broadcast mask ``(Bm, Hm, ., .)`` for the given pairs."""
    if mask.shape[0] == 1 and mask.shape[1] == 1:
        return mask[0]
    bi = batch_ids if mask.shape[0] > 1 else torch.zeros_like(batch_ids)
    hi = head_ids if mask.shape[1] > 1 else torch.zeros_like(head_ids)
    return mask[bi, hi]


def _chunk_thresholds(scores, flat, take, exact_ratio, exact_split, need_sample, native=False):
    """Per-head ``(lo, hi, sample, taken)`` for a chunk of scores ``(hc, Lq, Lk)`` with -inf at masked pairs.

    ``sample (hc, M)`` holds the sampled scores and ``taken (hc, M)`` (or None: all) which of them count; both
    are None when neither the thresholds nor the fit need them. ``native``: the order statistics come from the
    native kernel (same values). Nothing here is differentiated (see the op).
    """
    scores = scores.detach()
    hc = scores.shape[0]
    sample = taken = None
    if need_sample or (exact_ratio > 0 and not native):  # the native selection reads the scores itself
        sample = scores.reshape(hc, -1).gather(1, flat.expand(hc, -1))
        if take is not None:
            taken = take & (sample > -math.inf)  # non-rectangular masks: drop samples that landed on masked pairs
    q_lo, q_hi = (1.0 - exact_split) * exact_ratio, exact_split * exact_ratio
    if exact_ratio == 0:
        # approximate everything: the interval is the exact range of the valid scores
        hi = scores.amax(dim=(1, 2))
        lo = scores.masked_fill(scores == -math.inf, math.inf).amin(dim=(1, 2))
    elif native:
        lo, hi = _native_thresholds(scores, flat, take, q_lo, q_hi)
    elif take is None:
        # no mask: all M samples count, the ranks are plain ints and quickselect is cheapest
        n = sample.shape[-1]
        lo = torch.kthvalue(sample, min(n, math.floor(n * q_lo) + 1), dim=-1).values
        hi = torch.kthvalue(sample, max(1, n - math.floor(n * q_hi)), dim=-1).values
    else:
        lo = _kth_smallest_taken(sample, taken, q_lo)
        hi = -_kth_smallest_taken(-sample, taken, q_hi)
    empty = ~torch.isfinite(hi) | ~torch.isfinite(lo)  # a fully masked head: any interval will do
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0), sample, taken


def _kth_smallest_taken(x: torch.Tensor, take: torch.Tensor, q: float) -> torch.Tensor:
    """Per row of ``x (P, M)``, the ``(r + 1)``-th smallest of the taken entries, ``r = floor(n_taken * q)``.

    The rank differs per row and lives on the device; one ``kthvalue`` with a fixed rank does it: untaken entries
    become ``+inf`` and each row gets ``r_max - r`` extra ``-inf`` entries in front (``r_max = floor(M q)``), so
    its ``(r_max + 1)``-th smallest is the wanted one. A row with nothing taken gives ``+inf``.
    """
    r_max = math.floor(x.shape[-1] * q)
    r = torch.floor(take.sum(-1, keepdim=True).double() * q).long()
    x = x.masked_fill(~take, math.inf)
    if r_max:
        front = torch.arange(r_max, device=x.device) < (r_max - r)
        x = torch.cat([x, torch.where(front, -math.inf, math.inf).to(x.dtype)], -1)
    return torch.kthvalue(x, r_max + 1, dim=-1).values


def _interval(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and half-width of the approximation interval ``[lo, hi]``.

    The half-width is padded by ``_INTERVAL_PAD`` of itself so that rounding never pushes the endpoints (which
    are approximated by definition) out of the interval, and floored so that a degenerate interval stays usable.
    """
    mid = (lo + hi) * 0.5
    half = torch.maximum((hi - lo) * (0.5 * (1.0 + _INTERVAL_PAD)), 1e-6 * mid.abs().clamp_min(1.0))
    return mid, half


def _polynomial(lo, hi, degree: int, dtype, fit: str = DEFAULT_FIT, sample=None, taken=None):
    """Per-head constants of the weight kernels, each shaped ``(hc, 1, 1)`` (``coef``: ``(hc, 1, degree + 1)``).

    ``t = alpha * s + beta`` maps the interval to [-1, 1]; ``p(t) ~= exp(s - top)`` on it, with ``coef`` in the
    basis the kernels evaluate (``_evaluation_coefficients``).
    """
    hc = lo.shape[0]
    mid, half = _interval(lo, hi)
    if fit == "empirical":
        t = (sample.double() - mid.double()[:, None]) / half.double()[:, None]
        inside = t.abs() <= 1.0
        c = _fit_empirical(half, t.clamp(-1.0, 1.0), inside if taken is None else inside & taken, degree)
    else:
        c = _fit_chebyshev(half, degree)
    coef = _evaluation_coefficients(c, degree).to(dtype)
    alpha = (1.0 / half).view(hc, 1, 1)
    beta = (-mid / half).view(hc, 1, 1)
    top = (mid + half).view(hc, 1, 1)
    return alpha, beta, top, coef.view(hc, 1, degree + 1)


# ----------------------------------------------------------------------------------------------------------------
# The weight kernels: one definition (`_block_attention`), run eagerly or compiled, and its native CPU twin
# ----------------------------------------------------------------------------------------------------------------


def _evaluate(a: torch.Tensor, t: torch.Tensor, degree: int) -> torch.Tensor:
    """The polynomial with coefficients ``a (..., g+1)`` (see ``_evaluation_coefficients``) at ``t`` in [-1, 1]."""
    if degree <= _HORNER_MAX_DEGREE:  # Horner, monomial basis
        p = a[..., degree:]
        for k in range(degree - 1, -1, -1):
            p = p * t + a[..., k : k + 1]
        return p
    t2 = t + t  # Clenshaw, Chebyshev basis: b_k = a_k + 2 t b_{k+1} - b_{k+2}; p = a_0 + t b_1 - b_2
    b1, b2 = a[..., degree:], 0.0
    for k in range(degree - 1, 0, -1):
        b1, b2 = t2 * b1 - b2 + a[..., k : k + 1], b1
    return t * b1 - b2 + a[..., :1]


def _block_attention(scores, values, alpha, beta, top, coef, degree: int):
    """Hybrid attention for a block of rows: ``scores (hc, R, Lk)`` (-inf = masked), ``values (hc, Lk, Dv)``.

    Returns the normalised output ``(hc, R, Dv)``. Per element: ``t = alpha * s + beta``; the pair is exact iff
    ``|t| > 1``; exact weight ``exp(s - m)`` with ``m`` the row max; approximated weight
    ``max(p(t) * exp(top - m), floor)``, the row factor folded into the coefficients. Rows without a valid
    pair have zero weights and output 0. This is the definition of the weights: it runs eagerly or compiled
    (one fused pass on CPU and GPU); ``_NATIVE_SOURCE`` computes the same in C.
    """
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(row_max == -math.inf, 0.0, row_max)
    t = scores * alpha + beta
    tc = t.clamp(-1.0, 1.0)
    p = _evaluate(coef * torch.exp((top - row_max).clamp_max(_ROW_SCALE_CAP)), tc, degree)
    weights = torch.where(t != tc, torch.exp(scores - row_max), p.clamp_min(_WEIGHT_FLOOR))
    row_sums = weights.sum(-1, keepdim=True)
    return torch.bmm(weights, values) / row_sums.clamp_min(torch.finfo(weights.dtype).tiny)


def _kernel(device: torch.device, compute_dtype: torch.dtype, track_grad: bool) -> str:
    """Which kernel computes the weights: ``"native"``, ``"compiled"`` or ``"eager"``.

    ``HYBRID_ATTENTION_COMPILE``: ``0`` runs eager torch everywhere (nothing is built), ``1`` compiles
    ``_block_attention`` with ``torch.compile`` everywhere (a C++ build of 20-40 s per process on a CPU).
    Unset: ``torch.compile`` on CUDA (Triton fuses the block in seconds); on a CPU the native kernel for fp32
    without autograd (built once per machine in about a second), else eager torch. Inside a ``torch.compile``-d
    caller the eager definition is traced.
    """
    setting = os.environ.get("HYBRID_ATTENTION_COMPILE", "auto")
    if setting == "0" or torch.compiler.is_compiling():
        return "eager"
    if setting == "1" or device.type == "cuda":
        return "compiled"
    if device.type == "cpu" and compute_dtype == torch.float32 and not track_grad and _native_library() is not None:
        return "native"
    return "eager"


_COMPILED = {}


def _compiled_kernel():
    """``_block_attention`` compiled with ``torch.compile`` (once per process); a failed compilation warns once
    and falls back to the identical eager definition."""
    if "fn" not in _COMPILED:
        compiled = torch.compile(_block_attention, dynamic=True)

        def run(*args):
            if "failed" in _COMPILED:
                return _block_attention(*args)
            try:
                # no "duck sizing": equal sizes in one block (e.g. 32 heads x 32 rows) must not specialise the kernel
                with torch.fx.experimental._config.patch(use_duck_shape=False):
                    return compiled(*args)
            except Exception as err:  # no C++ compiler / Triton: the eager definition computes the same
                _COMPILED["failed"] = err
                warnings.warn(
                    f"hybrid_attention: torch.compile failed ({type(err).__name__}: {err}); using eager torch, "
                    "which is several times slower. Set HYBRID_ATTENTION_COMPILE=0 to skip the attempt.",
                    RuntimeWarning,
                )
                return _block_attention(*args)

        _COMPILED["fn"] = run
    return _COMPILED["fn"]


# The native CPU kernel: `_block_attention`'s weights, row by row in one pass over the scores, written in place.
# Plain C (no torch headers), so the system compiler builds it in well under a second; written with GCC/Clang
# vector types (16 floats per operation, whatever the CPU's vector width) and split over torch's number of
# threads with pthreads. Its `exp` (Cephes' single-precision polynomial, x <= 0 only) needs no library call.
# Measured on the 2-core EPYC: 1.1 ns per score and thread (auto-vectorised scalar C took 7-12 ns).
_NATIVE_SOURCE = r"""
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- a parallel loop that never waits for a thread that has not started ----
   Units are claimed one at a time from a shared counter by the calling thread and by up to threads - 1 detached
   helpers. On a busy machine a helper may get a core late or never: the caller then does its share, and waits
   only for units a helper has claimed. The shared state lives on the heap and is freed by its last user. */

typedef void (*unit_fn)(const void *args, long unit);

typedef struct {
    unit_fn fn;
    const void *args;
    long units;
    atomic_long next, done;
    atomic_int users;
} loop_t;

static void run_units(loop_t *L) {
    long u;
    while ((u = atomic_fetch_add(&L->next, 1)) < L->units) {
        L->fn(L->args, u);
        atomic_fetch_add(&L->done, 1);
    }
}

static void release(loop_t *L) {
    if (atomic_fetch_sub(&L->users, 1) == 1) free(L);
}

static void *helper(void *arg) {
    run_units((loop_t *)arg);
    release((loop_t *)arg);
    return 0;
}

static void parallel_for(unit_fn fn, const void *args, long units, int threads) {
    loop_t *L = (loop_t *)malloc(sizeof *L);
    if (!L) {
        for (long u = 0; u < units; u++) fn(args, u);
        return;
    }
    L->fn = fn;
    L->args = args;
    L->units = units;
    atomic_init(&L->next, 0);
    atomic_init(&L->done, 0);
    atomic_init(&L->users, 1);
    if (threads > units) threads = (int)units;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 1; i < threads; i++) {
        pthread_t tid;
        atomic_fetch_add(&L->users, 1);
        if (pthread_create(&tid, &attr, helper, L) != 0) atomic_fetch_sub(&L->users, 1);
    }
    pthread_attr_destroy(&attr);
    run_units(L);
    while (atomic_load(&L->done) < units) sched_yield(); /* units a helper claimed and is finishing */
    release(L);
}

/* ---- weights ---- */

/* GCC/Clang vector extensions: 16 floats per operation (one AVX-512 register; the compiler splits it where the
   CPU has narrower vectors). */
typedef float vf __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi __attribute__((vector_size(64), aligned(4)));
#define LANES 16

static inline vf splat(float x) { return (vf){0} + x; }
static inline vf blend(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
static inline vf vmax(vf a, vf b) { return blend(a > b, a, b); }

/* exp(x) for x <= 0 (x may be -inf), within 2 ulp (Cephes' expf polynomial); below -87 the result is 0 (such a
   weight vanishes in an fp32 row sum whose largest term is 1). Rounds with the 1.5 * 2^23 shifter: no floor. */
static inline vf exp_nonpositive(vf x) {
    const vf xc = vmax(x, splat(-87.0f));
    const vf z = xc * 1.44269504088896341f + 12582912.0f;
    const vf n = z - 12582912.0f;
    vf r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const vi two_n = (((vi)z - 0x4B400000) + 127) << 23;
    return (vf)(~(x < -87.0f) & (vi)(p * (vf)two_n));
}

/* The weights of 16 scores x of a row with maximum m (see _block_attention). */
static inline __attribute__((always_inline)) vf strip_weights(vf x, float m, vf al, vf be, const float *c, int g,
                                                          int clenshaw, float scale) {
    const vf one = splat(1.0f);
    const vf t = x * al + be;
    const vf tc = blend(t < -1.0f, -one, blend(t > 1.0f, one, t));
    vf q;
    if (!clenshaw) { /* Horner, monomial coefficients */
        q = splat(c[g]);
        for (int k = g - 1; k >= 0; k--) q = q * tc + c[k];
    } else { /* Clenshaw, Chebyshev coefficients */
        const vf t2 = tc + tc;
        vf b1 = splat(c[g]), b2 = splat(0.0f);
        for (int k = g - 1; k >= 1; k--) {
            const vf b0 = t2 * b1 - b2 + c[k];
            b2 = b1;
            b1 = b0;
        }
        q = tc * b1 - b2 + c[0];
    }
    q = q * scale;
    return blend(t != tc, exp_nonpositive(x - m), vmax(q, splat(1e-30f)));
}

typedef struct {
    float *s;
    const float *alpha, *beta, *top, *coef;
    long lq, lk;
    int degree, clenshaw;
} weights_t;

static void weights_row(const void *args, long row) {
    const weights_t *J = (const weights_t *)args;
    const long lk = J->lk, p = row / J->lq;
    const int g = J->degree;
    float *s = J->s + row * lk;
    vf vmx = splat(-INFINITY);
    for (long j0 = 0; j0 < lk; j0 += LANES) {
        const long n = lk - j0 < LANES ? lk - j0 : LANES;
        vf x = splat(-INFINITY);
        memcpy(&x, s + j0, (size_t)n * sizeof(float));
        vmx = vmax(vmx, x);
    }
    float m = -INFINITY;
    for (int i = 0; i < LANES; i++) m = vmx[i] > m ? vmx[i] : m;
    if (m == -INFINITY) { /* a fully masked row: zero weights, output 0 */
        memset(s, 0, (size_t)lk * sizeof *s);
        return;
    }
    const float d = J->top[p] - m, scale = expf(d < 60.0f ? d : 60.0f);
    const float *c = J->coef + p * (g + 1);
    const vf al = splat(J->alpha[p]), be = splat(J->beta[p]);
    vf acc = splat(0.0f);
    long j0 = 0;
    for (; j0 + 2 * LANES <= lk; j0 += 2 * LANES) { /* two strips at once: their dependency chains overlap */
        vf x0, x1;
        memcpy(&x0, s + j0, sizeof x0);
        memcpy(&x1, s + j0 + LANES, sizeof x1);
        const vf w0 = strip_weights(x0, m, al, be, c, g, J->clenshaw, scale);
        const vf w1 = strip_weights(x1, m, al, be, c, g, J->clenshaw, scale);
        acc += w0 + w1;
        memcpy(s + j0, &w0, sizeof w0);
        memcpy(s + j0 + LANES, &w1, sizeof w1);
    }
    for (; j0 < lk; j0 += LANES) {
        const long n = lk - j0 < LANES ? lk - j0 : LANES;
        vf x = splat(-INFINITY); /* lanes past the row end: weight exp(-inf) = 0 */
        memcpy(&x, s + j0, (size_t)n * sizeof(float));
        const vf w = strip_weights(x, m, al, be, c, g, J->clenshaw, scale);
        acc += w;
        memcpy(s + j0, &w, (size_t)n * sizeof(float));
    }
    float sum = 0.0f;
    for (int i = 0; i < LANES; i++) sum += acc[i];
    const float inv = 1.0f / (sum > 1.17549435e-38f ? sum : 1.17549435e-38f);
    for (long j = 0; j < lk; j++) s[j] *= inv; /* normalised rows: the product with V is the output */
}

/* s (pairs, lq, lk) contiguous scores (-inf = masked) -> normalised weights, in place. */
void hybrid_weights_f32(float *s, long pairs, long lq, long lk, const float *alpha, const float *beta,
                        const float *top, const float *coef, int degree, int clenshaw, int threads) {
    const weights_t job = {s, alpha, beta, top, coef, lq, lk, degree, clenshaw};
    parallel_for(weights_row, &job, pairs * lq, threads);
}

/* ---- thresholds: order statistics of each head's sample ---- */

static inline uint32_t order_key(float f) { /* unsigned integers ordered as the floats are */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

static int compare_floats(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Rearrange v[0..n) so that v[k] holds the value a sort would put there (quickselect with median-of-three
   pivots; past 2 log2(n) + 2 rounds it sorts what is left, so the worst case stays O(n log n)). */
static void select_kth(float *v, long n, long k) {
    long lo = 0, hi = n - 1;
    int budget = 2;
    for (long m = n; m > 1; m >>= 1) budget += 2;
    while (hi > lo) {
        if (--budget < 0) {
            qsort(v + lo, (size_t)(hi - lo + 1), sizeof *v, compare_floats);
            return;
        }
        const float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        const float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        long i = lo, j = hi;
        while (i <= j) { /* Hoare partition around the pivot's value */
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                const float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return; /* j < k < i: v[k] equals the pivot */
    }
}

#define BINS 2048 /* histogram of the keys' top 11 bits: the rank's bin, then a select among its values only */

typedef struct {
    const float *scores;
    const int64_t *flat;
    const uint8_t *take;
    long grid, m, flat_stride, take_stride;
    double q_lo, q_hi;
    float *lo, *hi;
} thresholds_t;

static void thresholds_row(const void *args, long r) {
    const thresholds_t *J = (const thresholds_t *)args;
    const float *x = J->scores + r * J->grid;
    const int64_t *pos = J->flat + r * J->flat_stride;
    const uint8_t *t = J->take ? J->take + r * J->take_stride : 0;
    float *vals = (float *)malloc((size_t)J->m * 2 * sizeof(float)), *cand = vals + J->m;
    uint32_t hist[BINS];
    memset(hist, 0, sizeof hist);
    long n = 0;
    for (long i = 0; i < J->m; i++) {
        const float v = x[pos[i]];
        if ((!t || t[i]) && v > -INFINITY) {
            vals[n++] = v;
            hist[order_key(v) >> 21]++;
        }
    }
    if (n == 0) {
        J->lo[r] = J->hi[r] = INFINITY;
        free(vals);
        return;
    }
    const long rank[2] = {(long)floor((double)n * J->q_lo), n - 1 - (long)floor((double)n * J->q_hi)};
    float *out[2] = {J->lo + r, J->hi + r};
    for (int e = 0; e < 2; e++) {
        const long k = rank[e] < 0 ? 0 : (rank[e] > n - 1 ? n - 1 : rank[e]);
        long below = 0, c = 0;
        uint32_t bin = 0;
        while (below + hist[bin] <= k) below += hist[bin++];
        for (long i = 0; i < n; i++)
            if ((order_key(vals[i]) >> 21) == bin) cand[c++] = vals[i];
        select_kth(cand, c, k - below);
        *out[e] = cand[k - below];
    }
    free(vals);
}

/* For each of `rows` heads: its scores start at scores + r * grid; its m sampled positions are flat + r * flat_stride
   (flat_stride 0: the same positions for every head), its take bytes take + r * take_stride (take NULL: all count).
   Among the sampled scores > -inf that count, n of them: the (floor(n q_lo) + 1)-th smallest into lo[r] and the
   (floor(n q_hi) + 1)-th largest into hi[r]; +inf where n == 0. */
void hybrid_thresholds_f32(const float *scores, long grid, const int64_t *flat, long flat_stride,
                           const uint8_t *take, long take_stride, long rows, long m, double q_lo, double q_hi,
                           float *lo, float *hi, int threads) {
    const thresholds_t job = {scores, flat, take, grid, m, flat_stride, take_stride, q_lo, q_hi, lo, hi};
    parallel_for(thresholds_row, &job, rows, threads);
}
"""
_NATIVE_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared")
_NATIVE_MIN_PARALLEL = 1 << 16  # score elements below which one thread is faster than starting more
_NATIVE = {}


def _native_library():
    """The native kernel's ctypes library, built on first use, or None (with one warning) where it cannot be."""
    if "lib" not in _NATIVE:
        try:
            _NATIVE["lib"] = _load_native()
        except Exception as err:  # no compiler, no writable directory, an unsupported platform: eager torch
            _NATIVE["lib"], _NATIVE["error"] = None, err
            detail = getattr(err, "stderr", None) or err
            warnings.warn(
                f"hybrid_attention: could not build the native CPU kernel ({type(err).__name__}: "
                f"{str(detail).strip().splitlines()[0] if str(detail).strip() else ''}); using eager torch, which "
                "is slower. Install a C compiler (cc) or set HYBRID_ATTENTION_COMPILE=0 to skip the attempt.",
                RuntimeWarning,
            )
    return _NATIVE["lib"]


def _load_native():
    """Build (once per machine, cached by a hash of the source, compiler, flags and CPU) and load the kernel."""
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    key = hashlib.sha256("\0".join((_NATIVE_SOURCE, cc, *_NATIVE_FLAGS, _cpu_signature())).encode()).hexdigest()
    name = f"hybrid_weights_{key[:20]}.so"
    directory = next((d for d in _cache_directories() if (d / name).is_file()), None)
    if directory is None:
        directory = next(d for d in _cache_directories() if _writable(d))
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            source, built = Path(tmp) / "hybrid_weights.c", Path(tmp) / name
            source.write_text(_NATIVE_SOURCE)
            subprocess.run([cc, *_NATIVE_FLAGS, str(source), "-o", str(built), "-lm", "-lpthread"],
                           check=True, capture_output=True, text=True, timeout=120)
            os.replace(built, directory / name)  # atomic: processes building at once never see half a file
    lib = ctypes.CDLL(str(directory / name))
    ptr, long_, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.hybrid_weights_f32.argtypes = [ptr, long_, long_, long_, ptr, ptr, ptr, ptr, int_, int_, int_]
    lib.hybrid_weights_f32.restype = None
    double = ctypes.c_double
    lib.hybrid_thresholds_f32.argtypes = [ptr, long_, ptr, long_, ptr, long_, long_, long_, double, double, ptr, ptr,
                                          int_]
    lib.hybrid_thresholds_f32.restype = None
    return lib


def _cache_directories() -> list[Path]:
    """Where the built kernel is kept: ``$HYBRID_ATTENTION_CACHE``, else the user's cache, else a temp dir."""
    if os.environ.get("HYBRID_ATTENTION_CACHE"):
        return [Path(os.environ["HYBRID_ATTENTION_CACHE"])]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybrid_attention"
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return [cache, Path(tempfile.gettempdir()) / f"hybrid_attention-{user}"]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.access(directory, os.W_OK)
    except OSError:
        return False


def _cpu_signature() -> str:
    """The instruction sets ``-march=native`` builds for (a cache shared by different CPUs must not mix them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return platform.machine() + line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _native_attention(scores, values, alpha, beta, top, coef, degree: int, out: torch.Tensor) -> None:
    """``_block_attention`` for a whole chunk with the native kernel: ``scores (hc, Lq, Lk)`` contiguous fp32
    (overwritten with the normalised weights), ``values (hc, Lk, Dv)`` fp32; writes the output into
    ``out (hc, Lq, Dv)``."""
    hc, lq, lk = scores.shape
    assert scores.is_contiguous() and scores.dtype == torch.float32
    params = [x.reshape(hc, -1).to(torch.float32).contiguous() for x in (alpha, beta, top, coef)]
    _NATIVE["lib"].hybrid_weights_f32(
        scores.data_ptr(), hc, lq, lk, *(p.data_ptr() for p in params), degree, int(degree > _HORNER_MAX_DEGREE),
        _native_threads(scores.numel()),
    )
    if out.dtype == torch.float32 and out.is_contiguous():
        torch.bmm(scores, values, out=out)
    else:
        out.copy_(torch.bmm(scores, values))


def _native_thresholds(scores: torch.Tensor, flat: torch.Tensor, take, q_lo: float, q_hi: float):
    """``_chunk_thresholds``' order statistics with the native kernel, reading the sample straight from
    ``scores (hc, Lq, Lk)`` contiguous fp32 at the positions ``flat`` (``(hc, M)`` or ``(1, M)``): among the sampled
    scores ``> -inf`` that ``take`` (same shapes, or None) keeps, ``n`` per head, the ``(floor(n q_lo) + 1)``-th
    smallest and ``(floor(n q_hi) + 1)``-th largest (+inf where ``n == 0``). A histogram of the top bits finds each
    rank's bin, then a select runs on that bin's values only: ~7x less CPU than two ``kthvalue`` calls."""
    hc = scores.shape[0]
    assert scores.is_contiguous() and scores.dtype == torch.float32
    flat = flat.reshape(-1, flat.shape[-1]).contiguous()
    m = flat.shape[1]
    if take is not None:
        take = take.reshape(-1, m).contiguous()
    lo, hi = torch.empty(hc, dtype=torch.float32), torch.empty(hc, dtype=torch.float32)
    _NATIVE["lib"].hybrid_thresholds_f32(
        scores.data_ptr(), scores[0].numel(), flat.data_ptr(), m if flat.shape[0] > 1 else 0,
        None if take is None else take.data_ptr(), 0 if take is None or take.shape[0] == 1 else m, hc, m, q_lo, q_hi,
        lo.data_ptr(), hi.data_ptr(), _native_threads(hc * m),
    )
    return lo, hi


def _native_threads(work: int) -> int:
    """torch's thread count, or 1 where the work is too small to share."""
    return torch.get_num_threads() if work >= _NATIVE_MIN_PARALLEL else 1


# ----------------------------------------------------------------------------------------------------------------
# Dense reference (float64, obviously correct, slow): the contract written out directly
# ----------------------------------------------------------------------------------------------------------------


def hybrid_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    chebyshev_degree: int,
    scaling: float | None = None,
    thresholds: tuple[torch.Tensor, torch.Tensor] | None = None,
    exact_split: float = DEFAULT_EXACT_SPLIT,
    fit: str = DEFAULT_FIT,
) -> torch.Tensor:
    """The contract of ``hybrid_attention``, dense and in float64, with EXACT k-th values.

    ``thresholds=(lo, hi)``, each ``(B, H)``, replaces the exact k-th values (to check the fast op's weighting
    given its own estimated thresholds). ``fit="empirical"`` fits on ALL the head's approximated scores (the op's
    sample is exactly those when it enumerates the grid). Returns float64 ``(B, H, Lq, Dv)``.
    """
    b, h, lq, d = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    q, k, v = query.double(), key.double(), value.double()
    k = k.repeat_interleave(h // hkv, dim=1)
    v = v.repeat_interleave(h // hkv, dim=1)
    s = scale * q @ k.transpose(-1, -2)
    valid = torch.ones(b, h, lq, lk, dtype=torch.bool)
    if attention_mask is not None:
        m = attention_mask.reshape((1,) * (4 - attention_mask.dim()) + tuple(attention_mask.shape))
        if m.dtype == torch.bool:
            valid = valid & m
        else:
            valid = valid & (m > MASKED_BIAS)
            s = s + m.double().masked_fill(m <= MASKED_BIAS, 0.0)
    out = torch.zeros(b, h, lq, v.shape[-1], dtype=torch.float64)
    for bi in range(b):
        for hi_ in range(h):
            sv, ok = s[bi, hi_], valid[bi, hi_]
            vals = sv[ok]
            if vals.numel() == 0:
                continue
            if exact_ratio >= 1:
                w = torch.where(ok, torch.exp(sv - vals.max()), torch.zeros(()))
            else:
                if thresholds is not None:
                    lo, hi = float(thresholds[0][bi, hi_]), float(thresholds[1][bi, hi_])
                else:
                    srt = torch.sort(vals.detach()).values  # thresholds are constants (see the contract)
                    n = srt.numel()
                    k_lo = math.floor((1 - exact_split) * exact_ratio * n)
                    k_hi = math.floor(exact_split * exact_ratio * n)
                    lo, hi = float(srt[k_lo]), float(srt[n - 1 - k_hi])
                bounds = torch.tensor([lo, hi], dtype=torch.float64)
                mid, half = (float(x) for x in _interval(bounds[0], bounds[1]))
                approx = ok & ((sv - mid).abs() <= half)
                exact = ok & ~approx
                coeffs = _reference_chebfit_exp(mid - half, mid + half, chebyshev_degree)
                if fit == "empirical":
                    coeffs = _reference_empirical_fit(((sv.detach() - mid) / half)[approx], half, coeffs)
                t = ((sv - mid) / half).clamp(-1, 1)
                p = _chebval(t, coeffs)  # approximates exp(s - (mid + half))
                row_max = torch.where(ok, sv, torch.full_like(sv, -math.inf)).amax(-1, keepdim=True)
                row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
                # any per-row shift cancels in the normalisation; the row max keeps every weight finite
                scale_row = torch.exp(torch.clamp(mid + half - row_max, max=_ROW_SCALE_CAP))
                pe = torch.clamp(p * scale_row, min=_WEIGHT_FLOOR)
                w = torch.where(exact, torch.exp(sv - row_max), torch.where(approx, pe, torch.zeros(())))
            rows = w.sum(-1, keepdim=True)
            out[bi, hi_] = torch.where(rows > 0, (w @ v[bi, hi_]) / rows.clamp_min(1e-300), torch.zeros(()))
    return out


def _reference_chebfit_exp(a: float, b: float, degree: int) -> torch.Tensor:
    """Chebyshev coefficients of the least-squares fit of ``exp(x - b)`` on ``[a, b]``, solved on 4096 nodes."""
    t, pinv = _reference_fit_basis(degree)
    x = 0.5 * (b - a) * t + 0.5 * (b + a)
    return pinv @ torch.exp(x - b)


def _reference_empirical_fit(t: torch.Tensor, half: float, uniform: torch.Tensor) -> torch.Tensor:
    """The empirical fit written out: ``argmin mean (A c - f)^2 + prior * sum_k <T_k,T_k> (c_k - uniform_k)^2``
    over the points ``t`` in [-1, 1] (``A`` their Chebyshev basis matrix, ``f = exp(half (t - 1))``)."""
    degree = uniform.numel() - 1
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(t.clamp(-1, 1))[:, None])
    n = max(1, t.numel())
    norms = torch.full((degree + 1,), 0.5, dtype=torch.float64)
    norms[0] = 1.0
    gram = basis.T @ basis / n + torch.diag(_FIT_PRIOR * norms)
    rhs = basis.T @ torch.exp(half * (t - 1.0)) / n + _FIT_PRIOR * norms * uniform
    return torch.linalg.solve(gram, rhs)


@lru_cache(maxsize=None)
def _reference_fit_basis(degree: int, n_nodes: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """4096 Chebyshev nodes and the pseudo-inverse of the Chebyshev basis there (a plain least-squares solve)."""
    t = torch.cos(math.pi * (torch.arange(n_nodes, dtype=torch.float64) + 0.5) / n_nodes)
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(t)[:, None])
    return t, torch.linalg.pinv(basis)


def _chebval(t: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Evaluate a Chebyshev series at ``t`` with Clenshaw's recurrence (float64)."""
    b1 = torch.zeros_like(t)
    b2 = torch.zeros_like(t)
    for c in coeffs.flip(0)[:-1]:
        b1, b2 = 2 * t * b1 - b2 + c, b1
    return t * b1 - b2 + coeffs[0]
