"""LLaDA's Monte Carlo log-likelihood of a masked diffusion model, and its greedy check: pure functions over a
model and token ids (``support_basis.lm_eval_llada`` wires them to lm-eval; its docstring describes the estimator
and why a request's estimate does not depend on batching, order or processes).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .loading import left_pad
from .sampling import generate, model_device


def request_seed(seed: int, context: Sequence[int], continuation: Sequence[int]) -> int:
    """A 63-bit seed for one request: a hash of ``seed`` and both token sequences (independent of batching)."""
    h = hashlib.sha256(struct.pack("<qqq", int(seed), len(context), len(continuation)))
    h.update(torch.tensor(list(context) + list(continuation), dtype=torch.int64).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & (2**63 - 1)


def stratified_mask_counts(length: int, num: int, group: int, generator: torch.Generator) -> torch.Tensor:
    """How many of ``length`` continuation tokens each of ``num`` samples masks: ``(num,)`` int64 in [1, length].

    Samples come in ``num // group`` groups; a group draws one offset ``u`` uniform in ``{0, ..., length - 1}``
    and its ``i``-th sample masks ``1 + (u + round(i * length / group)) mod length`` tokens, so the group's masking
    ratios cover ``(0, 1]`` evenly (each count is uniform on ``1..length``: the estimator stays unbiased).
    """
    if num % group:
        raise ValueError(f"num ({num}) must be a multiple of group ({group})")
    offsets = torch.randint(0, length, (num // group, 1), generator=generator)
    spread = torch.floor(torch.arange(group, dtype=torch.float64) * length / group + 0.5).long()
    return (1 + (offsets + spread) % length).reshape(-1)


def random_masks(counts: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """``(num, length)`` bool: row ``i`` has exactly ``counts[i]`` True entries at uniformly random positions."""
    noise = torch.rand(counts.shape[0], length, generator=generator)
    ranks = noise.argsort(dim=-1).argsort(dim=-1)
    return ranks < counts[:, None]


def sample_continuation_masks(length: int, num: int, group: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One request's Monte Carlo draws: counts ``(num,)`` and masks ``(num, length)`` from a generator seeded
    with ``seed`` (CPU, so the same on every device). A one-token continuation gets a single sample."""
    if length == 1:
        return torch.ones(1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    counts = stratified_mask_counts(length, num, group, generator)
    return counts, random_masks(counts, length, generator)


@torch.no_grad()
def mc_loglikelihoods(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    mask_id: int,
    pad_id: int,
    mc_num: int = 128,
    mc_batch_size: int = 32,
    cfg: float = 0.0,
    batch_size: int = 32,
    seed: int = 1234,
    progress: bool = False,
) -> list[float]:
    """Monte Carlo log-likelihoods ``log p(continuation | context)`` of token pairs, batched across pairs.

    ``pairs``: ``(context_ids, continuation_ids)``; continuations non-empty, ``context + continuation`` no longer
    than the model accepts. Returns one float per pair, in order. ``mc_num`` samples per pair (one for a
    one-token continuation), drawn by :func:`sample_continuation_masks` with :func:`request_seed`; ``batch_size``
    samples per forward (rows of several pairs share a forward); ``pad_id`` pads (never ``mask_id``). Rows are
    left-padded, so every continuation ends at the right edge and ``logits_to_keep`` = the longest continuation
    of the batch limits the output projection to ``(rows, T_max, vocab)``.
    """
    if pad_id == mask_id:
        raise ValueError(f"pad_id must differ from the mask token id ({mask_id})")
    device = model_device(model)
    keys = [(tuple(int(t) for t in c), tuple(int(t) for t in y)) for c, y in pairs]
    unique = list(dict.fromkeys(keys))  # identical requests are scored once
    if not unique:
        return []
    if any(len(y) == 0 for _, y in unique):
        raise ValueError("a continuation is empty: there is nothing to score")
    ctx_len = torch.tensor([len(c) for c, _ in unique])
    cont_len = torch.tensor([len(y) for _, y in unique])
    total_len = ctx_len + cont_len
    n_samples = torch.where(cont_len == 1, 1, mc_num)
    order = sorted(range(len(unique)), key=lambda r: (-int(total_len[r]), r))  # longest first: OOM shows early
    order_t = torch.tensor(order)
    row_req = order_t.repeat_interleave(n_samples[order_t])  # (rows,) request of each row, contiguous per request
    first_row = torch.zeros(len(unique), dtype=torch.long)
    first_row[order_t] = torch.cumsum(n_samples[order_t], 0) - n_samples[order_t]
    n_rows = int(row_req.shape[0])

    loss_sum = torch.zeros(len(unique), dtype=torch.float64)  # on the CPU (float64 everywhere, MPS included)
    draws: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    starts = range(0, n_rows, batch_size)
    for start in tqdm(starts, desc="llada_bs loglikelihood", disable=not progress, total=len(starts)):
        stop = min(start + batch_size, n_rows)
        reqs, counts_in_batch = torch.unique_consecutive(row_req[start:stop], return_counts=True)
        b = stop - start
        width, t_max = int(total_len[reqs].max()), int(cont_len[reqs].max())
        tokens = torch.full((b, width), pad_id, dtype=torch.long)
        valid = torch.zeros(b, width, dtype=torch.bool)
        masked = torch.zeros(b, t_max, dtype=torch.bool)
        weight = torch.empty(b, dtype=torch.float64)  # T / k of each row
        row_t = torch.empty(b, dtype=torch.long)  # continuation length of each row
        offset = 0
        for r, m in zip(reqs.tolist(), counts_in_batch.tolist()):  # one iteration per request in the batch
            ctx, cont = unique[r]
            length, t = len(ctx) + len(cont), len(cont)
            if r not in draws:
                n = int(n_samples[r])
                draws[r] = sample_continuation_masks(t, n, min(mc_batch_size, n), request_seed(seed, ctx, cont))
            counts, masks = draws[r]
            j0 = start + offset - int(first_row[r])  # this request's first sample in the batch
            tokens[offset : offset + m, width - length :] = torch.tensor(ctx + cont)
            valid[offset : offset + m, width - length :] = True
            masked[offset : offset + m, t_max - t :] = masks[j0 : j0 + m]
            weight[offset : offset + m] = t / counts[j0 : j0 + m].double()
            row_t[offset : offset + m] = t
            if j0 + m == masks.shape[0]:
                del draws[r]
            offset += m
        tokens, valid, masked, row_t = (x.to(device) for x in (tokens, valid, masked, row_t))
        row_loss = _masked_losses(model, tokens, valid, masked, row_t, mask_id, cfg)
        loss_sum.index_add_(0, row_req[start:stop], row_loss.cpu().double() * weight)
    estimates = (-loss_sum / n_samples.double()).tolist()
    index = {key: i for i, key in enumerate(unique)}
    return [estimates[index[key]] for key in keys]


def _masked_losses(model, tokens, valid, masked, row_t, mask_id: int, cfg: float) -> torch.Tensor:
    """One forward of a batch of noisy rows: the summed cross-entropy of each row's masked continuation tokens
    ``(rows,)``. ``tokens (b, width)`` left-padded (``valid``), ``masked (b, t_max)`` over the last ``t_max``
    positions, ``row_t`` each row's continuation length; ``cfg > 0`` mixes in the unconditional forward."""
    b, width = tokens.shape
    t_max = masked.shape[1]
    targets = tokens[:, width - t_max :]
    noisy = tokens.clone()
    noisy[:, width - t_max :] = targets.masked_fill(masked, mask_id)
    if cfg > 0:  # unconditional copy: every context token masked too
        in_cont = torch.arange(width, device=tokens.device)[None, :] >= width - row_t[:, None]
        unconditional = noisy.masked_fill(valid & ~in_cont, mask_id)
        logits = model(torch.cat([noisy, unconditional]), attention_mask=torch.cat([valid, valid]).long(),
                       logits_to_keep=t_max).logits
        cond, uncond = (half[masked].float() for half in logits.chunk(2))  # (masked tokens, vocab) each
        scores = uncond + (cfg + 1) * (cond - uncond)
    else:
        scores = model(noisy, attention_mask=valid.long(), logits_to_keep=t_max).logits[masked].float()
    rows, _ = masked.nonzero(as_tuple=True)
    nll = F.cross_entropy(scores, targets[masked], reduction="none")  # (masked tokens,)
    return torch.zeros(b, dtype=nll.dtype, device=tokens.device).index_add_(0, rows, nll)


@torch.no_grad()
def greedy_matches(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    mask_id: int,
    pad_id: int,
    cfg: float = 0.0,
    batch_size: int = 32,
    progress: bool = False,
) -> list[bool]:
    """Whether greedy low-confidence decoding of ``len(continuation)`` masks after the context (one token per
    step, ``T`` steps, :func:`generate.generate`) yields exactly the continuation. Batched over pairs with equal
    continuation length. An empty context is given the pad token as its one prompt token."""
    device = model_device(model)
    out = [False] * len(pairs)
    by_len: dict[int, list[int]] = {}
    for i, (_, cont) in enumerate(pairs):
        by_len.setdefault(len(cont), []).append(i)
    batches = [(t, idx[s : s + batch_size]) for t, idx in sorted(by_len.items())
               for s in range(0, len(idx), batch_size)]
    for t, idx in tqdm(batches, desc="llada_bs is_greedy", disable=not progress):
        prompts = [list(pairs[i][0]) or [pad_id] for i in idx]
        ids, mask = left_pad(prompts, pad_id)
        x = generate(model, ids.to(device), mask.to(device), steps=t, gen_length=t, block_length=t, cfg_scale=cfg,
                     mask_id=mask_id)
        target = torch.tensor([list(pairs[i][1]) for i in idx], device=device)
        for i, ok in zip(idx, (x[:, -t:] == target).all(-1).tolist()):
            out[i] = bool(ok)
    return out
