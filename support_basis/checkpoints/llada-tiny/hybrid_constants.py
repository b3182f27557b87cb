"""The weight rule's constants: the one place every kernel (torch, C, Triton) and the float64 reference read them.

The C kernel's source is formatted with them (``hybrid_native.SOURCE``), the Triton kernel receives them as
compile-time constants, and ``support_basis.reference`` imports them; none is written again as a literal. Part of
the self-contained model directory (no imports).
"""

ROW_SCALE_CAP = 60.0
"""A row's polynomial weights are scaled by ``exp(min(top - row_max, ROW_SCALE_CAP))``: ``exp(60) * |p| * n``
stays finite in fp32 for any row length below 1e10."""

WEIGHT_FLOOR = 1e-30
"""Positive floor of a polynomial weight (relative to the row's scale): a row whose polynomial is <= 0 everywhere
stays defined instead of dividing 0 by 0."""

FP32_TINY = 1.1754943508222875e-38
"""``torch.finfo(torch.float32).tiny``: the divisor floor of a row sum, so a fully masked row outputs 0 / tiny = 0."""

INTERVAL_PAD = 1e-5
"""Relative padding of the approximation interval's half-width: rounding never pushes the interval's endpoints
(approximated by definition) out of it."""

INTERVAL_MIN_HALF = 1e-6
"""Floor of the interval's half-width, relative to ``max(1, |centre|)``: a degenerate interval stays usable."""

FIT_PRIOR = 1e-6
"""Weight of the Chebyshev-norm term that keeps the empirical fit well posed (``hybrid_fit.fit_empirical``)."""

HORNER_MAX_DEGREE = 8
"""Degrees up to this are evaluated with Horner's rule in the monomial basis of ``t`` in [-1, 1]; above it, the
coefficients stay Chebyshev and the kernels run Clenshaw's recurrence (monomial coefficients of a Chebyshev
series grow like 2.4^g, which costs fp32 accuracy from degree ~10)."""
