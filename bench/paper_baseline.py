"""The published support-basis attention, re-implemented from its description, as a baseline to measure against.

What the paper's released model file does (and this reproduces, faults included, on purpose):
- forms the full score matrix ``S = Q K^T / sqrt(D)`` for all heads at once, with no max subtraction;
- per (batch, head) takes the k-th smallest and largest of all ``L*L`` scores, ``k = int(ratio/2 * L*L)``;
- fits ONE Chebyshev least-squares approximation of ``exp`` on a single interval spanning every head of the
  batch, with NumPy on the host (4096 nodes), and evaluates it with NumPy on the host;
- ignores the attention mask.
Used only by the benchmarks, never by the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial.chebyshev import chebfit, chebval


def paper_hybrid_attention(q, k, v, exact_ratio: float = 0.2, chebyshev_degree: int = 6) -> torch.Tensor:
    """``q, k, v (B, H, L, D)`` -> ``(B, H, L, D)``, as the released code computes it (mask not supported)."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    b, h, l, _ = s.shape
    flat = s.reshape(b, h, l * l)
    m = int(exact_ratio / 2 * l * l)
    bottom = torch.kthvalue(flat, m, dim=-1).values[..., None]
    top = torch.kthvalue(flat, l * l - m + 1, dim=-1).values[..., None]
    exact = (flat <= bottom) | (flat >= top)
    clamped = torch.minimum(torch.maximum(flat, bottom), top)
    lo, hi = float(clamped.min()), float(clamped.max())  # one interval for every head of the batch
    nodes = np.cos(np.pi * (np.arange(4096) + 0.5) / 4096)
    coeffs = chebfit(nodes, np.exp(0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)), deg=chebyshev_degree)
    t = np.clip((2 * clamped.detach().cpu().numpy() - (hi + lo)) / (hi - lo), -1.0, 1.0)
    approx = torch.tensor(chebval(t, coeffs), dtype=s.dtype, device=s.device)
    merged = torch.where(exact, torch.exp(flat), approx).reshape(b, h, l, l)
    return (merged / merged.sum(-1, keepdim=True)) @ v
