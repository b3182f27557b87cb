"""The synthetic task family: deterministic, right answer keys, a held-out split training never sees."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from support_basis.evaluation.answers import LETTERS
from support_basis.evaluation.tasks import PAPER_TASKS as TASKS
from support_basis.synthetic import KINDS, heldout_problems, is_heldout, make_problem, to_row, training_problem


def _solve(p) -> str:
    """The answer, worked out independently from the question text."""
    q = p.question
    if p.kind == "recall":
        pairs = dict(re.findall(r"([a-z])=(\d+)", q))
        return pairs[re.search(r"value of ([a-z])\?", q).group(1)]
    if p.kind in ("largest", "smallest"):
        nums = [int(n) for n in re.findall(r"\d+", q.split(":")[1])]
        return str(max(nums) if p.kind == "largest" else min(nums))
    a, op, b = re.match(r"What is (\d+) ([+-]) (\d+)\?", q).groups()
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


@pytest.mark.parametrize("kind", KINDS)
def test_answer_keys_are_right_and_choices_distinct(kind):
    rng = random.Random(f"keys-{kind}")
    for _ in range(300):
        p = make_problem(kind, rng)
        assert p.answer == _solve(p)
        assert len(p.choices) == 4 and len(set(p.choices)) == 4
        if kind == "recall":  # the distractors are values of the same list: only the lookup answers it
            values = set(re.findall(r"=(\d+)", p.question))
            assert set(p.choices) <= values and 4 <= len(values) <= 8


def test_right_letter_is_uniform():
    rng = random.Random(7)
    counts = Counter(make_problem(KINDS[i % len(KINDS)], rng).answer_index for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(850 < c < 1150 for c in counts.values()), counts  # 1000 expected each; 5 sigma ~ 140


def test_generator_is_deterministic_and_split_is_fixed():
    a = [training_problem("recall", random.Random(3)) for _ in range(5)]
    b = [training_problem("recall", random.Random(3)) for _ in range(5)]
    assert a == b
    assert heldout_problems("add", 50, seed=9) == heldout_problems("add", 50, seed=9)
    rng = random.Random(11)
    assert not any(is_heldout(training_problem(k, rng).question) for k in KINDS for _ in range(400))
    held = heldout_problems("recall", 200)
    assert all(is_heldout(p.question) for p in held) and len({p.question for p in held}) == 200


@pytest.mark.parametrize("task", sorted(TASKS))
def test_rows_go_through_the_runners_unchanged(task):
    """Each schema row becomes an item with the right gold letter and the problem's kind as subject."""
    for i, p in enumerate(heldout_problems("recall", 10) + heldout_problems("sub", 10)):
        item = TASKS[task].make_item(i, to_row(p, task, i))
        assert item.choices[LETTERS.index(item.gold)] == p.answer
        assert sorted(item.choices) == sorted(p.choices)
        assert item.subject == p.kind
        assert p.question in item.prompt


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind 'mul'"):
        make_problem("mul", random.Random(0))
