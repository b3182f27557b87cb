"""Text the tiny model's tokenizer learns its merges from: the prompts it will be trained and evaluated on.

Every benchmark wrapper (the runners' own prompts) around synthetic questions, in the chat template, plus every
number 0-999 with and without a leading space, so that the wrappers' words and each number are single tokens
(shorter sequences train faster, and a number read as one token is one thing to look up or compare).
"""

from __future__ import annotations

import random

from ..evaluation.tasks import PAPER_TASKS as TASKS
from .problems import KINDS, make_problem
from .schemas import to_row


def tokenizer_corpus(chat_template_marker: str | None = None, n_problems: int = 400, seed: int = 0) -> list[str]:
    """Lines for BPE training (deterministic). ``chat_template_marker`` is unused text kept for the header tokens."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_problems):
        p = make_problem(KINDS[i % len(KINDS)], rng)
        lines.append(p.question)
        lines.append(p.answer)
        for name, task in TASKS.items():
            lines.extend(task.make_item(i, to_row(p, name, i)).prompt.splitlines())
    lines.extend(["user", "assistant", "system"] * 50)
    numbers = [str(n) for n in range(1000)]
    for _ in range(12):
        lines.append(" ".join(numbers))
        lines.append(",".join(numbers))
    return lines
