"""Forward hooks that record the q / k projection outputs of the real (non-padding) tokens."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from .families import KINDS, LayerProjection


def _select_tokens(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``out (B, L, D)`` (or ``(B*L, D)``) -> ``(T, D)`` rows of the tokens where ``mask (B, L)`` is True."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if mask is None:
        return out.reshape(-1, out.shape[-1])
    if out.dim() == 3 and tuple(out.shape[:2]) == tuple(mask.shape):
        return out[mask.to(out.device)]
    if out.dim() == 2 and out.shape[0] == mask.numel():
        return out[mask.reshape(-1).to(out.device)]
    raise RuntimeError(
        f"projection output of shape {tuple(out.shape)} does not match the token mask {tuple(mask.shape)}"
    )


def capture_qk(
    model: nn.Module,
    projections: Sequence[LayerProjection],
    batches: Iterable[tuple[dict, torch.Tensor | None]],
    layers: Sequence[int] | None = None,
    *,
    store_dtype: torch.dtype | None = None,
) -> tuple[dict[tuple[str, int], torch.Tensor], list[int]]:
    """Run ``model(**inputs)`` for each ``(inputs, token_mask)`` and record the q / k projection outputs.

    ``token_mask`` is ``(B, L)`` bool (True = real token; padding False) or None (every position is real, e.g. ViT
    patches). Returns ``(entries, seq_lengths)``: ``entries[(kind, layer)]`` is a CPU tensor ``(T, D_kind)`` of the
    projection output rows of the T real tokens of all batches, in batch order (kind ``"q"`` or ``"k"``; a fused
    QKV output is cut by ``LayerProjection.split``), in the model's dtype unless ``store_dtype`` is given;
    ``seq_lengths`` has one real-token count per sequence (the n candidates). Hooks are removed on exit, also on
    error. ``layers`` (default all) restricts which layers are hooked.
    """
    wanted = set(layers) if layers is not None else None
    chosen = [p for p in projections if wanted is None or p.layer in wanted]
    store: dict[tuple[str, int], list[torch.Tensor]] = {(k, p.layer): [] for p in chosen for k in KINDS}
    state: dict = {"mask": None}

    def keep(key, rows):
        rows = rows.detach()
        if store_dtype is not None:
            rows = rows.to(store_dtype)
        store[key].append(rows.to("cpu", copy=True).contiguous())

    def hook_for(kind, layer, split):
        def hook(_module, _inputs, output):
            rows = _select_tokens(output, state["mask"])
            if split is None:
                keep((kind, layer), rows)
            else:
                q, k, _v = torch.split(rows, list(split), dim=-1)
                keep(("q", layer), q)
                keep(("k", layer), k)

        return hook

    handles = []
    seq_lengths: list[int] = []
    was_training = model.training
    try:
        for p in chosen:
            if p.fused:
                handles.append(p.q_module.register_forward_hook(hook_for(None, p.layer, p.split)))
            else:
                handles.append(p.q_module.register_forward_hook(hook_for("q", p.layer, None)))
                handles.append(p.k_module.register_forward_hook(hook_for("k", p.layer, None)))
        model.eval()
        with torch.no_grad():
            for inputs, mask in batches:
                state["mask"] = None if mask is None else mask.bool()
                before = len(store[("q", chosen[0].layer)]) if chosen else 0
                model(**inputs)
                if mask is not None:
                    seq_lengths.extend(int(v) for v in state["mask"].sum(dim=1).tolist())
                elif chosen and len(store[("q", chosen[0].layer)]) > before:
                    last = store[("q", chosen[0].layer)][-1]
                    b = _batch_size(inputs)
                    seq_lengths.extend([last.shape[0] // b] * b)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        state["mask"] = None
    entries = {}
    for key in list(store):  # concatenate key by key, dropping the pieces: peak memory ~ all entries + one layer
        parts = store.pop(key)
        entries[key] = torch.cat(parts) if parts else torch.empty(0)
        del parts
    return entries, seq_lengths


def _batch_size(inputs: dict) -> int:
    for v in inputs.values():
        if torch.is_tensor(v) and v.dim() >= 1:
            return int(v.shape[0])
    return 1


