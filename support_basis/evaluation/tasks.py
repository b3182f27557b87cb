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


def _text(value, what: str) -> str:
    """A non-empty string field, else ``ValueError`` naming it and the value (a null question would be asked as
    "Question: None")."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is {value!r}: it must be non-empty text")
    return value


def _texts(values, what: str, n: int | None = None) -> list[str]:
    """A list of non-empty option texts (``n`` of them where given), else ``ValueError`` (a string would be split
    into letters, a null option shown as "None")."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{what} must be a list of option texts; got {type(values).__name__} {values!r:.60}")
    texts = [_text(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if n is not None and len(texts) != n:
        raise ValueError(f"{what} has {len(texts)} options; this task has {n}")
    return texts  # repeated options stay: the published sets hold a few, and refusing one would stop a whole run


def _choice_lines(choices) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(choices))


def _arc_item(idx: int, row: dict) -> Item:
    if not isinstance(row["choices"], dict):
        raise ValueError(f"choices must be an object with label and text lists; got {row['choices']!r:.60}")
    labels, texts = list(row["choices"]["label"]), _texts(row["choices"]["text"], "choices.text")
    if len(labels) != len(texts):
        raise ValueError(f"choices has {len(labels)} labels but {len(texts)} option texts")
    _text(row["question"], "question")
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
    _text(row["Question"], "Question")
    fields = ["Correct Answer"] + [f"Incorrect Answer {i}" for i in (1, 2, 3)]
    answers = [_text(row[f], f).strip() for f in fields]
    if answers[0] in answers[1:]:  # two letters would both be "correct", and the shuffle could score either
        raise ValueError(f"Correct Answer {answers[0]!r:.60} is also an Incorrect Answer")
    correct = answers[0]
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
    _text(row["ctx"], "ctx")
    endings = _texts(row["endings"], "endings")
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
    choices = _texts(row["choices"], "choices")
    _text(row["question"], "question")
    if not isinstance(row.get("subject"), str):  # per-subject accuracy groups by it (else a crash at the summary)
        raise ValueError(f"subject is {row.get('subject')!r}: it must be text (e.g. 'abstract_algebra')")
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
