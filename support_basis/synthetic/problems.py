"""The synthetic task family: questions whose answers can only be found by looking at the right tokens.

Kinds (``KINDS``):

- ``recall``: "In the list c=41, q=73, m=25, x=90, what is the value of q?" with 4-8 pairs (distinct lowercase
  keys, distinct two-digit values); the choices are the right value and three other values of the same list, so
  only looking the key up answers it (training's curriculum also draws 2-3 pairs, filled with absent values);
- ``largest`` / ``smallest``: "Which number is the largest: 512, 87, 903, 240?" among four distinct integers 0-999
  (the choices are the four numbers);
- ``add`` / ``sub``: "What is 47 + 38?" / "What is 47 - 38?" with a, b in 0-99 (b <= a for subtraction) and
  near-miss distractors (off by 1, 2 or 10).

Every problem has four choices with the right one at a uniformly drawn position, and a free-form answer (the
value's text). The held-out split is fixed by a hash of the question text (one question in ``HELDOUT_MOD``), so
training can never see a held-out question whatever its seed.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass

KINDS = ("recall", "largest", "smallest", "add", "sub")
HELDOUT_MOD = 10


@dataclass(frozen=True)
class Problem:
    """One question. ``choices`` in display order; ``answer_index`` points at the right one."""

    kind: str
    question: str
    choices: tuple[str, ...]
    answer_index: int

    @property
    def answer(self) -> str:
        return self.choices[self.answer_index]

    @property
    def uid(self) -> str:
        return hashlib.sha256(self.question.encode()).hexdigest()[:16]


def is_heldout(question: str) -> bool:
    """The fixed split: held out iff the question's hash falls in bucket 0 of ``HELDOUT_MOD``."""
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % HELDOUT_MOD == 0


def _place(rng: random.Random, right: str, others: list[str]) -> tuple[tuple[str, ...], int]:
    """Four choices with ``right`` at a uniform position (the others keep a random order)."""
    others = list(others)
    rng.shuffle(others)
    pos = rng.randrange(4)
    others.insert(pos, right)
    return tuple(others), pos


def recall(rng: random.Random, n_pairs: int | None = None) -> Problem:
    n = n_pairs if n_pairs is not None else rng.randint(4, 8)
    if not 2 <= n <= 26:
        raise ValueError(f"n_pairs must be in 2..26; got {n}")
    keys = rng.sample(string.ascii_lowercase, n)
    values = [str(v) for v in rng.sample(range(10, 100), n)]
    target = rng.randrange(n)
    pairs = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
    question = f"In the list {pairs}, what is the value of {keys[target]}?"
    others = [v for i, v in enumerate(values) if i != target]
    if len(others) < 3:  # short curriculum lists: fill with values that are not in the list
        others += [str(v) for v in rng.sample(sorted(set(range(10, 100)) - set(map(int, values))), 3 - len(others))]
    others = rng.sample(others, 3)
    choices, pos = _place(rng, values[target], others)
    return Problem("recall", question, choices, pos)


def recall_many(rng: random.Random, n_pairs: int, n_queries: int) -> Problem:
    """Training only: several keys asked at once ("what are the values of q, x and c?" -> "73, 90, 41"), so one
    sequence carries ``n_queries`` lookups of the skill ``recall`` tests (denser signal for a tiny model)."""
    keys = rng.sample(string.ascii_lowercase, n_pairs)
    values = [str(v) for v in rng.sample(range(10, 100), n_pairs)]
    asked = rng.sample(range(n_pairs), n_queries)
    pairs = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
    names = [keys[i] for i in asked]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    answer = ", ".join(values[i] for i in asked)
    return Problem("recall_many", f"In the list {pairs}, what are the values of {listed}?", (answer,), 0)


def extreme(rng: random.Random, which: str) -> Problem:
    numbers = rng.sample(range(1000), 4)
    right = max(numbers) if which == "largest" else min(numbers)
    question = f"Which number is the {which}: {', '.join(map(str, numbers))}?"
    choices, pos = _place(rng, str(right), [str(n) for n in numbers if n != right])
    return Problem(which, question, choices, pos)


def arithmetic(rng: random.Random, op: str) -> Problem:
    a, b = rng.randrange(100), rng.randrange(100)
    if op == "sub" and b > a:
        a, b = b, a
    value = a + b if op == "add" else a - b
    near = sorted({value + d for d in (-10, -2, -1, 1, 2, 10)} - {value})
    near = [n for n in near if n >= 0]
    others = [str(n) for n in rng.sample(near, 3)]
    choices, pos = _place(rng, str(value), others)
    return Problem(op, f"What is {a} {'+' if op == 'add' else '-'} {b}?", choices, pos)


def make_problem(kind: str, rng: random.Random, **kwargs) -> Problem:
    """A problem of ``kind`` (one of ``KINDS``) drawn with ``rng``; ``n_pairs=`` for recall."""
    if kind == "recall":
        return recall(rng, **kwargs)
    if kind in ("largest", "smallest"):
        return extreme(rng, kind)
    if kind in ("add", "sub"):
        return arithmetic(rng, kind)
    raise ValueError(f"unknown kind {kind!r}; the kinds are: {', '.join(KINDS)}")


def training_problem(kind: str, rng: random.Random, **kwargs) -> Problem:
    """A problem of ``kind`` that is not in the held-out split (redrawn until it is not)."""
    while True:
        p = make_problem(kind, rng, **kwargs)
        if not is_heldout(p.question):
            return p


def heldout_problems(kind: str, n: int, seed: int = 1234) -> list[Problem]:
    """``n`` distinct held-out problems of ``kind``, deterministic for a seed."""
    rng = random.Random(f"heldout:{kind}:{seed}")
    out, seen = [], set()
    while len(out) < n:
        p = make_problem(kind, rng)
        if is_heldout(p.question) and p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return out
