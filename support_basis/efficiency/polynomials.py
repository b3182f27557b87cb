"""Polynomials for exp: the Chebyshev least-squares fit on [-B, B] and the feature maps that factor p(Q K^T)."""

from __future__ import annotations

import math
from functools import cache

import torch

from .core import DEFAULT_FIT_NODES, MIN_BOUND, Tensor


@cache
def _chebyshev_fit_operator(degree: int, num_nodes: int, device: str) -> tuple[Tensor, Tensor]:
    """Nodes and the linear map from samples to monomial coefficients on ``[-1, 1]`` (float64, cached).

    Returns ``(u, P)``: ``u`` ``(num_nodes,)`` first-kind Chebyshev nodes and ``P`` ``(degree + 1, num_nodes)`` with
    ``P @ f(u)`` = monomial coefficients (in ``u``) of the least-squares polynomial of degree ``degree`` through the
    samples; least squares is solved in the Chebyshev basis (well conditioned) and converted to monomials.
    """
    dev = torch.device(device)
    k = torch.arange(num_nodes, dtype=torch.float64, device=dev)
    theta = math.pi * (k + 0.5) / num_nodes
    u = torch.cos(theta)
    j = torch.arange(degree + 1, dtype=torch.float64, device=dev)
    cheb_basis = torch.cos(theta[:, None] * j[None, :])  # T_j(u_i) = cos(j * theta_i): (num_nodes, degree + 1)
    # Row j of `to_mono` holds the monomial coefficients of T_j (three-term recurrence; a loop over degrees only).
    to_mono = torch.zeros(degree + 1, degree + 1, dtype=torch.float64, device=dev)
    to_mono[0, 0] = 1.0
    if degree >= 1:
        to_mono[1, 1] = 1.0
    for t in range(2, degree + 1):
        to_mono[t, 1:] = 2.0 * to_mono[t - 1, :-1]
        to_mono[t] -= to_mono[t - 2]
    cheb_ls = torch.linalg.pinv(cheb_basis)  # (degree + 1, num_nodes): least-squares Chebyshev coefficients
    return u, to_mono.T @ cheb_ls


def fit_exp_poly(bound: Tensor | float, degree: int, *, num_nodes: int = DEFAULT_FIT_NODES,
                 min_bound: float = MIN_BOUND) -> Tensor:
    """Least-squares Chebyshev fit of ``exp`` on ``[-B, B]`` for one or many half-widths ``B``.

    Args:
        bound: ``B``, a float or a tensor of any shape ``S`` (computed on the device; no host synchronisation).
        degree: polynomial degree ``g >= 0``.
        num_nodes: number of first-kind Chebyshev nodes (``> g``); with ``num_nodes > g + 1`` the fit is the
            discrete Chebyshev truncation, within a small factor of the minimax error ``~ 2 (B/2)^(g+1) / (g+1)!``.
        min_bound: half-widths below this are widened to it (the fit stays valid on the smaller interval).

    Returns:
        float64 tensor ``S + (g + 1,)`` of monomial coefficients ``a`` with ``p(x) = sum_j a_j x^j ~ exp(x)``.
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0; got {degree}")
    if num_nodes <= degree:
        raise ValueError(f"num_nodes must exceed the degree {degree}; got {num_nodes}")
    B = torch.as_tensor(bound, dtype=torch.float64)
    B = B.clamp_min(min_bound)
    u, P = _chebyshev_fit_operator(degree, num_nodes, str(B.device))
    samples = torch.exp(B[..., None] * u)  # exp(B u) on the nodes: S + (num_nodes,)
    mono_u = samples @ P.T  # coefficients in the normalised variable u = x / B
    powers = torch.arange(degree + 1, dtype=torch.float64, device=B.device)
    return mono_u / B[..., None] ** powers


def poly_eval(coeffs: Tensor, x: Tensor) -> Tensor:
    """Evaluate ``p(x) = sum_j coeffs[..., j] x^j`` by Horner's rule (coeffs broadcast against ``x``)."""
    out = torch.zeros_like(x) + coeffs[..., -1]
    for j in range(coeffs.shape[-1] - 2, -1, -1):
        out = out * x + coeffs[..., j]
    return out






def num_monomials(d: int, degree: int) -> int:
    """Rank of the exact polynomial feature map: the number of monomials of degree ``<= g`` in ``d`` variables."""
    return math.comb(d + degree, degree)


@cache
def _monomial_plan(d: int, degree: int, device: str) -> tuple[Tensor, tuple[float, ...], Tensor]:
    """Index plan of the exact feature map (cached; built with tensor ops, no loop over monomials).

    Every monomial of degree ``t <= g`` in ``d`` variables is a multiset of size ``g`` over ``d + 1`` symbols,
    symbol 0 standing for the constant 1 (``g - t`` copies of it).  ``torch.combinations`` lists the
    ``C(d + g, g)`` multisets sorted ascending, so the constant comes first and the all-constant multiset is
    feature 0.  The weight ``sqrt(t! / prod_k m_k!)`` (``m_k``: multiplicities of the real variables) makes
    ``psi_t(q) . psi_t(k) = (q . k)^t`` (multinomial theorem).  It factors over positions: the ``l``-th real
    variable of a sorted multiset, being the ``c``-th repeat in its run, contributes ``sqrt(l / c)``; so the
    weight is folded into the gather by indexing into copies of ``[1, x]`` pre-scaled by each ``sqrt(l / c)``.

    Returns ``(index, factors, degrees)``: ``index`` long ``(r, g)`` into the stacked copies (width
    ``(d + 1) len(factors)``), ``factors`` the scale of each copy, ``degrees`` long ``(r,)``.  Features are ordered
    by degree: ``[1 | x | degree-2 block | ...]``.
    """
    dev = torch.device(device)
    pairs = [(l, c) for l in range(1, degree + 1) for c in range(1, l + 1)]  # copy id = l (l - 1) / 2 + c - 1
    factors = tuple(math.sqrt(l / c) for l, c in pairs)
    if degree == 0:
        return torch.zeros(1, 0, dtype=torch.long, device=dev), factors, torch.zeros(1, dtype=torch.long, device=dev)
    idx = torch.combinations(torch.arange(d + 1), r=degree, with_replacement=True).reshape(-1, degree)
    real = idx > 0
    nth_real = torch.cumsum(real.long(), dim=1)  # l: 1-based rank of a real variable within the multiset
    run = torch.ones_like(idx)  # c: 1-based position inside a run of equal symbols
    for pos in range(1, degree):  # loop over the g positions, vectorised over all multisets
        run[:, pos] = torch.where(idx[:, pos] == idx[:, pos - 1], run[:, pos - 1] + 1, torch.ones_like(run[:, pos]))
    copy = torch.where(real, nth_real * (nth_real - 1) // 2 + run - 1, torch.zeros_like(idx))  # constant: factor 1
    degrees = real.sum(dim=1)
    order = torch.argsort(degrees, stable=True)
    return (idx + (d + 1) * copy)[order].to(dev), factors, degrees[order].to(dev)


class MonomialFeatures:
    """Exact polynomial feature map ``psi: R^d -> R^r`` with ``r = C(d + g, g)``.

    ``psi(x) = [1, x, psi_2(x), ..., psi_g(x)]`` where ``psi_t`` lists the weighted degree-``t`` monomials, so that
    ``psi_t(q) . psi_t(k) = (q . k)^t`` exactly.  A polynomial ``p`` is applied by weighting the query side:
    ``(psi(q) * a[degrees]) . psi(k) = p(q . k)``.  Coefficients live outside the map so that one feature matrix
    serves every bucket pair of the multi-threshold method.  Feature 0 is the constant 1 (relied upon by the
    attention code, which adds the constant term outside the matrix products).
    """

    def __init__(self, d: int, degree: int, device: torch.device | str = "cpu"):
        if d < 1 or degree < 0:
            raise ValueError(f"need d >= 1 and degree >= 0; got d={d}, degree={degree}")
        self.d, self.degree, self.device = d, degree, torch.device(device)
        self._index, self._factors, self.degrees = _monomial_plan(d, degree, str(self.device))
        #: feature count ``C(d + g, g)``.
        self.rank = self._index.shape[0]
        self.random = False

    def transposed(self, X: Tensor, out: Tensor | None = None) -> Tensor:
        """``(n, d) -> (r, n)`` contiguous, in ``X.dtype``; ``out`` (``(r, n)``, contiguous) is reused if given.

        Built feature-major: ``g`` row gathers (contiguous copies) and ``g - 1`` in-place products -- gathering
        columns of a row-major tensor is an order of magnitude slower, and the feature map is a large part of the
        polynomial methods' run time.  ``psi(X)^T`` is also the layout the key-side product ``psi(K)^T W`` wants.
        """
        n = X.shape[0]
        if out is None:
            out = X.new_empty(self.rank, n)
        if self.degree == 0:
            return out.fill_(1.0)
        base = torch.cat([X.new_ones(1, n), X.T], dim=0)  # (d + 1, n)
        stacked = torch.cat([base * f for f in self._factors], dim=0) if len(self._factors) > 1 else base
        torch.index_select(stacked, 0, self._index[:, 0], out=out)
        if self.degree > 1:
            tmp = torch.empty_like(out)
            for pos in range(1, self.degree):  # loop over the g positions of a monomial, never over monomials
                torch.index_select(stacked, 0, self._index[:, pos], out=tmp)
                out.mul_(tmp)
        return out

    def __call__(self, X: Tensor) -> Tensor:
        """``(n, d) -> (n, r)`` in ``X.dtype`` (a transposed view of :meth:`transposed`)."""
        return self.transposed(X).T


class TensorSketchFeatures:
    """Random polynomial features: exact degree-0/1 blocks and a TensorSketch of size ``D`` per degree ``t >= 2``.

    For degree ``t`` the sketch is ``TS_t(x) = irfft(prod_l rfft(CS_l(x)))`` with ``t`` independent CountSketches
    ``CS_l(x)[b] = sum_{i : h_l(i) = b} s_l(i) x_i`` (random hash ``h_l: [d] -> [D]``, random signs ``s_l``; Pham &
    Pagh 2013): the circular convolution of the CountSketches is a CountSketch of ``x^(tensor t)``.  Contract:

    * unbiased: ``E[TS_t(q) . TS_t(k)] = (q . k)^t``, hence ``E[(psi(q) * a[deg]) . psi(k)] = p(q . k)``;
    * variance of one entry is ``O(3^t (|q| |k|)^(2t) / D)`` -- it scales with the norms, not with ``(q . k)^t``,
      so for nearly orthogonal vectors the relative error of the degree-``t`` term is large unless ``D >> d``;
    * the attention *output* is a ratio of two unbiased sums, so it carries an ``O(1 / D)`` bias.

    Degrees 0 and 1 stay exact (they cost ``1 + d`` features and carry most of the mass).  Seeded: the same seed
    gives the same map on every device; queries and keys must use the same instance.  Cost per row: ``t`` FFTs of
    size ``D`` per degree -- far more per feature than an exact monomial (one product), so the sketch saves time
    only where ``C(d + g, g)`` is large (higher degree), not at ``d = 64, g = 2`` (2145 exact features).
    """

    def __init__(self, d: int, degree: int, sketch_dim: int, seed: int = 0, device: torch.device | str = "cpu"):
        if d < 1 or degree < 0 or sketch_dim < 1:
            raise ValueError(f"need d >= 1, degree >= 0, sketch_dim >= 1; got {d}, {degree}, {sketch_dim}")
        self.d, self.degree, self.sketch_dim, self.device = d, degree, sketch_dim, torch.device(device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        #: per degree t >= 2: hash columns ``(t, d)`` long and signs ``(t, d)`` float64 of t CountSketches.
        self._hashes: list[tuple[Tensor, Tensor]] = []
        for t in range(2, degree + 1):
            cols = torch.randint(sketch_dim, (t, d), generator=gen)
            signs = torch.randint(2, (t, d), generator=gen).to(torch.float64) * 2.0 - 1.0
            self._hashes.append((cols.to(self.device), signs.to(self.device)))
        sizes = [1, d][: degree + 1] + [sketch_dim] * max(0, degree - 1)
        self.degrees = torch.repeat_interleave(torch.arange(len(sizes), device=self.device), torch.tensor(sizes,
                                               device=self.device))
        self.rank = int(sum(sizes))
        self.random = True

    def transposed(self, X: Tensor, out: Tensor | None = None) -> Tensor:
        """``(n, d) -> (r, n)`` contiguous with ``r = 1 + d + (g - 1) D``; ``out`` is reused if given.

        Feature-major throughout: each CountSketch is a scatter-add of signed rows of ``X^T`` and the FFTs run
        along dim 0, so the result lands in ``out`` without transposes.
        """
        n, d = X.shape
        if out is None:
            out = X.new_empty(self.rank, n)
        if n == 0:  # MKL's FFT rejects empty batches (an empty magnitude bucket)
            return out
        out[0].fill_(1.0)
        if self.degree >= 1:
            out[1:d + 1] = X.T
        start = 1 + d
        for cols, signs in self._hashes:
            spectrum = None
            for l in range(cols.shape[0]):  # loop over the t factors of the tensor power
                sketch = X.new_zeros(self.sketch_dim, n).index_add_(0, cols[l], X.T * signs[l].to(X.dtype)[:, None])
                f = torch.fft.rfft(sketch, dim=0)
                spectrum = f if spectrum is None else spectrum.mul_(f)
            torch.fft.irfft(spectrum, n=self.sketch_dim, dim=0, out=out[start:start + self.sketch_dim])
            start += self.sketch_dim
        return out

    def __call__(self, X: Tensor) -> Tensor:
        """``(n, d) -> (n, r)`` in ``X.dtype`` (a transposed view of :meth:`transposed`)."""
        return self.transposed(X).T


FeatureMap = MonomialFeatures | TensorSketchFeatures
