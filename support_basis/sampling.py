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
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model_dir import embedding_rows
from .suffix import SuffixRule, check_suffix

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


class SamplerSettingError(ValueError):
    """A sampler setting or input that cannot run (named with its value and the rule): what command lines turn
    into one line. Any other error raised while sampling (a forward's, the loop's) is a bug and keeps its
    traceback."""


@dataclass
class _Run:
    """What one ``generate`` call fixes before its first step (see :func:`generate` for each field)."""

    model: object
    mask_id: int
    eos_token_id: int | None
    temperature: float
    cfg_scale: float
    remasking: str
    logits_eos_inf: bool
    generator: torch.Generator | None
    cache: str
    threshold: float | None
    factor: float | None
    attention_mask: torch.Tensor | None  # (B, P + gen_length) bool, or None
    prompt_positions: torch.Tensor  # (B, P + gen_length) bool: True on the prompt
    keep_logits: bool  # the forward takes logits_to_keep
    special_ids: torch.Tensor | None  # EOS/EoT ids revealed last (confidence_eos_eot_inf), or None
    suffix: SuffixRule  # which masked positions after the block a forward computes
    threshold_alpha: float | None  # Streaming-dLLM's context-aware threshold
    stop_ids: torch.Tensor | None  # early_stop: a revealed block holding one of these ends its sequence

    @property
    def adaptive(self) -> bool:
        return self.threshold is not None or self.factor is not None

    @property
    def forwards_per_step(self) -> int:
        return 2 if self.cfg_scale > 0 else 1


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
    early_stop: bool = False,
    suffix_window: int | None = None,
    suffix_tail: int | None = None,
    suffix_dropout: str | None = None,
    threshold_alpha: float | None = None,
    suffix_rule: SuffixRule | None = None,
) -> torch.LongTensor | tuple[torch.LongTensor, torch.LongTensor]:
    """Sample answers for a batch of prompts; return the full sequences ``(B, prompt_len + gen_length)``.

    ``input_ids (B, P)`` are LEFT-padded prompts with ``attention_mask (B, P)`` (1 = token); the padding id must
    not be ``mask_id``. Each prompt's result equals what it gets alone (greedy), since padding never reaches
    attention. ``mask_id`` and ``eos_token_id`` default to the model config's. ``cfg_scale > 0`` adds a second
    forward with the prompt masked out and mixes ``un + (cfg_scale + 1) * (cond - un)``. ``logits_eos_inf`` forbids
    EOS; ``confidence_eos_eot_inf`` lets EOS/EoT (``eot_token_id``, e.g. ``<|eot_id|>``) be predicted but reveals
    them last, ranking the other positions, as LLaDA's sampler does, by their probability with EOS/EoT taken out
    of the distribution (LLaDA leaves the order among EOS/EoT predictions to ``topk``'s ties; here it is their own
    probability); both hold at every temperature (LLaDA's own code applies it fully only at temperature 0).
    ``generator`` seeds the sampling noise; ``callback(step, x)`` runs after every step (``step`` counts from 1)
    with the current sequences. The mask token itself is never predicted (its logit is set to -inf), so every
    answer position ends unmasked; for a trained LLaDA, whose mask-token probability is ~0, this changes nothing,
    while a random model could otherwise leave masks in its answer.

    ``cache`` ("none", "prefix", "dual"), ``threshold`` (in (0, 1]) and ``factor`` (> 0) select the fast sampler
    of the module docstring; ``threshold``/``factor`` need ``remasking="low_confidence"`` and exclude each other.
    The cache needs a model whose forward takes ``use_cache``/``past_key_values``/``cache_position`` (this
    project's LLaDA-BS). ``return_nfe`` also returns the number of function evaluations (model forwards) of
    each answer, ``(B,)`` int64: the forwards it needs alone (a CFG step counts 2; an answer whose block is
    complete waits for the rest of its batch without counting). A setting or input that cannot run raises
    :class:`SamplerSettingError` (a ``ValueError``) before any forward.

    Decoding only what matters (opt-in; with none of them the sampler is the plain one, token for token):

    - ``early_stop``: once a block is revealed and holds EOS (or EoT), that sequence's later positions become EOS
      and it takes no more forwards (nor counts NFE); the call ends when every sequence has stopped.
    - ``suffix_window=W`` (``suffix_tail=T``, default 1): a forward computes the prompt, the decided blocks, the
      current block, the next ``W`` masked positions and the last ``T``, each at its true position
      (Streaming-dLLM). ``suffix_dropout="gaussian" | "uniform"``: DPad's schedules over the first ``W`` (all,
      without ``W``), drawn once per block from ``generator``. ``suffix_rule`` gives a :class:`SuffixRule`
      whole (the schedules' own parameters).
    - ``threshold_alpha=A`` (with ``threshold=T``): Streaming-dLLM's context-aware threshold, ``T * (1 - A * (1 -
      share))`` with ``share`` the masked share of what the step computes from the block on (the block and its
      visible suffix; the block alone with the dual cache).
    """
    check_schedule(steps, gen_length, block_length, remasking, temperature, cfg_scale, cache, threshold, factor)
    steps, gen_length, block_length = int(steps), int(gen_length), int(block_length)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SamplerSettingError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)); got "
                                  f"{generator!r}")
    suffix = suffix_rule if suffix_rule is not None else SuffixRule(suffix_window, suffix_tail, suffix_dropout)
    check_streaming(suffix, gen_length, block_length, threshold, threshold_alpha)
    mask_id, eos_token_id = _token_ids(model, mask_id, eos_token_id, eot_token_id)
    if early_stop and eos_token_id is None:
        raise SamplerSettingError("early_stop needs the EOS id: the model config has no eos_token_id (pass "
                                  "eos_token_id)")
    device = model_device(model)
    input_ids, attention_mask = _checked_prompts(model, input_ids, attention_mask, mask_id, gen_length, device)
    b, p = input_ids.shape
    x = torch.cat([input_ids, input_ids.new_full((b, gen_length), mask_id)], dim=1)
    prompt_positions = torch.zeros_like(x, dtype=torch.bool)
    prompt_positions[:, :p] = True
    specials = [t for t in (eos_token_id, eot_token_id) if t is not None] if confidence_eos_eot_inf else []
    stops = [t for t in (eos_token_id, eot_token_id) if t is not None]
    run = _Run(model, mask_id, eos_token_id, temperature, cfg_scale, remasking, logits_eos_inf, generator, cache,
               threshold, factor, attention_mask, prompt_positions, _forward_takes(model, cache),
               torch.tensor(specials, dtype=torch.long, device=device) if specials else None,  # once, not per step
               suffix, threshold_alpha, torch.tensor(stops, dtype=torch.long, device=device) if early_stop else None)
    nfe = torch.zeros(b, dtype=torch.long, device=device)
    alive = torch.ones(b, dtype=torch.bool, device=device)
    step = 0
    for block, block_steps in enumerate(steps_per_block(steps, gen_length // block_length)):
        start = p + block * block_length
        view = _BlockView.of(run, x, alive, start, start + block_length)
        if view is None:
            break  # every sequence has stopped (early_stop)
        step = _decode_block(run, view, x, block_steps, nfe, step, callback)
        if run.stop_ids is not None:
            _stop_finished(run, x, view, alive)
    return (x, nfe) if return_nfe else x


@dataclass
class _BlockView:
    """The sequences and positions one block's forwards compute: ``rows (R,)`` of the batch (those not stopped),
    ``keep (K,)`` positions of the sequence (all, or the prompt, decided blocks, the block and the kept suffix),
    and their tokens ``x (R, K)``, attention mask, prompt flags and RoPE positions (``None``: the model's own).
    The block is ``[start, end)`` in both the sequence and ``x`` (the kept positions begin with ``[0, end)``)."""

    rows: torch.Tensor | None  # None: every row
    keep: torch.Tensor | None  # None: every position
    x: torch.Tensor
    attention_mask: torch.Tensor | None
    prompt_positions: torch.Tensor
    position_ids: torch.Tensor | None
    start: int
    end: int

    @classmethod
    def of(cls, run: _Run, x, alive, start: int, end: int):
        rows = None
        if run.stop_ids is not None:
            if not bool(alive.any()):  # one host sync per block, only with early_stop
                return None
            rows = None if bool(alive.all()) else alive.nonzero().flatten()
        keep = None
        if run.suffix.active:
            keep = torch.cat([torch.arange(end, device=x.device),
                              run.suffix.positions(end, x.shape[1], run.generator, x.device)])

        def take(t):
            t = t if rows is None else t.index_select(0, rows)
            return t if keep is None else t.index_select(1, keep)

        mask = None if run.attention_mask is None else take(run.attention_mask)
        positions = None
        if keep is not None:  # true positions: RoPE sees the real distance to the kept suffix
            full = (torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
                    if run.attention_mask is None else (run.attention_mask.long().cumsum(-1) - 1).clamp_min(0))
            positions = take(full)
        return cls(rows, keep, take(x), mask, take(run.prompt_positions), positions, start, end)

    def write_back(self, x) -> None:
        """The block's tokens into the full sequences ``x``."""
        block = self.x[:, self.start : self.end]
        if self.rows is None:
            x[:, self.start : self.end] = block
        else:
            x[self.rows, self.start : self.end] = block


def _stop_finished(run: _Run, x, view: _BlockView, alive) -> None:
    """``early_stop``: a sequence whose revealed block holds EOS/EoT ends: its later positions become EOS."""
    done = torch.isin(view.x[:, view.start : view.end], run.stop_ids).any(-1)
    rows = torch.arange(x.shape[0], device=x.device) if view.rows is None else view.rows
    stopped = torch.zeros_like(alive).index_fill_(0, rows[done], True)
    x[:, view.end :] = torch.where(stopped[:, None], run.eos_token_id, x[:, view.end :])
    alive &= ~stopped


def check_streaming(suffix: SuffixRule, gen_length, block_length, threshold=None, threshold_alpha=None,
                    flags=None) -> None:
    """Raise :class:`SamplerSettingError` for a suffix rule or ``threshold_alpha`` that cannot run. ``flags`` maps
    ``suffix_window``, ``suffix_tail``, ``suffix_dropout``, ``threshold`` and ``threshold_alpha`` to the names the
    message should use (a command line's flags)."""
    name = {"threshold": "threshold", "threshold_alpha": "threshold_alpha", **(flags or {})}
    try:
        check_suffix(suffix, gen_length, block_length, {k[7:]: v for k, v in name.items() if k.startswith("suffix_")})
    except ValueError as err:
        raise SamplerSettingError(str(err)) from None
    if threshold_alpha is not None:
        if isinstance(threshold_alpha, bool) or not isinstance(threshold_alpha, (int, float)) \
                or not 0 <= threshold_alpha <= 1:
            raise SamplerSettingError(f"{name['threshold_alpha']} must be a number in [0, 1] (0 = the plain "
                                      f"threshold); got {threshold_alpha!r}")
        if threshold is None:
            raise SamplerSettingError(f"{name['threshold_alpha']} scales the confidence threshold: give "
                                      f"{name['threshold']} too")


def _token_ids(model, mask_id, eos_token_id, eot_token_id=None) -> tuple[int, int | None]:
    """The mask and EOS ids: the arguments, else the model config's; each (and ``eot_token_id``) an id of the
    model's vocabulary."""
    config = getattr(model, "config", None)
    mask_id = getattr(config, "mask_token_id", None) if mask_id is None else mask_id
    eos_token_id = getattr(config, "eos_token_id", None) if eos_token_id is None else eos_token_id
    if mask_id is None:
        raise SamplerSettingError("mask_id is not given and the model config has no mask_token_id")
    rows = embedding_rows(config)
    for name, value in (("mask_id", mask_id), ("eos_token_id", eos_token_id), ("eot_token_id", eot_token_id)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (rows and not 0 <= value < rows):
            raise SamplerSettingError(f"{name} must be a token id of the model's vocabulary [0, {rows}); got "
                                      f"{value!r}")
    return int(mask_id), None if eos_token_id is None else int(eos_token_id)


def _checked_prompts(model, input_ids, attention_mask, mask_id, gen_length, device):
    """``input_ids (B, P)`` on ``device`` and the attention mask extended over the answer ``(B, P + gen_length)``
    (bool, or None), after checking shapes, dtypes, lengths and token ids (:class:`SamplerSettingError`)."""
    config = getattr(model, "config", None)
    if not isinstance(input_ids, torch.Tensor):
        raise SamplerSettingError(f"input_ids must be a tensor of token ids (batch, prompt_length), e.g. "
                                  f"torch.tensor([ids]); got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise SamplerSettingError(f"input_ids must be (batch, prompt_length); got shape {tuple(input_ids.shape)}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise SamplerSettingError(f"input_ids must be integer token ids (torch.long); got dtype {input_ids.dtype}")
    input_ids = input_ids.long()  # uint8 / int32 ids index the embedding as the ids they are
    b, p = input_ids.shape
    if p == 0:
        raise SamplerSettingError("the prompt is empty: give at least one token (e.g. the chat template's BOS)")
    max_len = getattr(config, "max_sequence_length", None)
    if max_len is not None and p + gen_length > max_len:
        raise SamplerSettingError(
            f"prompt ({p} tokens) + gen_length ({gen_length}) = {p + gen_length} exceeds the model's "
            f"max_sequence_length ({max_len}); shorten the prompt or the answer"
        )
    rows = embedding_rows(config)
    outside = (input_ids < 0) | (input_ids >= rows) if rows else None
    # once per call, where the prompts are (no device sync for CPU prompts): on a GPU such an id is a device assert
    if outside is not None and outside.any():
        raise SamplerSettingError(f"input_ids hold token id {int(input_ids[outside][0])} outside the model's "
                                  f"vocabulary [0, {rows}): encode prompts with this model's tokenizer")
    input_ids = input_ids.to(device)
    if attention_mask is None:
        return input_ids, None
    attention_mask = attention_mask.to(device).bool()
    if attention_mask.shape != input_ids.shape:
        raise SamplerSettingError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {(b, p)}")
    if not attention_mask.any(-1).all():
        raise SamplerSettingError("a prompt in the batch is empty (its attention_mask is all zeros)")
    if (input_ids[~attention_mask] == mask_id).any():
        raise SamplerSettingError(
            f"padding uses the mask token id ({mask_id}): pad with another id (LLaDA pads with EOS, 126081)"
        )
    return input_ids, torch.cat([attention_mask, attention_mask.new_ones(b, gen_length)], dim=1)


def _forward_takes(model, cache: str) -> bool:
    """Whether the model's forward takes ``logits_to_keep``; refuses a cache mode the forward cannot serve."""
    parameters = inspect.signature(model.forward).parameters
    if cache != "none" and not {"use_cache", "past_key_values", "cache_position"} <= set(parameters):
        raise SamplerSettingError(f"cache={cache!r} needs a model whose forward takes use_cache, past_key_values "
                                  f"and cache_position (LLaDA-BS); {type(model).__name__} does not: use cache='none'")
    return "logits_to_keep" in parameters


def _decode_block(run: _Run, view: _BlockView, sequences, block_steps: int, nfe, step: int, callback) -> int:
    """Reveal the view's block in at most ``block_steps`` steps, written back into ``sequences (B, T)`` (after every
    step when ``callback`` watches them); count each active answer's forwards into ``nfe (B,)``. Returns the
    running step count."""
    start, end, x = view.start, view.end, view.x
    schedule = None if run.adaptive else transfer_schedule((x[:, start:end] == run.mask_id).sum(-1), block_steps)
    ones = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
    kv = None
    for i in range(block_steps):
        active = (x[:, start:end] == run.mask_id).any(-1) if run.adaptive else ones.bool()
        if run.adaptive and not bool(active.any()):
            break  # the whole batch has revealed this block
        threshold = _step_threshold(run, view, first=i == 0)
        logits, kv = _step_logits(run, view, first=i == 0, kv=kv)
        counted = active.long() * run.forwards_per_step
        if view.rows is None:
            nfe += counted
        else:
            nfe.index_add_(0, view.rows, counted)
        x0, confidence, rank = _propose(run, logits)
        current = x[:, start:end]
        masked = current == run.mask_id
        rank = rank.masked_fill(~masked, -torch.inf)
        if not run.adaptive:
            count = schedule[:, i]
        elif i == block_steps - 1:
            count = masked.sum(-1)  # the step budget is spent: reveal the rest of the block
        else:
            count = _adaptive_count(rank, confidence, masked, threshold, run.factor)
        chosen = _top_k_mask(rank, count) & masked
        x[:, start:end] = torch.where(chosen, x0, current)
        step += 1
        if callback is not None:
            view.write_back(sequences)
            callback(step, sequences)
    view.write_back(sequences)
    return step


def _step_threshold(run: _Run, view: _BlockView, first: bool):
    """The step's confidence threshold: ``threshold``, or Streaming-dLLM's context-aware ``T (1 - A (1 - share))``
    per sequence ``(R, 1)``, ``share`` the masked share of the positions the step computes from the block on."""
    if run.threshold_alpha is None or run.threshold is None:
        return run.threshold
    seen = view.x[:, view.start : (view.end if run.cache == "dual" and not first else view.x.shape[1])]
    share = (seen == run.mask_id).double().mean(-1, keepdim=True)
    return run.threshold * (1.0 - run.threshold_alpha * (1.0 - share))


def _step_logits(run: _Run, view: _BlockView, first: bool, kv):
    """The block's logits for one step, and the cache: a full forward (of the view) without a cache or at a
    block's start (which fills the cache), else only the window the cache mode computes. Returns
    ``(logits, kv)``."""
    window = None
    if run.cache != "none" and not first:
        window = (view.start, view.x.shape[1] if run.cache == "prefix" else view.end)
    return _block_logits(run.model, view.x, view.attention_mask, view.prompt_positions, run.mask_id, run.cfg_scale,
                         view.start, view.end, run.keep_logits, fill=run.cache != "none" and first, window=window,
                         kv=kv, position_ids=view.position_ids)


def _propose(run: _Run, logits):
    """Each position's proposal ``x0 (B, N)``, its ``confidence`` and its reveal ``rank`` (float64, higher first)."""
    logits[..., run.mask_id] = -torch.inf  # the mask token is never an answer (a trained LLaDA gives it ~0)
    if run.logits_eos_inf and run.eos_token_id is not None:
        logits[..., run.eos_token_id] = -torch.inf
    x0 = add_gumbel_noise(logits, run.temperature, run.generator).argmax(-1)  # (B, block_length)
    probs = None
    if run.remasking == "low_confidence":
        probs = F.softmax(logits.double(), dim=-1)
        confidence = probs.gather(-1, x0[..., None])[..., 0]
    else:
        confidence = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=run.generator)
    if run.special_ids is None:
        return x0, confidence, confidence
    special = torch.isin(x0, run.special_ids)
    if probs is not None:
        # as LLaDA's sampler: another token's confidence is its probability with EOS/EoT taken out of the
        # distribution (renormalised; still <= 1), so positions that weighed ending rank higher
        rest = (1.0 - probs[..., run.special_ids].sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
        confidence = torch.where(special, confidence, (confidence / rest).clamp_max(1.0))
    # EOS/EoT last: below every other masked position (confidences are >= 0) but above the revealed ones (-inf),
    # so a block whose other positions are all revealed still reveals them
    return x0, confidence, torch.where(special, confidence - 2.0, confidence)


def _adaptive_count(rank, confidence, masked, threshold, factor) -> torch.Tensor:
    """How many positions to reveal ``(B,)``: in reveal order (``rank`` descending), the longest run whose n-th
    ``confidence`` is >= ``threshold`` (or >= 1 - factor / (n + 1)); at least one where a mask is left.

    With plain confidences as ranks the threshold rule is "every masked position with confidence >= T"; with
    EOS/EoT ranked last they join only once everything before them qualifies.
    """
    order = rank.argsort(dim=-1, descending=True, stable=True)
    ordered = confidence.gather(-1, order)
    ordered_masked = masked.gather(-1, order)
    if isinstance(threshold, torch.Tensor):  # per sequence (R, 1): the context-aware threshold
        bar = threshold.expand_as(ordered)
    elif threshold is not None:
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
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:  # NumPy ints too
            raise SamplerSettingError(f"{name} must be a positive integer; got {value!r}")
    if gen_length % block_length:
        raise SamplerSettingError(
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}): the answer is "
            "revealed in whole blocks"
        )
    n_blocks = gen_length // block_length
    if steps < n_blocks:
        raise SamplerSettingError(f"steps ({steps}) must be at least the number of blocks ({n_blocks}): one step per block")
    if remasking not in REMASKING:
        raise SamplerSettingError(f"remasking must be one of {', '.join(REMASKING)}; got {remasking!r}")
    # finite and bounded: inf or 1e308 would overflow the noise / guidance into NaN and a silently wrong answer
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 <= temperature <= MAX_TEMPERATURE:
        raise SamplerSettingError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}] (0 = greedy); got {temperature!r}")
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not 0 <= cfg_scale <= MAX_CFG_SCALE:
        raise SamplerSettingError(f"cfg_scale must be a number in [0, {MAX_CFG_SCALE:g}] (0 = no guidance); got {cfg_scale!r}")
    check_fast_sampling(cache, threshold, factor, remasking)


def check_fast_sampling(cache="none", threshold=None, factor=None, remasking="low_confidence", flags=None):
    """Raise ``ValueError`` for a bad cache mode, threshold or factor. ``flags`` maps the setting names to the
    names the message should use (e.g. ``{"cache": "--cache"}`` for a command line)."""
    name = {"cache": "cache", "threshold": "threshold", "factor": "factor", "remasking": "remasking",
            **(flags or {})}
    if cache not in CACHE_MODES:
        raise SamplerSettingError(f"{name['cache']} must be one of {', '.join(CACHE_MODES)}; got {cache!r}")
    number = (int, float)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, number)
                                  or not 0 < threshold <= 1):
        raise SamplerSettingError(f"{name['threshold']} must be a number in (0, 1] (reveal every position at least this "
                         f"confident); got {threshold!r}")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, number)
                               or not 0 < factor < math.inf):
        raise SamplerSettingError(f"{name['factor']} must be a finite number > 0 (e.g. 1.0); got {factor!r}")
    if threshold is not None and factor is not None:
        raise SamplerSettingError(f"give {name['threshold']} or {name['factor']}, not both (got {threshold!r} and "
                         f"{factor!r})")
    if (threshold is not None or factor is not None) and remasking != "low_confidence":
        raise SamplerSettingError(f"{name['threshold'] if threshold is not None else name['factor']} reveals by confidence: "
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
                  fill=False, window=None, kv=None, position_ids=None):
    """Logits of the current block ``(B, end - start, V)``, classifier-free guided when ``cfg_scale > 0``, and
    the cache: a full forward (``fill`` returns its keys/values), or only ``window = (w0, w1)`` of ``x`` with the
    other positions' keys/values from ``kv``. ``position_ids (B, len(x))``: the RoPE positions of ``x`` (a pruned
    sequence), else the model's own. Returns ``(logits, kv)``."""
    if cfg_scale > 0:  # one forward of the conditional and the unconditional (prompt masked) batch
        x = torch.cat([x, x.masked_fill(prompt_positions, mask_id)])
        attention_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        position_ids = None if position_ids is None else torch.cat([position_ids, position_ids])
    kwargs, offset = {}, 0
    if position_ids is not None:
        kwargs["position_ids"] = position_ids if window is None else position_ids[:, window[0] : window[1]]
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
