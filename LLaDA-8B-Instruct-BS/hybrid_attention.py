"""Support-basis hybrid attention (Aliakbarpour, Braverman, Yin, Zhang; arXiv 2510.01643).

Softmax attention whose largest and smallest scores are weighted exactly with ``exp`` and whose dense middle is
weighted by a low-degree Chebyshev approximation of ``exp``. Pure torch, no transformers import: this file ships
inside the self-contained ``LLaDA-8B-Instruct-BS`` model directory and is the one op used by the model, by the
transformers attention backend and by the benchmarks.

Contents
    hybrid_attention            the fast op (chunked, sync-free, bounded memory)
    hybrid_thresholds           the per-head thresholds the fast op uses (for tests and analysis)
    hybrid_attention_reference  a dense float64 mirror of the math, for tests
"""

from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache

import torch
import torch.fx.experimental._config  # noqa: F401  (use_duck_shape, see _block_kernel)
import torch.nn.functional as F

__all__ = [
    "hybrid_attention",
    "hybrid_thresholds",
    "hybrid_attention_reference",
    "validate_exact_ratio",
    "validate_chebyshev_degree",
    "validate_num_samples",
    "DEFAULT_NUM_SAMPLES",
    "MASKED_BIAS",
]

DEFAULT_NUM_SAMPLES = 32768
"""Scores sampled per (batch, head) to place the thresholds; a valid grid this small is enumerated exactly."""

MASKED_BIAS = -1e30
"""An additive float bias at or below this value masks its pair (covers ``-inf`` and ``torch.finfo(dtype).min``)."""

# Scores materialised per chunk of (batch, head) pairs, and per row block handed to the fused kernel, in elements.
# CPU: 16 MB of fp32 scores per chunk and row blocks of up to 8 MB for the fused kernel, so the block's product
# with V stays a wide GEMM (interleaved runs at L = 1024 on a 2-core EPYC: 1.67x SDPA, vs 1.73x for 8 MB chunks
# and 2.02x for 4 MB). GPU: 1 GB chunks processed whole, so a forward launches a few kernels per layer.
# The eager kernel materialises ~7 block-sized temporaries, so without compilation blocks stay at 1 MB.
_BUDGETS = {"cpu": (1 << 22, 1 << 21), "gpu": (1 << 28, 1 << 28)}
_EAGER_BLOCK = 1 << 18


def _budgets(device: torch.device, kernel=None) -> tuple[int, int]:
    """(score elements per chunk, weight elements per row block) for this device and kernel."""
    chunk, block = _BUDGETS["cpu" if device.type in ("cpu", "meta") else "gpu"]
    return chunk, (min(block, _EAGER_BLOCK) if kernel is _block_attention else block)
_ROW_SCALE_CAP = 60.0  # exp(60) * |p| * n stays finite in fp32 for any n < 1e10
_WEIGHT_FLOOR = 1e-30  # positive floor of polynomial weights: a row whose polynomial is <= 0 everywhere stays defined
_INTERVAL_PAD = 1e-5  # relative padding of the interval's half-width (see _interval)
_FIT_NODES = 64  # Chebyshev nodes of the least-squares fit (more than enough for any usable degree)


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
    """Return ``value`` as an int >= 1 or raise ``ValueError`` naming ``name``, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def validate_num_samples(value, name: str = "hybrid_num_samples") -> int:
    """Return ``value`` as an int >= 1 or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------------
# Chebyshev fit of exp on one head's interval
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _chebyshev_tables(degree: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 tables for a degree-``degree`` fit on ``_FIT_NODES`` Chebyshev nodes.

    Returns ``nodes (N,)``, ``analysis (N, g+1)`` with ``c = f(nodes) @ analysis`` the least-squares Chebyshev
    coefficients (the basis is discretely orthogonal on these nodes, so the normal equations are diagonal), and
    ``to_monomial (g+1, g+1)`` with ``a = c @ to_monomial`` the same polynomial in the monomial basis of ``t``.
    """
    n = max(_FIT_NODES, 2 * (degree + 1))
    nodes = torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(nodes)[:, None])
    analysis = basis * (2.0 / n)
    analysis[:, 0] *= 0.5
    to_monomial = torch.zeros(degree + 1, degree + 1, dtype=torch.float64)
    to_monomial[0, 0] = 1.0
    if degree >= 1:
        to_monomial[1, 1] = 1.0
    for k in range(2, degree + 1):  # T_k = 2 t T_{k-1} - T_{k-2}
        to_monomial[k, 1:] = 2.0 * to_monomial[k - 1, :-1]
        to_monomial[k] -= to_monomial[k - 2]
    return nodes.to(device), analysis.to(device), to_monomial.to(device)


def _exp_monomial_coefficients(half: torch.Tensor, degree: int) -> torch.Tensor:
    """Monomial coefficients ``a (..., g+1)`` with ``sum_k a_k t^k ~= exp(half * (t - 1))`` for ``t`` in [-1, 1].

    With ``s = mid + half * t`` this is the Chebyshev least-squares fit of ``exp(s - hi)`` on ``[lo, hi]``: the
    shape of ``exp`` on an interval depends only on its width, so ``half (...)`` alone fixes the coefficients.
    """
    nodes, analysis, to_monomial = _chebyshev_tables(degree, half.device)
    values = torch.exp(half.double()[..., None] * (nodes - 1.0))
    return ((values @ analysis) @ to_monomial).to(half.dtype)


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


def _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples):
    if isinstance(exact_ratio, bool) or not isinstance(exact_ratio, (int, float)) or not exact_ratio >= 0:
        raise ValueError(f"exact_ratio must be a number >= 0 (>= 1 means exact attention); got {exact_ratio!r}")
    validate_chebyshev_degree(chebyshev_degree, "chebyshev_degree")
    validate_num_samples(num_samples, "num_samples")
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
    if h % hkv:
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
) -> torch.Tensor:
    """Support-basis hybrid softmax attention.

    Shapes: ``query (B, H, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` with ``H % Hkv == 0``
    (grouped heads share key/value head ``h // (H // Hkv)``). ``attention_mask`` is ``None``, boolean
    (True = attend) or an additive float bias, broadcastable to ``(B, H, Lq, Lk)``; a bias ``<= MASKED_BIAS``
    (``-inf``, ``finfo.min``) masks its pair. Returns ``(B, H, Lq, Dv)`` in ``query.dtype``.

    Contract, per (b, h) over the VALID scores ``s = scaling * q.k + bias`` only (masked pairs never take part):

    - the ``floor(exact_ratio / 2 * n)`` smallest and largest of the ``n`` valid scores get exact weights
      ``exp(s - c)``; every other score gets ``max(p(s), 0)``, where ``p`` is the degree-``chebyshev_degree``
      Chebyshev least-squares approximation of ``exp(s - c)`` on the interval ``[lo, hi]`` spanned by that head's
      approximated scores. ``c`` is a per-row stabilising shift (the row maximum) that cancels in the
      normalisation. The interval's half-width is padded by 1e-5 of itself (so rounding never pushes its
      endpoints out) and floored at ``1e-6 * max(1, |mid|)`` (so a degenerate interval stays usable).
    - rows are normalised to sum to 1; weights are never negative. If every weight of a row clamps to 0 (a
      polynomial <= 0 on all its scores) the row's approximated pairs share a tiny positive floor weight
      (``1e-30`` of the row scale) instead of dividing 0 by 0. Fully masked rows output 0.
    - ``exact_ratio >= 1`` is exact softmax attention (dispatched to ``scaled_dot_product_attention``);
      ``exact_ratio == 0`` approximates every score, on the exact ``[min, max]`` of each head's valid scores.
    - thresholds: the k-th smallest / largest values are read from a deterministic sample of ``num_samples``
      score positions per (b, h), drawn on the grid of valid rows x valid columns by rank. When that grid has at
      most ``num_samples`` cells it is enumerated evenly and the k-th values are exact; otherwise the sample is
      stratified (one jittered position per run of ``G / num_samples`` cells) and the realised exact fraction
      has a standard deviation below ``sqrt(ratio / num_samples)`` (about 0.0025 at ratio 0.2 with the default;
      tested to stay within +-0.01). Padding a sequence inside a batch changes neither its sample nor its output.
    - scores and weights are fp32 whatever the input dtype; no host synchronisation (no ``.item()``, no
      NumPy); polynomial coefficients are computed on the input's device.
    - autograd: gradients flow through every weight (exact and polynomial) and the values; the thresholds and
      the interval they define are treated as constants (a selection, like top-k), as in the reference.
    - memory: fp32 scores are materialised for a chunk of (batch, head) pairs at a time (16 MB on CPU, 1 GB on
      GPU, and at least one head: 64 MB at Lq = Lk = 4096), never as a full ``(B, H, Lq, Lk)`` tensor; on CPU
      weights exist only for a cache-sized block of rows at a time.
    - speed: the weights of a row block and their product with ``value`` run as one ``torch.compile``-d
      kernel (Triton on GPU by default; C++ on CPU with ``HYBRID_ATTENTION_COMPILE=1``; compiled once per degree
      and process). Otherwise, or if compilation fails, the identical eager definition runs.
    """
    _check_inputs(query, key, value, exact_ratio, chebyshev_degree, num_samples)
    b, h, lq, d = query.shape
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    if exact_ratio >= 1:
        return _exact_attention(query, key, value, attention_mask, scale)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    out = torch.empty(b, h, lq, value.shape[-1], dtype=query.dtype, device=query.device)
    block = _block_kernel(query.device)
    out_pairs = out.view(b * h, lq, -1)
    values_pairs = value.flatten(0, 1)
    for pairs, scores, kv_pairs, batch_ids, head_ids in _score_chunks(query, key, mask, scale):
        lo, hi = _chunk_thresholds(scores, *plan.for_pairs(batch_ids, head_ids), exact_ratio)
        alpha, beta, top, coef = _polynomial(lo, hi, chebyshev_degree)
        values = values_pairs.index_select(0, kv_pairs).to(scores.dtype)
        hc, _, lk = scores.shape
        rows = max(1, min(lq, _budgets(query.device, block)[1] // (hc * lk)))
        for r0 in range(0, lq, rows):
            r1 = min(lq, r0 + rows)
            out_pairs[pairs, r0:r1] = block(scores[:, r0:r1], values, alpha, beta, top, coef, chebyshev_degree)
    return out


def hybrid_thresholds(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    exact_ratio: float,
    scaling: float | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-head interval ``(lo, hi)``, each ``(B, H)`` fp32, that ``hybrid_attention`` approximates on.

    Valid scores ``< lo`` or ``> hi`` are the exact ones. Same estimator, same chunking as the op.
    """
    _check_inputs(query, key, key, exact_ratio, 1, num_samples)
    b, h, _, d = query.shape
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    mask, plan = _setup(query, key, attention_mask, num_samples)
    lo = torch.empty(b * h, dtype=_compute_dtype(query), device=query.device)
    hi = torch.empty_like(lo)
    for pairs, scores, _, batch_ids, head_ids in _score_chunks(query, key, mask, scale):
        plan_pairs = plan.for_pairs(batch_ids, head_ids)
        lo[pairs], hi[pairs] = _chunk_thresholds(scores, *plan_pairs, min(exact_ratio, 1.0))
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


def _score_chunks(query, key, mask, scale):
    """Yield fp32 scores for chunks of (batch, head) pairs, with what each chunk needs.

    Pairs are flattened (``pair = b * H + h``) so that a chunk may span several sequences of a batch: the work per
    chunk (sampling, selection, the kernel launch) is then shared by a whole small batch. Yields
    ``(pairs: slice, scores (P, Lq, Lk), kv_pairs (P,), batch_ids (P,), head_ids (P,))``; ``kv_pairs`` index the
    flattened key/value pairs (grouped heads share theirs).
    """
    b, h, lq, _ = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    group = h // hkv
    compute = _compute_dtype(query)
    # one pair at least: a head's scores are needed whole to place its thresholds (64 MB at L = 4096)
    chunk = max(1, min(b * h, _budgets(query.device)[0] // max(1, lq * lk)))
    queries = query.flatten(0, 1)
    keys = key.flatten(0, 1)
    pair_ids = torch.arange(b * h, device=query.device)
    # one buffer for every chunk: a fresh allocation per chunk costs page faults comparable to the matmul itself
    # (only without autograd: a matmul into a preallocated `out=` cannot be differentiated)
    track = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    buffer = None if track else torch.empty(min(chunk, b * h), lq, lk, dtype=compute, device=query.device)
    for p0 in range(0, b * h, chunk):
        pairs = slice(p0, min(b * h, p0 + chunk))
        batch_ids = torch.div(pair_ids[pairs], h, rounding_mode="floor")
        head_ids = pair_ids[pairs] - batch_ids * h
        kv_pairs = batch_ids * hkv + torch.div(head_ids, group, rounding_mode="floor")
        q = queries[pairs].to(compute) * scale  # scaling the small operand saves a pass over the scores
        k = keys.index_select(0, kv_pairs).to(compute)
        out = {} if buffer is None else {"out": buffer[: q.shape[0]]}
        if mask is None or mask.dtype == torch.bool:
            scores = torch.bmm(q, k.transpose(1, 2), **out)
            if mask is not None:
                scores = scores.masked_fill_(~_rows_for_pairs(mask, batch_ids, head_ids), -math.inf)
        else:
            chunk_bias = _rows_for_pairs(mask, batch_ids, head_ids).expand(q.shape[0], lq, lk)
            scores = torch.baddbmm(chunk_bias, q, k.transpose(1, 2), **out)
        yield pairs, scores, kv_pairs, batch_ids, head_ids


def _rows_for_pairs(mask: torch.Tensor, batch_ids: torch.Tensor, head_ids: torch.Tensor) -> torch.Tensor:
    """The rows ``(P or 1, Lq or 1, Lk or 1)`` of a broadcast mask ``(Bm, Hm, ., .)`` for the given pairs."""
    if mask.shape[0] == 1 and mask.shape[1] == 1:
        return mask[0]
    bi = batch_ids if mask.shape[0] > 1 else torch.zeros_like(batch_ids)
    hi = head_ids if mask.shape[1] > 1 else torch.zeros_like(head_ids)
    return mask[bi, hi]


def _chunk_thresholds(scores, flat, take, exact_ratio):
    """Per-head ``(lo, hi)`` for a chunk of scores ``(hc, Lq, Lk)`` with -inf at masked pairs (no gradient)."""
    scores = scores.detach()  # the thresholds select; they are not differentiated (see the op's contract)
    hc = scores.shape[0]
    if exact_ratio == 0:
        # approximate everything: the interval is the exact range of the valid scores
        hi = scores.amax(dim=(1, 2))
        lo = scores.masked_fill(scores == -math.inf, math.inf).amin(dim=(1, 2))
    elif take is None:
        # no mask: all n samples count, the ranks are plain ints and quickselect is cheapest
        sample = scores.view(hc, -1).gather(1, flat.expand(hc, -1))
        n = sample.shape[-1]
        rank = math.floor(n * exact_ratio / 2)
        lo = torch.kthvalue(sample, rank + 1, dim=-1).values
        hi = torch.kthvalue(sample, n - rank, dim=-1).values
    else:
        num_samples = flat.shape[-1]
        sample = scores.view(hc, -1).gather(1, flat.expand(hc, -1))
        take = take & (sample > -math.inf)  # non-rectangular masks: drop samples that landed on masked pairs
        n_taken = take.sum(-1, keepdim=True)
        rank = torch.floor(n_taken.double() * (exact_ratio / 2)).long()
        k_cap = min(num_samples, int(num_samples * exact_ratio / 2) + 1)
        lo = torch.topk(sample.masked_fill(~take, math.inf), k_cap, largest=False).values.gather(1, rank)[:, 0]
        hi = torch.topk(sample.masked_fill(~take, -math.inf), k_cap, largest=True).values.gather(1, rank)[:, 0]
    empty = ~torch.isfinite(hi) | ~torch.isfinite(lo)  # a fully masked head: any interval will do
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _interval(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and half-width of the approximation interval ``[lo, hi]``.

    The half-width is padded by ``_INTERVAL_PAD`` of itself so that rounding never pushes the endpoints (which
    are approximated by definition) out of the interval, and floored so that a degenerate interval stays usable.
    """
    mid = (lo + hi) * 0.5
    half = torch.maximum((hi - lo) * (0.5 * (1.0 + _INTERVAL_PAD)), 1e-6 * mid.abs().clamp_min(1.0))
    return mid, half


def _polynomial(lo: torch.Tensor, hi: torch.Tensor, degree: int):
    """Per-head constants of the weight kernel, each shaped ``(hc, 1, 1)`` (``coef``: ``(hc, 1, degree + 1)``).

    ``t = alpha * s + beta`` maps the interval to [-1, 1]; ``sum_k coef_k t^k ~= exp(s - top)`` on it.
    """
    hc = lo.shape[0]
    mid, half = _interval(lo, hi)
    alpha = (1.0 / half).view(hc, 1, 1)
    beta = (-mid / half).view(hc, 1, 1)
    top = (mid + half).view(hc, 1, 1)
    coef = _exp_monomial_coefficients(half, degree).view(hc, 1, degree + 1)
    return alpha, beta, top, coef


def _block_attention(scores, values, alpha, beta, top, coef, degree: int):
    """Hybrid attention for a block of rows: ``scores (hc, R, Lk)`` (-inf = masked), ``values (hc, Lk, Dv)``.

    Returns the normalised output ``(hc, R, Dv)``. Per element: ``t = alpha * s + beta``; the pair is exact iff
    ``|t| > 1``; exact weight ``exp(s - m)`` with ``m`` the row max; approximated weight
    ``max(p(t) * exp(top - m), floor)``, the row factor folded into the coefficients. Rows without a valid
    pair have zero weights and output 0. This is the single definition of the weights: it runs compiled
    (one fused pass on CPU and GPU) or, where compilation is unavailable, as plain eager torch.
    """
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(row_max == -math.inf, 0.0, row_max)
    t = scores * alpha + beta
    tc = t.clamp(-1.0, 1.0)
    a = coef * torch.exp((top - row_max).clamp_max(_ROW_SCALE_CAP))
    p = a[..., degree:]
    for k in range(degree - 1, -1, -1):  # Horner
        p = p * tc + a[..., k : k + 1]
    weights = torch.where(t != tc, torch.exp(scores - row_max), p.clamp_min(_WEIGHT_FLOOR))
    row_sums = weights.sum(-1, keepdim=True)
    return torch.bmm(weights, values) / row_sums.clamp_min(torch.finfo(weights.dtype).tiny)


_COMPILED = {}


def _block_kernel(device: torch.device):
    """``_block_attention``, compiled with torch.compile or eager.

    ``HYBRID_ATTENTION_COMPILE``: ``1`` compiles everywhere, ``0`` never, unset compiles on GPUs only: there
    Triton fuses the block in seconds, while the C++ build on a CPU costs 20-40 s per process (worth it for long
    runs, not for a smoke test). A failed compilation falls back to the identical eager definition.
    """
    setting = os.environ.get("HYBRID_ATTENTION_COMPILE", "auto")
    wanted = setting == "1" or (setting != "0" and device.type == "cuda")
    if not wanted or torch.compiler.is_compiling():
        return _block_attention
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
) -> torch.Tensor:
    """The contract of ``hybrid_attention``, dense and in float64, with EXACT k-th values.

    ``thresholds=(lo, hi)``, each ``(B, H)``, replaces the exact k-th values (to check the fast op's weighting
    given its own estimated thresholds). Returns float64 ``(B, H, Lq, Dv)``.
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
                    kk = math.floor(exact_ratio / 2 * n)
                    lo, hi = float(srt[kk]), float(srt[n - 1 - kk])
                bounds = torch.tensor([lo, hi], dtype=torch.float64)
                mid, half = (float(x) for x in _interval(bounds[0], bounds[1]))
                approx = ok & ((sv - mid).abs() <= half)
                exact = ok & ~approx
                coeffs = _reference_chebfit_exp(mid - half, mid + half, chebyshev_degree)
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
