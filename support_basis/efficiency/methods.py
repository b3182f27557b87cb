"""The attention methods: exact (chunked), AS23 polynomial, single- and multi-threshold support basis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch

from .core import (
    DEFAULT_BLOCK_ELEMS,
    ApproxAttention,
    Tensor,
    _augment_ones,
    _block_buffer,
    _check_qkv,
    _divide,
    row_chunks,
    row_norms,
)
from .polynomials import FeatureMap, MonomialFeatures, fit_exp_poly


def exact_scores(Q: Tensor, K: Tensor, scale: float) -> Tensor:
    """``(n, d), (m, d) -> (n, m)``: ``Q K^T * scale`` (scaling the small factor first)."""
    return (Q * scale) @ K.T


def exact_attention(Q: Tensor, K: Tensor, V: Tensor, scale: float, *,
                    block_elems: int = DEFAULT_BLOCK_ELEMS) -> ApproxAttention:
    """Dense softmax attention ``D^-1 exp(Q K^T scale) V``, one row block of ``<= block_elems`` scores at a time.

    Rows are shifted by their maximum score before ``exp`` (the output is shift invariant), so it never overflows.
    Memory: ``O(block_elems + n dv)``.  Time: ``O(n m d)`` -- the quadratic baseline.
    """
    _check_qkv(Q, K, V, scale)
    n, m = Q.shape[0], K.shape[0]
    W = _augment_ones(V)
    out = V.new_empty(n, V.shape[1])
    buf = _block_buffer(Q, n, m, block_elems)
    for rows in row_chunks(n, m, block_elems):
        s = buf[: rows.stop - rows.start]
        torch.mm(Q[rows] * scale, K.T, out=s)
        s.sub_(s.amax(dim=1, keepdim=True)).exp_()
        out[rows] = _divide(s @ W)
    none_q = torch.zeros(n, dtype=torch.bool, device=Q.device)
    none_k = torch.zeros(m, dtype=torch.bool, device=Q.device)
    return ApproxAttention(out, 0, none_q, none_k, lambda rows: torch.exp(exact_scores(Q[rows], K, scale)))






def _key_moments(Ks: Tensor, W: Tensor, fmap: FeatureMap, block_elems: int) -> Tensor:
    """``sum_k psi(k) w_k^T``: ``(m, d), (m, c) -> (r, c)``, features built one row block at a time."""
    acc = W.new_zeros(fmap.rank, W.shape[1])
    buf = _block_buffer(Ks, Ks.shape[0], fmap.rank, block_elems).view(-1)  # storage of one (r, rows) block
    for rows in row_chunks(Ks.shape[0], fmap.rank, block_elems):
        Ft = fmap.transposed(Ks[rows], out=buf[: fmap.rank * (rows.stop - rows.start)].view(fmap.rank, -1))
        acc.addmm_(Ft, W[rows])
    return acc


def _query_apply(Qs: Tensor, M: Tensor, fmap: FeatureMap, block_elems: int) -> Tensor:
    """``psi(Q) M``: ``(n, d), (r, c) -> (n, c)``, one row block at a time.

    The constant feature (row 0 of ``psi^T``, always 1) is added as the row ``M[0]`` outside the product: the
    scores are small, so ``p(s) = a_0 + O(s)`` and keeping ``a_0`` out of the long dot product keeps its rounding
    relative to the ``O(s)`` part (in float32 this cuts the factored matrix's rounding error about fivefold).
    """
    out = M.new_empty(Qs.shape[0], M.shape[1])
    buf = _block_buffer(Qs, Qs.shape[0], fmap.rank, block_elems).view(-1)  # storage of one (r, rows) block
    for rows in row_chunks(Qs.shape[0], fmap.rank, block_elems):
        Ft = fmap.transposed(Qs[rows], out=buf[: fmap.rank * (rows.stop - rows.start)].view(fmap.rank, -1))
        torch.addmm(M[:1], Ft[1:].T, M[1:], out=out[rows])
    return out


def _factored_rows(Fq: Tensor, weights: Tensor, Fk: Tensor) -> Tensor:
    """``(Fq * weights) Fk^T`` with the constant feature added outside the product (see :func:`_query_apply`).

    ``Fq``: ``(a, r)``, ``weights``: ``(r,)`` or ``(a, r)``, ``Fk``: ``(b, r)`` -> ``(a, b)``.
    """
    w = weights if weights.dim() == 2 else weights[None, :]
    return (Fq[:, 1:] * w[:, 1:]) @ Fk[:, 1:].T + w[:, :1]


def bucketed_poly_sums(Qs: Tensor, Ks: Tensor, W: Tensor, q_bucket: Tensor | None, k_bucket: Tensor | None,
                       coeffs: Tensor, fmap: FeatureMap, *, block_elems: int = DEFAULT_BLOCK_ELEMS) -> Tensor:
    """Polynomial attention sums with a per-bucket-pair polynomial, in ``O((n + m) r c)`` time.

    Computes ``out_i = sum_{k : b(k) >= 0} p_{b(i), b(k)}(q_i . k_k) w_k`` for rows with ``b(i) >= 0`` and 0 for
    rows with ``b(i) = -1`` (those are handled elsewhere, e.g. exactly).

    Args:
        Qs: ``(n, d)`` queries already multiplied by ``sqrt(scale)``; Ks: ``(m, d)`` keys likewise.
        W: ``(m, c)`` right-hand side (``[V, 1]`` gives numerator and denominator at once).
        q_bucket: ``(n,)`` long in ``[-1, bq)`` or None (every row in bucket 0); k_bucket: ``(m,)`` likewise.
        coeffs: ``(bq, bk, g + 1)`` float64 monomial coefficients, one polynomial per bucket pair.
        fmap: feature map with ``fmap.degrees`` ``(r,)``, shared by both sides.

    Returns:
        ``(n, c)`` in ``W.dtype``.  Each row's features are built once, whatever the number of buckets: the key side
        reduces to per-bucket moments ``S_j = sum_{k in j} psi(k) w_k^T`` (``r x c``) and the query side applies
        ``M_i = sum_j diag(a_ij[deg]) S_j``.
    """
    deg = fmap.degrees
    weights = coeffs.to(W.dtype)[..., deg]  # (bq, bk, r): the coefficient of each feature per bucket pair
    bq, bk = coeffs.shape[0], coeffs.shape[1]
    if k_bucket is None:
        moments = _key_moments(Ks, W, fmap, block_elems)[None]
    else:
        moments = torch.stack([_key_moments(Ks[idx], W[idx], fmap, block_elems)
                               for idx in (torch.nonzero(k_bucket == j).squeeze(1) for j in range(bk))])
    # M[i] = sum_j diag(weights[i, j]) S_j : (bq, r, c)
    M = torch.einsum("ijr,jrc->irc", weights, moments)
    if q_bucket is None:
        return _query_apply(Qs, M[0], fmap, block_elems)
    out = W.new_zeros(Qs.shape[0], W.shape[1])
    for i in range(bq):
        idx = torch.nonzero(q_bucket == i).squeeze(1)
        out.index_copy_(0, idx, _query_apply(Qs[idx], M[i], fmap, block_elems))
    return out


def _exact_pair_sums(Q: Tensor, K: Tensor, W: Tensor, scale: float, row_idx: Tensor, col_idx: Tensor | None,
                     offset: Tensor | float, out: Tensor, block_elems: int) -> None:
    """Add ``(exp(Q[r] K[c]^T scale) - offset) W[c]`` into ``out[r]`` for rows ``row_idx`` and columns ``col_idx``.

    ``col_idx=None`` means all columns.  ``offset`` is subtracted from every ``exp`` entry (the polynomial value
    already counted for that pair); it is added as ``expm1(s) + (1 - offset)`` to keep precision for small ``s``.
    Cost ``O(|rows| |cols| d)``; memory ``O(block_elems)``.
    """
    if row_idx.numel() == 0 or (col_idx is not None and col_idx.numel() == 0):
        return
    Kc = K if col_idx is None else K[col_idx]
    Wc = W if col_idx is None else W[col_idx]
    buf = _block_buffer(Q, row_idx.numel(), Kc.shape[0], block_elems)
    for part in row_chunks(row_idx.numel(), Kc.shape[0], block_elems):
        rr = row_idx[part]
        E = buf[: rr.numel()]
        torch.mm(Q[rr] * scale, Kc.T, out=E)
        if isinstance(offset, float) and offset == 0.0:
            E.exp_()
        else:
            E.expm1_().add_(1.0 - offset)
        out.index_add_(0, rr, E @ Wc)






def _default_fmap(fmap: FeatureMap | None, d: int, degree: int, device: torch.device) -> FeatureMap:
    if fmap is None:
        return MonomialFeatures(d, degree, device)
    if fmap.d != d or fmap.degree != degree:
        raise ValueError(f"feature map is for d={fmap.d}, degree={fmap.degree}; inputs need d={d}, degree={degree}")
    return fmap


def as23_attention(Q: Tensor, K: Tensor, V: Tensor, scale: float, degree: int, *, fmap: FeatureMap | None = None,
                   block_elems: int = DEFAULT_BLOCK_ELEMS) -> ApproxAttention:
    """Alman-Song polynomial attention: ``exp`` replaced by ``p`` fitted on ``[-B, B]``, ``B = scale |Q|max |K|max``.

    ``p(Q K^T scale) = L R^T`` with ``L = psi(sqrt(scale) Q) * a[deg]`` and ``R = psi(sqrt(scale) K)``; the output is
    ``L (R^T V) / L (R^T 1)`` -- ``O((n + m) r dv)`` time, never an ``n x m`` matrix.  ``B`` bounds every score
    (Cauchy-Schwarz), so the error is the fit error of ``exp`` on ``[-B, B]``, relative to entries of size ``e^B``.
    """
    _check_qkv(Q, K, V, scale)
    fmap = _default_fmap(fmap, Q.shape[1], degree, Q.device)
    root = math.sqrt(scale)
    bound = scale * row_norms(Q).amax().double() * row_norms(K).amax().double()
    coeffs = fit_exp_poly(bound, degree)
    Qs, Ks = Q * root, K * root
    out = _divide(bucketed_poly_sums(Qs, Ks, _augment_ones(V), None, None, coeffs[None, None], fmap,
                                     block_elems=block_elems))
    n, m = Q.shape[0], K.shape[0]
    cache: dict[str, Tensor] = {}

    def matrix_rows(rows: slice) -> Tensor:
        if "R" not in cache:
            cache["R"] = fmap(Ks)
        return _factored_rows(fmap(Qs[rows]), coeffs.to(Q.dtype)[fmap.degrees], cache["R"])

    return ApproxAttention(out, fmap.rank, torch.zeros(n, dtype=torch.bool, device=Q.device),
                           torch.zeros(m, dtype=torch.bool, device=Q.device), matrix_rows,
                           {"bound": bound, "coeffs": coeffs})






INTERVALS = ("tight", "threshold")


def large_rows(X: Tensor, threshold: float) -> Tensor:
    """``(n, d) -> (n,)`` bool: rows with any entry ``|x| > threshold``."""
    return X.abs().amax(dim=1) > threshold


def _check_interval(interval: str) -> None:
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}; got {interval!r}")


def single_threshold_attention(Q: Tensor, K: Tensor, V: Tensor, scale: float, degree: int, threshold: float, *,
                               interval: str = "tight", fmap: FeatureMap | None = None,
                               block_elems: int = DEFAULT_BLOCK_ELEMS) -> ApproxAttention:
    """Support-basis attention with one threshold ``T`` (the paper's construction).

    1. Large rows: query rows ``R`` and key rows ``C`` with an entry ``|x| > T``.
    2. Polynomial part: AS23 on ``Q`` and ``K`` with the large rows zeroed, so every pair touching a large row
       gets ``p(0) = a_0`` (about ``exp(0) = 1``).  The small block has every entry ``<= T``, so its scores obey
       ``|s| <= d T^2 scale`` (``interval="threshold"``, the paper's data-oblivious bound); ``interval="tight"``
       (default) fits on ``min(d T^2, |q|max |k|max over small rows) * scale``, which is also a valid bound and
       never wider than the AS23 interval -- without it the small block of the paper's setting
       (``T >= 0.15``, ``d T^2 scale = T^2``) would be fitted on a wider interval than AS23 itself.
    3. Exact correction: ``exp(s) - a_0`` added for rows ``R`` x all columns and rows not in ``R`` x columns
       ``C`` (so those pairs are exact).  Cost ``O(|R| m d + n |C| d)`` on top of AS23's ``O((n + m) r dv)``.
    """
    _check_qkv(Q, K, V, scale)
    _check_interval(interval)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0; got {threshold!r}")
    d = Q.shape[1]
    fmap = _default_fmap(fmap, d, degree, Q.device)
    lq, lk = large_rows(Q, threshold), large_rows(K, threshold)
    Qz, Kz = Q.masked_fill(lq[:, None], 0.0), K.masked_fill(lk[:, None], 0.0)
    bound = torch.tensor(scale * d * threshold * threshold, dtype=torch.float64, device=Q.device)
    if interval == "tight":
        bound = torch.minimum(bound, scale * row_norms(Qz).amax().double() * row_norms(Kz).amax().double())
    coeffs = fit_exp_poly(bound, degree)
    root = math.sqrt(scale)
    Qs, Ks = Qz * root, Kz * root
    W = _augment_ones(V)
    acc = bucketed_poly_sums(Qs, Ks, W, None, None, coeffs[None, None], fmap, block_elems=block_elems)
    a0 = coeffs[0].to(Q.dtype)
    rows_r = torch.nonzero(lq).squeeze(1)
    rows_not_r = torch.nonzero(~lq).squeeze(1)
    cols_c = torch.nonzero(lk).squeeze(1)
    _exact_pair_sums(Q, K, W, scale, rows_r, None, a0, acc, block_elems)
    _exact_pair_sums(Q, K, W, scale, rows_not_r, cols_c, a0, acc, block_elems)
    cache: dict[str, Tensor] = {}

    def matrix_rows(rows: slice) -> Tensor:
        if "R" not in cache:
            cache["R"] = fmap(Ks)
        poly = _factored_rows(fmap(Qs[rows]), coeffs.to(Q.dtype)[fmap.degrees], cache["R"])
        touched = lq[rows][:, None] | lk[None, :]
        return torch.where(touched, poly + torch.expm1(exact_scores(Q[rows], K, scale)) + (1.0 - a0), poly)

    return ApproxAttention(_divide(acc), fmap.rank, lq, lk, matrix_rows, {"bound": bound, "coeffs": coeffs})






def magnitude_buckets(X: Tensor, thresholds: Sequence[float]) -> Tensor:
    """Bucket index of each row by its largest entry ``x* = max |x|``: ``(n, d) -> (n,)`` long.

    With ``T1 > T2 > ... > Tm``: ``-1`` if ``x* > T1`` (large, handled exactly); ``i`` (0-based) if
    ``T_{i+2} < x* <= T_{i+1}``; ``m - 1`` if ``x* <= Tm``.  Bucket ``i`` has upper threshold ``thresholds[i]``.
    """
    T = torch.as_tensor(list(thresholds), dtype=X.dtype, device=X.device)
    above = (X.abs().amax(dim=1)[:, None] > T[None, :]).sum(dim=1)
    return len(thresholds) - 1 - above


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """Validate ``T1 > T2 > ... > Tm > 0`` and return them as a list of floats (raises ``ValueError``)."""
    ts = [float(t) for t in thresholds]
    if not ts or any(not (t > 0 and math.isfinite(t)) for t in ts) or any(a <= b for a, b in pairwise(ts)):
        raise ValueError(f"thresholds must be positive, finite and strictly decreasing (T1 > T2 > ...); got {ts}")
    return ts


def geometric_thresholds(top: float, levels: int, ratio: float = 2.0) -> list[float]:
    """``[top, top / ratio, ..., top / ratio^(levels - 1)]``: the default multi-threshold ladder."""
    if levels < 1 or ratio <= 1:
        raise ValueError(f"need levels >= 1 and ratio > 1; got levels={levels}, ratio={ratio}")
    return [top / ratio**i for i in range(levels)]


def _bucket_max_norms(X: Tensor, bucket: Tensor, count: int) -> Tensor:
    """``(count,)`` float64: largest row norm in each bucket (0 for an empty bucket); rows with bucket -1 ignored."""
    norms = row_norms(X).double()
    out = norms.new_zeros(count + 1)
    # Shift by one so the large rows (-1) land in a slot that is dropped.
    out.scatter_reduce_(0, bucket + 1, norms, reduce="amax", include_self=True)
    return out[1:]


def multi_threshold_attention(Q: Tensor, K: Tensor, V: Tensor, scale: float, degree: int,
                              thresholds: Sequence[float], *, interval: str = "tight",
                              fmap: FeatureMap | None = None,
                              block_elems: int = DEFAULT_BLOCK_ELEMS) -> ApproxAttention:
    """Multi-threshold support basis: a polynomial per pair of magnitude buckets, exact pairs above ``T1``.

    Rows of ``Q`` and ``K`` are bucketed by :func:`magnitude_buckets`.  For buckets ``i, j`` with upper thresholds
    ``Ti, Tj`` every score obeys ``|s| <= d Ti Tj scale`` (``interval="threshold"``); ``"tight"`` (default) uses
    ``min(d Ti Tj, |q|max_i |k|max_j) scale``.  Each pair gets ``exp`` fitted on its own interval, so small rows
    meet a tight polynomial however large the other rows are -- no bounded-entry assumption.  Pairs touching a row
    above ``T1`` are computed exactly (``exp``); with ``T1 >= max |x|`` there are none and the method is purely
    polynomial.  With one threshold it equals :func:`single_threshold_attention`.

    Cost: features of each row built once, ``O((n + m) r dv + bq bk r dv)`` for the polynomial part plus
    ``O(|R| m d + n |C| d)`` for the exact pairs.  ``info["bounds"]`` holds the ``(m, m)`` fit intervals.
    """
    _check_qkv(Q, K, V, scale)
    _check_interval(interval)
    ts = check_thresholds(thresholds)
    d, levels = Q.shape[1], len(ts)
    fmap = _default_fmap(fmap, d, degree, Q.device)
    qb, kb = magnitude_buckets(Q, ts), magnitude_buckets(K, ts)
    T = torch.tensor(ts, dtype=torch.float64, device=Q.device)
    bounds = scale * d * T[:, None] * T[None, :]
    if interval == "tight":
        bounds = torch.minimum(bounds, scale * _bucket_max_norms(Q, qb, levels)[:, None]
                               * _bucket_max_norms(K, kb, levels)[None, :])
    coeffs = fit_exp_poly(bounds, degree)  # (levels, levels, g + 1)
    root = math.sqrt(scale)
    Qs, Ks = Q * root, K * root
    W = _augment_ones(V)
    acc = bucketed_poly_sums(Qs, Ks, W, qb, kb, coeffs, fmap, block_elems=block_elems)
    lq, lk = qb < 0, kb < 0
    _exact_pair_sums(Q, K, W, scale, torch.nonzero(lq).squeeze(1), None, 0.0, acc, block_elems)
    _exact_pair_sums(Q, K, W, scale, torch.nonzero(~lq).squeeze(1), torch.nonzero(lk).squeeze(1), 0.0, acc,
                     block_elems)
    cache: dict[str, Tensor] = {}

    def matrix_rows(rows: slice) -> Tensor:
        if not cache:  # key features and columns of each bucket, built once for all row blocks
            for j in range(levels):
                cols = torch.nonzero(kb == j).squeeze(1)
                cache[f"cols{j}"], cache[f"R{j}"] = cols, fmap(Ks[cols])
        Fq = fmap(Qs[rows])
        qbr = qb[rows].clamp_min(0)
        block = Fq.new_zeros(Fq.shape[0], Ks.shape[0])
        for j in range(levels):  # one product per key bucket; each query row uses its own pair coefficients
            w = coeffs.to(Q.dtype)[qbr, j][:, fmap.degrees]
            block.index_copy_(1, cache[f"cols{j}"], _factored_rows(Fq, w, cache[f"R{j}"]))
        exact = torch.exp(exact_scores(Q[rows], K, scale))
        return torch.where(lq[rows][:, None] | lk[None, :], exact, block)

    return ApproxAttention(_divide(acc), fmap.rank, lq, lk, matrix_rows,
                           {"bounds": bounds, "coeffs": coeffs, "q_bucket": qb, "k_bucket": kb})
