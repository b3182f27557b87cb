"""The polynomial of the support-basis hybrid attention: least-squares fits of ``exp`` on an interval, in float64.

Per head, on ``t`` in [-1, 1] (the head's interval ``[lo, hi]`` mapped linearly): the paper's fit (least squares
on Chebyshev nodes) and the empirical fit (least squares on the head's own sampled scores), as Chebyshev
coefficients, and their conversion to the basis the weight kernels evaluate (monomial for Horner's rule up to
``HORNER_MAX_DEGREE``, Chebyshev for Clenshaw's recurrence above). Everything runs on the input's device without a
host synchronisation. Part of the self-contained model directory: torch only.
"""

from __future__ import annotations

import functools
import math

import torch

from .hybrid_constants import FIT_PRIOR, HORNER_MAX_DEGREE

def traced_cache(maxsize: int | None = None):
    """``functools.lru_cache`` for tables that are constants of their arguments, which ``torch.compile`` traces
    through without its warning: under compilation the function runs uncached (Dynamo ignores an lru_cache
    anyway, and says so once per call site)."""

    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        return call

    return wrap


_FIT_NODES = 64  # Chebyshev nodes of the least-squares fit (more than enough for any usable degree)


@traced_cache()
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


@traced_cache()
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


def fit_chebyshev(half: torch.Tensor, degree: int) -> torch.Tensor:
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


def fit_empirical(half: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, degree: int) -> torch.Tensor:
    """Chebyshev coefficients ``c (P, g+1)`` of the least-squares fit of ``exp(half (t - 1))`` on the points ``t``.

    ``t (P, M)`` are a head's (sampled) approximated scores mapped to [-1, 1] and ``weight (P, M)`` their 0/1
    weights. Minimises ``mean_m w_m (p(t_m) - f(t_m))^2 + FIT_PRIOR * ||p - f||_T^2`` with ``||.||_T`` the
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
    uniform = fit_chebyshev(half, degree)
    gram = gram + torch.diag(FIT_PRIOR * norms)
    b = torch.stack(rhs, -1) + FIT_PRIOR * norms * uniform
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


def evaluation_coefficients(c: torch.Tensor, degree: int) -> torch.Tensor:
    """The coefficients the weight kernels evaluate: monomial (Horner) up to ``HORNER_MAX_DEGREE``, else ``c``."""
    return _small_matmul(c, _to_monomial(degree, c.device)) if degree <= HORNER_MAX_DEGREE else c


def exp_monomial_coefficients(half: torch.Tensor, degree: int) -> torch.Tensor:
    """Monomial coefficients ``a (..., g+1)`` with ``sum_k a_k t^k ~= exp(half * (t - 1))`` (the paper's fit)."""
    return (fit_chebyshev(half, degree) @ _to_monomial(degree, half.device)).to(half.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Masks and the deterministic sample of score positions
