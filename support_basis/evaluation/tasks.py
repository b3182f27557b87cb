"""The five benchmarks: where their data lives, how an item becomes a prompt, and what its answer key is.

Prompts are the paper's runners' prompts, word for word (including MMLU's "Questions:"). What differs from the
paper's runners, on purpose:
- ARC's items labelled 1-4 (some test questions are) are shown as A-D like every other item, so they can be
  answered; items with 3 or 5 choices keep their own number of choices.
- GPQA uses the real dataset's schema (``Idavidrein/gpqa``, config ``gpqa_main``, split ``train``: ``Question``,
  ``Correct Answer``, ``Incorrect Answer 1-3``); its four answers are shuffled with a seed fixed per question.
- HellaSwag's gold is ``int(label)``; MMLU keeps each item's ``subject`` for per-subject accuracy.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from .answers import LETTERS


@dataclass(frozen=True)
class Item:
    """One question, ready to prompt: ``choices`` in display order, ``gold`` the correct letter."""

    idx: int
    id: str
    prompt: str
    choices: tuple[str, ...]
    gold: str
    subject: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    hub_id: str
    hub_config: str | None
    split: str
    gen_length: int  # the paper's answer length
    fields: tuple[str, ...]  # the hub schema's fields an item needs
    make_item: Callable[[int, dict], Item]
    gated: bool = False


def _choice_lines(choices) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(choices))


def _arc_item(idx: int, row: dict) -> Item:
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if row["answerKey"] not in labels:
        raise ValueError(f"ARC item {row.get('id', idx)}: answerKey {row['answerKey']!r} not among labels {labels}")
    prompt = (
        "\nYou're given a science question with multiple choices. Read the question carefully and choose the best "
        "answer. Respond with only the letter of the correct choice.\n\n"
        f"Question: {row['question']}\n\nChoices:\n{_choice_lines(texts)}\n\nAnswer:"
    )
    return Item(idx, str(row.get("id", idx)), prompt, tuple(texts), LETTERS[labels.index(row["answerKey"])],
                row.get("subject"))


def _gpqa_item(idx: int, row: dict, seed: int = 0) -> Item:
    correct = row["Correct Answer"].strip()
    answers = [correct] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
    key = str(row.get("Record ID") or row["Question"])
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big"))
    rng.shuffle(answers)
    prompt = (
        "\nYou're given a graduate-level science question with multiple choices. Read the question carefully and "
        "choose the best answer. Respond with only the letter of the correct choice.\n\n"
        f"Question: {row['Question'].strip()}\n\nChoices:\n{_choice_lines(answers)}\n\nAnswer:"
    )
    return Item(idx, key, prompt, tuple(answers), LETTERS[answers.index(correct)], row.get("High-level domain"))


def _hellaswag_item(idx: int, row: dict) -> Item:
    endings = list(row["endings"])
    if len(endings) != 4 or str(row["label"]).strip() == "":
        raise ValueError(f"HellaSwag item {row.get('ind', idx)} needs 4 endings and a label (the test split has none)")
    prompt = (
        "\nYou're given a context followed by four possible endings. Choose the best option to complete the "
        f"sentence.\n\nContext: {row['ctx']}\n\nOptions:\n{_choice_lines(endings)}\n\n"
        "Answer with the letter (A, B, C, or D) that best completes the context.\nAnswer:"
    )
    gold = _gold_index(row["label"], len(endings), f"HellaSwag item {row.get('ind', idx)}", "label")
    return Item(idx, str(row.get("ind", idx)), prompt, tuple(endings), LETTERS[gold], row.get("subject"))


def _mmlu_item(idx: int, row: dict) -> Item:
    choices = list(row["choices"])
    prompt = (
        "\nAnswer the following multiple-choice question:.\n\n"
        f"Questions: {row['question']}\n\nOptions:\n{_choice_lines(choices)}\n\n"
        "Answer with the letter (A, B, C, or D) that best answers the question.\nAnswer:"
    )
    subject = row.get("subject")
    gold = _gold_index(row["answer"], len(choices), f"MMLU item {idx}", "answer")
    return Item(idx, f"{subject}/{idx}", prompt, tuple(choices), LETTERS[gold], subject)


def _gold_index(value, n_choices: int, item: str, field: str) -> int:
    """A 0-based answer index (int or digit string) checked against the number of choices, as ARC checks its
    key: an index out of range would otherwise score every answer wrong, silently."""
    try:
        gold = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{item}: {field} {value!r} is not an index 0..{n_choices - 1}") from None
    if isinstance(value, bool) or not 0 <= gold < min(n_choices, len(LETTERS)):
        raise ValueError(f"{item}: {field} {value!r} is out of range for its {n_choices} choices (0..{n_choices - 1})")
    return gold


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("arc_challenge", "ARC-Challenge", "allenai/ai2_arc", "ARC-Challenge", "test", 32,
             ("question", "choices", "answerKey"), _arc_item),
        Task("arc_easy", "ARC-Easy", "allenai/ai2_arc", "ARC-Easy", "test", 32,
             ("question", "choices", "answerKey"), _arc_item),
        Task("gpqa", "GPQA (main)", "Idavidrein/gpqa", "gpqa_main", "train", 64,
             ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
             _gpqa_item, gated=True),
        Task("hellaswag", "HellaSwag", "Rowan/hellaswag", None, "validation", 32,
             ("ctx", "endings", "label"), _hellaswag_item),
        Task("mmlu", "MMLU", "cais/mmlu", "all", "test", 32, ("question", "choices", "answer", "subject"),
             _mmlu_item),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the tasks are: {', '.join(TASKS)}") from None
