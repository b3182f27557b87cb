"""Which masked positions after the current block a forward computes: the pruned suffix of DPad and Streaming-dLLM.

While block ``k`` is decoded, every position after it is still a mask; computing all of them costs a full forward
per step. A :class:`SuffixRule` keeps a few, at their true positions (RoPE sees the real distance):

- ``window=W, tail=T`` (Streaming-dLLM's deterministic window + tail): the ``W`` positions right after the block
  and the last ``T`` of the answer;
- ``dropout="gaussian"`` (DPad): each of the first ``W`` positions kept with probability
  ``scale * N(x; 0, 1)`` at ``x = linspace(0, sigma, W)`` (near the block: likely; at the window's end: rare);
- ``dropout="uniform"`` (DPad): ``keep`` positions drawn uniformly from the first ``W``;

drawn once per block from the call's generator (a seed repeats the run), plus the last ``T`` (default 0 with a
dropout schedule, as DPad; 1 with the window, as Streaming-dLLM).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

DROPOUTS = ("gaussian", "uniform")
DEFAULT_SIGMA = 4.0  # DPad's default k_sigma: the window's end lies 4 standard deviations out
DEFAULT_SCALE = 2.0  # DPad's default scale of the Gaussian keep probability


@dataclass(frozen=True)
class SuffixRule:
    """How much of the masked suffix a forward computes (see the module docstring); ``window=None`` and
    ``dropout=None``: all of it (the plain sampler)."""

    window: int | None = None
    tail: int | None = None
    dropout: str | None = None
    sigma: float = DEFAULT_SIGMA
    scale: float = DEFAULT_SCALE
    keep: int | None = None

    @property
    def active(self) -> bool:
        return self.window is not None or self.dropout is not None

    @property
    def tail_length(self) -> int:
        return self.tail if self.tail is not None else (0 if self.dropout is not None else 1)

    def positions(self, block_end: int, total: int, generator, device) -> torch.Tensor:
        """The kept suffix positions, sorted, in ``[block_end, total)`` (LongTensor on ``device``)."""
        n = total - block_end
        window = min(self.window if self.window is not None else n, n)
        if self.dropout == "gaussian":
            x = torch.linspace(0.0, self.sigma, window, dtype=torch.float32) if window > 1 else torch.zeros(window)
            pdf = self.scale * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            u = torch.rand(n, generator=_cpu(generator))[:window]  # one number per suffix position, as DPad draws
            head = torch.nonzero(u < pdf).flatten()
        elif self.dropout == "uniform":
            keep = window // 4 if self.keep is None else min(self.keep, window)
            head = torch.randperm(window, generator=_cpu(generator))[:keep].sort().values
        else:
            head = torch.arange(window)
        tail = torch.arange(max(window, n - self.tail_length), n)
        kept = torch.unique(torch.cat([head, tail]))  # sorted, no repeats
        return (kept + block_end).to(device)


def _cpu(generator):
    """The schedule's draws come from the call's generator when it is a CPU one (a CUDA generator cannot draw the
    few CPU numbers the index set needs; then torch's default CPU generator, seeded by ``torch.manual_seed``)."""
    return generator if generator is not None and generator.device.type == "cpu" else None


def check_suffix(rule: SuffixRule, gen_length: int, block_length: int, names: dict | None = None) -> None:
    """Raise ``ValueError`` naming the setting and the rule for a suffix setting that cannot run."""
    name = {"window": "suffix_window", "tail": "suffix_tail", "dropout": "suffix_dropout", **(names or {})}
    if rule.window is not None and not _count(rule.window):
        raise ValueError(f"{name['window']} must be an integer >= 0 (masked positions after the block each forward "
                         f"computes); got {rule.window!r}")
    if rule.dropout is not None and rule.dropout not in DROPOUTS:
        raise ValueError(f"{name['dropout']} must be one of {', '.join(DROPOUTS)}; got {rule.dropout!r}")
    if rule.tail is not None:
        if not _count(rule.tail):
            raise ValueError(f"{name['tail']} must be an integer >= 0; got {rule.tail!r}")
        if not rule.active:
            raise ValueError(f"{name['tail']} keeps the last positions of a pruned suffix: give {name['window']} "
                             f"or {name['dropout']} too")
        longest = gen_length - block_length  # the suffix after the first block
        if rule.tail > longest:
            raise ValueError(f"{name['tail']} ({rule.tail}) is larger than the suffix after the first block "
                             f"({longest} positions = gen_length - block_length)")
    for field, low in (("sigma", 0.0), ("scale", 0.0)):
        value = getattr(rule, field)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low < value < math.inf:
            raise ValueError(f"the dropout's {field} must be a finite number > 0; got {value!r}")
    if rule.keep is not None and not _count(rule.keep):
        raise ValueError(f"the uniform dropout's keep must be an integer >= 0; got {rule.keep!r}")


def _count(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 0
