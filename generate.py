#!/usr/bin/env python
"""LLaDA's diffusion sampler: batched, semi-autoregressive, with a command line.

LLaDA generates by iterative unmasking, not left to right. The answer region starts as ``gen_length`` mask tokens;
each step predicts every masked position of the current block and keeps (unmasks) the most confident predictions
("low_confidence") or random ones ("random"), following a linear schedule: a block's masked tokens are spread
evenly over its steps. With ``block_length < gen_length`` the blocks are revealed left to right.

    from generate import generate
    out = generate(model, input_ids, attention_mask, steps=128, gen_length=128, block_length=32)

    python generate.py --model models/LLaDA-8B-Instruct-BS --prompt "What is 7 * 8?" --prompt "Name a colour."

``steps`` is the TOTAL number of denoising steps (one model forward each, two with CFG), spread over the blocks
as in the official LLaDA sampler. Where it does not divide evenly, the first ``steps % n_blocks`` blocks get one
step more (the official sampler requires divisibility; the paper's runners count steps per block instead).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

REMASKING = ("low_confidence", "random")


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
) -> torch.LongTensor:
    """Sample answers for a batch of prompts; return the full sequences ``(B, prompt_len + gen_length)``.

    ``input_ids (B, P)`` are LEFT-padded prompts with ``attention_mask (B, P)`` (1 = token); the padding id must
    not be ``mask_id``. Each prompt's result equals what it gets alone (greedy), since padding never reaches
    attention. ``mask_id`` and ``eos_token_id`` default to the model config's. ``cfg_scale > 0`` adds a second
    forward with the prompt masked out and mixes ``un + (cfg_scale + 1) * (cond - un)``. ``logits_eos_inf`` forbids
    EOS; ``confidence_eos_eot_inf`` lets EOS/EoT (``eot_token_id``, e.g. ``<|eot_id|>``) be predicted but reveals
    them last; both hold at every temperature. ``generator`` seeds the sampling noise; ``callback(step, x)`` runs
    after every step (``step`` counts from 1) with the current sequences. The mask token itself is never predicted
    (its logit is set to -inf), so every answer position ends unmasked; for a trained LLaDA, whose mask-token
    probability is ~0, this changes nothing, while a random model could otherwise leave masks in its answer.
    """
    config = getattr(model, "config", None)
    mask_id = getattr(config, "mask_token_id", None) if mask_id is None else mask_id
    eos_token_id = getattr(config, "eos_token_id", None) if eos_token_id is None else eos_token_id
    if mask_id is None:
        raise ValueError("mask_id is not given and the model config has no mask_token_id")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, prompt_length); got shape {tuple(input_ids.shape)}")
    check_schedule(steps, gen_length, block_length, remasking, temperature, cfg_scale)
    b, p = input_ids.shape
    if p == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the chat template's BOS)")
    max_len = getattr(config, "max_sequence_length", None)
    if max_len is not None and p + gen_length > max_len:
        raise ValueError(
            f"prompt ({p} tokens) + gen_length ({gen_length}) = {p + gen_length} exceeds the model's "
            f"max_sequence_length ({max_len}); shorten the prompt or the answer"
        )
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
    keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    step = 0
    for block, block_steps in enumerate(steps_per_block(steps, gen_length // block_length)):
        start, end = p + block * block_length, p + (block + 1) * block_length
        schedule = transfer_schedule((x[:, start:end] == mask_id).sum(-1), block_steps)
        for i in range(block_steps):
            logits = _block_logits(model, x, attention_mask, prompt_positions, mask_id, cfg_scale, start, end,
                                   keep_logits)
            logits[..., mask_id] = -torch.inf  # the mask token is never an answer (a trained LLaDA gives it ~0)
            if logits_eos_inf and eos_token_id is not None:
                logits[..., eos_token_id] = -torch.inf
            x0 = add_gumbel_noise(logits, temperature, generator).argmax(-1)  # (B, block_length)
            if remasking == "low_confidence":
                confidence = F.softmax(logits.double(), dim=-1).gather(-1, x0[..., None])[..., 0]
            else:
                confidence = torch.rand(x0.shape, dtype=torch.float64, device=device, generator=generator)
            if confidence_eos_eot_inf:
                for special in (eos_token_id, eot_token_id):
                    if special is not None:
                        confidence = confidence.masked_fill(x0 == special, -torch.inf)
            current = x[:, start:end]
            masked = current == mask_id
            confidence = confidence.masked_fill(~masked, -torch.inf)
            chosen = _top_k_mask(confidence, schedule[:, i]) & masked
            x[:, start:end] = torch.where(chosen, x0, current)
            step += 1
            if callback is not None:
                callback(step, x)
    return x


def check_schedule(steps, gen_length, block_length, remasking, temperature, cfg_scale):
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
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0; got {temperature!r}")
    if not cfg_scale >= 0:
        raise ValueError(f"cfg_scale must be >= 0; got {cfg_scale!r}")


def model_device(model) -> torch.device:
    """The device of the model's weights (its ``device`` attribute where it has one)."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def _block_logits(model, x, attention_mask, prompt_positions, mask_id, cfg_scale, start, end, keep_logits):
    """Logits of the current block ``(B, end - start, V)``, classifier-free guided when ``cfg_scale > 0``."""
    kwargs = {"logits_to_keep": slice(start, end)} if keep_logits else {}
    if cfg_scale > 0:
        unconditional = x.masked_fill(prompt_positions, mask_id)
        both = torch.cat([x, unconditional])
        mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        logits = model(both, attention_mask=mask, **kwargs).logits
        if not keep_logits:
            logits = logits[:, start:end]
        cond, uncond = logits.chunk(2)
        return uncond + (cfg_scale + 1) * (cond - uncond)
    logits = model(x, attention_mask=attention_mask, **kwargs).logits
    return logits if keep_logits else logits[:, start:end]


def _top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, N)``: the ``k[b]`` highest ``scores[b]`` of each row (no Python loop over rows)."""
    k_max = int(k.max()) if k.numel() else 0
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if k_max == 0:
        return chosen
    top = scores.topk(k_max, dim=-1).indices
    keep = torch.arange(k_max, device=scores.device)[None, :] < k[:, None]
    return chosen.scatter_(1, top, keep)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def load_model_and_tokenizer(name: str, dtype: str = "auto", device: str = "auto"):
    """Load a LLaDA(-BS) model directory or hub id with its tokenizer; clear errors for a missing model."""
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer

    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") != 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise SystemExit(
            f"error: model directory {name!r} does not exist. Build the tiny smoke model with "
            "`python scripts/make_tiny_model.py DIR`, or prepare the official weights with "
            "`python scripts/prepare_model.py --source GSAI-ML/LLaDA-8B-Instruct --out DIR`"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        model = AutoModel.from_pretrained(name, trust_remote_code=True, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True)
    except OSError as err:
        raise SystemExit(f"error: could not load {name!r}: {err}") from None
    return model.to(device).eval(), tokenizer


def tokenize_prompts(tokenizer, prompts: list[str], chat: bool) -> list[list[int]]:
    """Token ids of each prompt, tokenised as LLaDA's own sampler does it: with ``chat``, the chat template to text
    first, then the tokenizer's defaults. Raises ``ValueError`` for a prompt that tokenises to nothing."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                 tokenize=False) for t in prompts]
    encoded = [tokenizer(t)["input_ids"] for t in prompts]
    if any(len(e) == 0 for e in encoded):
        raise ValueError("a prompt is empty after tokenisation")
    return encoded


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer, prompts: list[str], chat: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask``; with ``chat`` each prompt goes through the chat template."""
    ids, mask = left_pad(tokenize_prompts(tokenizer, prompts, chat), pad_id_of(tokenizer))
    return ids.to(device), mask.to(device)


def left_pad(seqs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(seqs), longest)`` int64: token sequences right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a LLaDA(-BS) model directory or hub id")
    p.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several")
    p.add_argument("--steps", type=int, default=128, help="total denoising steps (default 128)")
    p.add_argument("--gen-length", type=int, default=128, help="answer length in tokens (default 128)")
    p.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block (default 32)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--cfg-scale", type=float, default=0.0)
    p.add_argument("--remasking", default="low_confidence", choices=REMASKING)
    p.add_argument("--exact-ratio", type=float, default=None, help="hybrid_exact_ratio (default: the model's)")
    p.add_argument("--chebyshev-degree", type=int, default=None, help="hybrid_chebyshev_degree (default: model's)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward batch (default 8)")
    p.add_argument("--no-chat", action="store_true", help="send the raw text (no chat template)")
    p.add_argument("--no-eot-stop", action="store_true",
                   help="do not reveal EOS/<|eot_id|> last (default: reveal them last, as LLaDA's chat demo)")
    p.add_argument("--show-steps", action="store_true", help="print the answer after every denoising step")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1; got {a.batch_size}")
    try:
        check_schedule(a.steps, a.gen_length, a.block_length, a.remasking, a.temperature, a.cfg_scale)
    except ValueError as err:
        p.error(str(err))

    model, tokenizer = load_model_and_tokenizer(a.model, a.dtype, a.device)
    try:
        if a.exact_ratio is not None:
            model.config.hybrid_exact_ratio = a.exact_ratio
        if a.chebyshev_degree is not None:
            model.config.hybrid_chebyshev_degree = a.chebyshev_degree
    except ValueError as err:
        p.error(str(err))
    mask_id = model.config.mask_token_id
    if tokenizer.pad_token_id == mask_id:
        p.error(f"the tokenizer pads with the mask token ({mask_id}); set another pad token")
    chat = not a.no_chat and bool(getattr(tokenizer, "chat_template", None))
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    generator = torch.Generator(device=model_device(model)).manual_seed(a.seed)
    torch.manual_seed(a.seed)
    print(f"# {a.model}: exact_ratio={model.config.hybrid_exact_ratio} "
          f"chebyshev_degree={model.config.hybrid_chebyshev_degree} steps={a.steps} gen_length={a.gen_length} "
          f"block_length={a.block_length} temperature={a.temperature} chat={chat}", file=sys.stderr)
    for start in range(0, len(a.prompt), a.batch_size):
        prompts = a.prompt[start : start + a.batch_size]
        try:
            ids, mask = encode_prompts(tokenizer, prompts, chat, model_device(model))
            show = _step_printer(tokenizer, ids.shape[1], mask_id, a.steps) if a.show_steps else None
            out = generate(model, ids, mask, steps=a.steps, gen_length=a.gen_length, block_length=a.block_length,
                           temperature=a.temperature, cfg_scale=a.cfg_scale, remasking=a.remasking,
                           eot_token_id=eot, confidence_eos_eot_inf=not a.no_eot_stop, generator=generator,
                           callback=show)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        answers = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        for i, (prompt, answer) in enumerate(zip(prompts, answers), start):
            print(f"=== [{i}] {prompt}\n{answer.strip()}")


def _step_printer(tokenizer, prompt_len, mask_id, total):
    mask_text = tokenizer.convert_ids_to_tokens(mask_id)

    def show(step, x):
        texts = tokenizer.batch_decode(x[:, prompt_len:], skip_special_tokens=False)
        for j, t in enumerate(texts):
            print(f"[step {step}/{total}] ({j}) {t.replace(mask_text, '░')}", file=sys.stderr)

    return show


if __name__ == "__main__":
    main()
