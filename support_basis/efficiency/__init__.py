"""Computational efficiency of attention approximations: exact, polynomial (AS23) and support basis.

Every method here approximates the unnormalised attention matrix ``A = exp(Q K^T * scale)`` and the attention
output ``Y = D^-1 A V`` with ``D = diag(A 1)``.  Shapes used throughout:

* ``Q``: ``(n, d)`` queries, ``K``: ``(m, d)`` keys, ``V``: ``(m, dv)`` values, output ``(n, dv)``;
* ``scale`` is a positive float (the paper uses ``1 / d``);
* a polynomial ``p(x) = sum_j a_j x^j`` of degree ``g`` is stored as its monomial coefficients ``(..., g + 1)``
  in float64.

Methods (all memory-bounded by chunking over rows; none forms an ``n x m`` matrix unless the caller asks for
attention-matrix rows for error measurement):

* :func:`exact_attention` -- dense softmax attention, computed one row block at a time;
* :func:`as23_attention` -- the polynomial method of Alman & Song (2023): ``exp`` is replaced by a polynomial fitted
  on ``[-B, B]`` with ``B = scale * max|q| * max|k|`` and ``p(Q K^T)`` is factored through explicit polynomial
  feature maps of rank ``C(d + g, g)``;
* :func:`single_threshold_attention` -- the support basis of the paper: rows with an entry above ``T`` are "large";
  the polynomial method runs with those rows zeroed and every pair touching a large row is corrected exactly;
* :func:`multi_threshold_attention` -- the assumption-free extension: rows are bucketed by magnitude with thresholds
  ``T1 > T2 > ... > Tm``, each bucket pair gets its own polynomial fitted on that pair's score interval, and rows
  above ``T1`` are handled exactly;
* :class:`TensorSketchFeatures` -- a random feature map that can replace the exact one in any polynomial method.

The experiment drivers (``experiment``) (:func:`threshold_sweep`, :func:`n_sweep`, :func:`heavy_tail_table`) are what
``scripts/efficiency_experiment.py`` runs.
"""

from __future__ import annotations

from .core import DEFAULT_BLOCK_ELEMS, DEFAULT_FIT_NODES, MIN_BOUND, ApproxAttention, Tensor, row_chunks, row_norms  # noqa: F401
from .core import memory_estimate, physical_memory  # noqa: F401
from .experiment import (  # noqa: F401
    METHODS,
    POLY_METHODS,
    SCALING_METHODS,
    ExperimentConfig,
    Record,
    heavy_tail_table,
    heavy_tailed_inputs,
    loglog_slope,
    make_method,
    measure_methods,
    n_sweep,
    paper_inputs,
    relative_error,
    relative_matrix_error,
    summarize_goals,
    synchronize,
    threshold_sweep,
    time_interleaved,
)
from .methods import (  # noqa: F401
    INTERVALS,
    as23_attention,
    bucketed_poly_sums,
    check_thresholds,
    exact_attention,
    exact_scores,
    geometric_thresholds,
    large_rows,
    magnitude_buckets,
    multi_threshold_attention,
    single_threshold_attention,
)
from .polynomials import FeatureMap, MonomialFeatures, TensorSketchFeatures, fit_exp_poly, num_monomials, poly_eval  # noqa: F401
