"""Hybrid attention as a transformers attention backend (transformers >= 5, the ``AttentionInterface``).

    from support_basis.hf_backend import enable_hybrid_attention
    model = AutoModel.from_pretrained("...")                       # any model that supports attention backends
    enable_hybrid_attention(model, exact_ratio=0.2, chebyshev_degree=6)

or, by name: ``register()`` once, then ``from_pretrained(..., attn_implementation="support_basis")``. The knobs
live on the model's config (``model.config.hybrid_exact_ratio`` / ``hybrid_chebyshev_degree``, and optionally
``hybrid_exact_split`` / ``hybrid_fit`` / ``hybrid_kernel``) and are read at every forward, as in the LLaDA-BS
model; unset, they default to the shipped 0.2 / 6 / 0.5 / "chebyshev" / "auto".
"""

from __future__ import annotations

import torch

from .llada.configuration_llada import (
    DEFAULT_EXACT_SPLIT,
    DEFAULT_FIT,
    DEFAULT_KERNEL,
    DEFAULT_NUM_SAMPLES,
    HYBRID_VALIDATORS,
    validate_chebyshev_degree,
    validate_exact_ratio,
    validate_exact_split,
    validate_fit,
    validate_kernel,
)
from .llada.hybrid_attention import hybrid_attention

BACKEND_NAME = "support_basis"
DEFAULT_EXACT_RATIO = 0.2
DEFAULT_CHEBYSHEV_DEGREE = 6
_DEFAULTS = {"exact_ratio": DEFAULT_EXACT_RATIO, "chebyshev_degree": DEFAULT_CHEBYSHEV_DEGREE,
             "num_samples": DEFAULT_NUM_SAMPLES, "exact_split": DEFAULT_EXACT_SPLIT, "fit": DEFAULT_FIT,
             "kernel": DEFAULT_KERNEL}


def support_basis_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The ``AttentionInterface`` signature: ``query (B, H, Lq, D)``, ``key``/``value (B, Hkv, Lk, D)``.

    Returns ``(output (B, Lq, H, Dv), None)``. ``attention_mask`` is the boolean mask made by ``sdpa_mask`` (True =
    attend) or ``None`` when transformers skipped it; then, as for SDPA, a causal module gets a causal mask.
    """
    if dropout:
        raise NotImplementedError("support_basis attention has no attention dropout; call model.eval() first")
    if kwargs.get("output_attentions"):
        raise ValueError("support_basis attention never forms the weight matrix: output_attentions is unavailable")
    config = getattr(module, "config", None)
    # any model's config: its hybrid_* fields enter here unchecked, so each goes through its validator under the
    # field's own name (the message a person can act on)
    knob = {name: HYBRID_VALIDATORS[f"hybrid_{name}"](getattr(config, f"hybrid_{name}", default), f"hybrid_{name}")
            for name, default in _DEFAULTS.items()}  # one validator per knob: the config's own table
    ratio = knob["exact_ratio"]
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    lq, lk = query.shape[2], key.shape[2]
    if attention_mask is None and causal and lq > 1:
        # SDPA's `is_causal` (top-left aligned), which transformers relies on when it skips the mask
        attention_mask = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril()
    elif attention_mask is not None and attention_mask.shape[-1] != lk:
        attention_mask = attention_mask[..., :lk]
    if ratio < 1 and attention_mask is not None:
        attention_mask = _mask_padded_queries(attention_mask, lq, lk)
    out = hybrid_attention(
        query, key, value, attention_mask, exact_ratio=ratio, chebyshev_degree=knob["chebyshev_degree"],
        scaling=scaling, num_samples=knob["num_samples"], exact_split=knob["exact_split"], fit=knob["fit"],
        kernel=knob["kernel"],
    )
    return out.transpose(1, 2).contiguous(), None


def _mask_padded_queries(mask: torch.Tensor, lq: int, lk: int) -> torch.Tensor:
    """Mask the rows of padding queries, which transformers leaves open (its padding masks mask keys only).

    In self-attention (``Lq == Lk``) a query that may not attend to its own position is a padding token. Its row
    is masked too, so that padding never enters a head's thresholds and interval: a sequence then gets the same
    output alone and in a padded batch. Padding rows output 0 (their values are never used). Exact attention
    does not need this (its rows are independent), so ``ratio == 1`` stays identical to SDPA everywhere.
    """
    if mask.dtype != torch.bool or lq != lk or mask.shape[-2] != lq:
        return mask
    own_position = mask.diagonal(dim1=-2, dim2=-1)  # (..., L): may token i attend to itself?
    return mask & own_position[..., :, None]


def register(name: str = BACKEND_NAME) -> str:
    """Register the attention function and its mask (boolean, as for SDPA) under ``name``; return ``name``."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as err:
        import transformers

        raise ImportError(
            f"the attention-backend registry needs transformers >= 5 (found {transformers.__version__}); "
            "the LLaDA-BS model itself works on 4.49 without it"
        ) from err
    AttentionInterface.register(name, support_basis_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


def enable_hybrid_attention(
    model,
    exact_ratio: float = DEFAULT_EXACT_RATIO,
    chebyshev_degree: int = DEFAULT_CHEBYSHEV_DEGREE,
    exact_split: float = DEFAULT_EXACT_SPLIT,
    fit: str = DEFAULT_FIT,
    kernel: str = DEFAULT_KERNEL,
):
    """Switch a loaded transformers model to hybrid attention with these knobs; returns the model."""
    name = register()
    model.config.hybrid_exact_ratio = validate_exact_ratio(exact_ratio, "exact_ratio")
    model.config.hybrid_chebyshev_degree = validate_chebyshev_degree(chebyshev_degree, "chebyshev_degree")
    model.config.hybrid_exact_split = validate_exact_split(exact_split, "exact_split")
    model.config.hybrid_fit = validate_fit(fit, "fit")
    model.config.hybrid_kernel = validate_kernel(kernel, "kernel")
    model.set_attn_implementation(name)
    return model
