"""LLaDA's SFT objective (Nie et al. 2025, "Large Language Diffusion Models", and its guidelines).

For each sequence draw ``t ~ U(0, 1)`` and mask every response token independently with probability
``p = (1 - eps) * t + eps``; prompt tokens are never masked. The loss is the cross-entropy of the masked tokens,
each weighted by ``1 / p``, summed per sequence, divided by that sequence's response length (its answer plus the
EOS padding, which is part of the response), and averaged over the batch: an unbiased estimate of the negative
ELBO of the response given the prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def corrupt(input_ids: torch.Tensor, response_mask: torch.Tensor, mask_id: int, eps: float,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask response tokens. ``input_ids, response_mask (B, L)`` -> ``(noisy (B, L), masked (B, L) bool,
    p_mask (B, 1))``. ``generator`` (on the ids' device) makes the draw reproducible."""
    b, l = input_ids.shape
    t = torch.rand(b, 1, device=input_ids.device, generator=generator)
    p_mask = (1 - eps) * t + eps
    u = torch.rand(b, l, device=input_ids.device, generator=generator)
    masked = (u < p_mask) & response_mask
    return input_ids.masked_fill(masked, mask_id), masked, p_mask


def sft_loss(model, input_ids: torch.Tensor, response_mask: torch.Tensor, mask_id: int, eps: float = 1e-3,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The scalar SFT loss of a batch. ``input_ids (B, L)``: prompt then response (answer, end-of-turn, EOS
    padding), right-aligned to one length, no padding outside the response; ``response_mask (B, L)`` bool.

    Only the response columns reach the output projection (``logits_to_keep``), the vocabulary-sized matmul."""
    noisy, masked, p_mask = corrupt(input_ids, response_mask, mask_id, eps, generator)
    first = int(response_mask.float().argmax(-1).min())  # the earliest response column in the batch (host: once)
    out = model(noisy, logits_to_keep=slice(first, None))
    target, keep = input_ids[:, first:], masked[:, first:]
    ce = F.cross_entropy(out.logits.float().flatten(0, 1), target.flatten(), reduction="none").view_as(target)
    weight = keep / p_mask / response_mask.sum(-1, keepdim=True).clamp_min(1)
    loss = (ce * weight).sum() / input_ids.shape[0]
    return loss
