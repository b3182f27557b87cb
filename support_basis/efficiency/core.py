"""Shared pieces of the efficiency experiment: constants, row chunking, the result record."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor

#: Upper bound on the number of elements of one temporary block (rows x columns): 2**20 = 8 MiB in float64.
DEFAULT_BLOCK_ELEMS = 1 << 20
#: Smallest half-width used for a polynomial fit; a smaller valid bound is widened to this (still valid: the
#: interval only grows) so that the monomial coefficients ``m_j / B^j`` stay finite for empty or all-zero blocks.
MIN_BOUND = 1e-6
#: Number of Chebyshev nodes of the least-squares fit (first kind); must exceed the degree.
DEFAULT_FIT_NODES = 64




def row_chunks(num_rows: int, width: int, block_elems: int = DEFAULT_BLOCK_ELEMS) -> Iterator[slice]:
    """Yield consecutive row slices of ``range(num_rows)`` so that ``rows * width <= block_elems``.

    Contract: the slices partition ``range(num_rows)``; each holds at least one row even when ``width`` alone
    exceeds ``block_elems``.
    """
    step = max(1, block_elems // max(1, width))
    for start in range(0, num_rows, step):
        yield slice(start, min(num_rows, start + step))


def _check_qkv(Q: Tensor, K: Tensor, V: Tensor | None, scale: float) -> None:
    """Validate shapes, dtypes and ``scale`` shared by every attention function (raises ``ValueError``)."""
    if Q.dim() != 2 or K.dim() != 2:
        raise ValueError(f"Q and K must be 2-D (n, d) and (m, d); got shapes {tuple(Q.shape)} and {tuple(K.shape)}")
    if Q.shape[1] != K.shape[1]:
        raise ValueError(f"Q and K must share the feature dimension d; got {Q.shape[1]} and {K.shape[1]}")
    if V is not None and (V.dim() != 2 or V.shape[0] != K.shape[0]):
        raise ValueError(f"V must be 2-D (m, dv) with m = K.shape[0] = {K.shape[0]}; got {tuple(V.shape)}")
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite float; got {scale!r}")
    if not Q.is_floating_point():
        raise ValueError(f"Q, K, V must be floating point; got {Q.dtype}")


def _block_buffer(like: Tensor, num_rows: int, width: int, block_elems: int) -> Tensor:
    """A ``(rows, width)`` scratch block reused by every chunk of :func:`row_chunks` (same ``block_elems``).

    Reuse matters on CPU: a fresh multi-MiB temporary per chunk is served by ``mmap`` and page-faulted on first
    touch, which costs as much as the arithmetic at these sizes.
    """
    step = max(1, block_elems // max(1, width))
    return like.new_empty(min(step, max(1, num_rows)), width)


def _augment_ones(V: Tensor) -> Tensor:
    """``[V, 1]``: ``(m, dv) -> (m, dv + 1)``; one product ``E @ [V, 1]`` gives both ``E V`` and the row sums."""
    return torch.cat([V, V.new_ones(V.shape[0], 1)], dim=1)


def _divide(num_den: Tensor) -> Tensor:
    """Split ``(n, dv + 1)`` accumulated ``[A V, A 1]`` into the attention output ``(n, dv)``.

    No clamping: a non-positive denominator (a polynomial that went negative) must show up as a large error
    rather than be hidden.
    """
    return num_den[:, :-1] / num_den[:, -1:]


def row_norms(X: Tensor) -> Tensor:
    """Euclidean norm of each row: ``(n, d) -> (n,)``."""
    return torch.linalg.vector_norm(X, dim=1)






@dataclass
class ApproxAttention:
    """What an attention method returns.

    Attributes:
        output: ``(n, dv)`` attention output in the working dtype.
        features: feature count ``r`` of the polynomial part (0 for exact attention).
        large_q: ``(n,)`` bool, query rows handled exactly (all False when none).
        large_k: ``(m,)`` bool, key rows handled exactly.
        matrix_rows: ``rows (slice) -> (len(rows), m)`` entries of the approximate attention matrix this method
            represents, for error measurement only (costs ``O(rows * m * r)``; never called by the method itself).
        info: extra diagnostics (fit intervals, bucket sizes) as tensors or numbers.
    """

    output: Tensor
    features: int
    large_q: Tensor
    large_k: Tensor
    matrix_rows: Callable[[slice], Tensor]
    info: dict = field(default_factory=dict)


def memory_estimate(n: int, d: int, dtype: str = "float64") -> int:
    """Bytes an experiment at sequence length ``n`` holds at once, roughly: Q, K, V and the outputs of the exact
    reference and every method, ``(n, d + 1)`` each (the score blocks are bounded by ``row_chunks``)."""
    itemsize = 8 if dtype == "float64" else 4
    return 12 * n * (d + 1) * itemsize


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the platform does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None

