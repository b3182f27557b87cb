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
    of the cross-entropy of ``ids[:, i - k]`` predicted from ``hidden_states[layer][:, i]`` (every position with a
    token ``k`` to its left).

    ``hidden_states``: the model's tuple (embeddings, then the output of each block), each ``(B, L, d_model)``;
    ``ids (B, L)``: the ids the model was given (masked tokens stay masked: the probe reads what the layer saw)."""

    def __init__(self, d_model: int, vocab_size: int, offsets: tuple[int, ...], layer: int):
        super().__init__()
        if not offsets or min(offsets) < 1:
            raise ValueError(f"offsets must be positive; got {offsets}")
        self.offsets, self.layer = tuple(offsets), layer
        self.readouts = nn.ModuleList(nn.Linear(d_model, vocab_size) for _ in self.offsets)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], ids: torch.Tensor) -> torch.Tensor:
        h = hidden_states[self.layer]
        losses = [F.cross_entropy(readout(h[:, k:]).float().flatten(0, 1), ids[:, :-k].flatten())
                  for k, readout in zip(self.offsets, self.readouts) if k < ids.shape[1]]
        return torch.stack(losses).mean() if losses else h.new_zeros(()).float()

    @torch.no_grad()
    def accuracy(self, hidden_states: tuple[torch.Tensor, ...], ids: torch.Tensor) -> float:
        """Share of (position, offset) read-outs that are right (a host float: for logs, not for the loss)."""
        h = hidden_states[self.layer]
        right = [(readout(h[:, k:]).argmax(-1) == ids[:, :-k]).float().mean()
                 for k, readout in zip(self.offsets, self.readouts) if k < ids.shape[1]]
        return float(torch.stack(right).mean()) if right else float("nan")
