"""LLaDA (a masked-diffusion language model, GSAI-ML) with support-basis hybrid attention.

The architecture and every parameter name match the official LLaDA-8B-Instruct checkpoint
(``model.transformer.{wte, blocks.N.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj,
ff_out}, ln_f, ff_out}``), so the official safetensors shards load unchanged. Attention is bidirectional (no
causal mask) and goes through ``hybrid_attention`` with the knobs read from the config at every forward:

    config.hybrid_exact_ratio / hybrid_chebyshev_degree / hybrid_num_samples / hybrid_exact_split / hybrid_fit
    / hybrid_kernel
        -> LLaDAAttention.forward (reads self.config, the model's own config object)
        -> hybrid_attention(q, k, v, mask, exact_ratio=..., chebyshev_degree=..., kernel=...)   (ratio 1.0 = SDPA)

Works on transformers 4.49 and 5.x, loaded with ``AutoModel.from_pretrained(dir, trust_remote_code=True,
dtype=...)`` (``torch_dtype=`` too), and with ``device_map="auto"``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_llada import LLaDAConfig, warn_unknown_knobs
from .hybrid_attention import hybrid_attention

# transformers 4.x copies only the direct relative imports of the module it loads, so the op's own siblings are
# named here too: a model directory then loads on 4.49 as on 5.x
from .hybrid_constants import WEIGHT_FLOOR  # noqa: F401
from .hybrid_fit import fit_chebyshev  # noqa: F401
from .hybrid_native import native_library  # noqa: F401
from .hybrid_sample import SamplePlan  # noqa: F401
from .hybrid_triton import triton_attention  # noqa: F401

__all__ = ["LLaDAModelLM", "LLaDAModel", "LLaDABlock", "LLaDAConfig"]

# transformers 5.x names the output's cache field `cache` (its old name, `past_key_values`, still works but warns)
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class RMSNorm(nn.Module):
    """RMS layer norm computed in fp32, cast back, then scaled (as the official OLMo-style RMSLayerNorm)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``(cos, sin)``, each ``(B, 1, L, head_dim)``, for integer ``positions (B, L)`` (half-split RoPE)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, L, hd)`` in fp32 (``rope_full_precision``) and return it in its own dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class LLaDAAttention(nn.Module):
    """The attention half of a block: q/k/v projections, RoPE, hybrid attention. The one call site of the op."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config  # the model's config object itself: later edits of the knobs reach every forward
        bias = config.include_bias or config.include_qkv_bias
        head_dim = config.d_model // config.n_heads
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=bias)
        self.k_proj = nn.Linear(config.d_model, config.effective_n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(config.d_model, config.effective_n_kv_heads * head_dim, bias=bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=config.include_bias)

    def attend(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
               past: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0):
        """``x (B, L, d_model)`` -> ``(B, L, d_model)`` and this call's fresh ``(k, v)``, each ``(B, Hkv, L, hd)``
        after RoPE; ``mask`` is bool/float broadcastable to (B, H, L, Lk).

        Without ``past`` the keys are the ``L`` positions of ``x`` (``Lk = L``). With ``past = (k, v)``, each
        ``(B, Hkv, Lk, hd)`` (from an earlier forward), ``x`` is the window ``[start, start + L)`` of that
        sequence: its fresh keys/values replace the cached ones there and the window's queries attend to all ``Lk``.
        """
        b, l, _ = x.shape
        cfg = self.config
        hd = cfg.d_model // cfg.n_heads
        q = self.q_proj(x).view(b, l, cfg.n_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, l, cfg.effective_n_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, l, cfg.effective_n_kv_heads, hd).transpose(1, 2)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        fresh = (k, v)
        if past is not None:
            k = torch.cat([past[0][:, :, :start], k, past[0][:, :, start + l :]], dim=2)
            v = torch.cat([past[1][:, :, :start], v, past[1][:, :, start + l :]], dim=2)
        out = hybrid_attention(
            q,
            k,
            v,
            mask,
            exact_ratio=cfg.hybrid_exact_ratio,
            chebyshev_degree=cfg.hybrid_chebyshev_degree,
            num_samples=cfg.hybrid_num_samples,
            exact_split=cfg.hybrid_exact_split,
            fit=cfg.hybrid_fit,
            kernel=cfg.hybrid_kernel,
        )
        return self.attn_out(out.transpose(1, 2).reshape(b, l, cfg.d_model)), fresh


class LLaDABlock(LLaDAAttention):
    """A Llama-style block: ``x + Attn(RMSNorm(x))``, then ``+ W_out(silu(W_ff h) * W_up h)`` of ``RMSNorm``.

    The attention projections live directly on the block (``blocks.N.q_proj`` ...) as in the checkpoint.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        hidden = config.effective_mlp_hidden_size
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)
        self.up_proj = nn.Linear(config.d_model, hidden, bias=config.include_bias)
        self.ff_out = nn.Linear(hidden, config.d_model, bias=config.include_bias)

    def forward(self, x, rotary, mask, past=None, start=0):
        """``(x, fresh (k, v))``: the block's output and its attention's keys/values (see ``attend``)."""
        attended, fresh = self.attend(self.attn_norm(x), rotary, mask, past, start)
        x = x + attended
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h)), fresh


class LLaDAModel(nn.Module):
    """Embedding, blocks, final norm and output projection under ``transformer`` (checkpoint layout)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.effective_embedding_size, config.d_model),
                blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
            )
        )
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(
                config.d_model, config.effective_embedding_size, bias=config.include_bias
            )

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, attention_bias=None,
                position_ids=None, output_hidden_states=False, logits_to_keep=None, past_key_values=None,
                use_cache=False, cache_position=0):
        """``(logits, hidden states or None, cache or None)``; the arguments as ``LLaDAModelLM.forward``."""
        if inputs_embeds is None and input_ids.device.type == "cpu":  # free there; on a GPU a check would sync
            rows = self.transformer.wte.num_embeddings
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= rows):
                bad = input_ids[(input_ids < 0) | (input_ids >= rows)][0]
                raise ValueError(f"input_ids hold token id {int(bad)} outside the model's vocabulary [0, {rows}): "
                                 "encode text with this model's tokenizer")
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds
        if self.config.input_emb_norm:
            x = x * (self.config.d_model**0.5)
        b, l = x.shape[:2]
        total = l if past_key_values is None else past_key_values[0][0].shape[2]
        if total > self.config.max_sequence_length:
            raise ValueError(
                f"input length {total} exceeds the model's max_sequence_length ({self.config.max_sequence_length})"
            )
        start = 0 if past_key_values is None else cache_position
        mask, positions = _attention_inputs(attention_mask, attention_bias, position_ids, b, l, x.device, start,
                                            total)
        rotary = rotary_tables(positions, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        hidden = []
        cache = []
        for i, block in enumerate(self.transformer.blocks):
            if output_hidden_states:
                hidden.append(x)
            x, fresh = block(x, rotary, mask, None if past_key_values is None else past_key_values[i], start)
            if use_cache:  # returned, not appended by the block: device_map hooks copy list arguments
                cache.append(fresh)
        if logits_to_keep is not None:  # only these positions reach the (vocab-sized) output projection
            x = x[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else x[:, logits_to_keep]
        x = self.transformer.ln_f(x)
        if output_hidden_states:
            hidden.append(x)
        if self.config.weight_tying:
            logits = F.linear(x, self.transformer.wte.weight)
        else:
            logits = self.transformer.ff_out(x)
        if self.config.scale_logits:
            logits = logits * (1 / math.sqrt(self.config.d_model))
        return logits, (tuple(hidden) if output_hidden_states else None), (tuple(cache) if use_cache else None)


def _attention_inputs(attention_mask, attention_bias, position_ids, b, l, device, start=0, total=None):
    """The mask handed to every attention call, and RoPE positions ``(B, L)``.

    The ``L`` inputs are positions ``[start, start + L)`` of a sequence of ``total`` (default ``L``; a window
    when a cache supplies the other keys). A 2-D padding mask ``(B, total)`` (1 = token) masks padded keys AND
    padded queries, so that padding never enters a head's score statistics: a padded row outputs 0 and a
    sequence's output is independent of the padding of its batch. Positions then count real tokens only (RoPE
    is relative, so this equals the official absolute positions up to rounding). A 4-D ``attention_mask`` or
    ``attention_bias`` (bool, True = attend, or additive float; ``(., ., L, total)``) is used as given (combined
    with each other if both are given).
    """
    total = l if total is None else total
    mask = None
    if attention_mask is not None and attention_mask.dim() == 2:
        if attention_mask.shape != (b, total):
            raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} does not match input "
                             f"{(b, total)}" + (" (with a cache: the whole cached sequence)" if total != l else ""))
        keep = attention_mask.to(device=device).bool()
        mask = (keep[:, start : start + l, None] & keep[:, None, :])[:, None]
        if position_ids is None:
            position_ids = (keep.long().cumsum(-1) - 1).clamp_min(0)[:, start : start + l]
    elif attention_mask is not None:
        mask = attention_mask.to(device)
    if attention_bias is not None:
        mask = attention_bias.to(device) if mask is None else _combine_masks(mask, attention_bias.to(device))
    if position_ids is None:
        position_ids = torch.arange(start, start + l, device=device)[None].expand(b, l)
    return mask, position_ids.to(device)


def _combine_masks(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    def as_bias(m):
        return torch.zeros(m.shape, device=m.device).masked_fill(~m, -math.inf) if m.dtype == torch.bool else m.float()
    return as_bias(a) + as_bias(b)


class LLaDAModelLM(PreTrainedModel):
    """Hugging Face wrapper: ``forward`` returns ``CausalLMOutputWithPast`` with logits ``(B, L, vocab)``.

    LLaDA predicts every masked position at once (no left-to-right decoding); sample with the diffusion sampler
    (``generate.py`` in the project repository), not with ``model.generate``. Its key/value cache is the
    approximate one of diffusion samplers (Fast-dLLM): see ``forward``.
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["LLaDABlock"]
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig, *args, **kwargs):
        warn_unknown_knobs(kwargs, "LLaDAModelLM")  # from_pretrained(dir, hybrid_exact_raito=...) lands here
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def generate(self, *args, **kwargs):
        """Not transformers' autoregressive ``generate()``: LLaDA is a masked-diffusion model."""
        raise NotImplementedError(
            "LLaDA is a masked-diffusion model: transformers' left-to-right generate() does not apply. Use the "
            "diffusion sampler: support_basis.sampling.generate(model, input_ids, attention_mask, steps=..., "
            "gen_length=..., block_length=...) (or generate.py; LLaDA's own repository ships the same sampler)")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers < 4.56 only knows `torch_dtype`; accept the modern `dtype` everywhere
        if "dtype" in kwargs and not _accepts_dtype_kwarg():
            kwargs["torch_dtype"] = kwargs.pop("dtype")
        return super().from_pretrained(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        """Truncated normal ``std = 1/sqrt(fan_in)`` (the checkpoint's "mitchell" init) for random models."""
        if isinstance(module, nn.Linear):
            std = 1.0 / math.sqrt(module.in_features)
            nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            std = 1.0 / math.sqrt(module.embedding_dim)
            nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def set_input_embeddings(self, value):
        self.model.transformer.wte = value

    def get_output_embeddings(self):
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def set_output_embeddings(self, value):
        self.model.transformer.ff_out = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        attention_bias: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | slice | torch.Tensor | None = None,
        cache_position: int | None = None,
        **kwargs,
    ):
        """``input_ids (B, L)`` -> logits ``(B, L, vocab)``.

        ``attention_mask``: ``(B, L)`` padding mask (1 = token) or a 4-D bool/float mask; ``attention_bias``:
        the official model's 4-D bias argument. ``labels`` are not used: the masked-diffusion loss needs the
        masking ratio of each sequence, so it is computed by the caller. ``logits_to_keep`` (the last N positions,
        a slice, or a 1-D index tensor) limits the output projection to those positions: the diffusion sampler
        needs the logits of one block only, and the projection onto 126k tokens is the largest matmul per token.

        Key/value cache (approximate, for diffusion sampling; a plain tuple, no transformers cache class):

        - ``use_cache=True`` on a full sequence ``(B, T)`` also returns the cache (``out.cache`` on transformers
          5.x, ``out.past_key_values`` on 4.x): one ``(key, value)`` per layer, each ``(B, n_kv_heads, T,
          head_dim)``, keys after RoPE.
        - ``past_key_values=cache, cache_position=s`` with ``input_ids (B, L)`` computes only the window
          ``[s, s + L)`` of that length-``T`` sequence: the window's keys/values are computed afresh and replace
          the cached ones there; every other position attends with its cached keys/values (the cache is read,
          never modified). ``attention_mask`` is then the 2-D padding mask of the whole sequence ``(B, T)`` (or a
          4-D mask ``(B, 1|H, L, T)``), ``position_ids`` (if given) the window's ``(B, L)``, ``logits_to_keep``
          counts within the window. A window reaching the end is Fast-dLLM's prefix cache, a window in the middle
          its dual cache. Cached positions do not see the tokens changed since the cache was filled: that is the
          approximation. With an unchanged sequence the window's logits equal the full forward's (exact
          attention). With hybrid attention a head's thresholds are the k-th values of the window's query rows
          against all ``T`` keys (the scores this call forms), not of the full ``T x T`` matrix.
        """
        if use_cache and past_key_values is not None:
            raise ValueError("use_cache=True fills a new cache from a full forward; do not pass past_key_values")
        if past_key_values is not None:
            _check_cache(past_key_values, cache_position, self.config.n_layers,
                         (input_ids if inputs_embeds is None else inputs_embeds).shape[:2])
        elif cache_position is not None:
            raise ValueError("cache_position needs past_key_values (a cache from a use_cache=True forward)")
        if output_attentions:
            raise ValueError("output_attentions is not available: hybrid attention never forms the weight matrix")
        if labels is not None:
            warnings.warn("LLaDA ignores `labels`: compute the masked-diffusion loss outside the model", stacklevel=2)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        logits, hidden, cache = self.model(
            input_ids, inputs_embeds, attention_mask, attention_bias, position_ids, bool(output_hidden_states),
            logits_to_keep, past_key_values, bool(use_cache), cache_position,
        )
        if return_dict is False:
            return (logits,) + tuple(o for o in (cache, hidden) if o is not None)
        return CausalLMOutputWithPast(logits=logits, hidden_states=hidden, **{CACHE_FIELD: cache})


def _check_cache(cache, cache_position, n_layers: int, shape) -> None:
    """A ``past_key_values`` from a ``use_cache=True`` forward, and a window that fits in it (shapes only)."""
    ok = isinstance(cache, (tuple, list)) and len(cache) == n_layers and all(
        isinstance(kv, (tuple, list)) and len(kv) == 2 and all(isinstance(t, torch.Tensor) for t in kv)
        for kv in cache)
    if not ok:
        raise ValueError(f"past_key_values must be the cache of a use_cache=True forward: {n_layers} (key, value) "
                         "pairs, one per layer")
    b, l = shape
    cb, _, total, _ = cache[0][0].shape
    if isinstance(cache_position, bool) or not isinstance(cache_position, int):
        raise ValueError(f"cache_position must be the int position of the first input token in the cached "
                         f"sequence; got {cache_position!r}")
    if cb != b or not 0 <= cache_position <= total - l:
        raise ValueError(f"the window [{cache_position}, {cache_position + l}) of batch {b} does not fit in the "
                         f"cache (batch {cb}, length {total})")


def _accepts_dtype_kwarg() -> bool:
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return (major, minor) >= (4, 56)
