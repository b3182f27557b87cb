"""An auxiliary training signal that is not part of LLaDA's objective: read the previous tokens back out of an early
layer.

Why: a key lookup ("In the list c=41, q=73, ... what is the value of q?") needs a *hop* before its *match*: each
value must carry its key, the answer must carry the asked key, both fetched from a neighbouring position, and
only then can attention match them. Neither half earns any loss until the other exists, and from a random start
the tiny model sits at chance (``bench/lookup_probe.py --prev-aux`` measures it: at chance for 25,000 steps without
this signal, learned within 1,000 with it, once the embeddings start at unit scale). Supervising the hop directly
(linear read-outs of the tokens ``k`` positions to the left, from the hidden states after block ``layer``) forms
those previous-token heads first, and the match is then learned like any one-step lookup.

The probes are trained beside the model and never exported: the shipped model is a plain LLaDA whose weights
merely started from a different place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreviousTokenProbe(nn.Module):
    """One linear read-out per offset. ``forward(hidden_states, ids)`` -> scalar loss: the mean over offsets ``k``
    of the cross-entropy of ``ids[:, i - k]`` predicted from ``hidden_states[layer][:, i]``.

    ``hidden_states``: the model's tuple (embeddings, then the output of each block), each ``(B, L, d_model)``;
    ``ids (B, L)``: the ids the model was given (masked tokens stay masked: the probe reads what the layer saw).

    ``positions``: 0 reads every position with a token ``k`` to its left; ``n > 0`` reads ``n`` positions per row,
    drawn uniformly (with ``generator``) from those with a token ``max(offsets)`` to their left, the same ones for
    every offset. Each read-out is a vocabulary-sized matmul, so reading all ``L`` positions at two offsets costs
    about as much as the rest of a tiny model's step; a sample supervises the same head for a fraction of it.
    """

    def __init__(self, d_model: int, vocab_size: int, offsets: tuple[int, ...], layer: int, positions: int = 0):
        super().__init__()
        if not offsets or min(offsets) < 1:
            raise ValueError(f"offsets must be positive; got {offsets}")
        if positions < 0:
            raise ValueError(f"positions must be >= 0 (0 = all); got {positions}")
        self.offsets, self.layer, self.positions = tuple(offsets), layer, positions
        self.readouts = nn.ModuleList(nn.Linear(d_model, vocab_size) for _ in self.offsets)

    def _pairs(self, hidden_states, ids, generator):
        """Yield ``(readout, h (N, d_model), target (N,))`` for each offset shorter than the sequence."""
        h = hidden_states[self.layer]
        b, length = ids.shape
        fit = [(k, readout) for k, readout in zip(self.offsets, self.readouts) if k < length]
        if not self.positions:
            for k, readout in fit:
                yield readout, h[:, k:].flatten(0, 1), ids[:, :-k].flatten()
        elif fit:
            at = torch.randint(max(k for k, _ in fit), length, (b, self.positions), device=ids.device,
                               generator=generator)
            h_at = h.gather(1, at[..., None].expand(-1, -1, h.shape[-1])).flatten(0, 1)
            for k, readout in fit:
                yield readout, h_at, ids.gather(1, at - k).flatten()

    def forward(self, hidden_states: tuple[torch.Tensor, ...], ids: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        losses = [F.cross_entropy(readout(h).float(), target)
                  for readout, h, target in self._pairs(hidden_states, ids, generator)]
        return torch.stack(losses).mean() if losses else hidden_states[self.layer].new_zeros(()).float()

    @torch.no_grad()
    def accuracy(self, hidden_states: tuple[torch.Tensor, ...], ids: torch.Tensor) -> float:
        """Share of (position, offset) read-outs that are right, over every position (a host float: for logs, not
        for the loss)."""
        h = hidden_states[self.layer]
        right = [(readout(h[:, k:]).argmax(-1) == ids[:, :-k]).float().mean()
                 for k, readout in zip(self.offsets, self.readouts) if k < ids.shape[1]]
        return float(torch.stack(right).mean()) if right else float("nan")
