"""The dense float64 reference of the support-basis hybrid attention: the op's contract written out directly.

Obviously correct and slow (a Python loop over (batch, head), every score materialised, exact k-th values): the
yardstick the tests and benchmarks hold every kernel to. Nothing on a hot path imports it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .llada.configuration_llada import DEFAULT_EXACT_SPLIT, DEFAULT_FIT
from .llada.hybrid_constants import FIT_PRIOR, INTERVAL_MIN_HALF, INTERVAL_PAD, ROW_SCALE_CAP, WEIGHT_FLOOR
from .llada.hybrid_sample import MASKED_BIAS

__all__ = ["hybrid_attention_reference", "reference_chebfit_exp", "reference_empirical_fit", "chebval"]


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
                # the interval [lo, hi], its half-width padded so rounding never pushes an endpoint out of it
                mid = 0.5 * (lo + hi)
                half = max(0.5 * (hi - lo) * (1.0 + INTERVAL_PAD), INTERVAL_MIN_HALF * max(1.0, abs(mid)))
                approx = ok & ((sv - mid).abs() <= half)
                exact = ok & ~approx
                coeffs = reference_chebfit_exp(mid - half, mid + half, chebyshev_degree)
                if fit == "empirical":
                    coeffs = reference_empirical_fit(((sv.detach() - mid) / half)[approx], half, coeffs)
                t = ((sv - mid) / half).clamp(-1, 1)
                p = chebval(t, coeffs)  # approximates exp(s - (mid + half))
                row_max = torch.where(ok, sv, torch.full_like(sv, -math.inf)).amax(-1, keepdim=True)
                row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
                # any per-row shift cancels in the normalisation; the row max keeps every weight finite
                scale_row = torch.exp(torch.clamp(mid + half - row_max, max=ROW_SCALE_CAP))
                pe = torch.clamp(p * scale_row, min=WEIGHT_FLOOR)
                w = torch.where(exact, torch.exp(sv - row_max), torch.where(approx, pe, torch.zeros(())))
            rows = w.sum(-1, keepdim=True)
            out[bi, hi_] = torch.where(rows > 0, (w @ v[bi, hi_]) / rows.clamp_min(1e-300), torch.zeros(()))
    return out


def reference_chebfit_exp(a: float, b: float, degree: int) -> torch.Tensor:
    """Chebyshev coefficients of the least-squares fit of ``exp(x - b)`` on ``[a, b]``, solved on 4096 nodes."""
    t, pinv = _reference_fit_basis(degree)
    x = 0.5 * (b - a) * t + 0.5 * (b + a)
    return pinv @ torch.exp(x - b)


def reference_empirical_fit(t: torch.Tensor, half: float, uniform: torch.Tensor) -> torch.Tensor:
    """The empirical fit written out: ``argmin mean (A c - f)^2 + prior * sum_k <T_k,T_k> (c_k - uniform_k)^2``
    over the points ``t`` in [-1, 1] (``A`` their Chebyshev basis matrix, ``f = exp(half (t - 1))``)."""
    degree = uniform.numel() - 1
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(t.clamp(-1, 1))[:, None])
    n = max(1, t.numel())
    norms = torch.full((degree + 1,), 0.5, dtype=torch.float64)
    norms[0] = 1.0
    gram = basis.T @ basis / n + torch.diag(FIT_PRIOR * norms)
    rhs = basis.T @ torch.exp(half * (t - 1.0)) / n + FIT_PRIOR * norms * uniform
    return torch.linalg.solve(gram, rhs)


@lru_cache(maxsize=None)
def _reference_fit_basis(degree: int, n_nodes: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """4096 Chebyshev nodes and the pseudo-inverse of the Chebyshev basis there (a plain least-squares solve)."""
    t = torch.cos(math.pi * (torch.arange(n_nodes, dtype=torch.float64) + 0.5) / n_nodes)
    basis = torch.cos(torch.arange(degree + 1, dtype=torch.float64)[None, :] * torch.arccos(t)[:, None])
    return t, torch.linalg.pinv(basis)


def chebval(t: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Evaluate a Chebyshev series at ``t`` with Clenshaw's recurrence (float64)."""
    b1 = torch.zeros_like(t)
    b2 = torch.zeros_like(t)
    for c in coeffs.flip(0)[:-1]:
        b1, b2 = 2 * t * b1 - b2 + c, b1
    return t * b1 - b2 + coeffs[0]
