"""Masks and the deterministic sample of score positions of the support-basis hybrid attention.

The op places each head's two thresholds at k-th values of a sample of its valid scores. The sample lives on the
grid of valid rows x valid columns, addressed by rank, so a sequence padded inside a batch is sampled exactly as it
is alone; a grid no larger than the sample is enumerated (the k-th values are then exact). Masks are normalised here
once: boolean stays boolean (True = attend), a float bias gets ``-inf`` exactly at its masked pairs. Part of the
self-contained model directory: torch only.

    prepare_mask    a mask as a 4-D boolean or fp32 bias tensor broadcastable to (B, H, Lq, Lk)
    SamplePlan      the sampled positions of every (batch, head) of one call
"""

from __future__ import annotations

import math

import torch

from .hybrid_fit import traced_cache

MASKED_BIAS = -1e30
"""An additive float bias at or below this value masks its pair (covers ``-inf`` and ``torch.finfo(dtype).min``)."""


def prepare_mask(
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


def valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """Boolean validity of a prepared mask (True = the pair takes part)."""
    return mask if mask.dtype == torch.bool else mask > -math.inf


@traced_cache(maxsize=8)
def _jitter(num_samples: int, device: torch.device) -> torch.Tensor:
    """Fixed uniform offsets in [0, 1): the sample is random-looking but identical on every call."""
    g = torch.Generator().manual_seed(20251001)
    return torch.rand(num_samples, generator=g, dtype=torch.float64).to(device)


def sample_positions(
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


@traced_cache(maxsize=32)
def _unmasked_positions(lq: int, lk: int, num_samples: int, device: torch.device) -> torch.Tensor:
    """Without a mask the sample depends on the shape alone: built once, kept compact (taken positions only)."""
    rows = torch.ones(1, lq, dtype=torch.bool, device="cpu")
    cols = torch.ones(1, lk, dtype=torch.bool, device="cpu")
    flat, take = sample_positions(rows, cols, num_samples)
    return flat[take].view(1, 1, -1).to(device)


class SamplePlan:
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
            valid = valid_pairs(mask)
            bm, hm = valid.shape[:2]
            rows = valid.any(-1).expand(bm, hm, lq).reshape(bm * hm, lq)
            cols = valid.any(-2).expand(bm, hm, lk).reshape(bm * hm, lk)
            flat, take = sample_positions(rows, cols, num_samples)
            self.flat, self.take = flat.view(bm, hm, -1), take.view(bm, hm, -1)

    def for_pairs(self, batch_ids: torch.Tensor, head_ids: torch.Tensor):
        """Positions ``(P, M)`` (and ``take``, or None) of the (batch, head) pairs ``batch_ids[i], head_ids[i]``."""
        if self.flat.shape[0] == 1 and self.flat.shape[1] == 1:
            return self.flat[0], None if self.take is None else self.take[0]
        bi = batch_ids if self.flat.shape[0] > 1 else torch.zeros_like(batch_ids)
        hi = head_ids if self.flat.shape[1] > 1 else torch.zeros_like(head_ids)
        return self.flat[bi, hi], None if self.take is None else self.take[bi, hi]
