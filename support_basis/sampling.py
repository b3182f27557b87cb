"""LLaDA's diffusion sampler: batched, semi-autoregressive, with Fast-dLLM-style caching and parallel decoding.

LLaDA generates by iterative unmasking, not left to right. The answer region starts as ``gen_length`` mask tokens;
each step predicts every masked position of the current block and keeps (unmasks) the most confident predictions
("low_confidence") or random ones ("random"), following a linear schedule: a block's masked tokens are spread
evenly over its steps. With ``block_length < gen_length`` the blocks are revealed left to right.

    from support_basis.sampling import generate      # also: from generate import generate (LLaDA's spelling)
    out = generate(model, input_ids, attention_mask, steps=128, gen_length=128, block_length=32)

``steps`` is the TOTAL number of denoising steps (one model forward each, two with CFG), spread over the blocks
as in the official LLaDA sampler. Where it does not divide evenly, the first ``steps % n_blocks`` blocks get one
step more (the official sampler requires divisibility; the paper's runners count steps per block instead).

Fast sampling (opt-in, Fast-dLLM style; the defaults are the plain sampler above):

- ``cache="prefix"``: each block starts with one full forward (a step that also reveals tokens) whose keys and
  values are kept; the block's later steps compute only the block and what follows it, the positions before the
  block attend with those cached keys/values. ``cache="dual"``: the positions after the block are cached too and
  later steps compute only the block. Approximate: cached positions do not see the block's newly revealed tokens.
- ``threshold=T``: each step reveals every masked position of the block whose confidence is >= T, and at least
  the most confident one; ``factor=F``: the n most confident while the n-th confidence is >= 1 - F / (n + 1).
  Either replaces the fixed schedule: a block ends when it has no mask left, and ``steps`` only caps the work
  (a block's last allowed step reveals all it still has masked).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .model_dir import embedding_rows

REMASKING = ("low_confidence", "random")
CACHE_MODES = ("none", "prefix", "dual")
MAX_TEMPERATURE = 100.0  # beyond this the Gumbel noise swamps any logit: the answer is uniform noise
MAX_CFG_SCALE = 100.0  # guidance this strong only amplifies float rounding


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """Gumbel-max perturbation in float64: ``argmax`` of the result samples ``softmax(logits / temperature)``.

    Float64 because low-precision Gumbel noise hurts masked-diffusion sampling (arXiv 2409.02908). This is the
    official ``exp(l) / (-log u)^T`` written in log space (same argmax, no overflow). ``temperature == 0`` returns
    the logits (greedy).
    """
    if temperature == 0:
        return logits
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits.double() - temperature * torch.log(-torch.log(u.clamp_min(1e-300)))


def steps_per_block(steps: int, num_blocks: int) -> list[int]:
    """Split ``steps`` over ``num_blocks``: equal shares, the first ``steps % num_blocks`` blocks one more."""
    return [steps // num_blocks + (i < steps % num_blocks) for i in range(num_blocks)]


def transfer_schedule(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens to unmask at each step: ``masked (B,)`` counts -> ``(B, steps)``, remainder first."""
    base = masked[:, None] // steps
    extra = torch.arange(steps, device=masked.device)[None, :] < (masked[:, None] % steps)
    return base + extra.long()


@torch.no_grad()
def generate(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int | None = None,
    eos_token_id: int | None = None,
    eot_token_id: int | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.LongTensor], None] | None = None,
    cache: str = "none",
    threshold: float | None = None,
    factor: float | None = None,
    return_nfe: bool = False,
) -> torch.LongTensor | tuple[torch.LongTensor, torch.LongTensor]:
    """Sample answers for a batch of prompts; return the full sequences ``(B, prompt_len + gen_length)``.

    ``input_ids (B, P)`` are LEFT-padded prompts with ``attention_mask (B, P)`` (1 = token); the padding id must
    not be ``mask_id``. Each prompt's result equals what it gets alone (greedy), since padding never reaches
    attention. ``mask_id`` and ``eos_token_id`` default to the model config's. ``cfg_scale > 0`` adds a second
    forward with the prompt masked out and mixes ``un + (cfg_scale + 1) * (cond - un)``. ``logits_eos_inf`` forbids
    EOS; ``confidence_eos_eot_inf`` lets EOS/EoT (``eot_token_id``, e.g. ``<|eot_id|>``) be predicted but reveals
    them last, ranking the other positions, as LLaDA's sampler does, by their probability with EOS/EoT taken out
    of the distribution (LLaDA leaves the order among EOS/EoT predictions to ``topk``'s ties; here it is their own
    probability); both hold at every temperature (LLaDA's own code applies it fully only at temperature 0). ``generator`` seeds the sampling noise; ``callback(step, x)`` runs
    after every step (``step`` counts from 1) with the current sequences. The mask token itself is never predicted
    (its logit is set to -inf), so every answer position ends unmasked; for a trained LLaDA, whose mask-token
    probability is ~0, this changes nothing, while a random model could otherwise leave masks in its answer.

    ``cache`` ("none", "prefix", "dual"), ``threshold`` (in (0, 1]) and ``factor`` (> 0) select the fast sampler
    of the module docstring; ``threshold``/``factor`` need ``remasking="low_confidence"`` and exclude each other.
    The cache needs a model whose forward takes ``use_cache``/``past_key_values``/``cache_position`` (this
    project's LLaDA-BS). ``return_nfe`` also returns the number of function evaluations (model forwards) of
    each answer, ``(B,)`` int64: the forwards it needs alone (a CFG step counts 2; an answer whose block is
    complete waits for the rest of its batch without counting).
    """
    config = getattr(model, "config", None)
    mask_id = getattr(config, "mask_token_id", None) if mask_id is None else mask_id
    eos_token_id = getattr(config, "eos_token_id", None) if eos_token_id is None else eos_token_id
    if mask_id is None:
        raise ValueError("mask_id is not given and the model config has no mask_token_id")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, prompt_length); got shape {tuple(input_ids.shape)}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids (torch.long); got dtype {input_ids.dtype}")
    check_schedule(steps, gen_length, block_length, remasking, temperature, cfg_scale, cache, threshold, factor)
    b, p = input_ids.shape
    if p == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the chat template's BOS)")
    max_len = getattr(config, "max_sequence_length", None)
    if max_len is not None and p + gen_length > max_len:
        raise ValueError(
            f"prompt ({p} tokens) + gen_length ({gen_length}) = {p + gen_length} exceeds the model's "
            f"max_sequence_length ({max_len}); shorten the prompt or the answer"
        )
    rows = embedding_rows(config)
    outside = (input_ids < 0) | (input_ids >= rows) if rows else None
    # once per call, where the prompts are (no device sync for CPU prompts): on a GPU such an id is a device assert
    if outside is not None and outside.any():
        raise ValueError(f"input_ids hold token id {int(input_ids[outside][0])} outside the model's vocabulary "
                         f"[0, {rows}): encode prompts with this model's tokenizer")
    device = model_device(model)
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device).bool()
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {(b, p)}")
        if not attention_mask.any(-1).all():
            raise ValueError("a prompt in the batch is empty (its attention_mask is all zeros)")
        if (input_ids[~attention_mask] == mask_id).any():
            raise ValueError(
                f"padding uses the mask token id ({mask_id}): pad with another id (LLaDA pads with EOS, 126081)"
            )
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, gen_length)], dim=1)

    x = torch.cat([input_ids, input_ids.new_full((b, gen_length), mask_id)], dim=1)
    prompt_positions = torch.zeros_like(x, dtype=torch.bool)
    prompt_positions[:, :p] = True
    parameters = inspect.signature(model.forward).parameters
    keep_logits = "logits_to_keep" in parameters
    if cache != "none" and not {"use_cache", "past_key_values", "cache_position"} <= set(parameters):
        raise ValueError(f"cache={cache!r} needs a model whose forward takes use_cache, past_key_values and "
                         f"cache_position (LLaDA-BS); {type(model).__name__} does not: use cache='none'")
    adaptive = threshold is not None or factor is not None
    nfe = torch.zeros(b, dtype=torch.long, device=device)
    specials = [t for t in (eos_token_id, eot_token_id) if t is not None] if confidence_eos_eot_inf else []
    special_ids = torch.tensor(specials, dtype=torch.long, device=device)  # once, not per step
    step = 0
    for block, block_steps in enumerate(steps_per_block(steps, gen_length // block_length)):
        start, end = p + block * block_length, p + (block + 1) * block_length
        schedule = None if adaptive else transfer_schedule((x[:, start:end] == mask_id).sum(-1), block_steps)
        kv = None
        for i in range(block_steps):
            active = (x[:, start:end] == mask_id).any(-1) if adaptive else torch.ones_like(nfe, dtype=torch.bool)
            if adaptive and not bool(active.any()):
                break  # the whole batch has revealed this block
            if cache == "none" or i == 0:  # a full forward (it fills the cache at a block's start)
                logits, kv = _block_logits(model, x, attention_mask, prompt_positions, mask_id, cfg_scale, start,
                                           end, keep_logits, fill=cache != "none")
            else:
                window = (start, x.shape[1] if cache == "prefix" else end)
                logits, kv = _block_logits(model, x, attention_mask, prompt_positions, mask_id, cfg_scale, start,
                                           end, keep_logits, window=window, kv=kv)
            nfe += active.long() * (2 if cfg_scale > 0 else 1)
            logits[..., mask_id] = -torch.inf  # the mask token is never an answer (a trained LLaDA gives it ~0)
            if logits_eos_inf and eos_token_id is not None:
                logits[..., eos_token_id] = -torch.inf
            x0 = add_gumbel_noise(logits, temperature, generator).argmax(-1)  # (B, block_length)
            if remasking == "low_confidence":
                probs = F.softmax(logits.double(), dim=-1)
                confidence = probs.gather(-1, x0[..., None])[..., 0]
            else:
                confidence = torch.rand(x0.shape, dtype=torch.float64, device=device, generator=generator)
            rank = confidence
            if specials:
                special = torch.isin(x0, special_ids)
                if remasking == "low_confidence":
                    # as LLaDA's sampler: another token's confidence is its probability with EOS/EoT taken out of
                    # the distribution (renormalised; still <= 1), so positions that weighed ending rank higher
                    rest = (1.0 - probs[..., specials].sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
                    confidence = torch.where(special, confidence, (confidence / rest).clamp_max(1.0))
                # EOS/EoT last: below every other masked position (confidences are >= 0) but above the revealed
                # ones (-inf), so a block whose other positions are all revealed still reveals them
                rank = torch.where(special, confidence - 2.0, confidence)
            current = x[:, start:end]
            masked = current == mask_id
            rank = rank.masked_fill(~masked, -torch.inf)
            if not adaptive:
                count = schedule[:, i]
            elif i == block_steps - 1:
                count = masked.sum(-1)  # the step budget is spent: reveal the rest of the block
            else:
                count = _adaptive_count(rank, confidence, masked, threshold, factor)
            chosen = _top_k_mask(rank, count) & masked
            x[:, start:end] = torch.where(chosen, x0, current)
            step += 1
            if callback is not None:
                callback(step, x)
    return (x, nfe) if return_nfe else x


def _adaptive_count(rank, confidence, masked, threshold, factor) -> torch.Tensor:
    """How many positions to reveal ``(B,)``: in reveal order (``rank`` descending), the longest run whose n-th
    ``confidence`` is >= ``threshold`` (or >= 1 - factor / (n + 1)); at least one where a mask is left.

    With plain confidences as ranks the threshold rule is "every masked position with confidence >= T"; with
    EOS/EoT ranked last they join only once everything before them qualifies.
    """
    order = rank.argsort(dim=-1, descending=True, stable=True)
    ordered = confidence.gather(-1, order)
    ordered_masked = masked.gather(-1, order)
    if threshold is not None:
        bar = torch.full_like(ordered, threshold)
    else:
        n = torch.arange(1, ordered.shape[-1] + 1, device=ordered.device, dtype=ordered.dtype)
        bar = (1.0 - factor / (n + 1)).expand_as(ordered)
    ok = (ordered >= bar) & ordered_masked
    ok[:, 0] = ordered_masked[:, 0]  # at least one
    return ok.long().cumprod(-1).sum(-1)


def check_schedule(steps, gen_length, block_length, remasking, temperature, cfg_scale, cache="none", threshold=None,
                   factor=None):
    """Raise ``ValueError`` (naming the setting, its value and the rule) for a sampler setting that cannot run."""
    for name, value in (("steps", steps), ("gen_length", gen_length), ("block_length", block_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if gen_length % block_length:
        raise ValueError(
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}): the answer is "
            "revealed in whole blocks"
        )
    n_blocks = gen_length // block_length
    if steps < n_blocks:
        raise ValueError(f"steps ({steps}) must be at least the number of blocks ({n_blocks}): one step per block")
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {', '.join(REMASKING)}; got {remasking!r}")
    # finite and bounded: inf or 1e308 would overflow the noise / guidance into NaN and a silently wrong answer
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 <= temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}] (0 = greedy); got {temperature!r}")
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not 0 <= cfg_scale <= MAX_CFG_SCALE:
        raise ValueError(f"cfg_scale must be a number in [0, {MAX_CFG_SCALE:g}] (0 = no guidance); got {cfg_scale!r}")
    check_fast_sampling(cache, threshold, factor, remasking)


def check_fast_sampling(cache="none", threshold=None, factor=None, remasking="low_confidence", flags=None):
    """Raise ``ValueError`` for a bad cache mode, threshold or factor. ``flags`` maps the setting names to the
    names the message should use (e.g. ``{"cache": "--cache"}`` for a command line)."""
    name = {"cache": "cache", "threshold": "threshold", "factor": "factor", "remasking": "remasking",
            **(flags or {})}
    if cache not in CACHE_MODES:
        raise ValueError(f"{name['cache']} must be one of {', '.join(CACHE_MODES)}; got {cache!r}")
    number = (int, float)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, number)
                                  or not 0 < threshold <= 1):
        raise ValueError(f"{name['threshold']} must be a number in (0, 1] (reveal every position at least this "
                         f"confident); got {threshold!r}")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, number)
                               or not 0 < factor < math.inf):
        raise ValueError(f"{name['factor']} must be a finite number > 0 (e.g. 1.0); got {factor!r}")
    if threshold is not None and factor is not None:
        raise ValueError(f"give {name['threshold']} or {name['factor']}, not both (got {threshold!r} and "
                         f"{factor!r})")
    if (threshold is not None or factor is not None) and remasking != "low_confidence":
        raise ValueError(f"{name['threshold'] if threshold is not None else name['factor']} reveals by confidence: "
                         f"it needs {name['remasking']} low_confidence; got {remasking!r}")


def model_device(model) -> torch.device:
    """The device of the model's weights (its ``device`` attribute where it has one)."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def returned_cache(out):
    """The key/value cache a ``use_cache=True`` forward returned: ``out.cache`` on transformers 5.x (where the old
    name, ``past_key_values``, still works but logs a deprecation warning), ``out.past_key_values`` elsewhere."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def _block_logits(model, x, attention_mask, prompt_positions, mask_id, cfg_scale, start, end, keep_logits,
                  fill=False, window=None, kv=None):
    """Logits of the current block ``(B, end - start, V)``, classifier-free guided when ``cfg_scale > 0``, and
    the cache: a full forward (``fill`` returns its keys/values), or only ``window = (w0, w1)`` of ``x`` with the
    other positions' keys/values from ``kv``. Returns ``(logits, kv)``."""
    if cfg_scale > 0:  # one forward of the conditional and the unconditional (prompt masked) batch
        x = torch.cat([x, x.masked_fill(prompt_positions, mask_id)])
        attention_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    kwargs, offset = {}, 0
    if fill:
        kwargs["use_cache"] = True
    if window is not None:
        offset = window[0]
        kwargs.update(past_key_values=kv, cache_position=offset)
        x = x[:, window[0] : window[1]]
    keep = slice(start - offset, end - offset)
    if keep_logits:
        kwargs["logits_to_keep"] = keep
    out = model(x, attention_mask=attention_mask, **kwargs)
    logits = out.logits if keep_logits else out.logits[:, keep]
    if fill:
        kv = returned_cache(out)
    if cfg_scale > 0:
        cond, uncond = logits.chunk(2)
        logits = uncond + (cfg_scale + 1) * (cond - uncond)
    return logits, kv


def _top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, N)``: the ``k[b]`` highest ``scores[b]`` of each row (no Python loop over rows)."""
    k_max = int(k.max()) if k.numel() else 0
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if k_max == 0:
        return chosen
    top = scores.topk(k_max, dim=-1).indices
    keep = torch.arange(k_max, device=scores.device)[None, :] < k[:, None]
    return chosen.scatter_(1, top, keep)
