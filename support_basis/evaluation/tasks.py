"""The benchmarks: where their data lives, how an item becomes a prompt, what its answer key is and how an answer
is read, under each protocol (``paper``, ``official``: :mod:`support_basis.evaluation.protocols`).

Under ``paper`` (the five multiple-choice tasks), prompts are the paper's runners' prompts, word for word (including MMLU's "Questions:"). What differs from the
paper's runners, on purpose:
- ARC's items labelled 1-4 (some test questions are) are shown as A-D like every other item, so they can be
  answered; items with 3 or 5 choices keep their own number of choices.
- GPQA uses the real dataset's schema (``Idavidrein/gpqa``, config ``gpqa_main``, split ``train``: ``Question``,
  ``Correct Answer``, ``Incorrect Answer 1-3``); its four answers are shuffled with a seed fixed per question.
- HellaSwag's gold is ``int(label)``; MMLU keeps each item's ``subject`` for per-subject accuracy.

Under ``official`` the items are LLaDA's OpenCompass ones (:mod:`support_basis.evaluation.official`), and GSM8K
(``openai/gsm8k``, ``main``, test) joins, under that protocol only: the paper gave no GSM8K prompt, and its 32-token
answers cannot hold the worked solution that GSM8K's answer extraction reads.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from . import gsm8k, official
from .answers import LETTERS, paper_choice, parse_choice
from .items import Item, arc_options, gold_index, lettered, per_row, text, texts
from .opencompass import first_option, gpqa_choice


@dataclass(frozen=True)
class Source:
    """Where one protocol's items of a task come from and how they are built.

    ``build(rows, shot_rows) -> items`` makes every item at once (raising :class:`~.items.RowError` for a bad row),
    since some official items depend on other rows: MMLU's shots, GPQA's shuffle drawn through the rows, ARC's
    left-out rows. ``local`` is the file stem looked for in a ``--data_path`` directory (``<local>.jsonl``);
    ``shots_split``/``shots_local`` likewise for the few-shot split where the prompt retrieves examples."""

    hub_config: str | None
    split: str
    fields: tuple[str, ...]  # the hub schema's fields a row needs
    build: Callable[[list[dict], list[dict] | None], list[Item]]
    local: str
    shots_split: str | None = None
    shots_local: str | None = None
    title: str | None = None  # the task's name in reports where the data differs by protocol (GPQA's subset)


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    hub_id: str
    gen_length: int  # the paper's answer length
    protocols: dict[str, Source]  # the protocols that define this task; the first is its runner's default
    parsers: tuple[str, ...]  # the answer readings every record holds; the first is "parsed"/"correct"
    read: Callable[[Item, str], dict]  # (item, answer) -> {parser: (what it read, correct)}
    make_item: Callable[[int, dict], Item] | None = None  # the paper's prompt of one row (None: no paper protocol)
    gated: bool = False

    def source(self, protocol: str) -> Source:
        """The data and builder of ``protocol``; ``ValueError`` saying which protocols the task has."""
        if protocol not in self.protocols:
            if self.name == "gsm8k":
                raise ValueError("gsm8k has no paper protocol (the paper gave no GSM8K prompt, and its 32-token "
                                 "answers cannot hold a worked solution); run it with --protocol official")
            from .protocols import OFFICIAL

            raise ValueError(f"--protocol {protocol}: {self.name} has no {protocol} setting (LLaDA's OpenCompass "
                             f"configs define {', '.join(OFFICIAL)}); run it with --protocol "
                             f"{next(iter(self.protocols))}")
        return self.protocols[protocol]


def _arc_item(idx: int, row: dict) -> Item:
    options, labels, key = arc_options(row, idx)
    prompt = (
        "\nYou're given a science question with multiple choices. Read the question carefully and choose the best "
        "answer. Respond with only the letter of the correct choice.\n\n"
        f"Question: {row['question']}\n\nChoices:\n{lettered(options)}\n\nAnswer:"
    )
    return Item(idx, str(row.get("id", idx)), prompt, tuple(options), LETTERS[labels.index(key)], row.get("subject"))


def _gpqa_item(idx: int, row: dict, seed: int = 0) -> Item:
    text(row["Question"], "Question")
    fields = ["Correct Answer"] + [f"Incorrect Answer {i}" for i in (1, 2, 3)]
    answers = [text(row[f], f).strip() for f in fields]
    if answers[0] in answers[1:]:  # two letters would both be "correct", and the shuffle could score either
        raise ValueError(f"Correct Answer {answers[0]!r:.60} is also an Incorrect Answer")
    correct = answers[0]
    key = str(row.get("Record ID") or row["Question"])
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big"))
    rng.shuffle(answers)
    prompt = (
        "\nYou're given a graduate-level science question with multiple choices. Read the question carefully and "
        "choose the best answer. Respond with only the letter of the correct choice.\n\n"
        f"Question: {row['Question'].strip()}\n\nChoices:\n{lettered(answers)}\n\nAnswer:"
    )
    return Item(idx, key, prompt, tuple(answers), LETTERS[answers.index(correct)], row.get("High-level domain"))


def _hellaswag_item(idx: int, row: dict) -> Item:
    text(row["ctx"], "ctx")
    endings = texts(row["endings"], "endings")
    if len(endings) != 4 or str(row["label"]).strip() == "":
        raise ValueError(f"HellaSwag item {row.get('ind', idx)} needs 4 endings and a label (the test split has none)")
    prompt = (
        "\nYou're given a context followed by four possible endings. Choose the best option to complete the "
        f"sentence.\n\nContext: {row['ctx']}\n\nOptions:\n{lettered(endings)}\n\n"
        "Answer with the letter (A, B, C, or D) that best completes the context.\nAnswer:"
    )
    gold = gold_index(row["label"], len(endings), f"HellaSwag item {row.get('ind', idx)}", "label")
    return Item(idx, str(row.get("ind", idx)), prompt, tuple(endings), LETTERS[gold], row.get("subject"))


def _mmlu_item(idx: int, row: dict) -> Item:
    choices = texts(row["choices"], "choices")
    text(row["question"], "question")
    if not isinstance(row.get("subject"), str):  # per-subject accuracy groups by it (else a crash at the summary)
        raise ValueError(f"subject is {row.get('subject')!r}: it must be text (e.g. 'abstract_algebra')")
    prompt = (
        "\nAnswer the following multiple-choice question:.\n\n"
        f"Questions: {row['question']}\n\nOptions:\n{lettered(choices)}\n\n"
        "Answer with the letter (A, B, C, or D) that best answers the question.\nAnswer:"
    )
    subject = row.get("subject")
    gold = gold_index(row["answer"], len(choices), f"MMLU item {idx}", "answer")
    return Item(idx, f"{subject}/{idx}", prompt, tuple(choices), LETTERS[gold], subject)


CHOICE_PARSERS = ("reader", "paper", "opencompass")


def _read_choice(official_reading):
    def read(item: Item, raw: str) -> dict:
        """The letter each parser reads in ``raw`` and whether it is the gold one."""
        found = {"reader": parse_choice(raw, len(item.choices), list(item.choices)), "paper": paper_choice(raw),
                 "opencompass": official_reading(raw).strip() or None}  # GPQA's " ": nothing read
        return {p: (v, v == item.gold) for p, v in found.items()}
    return read


def _read_number(item: Item, raw: str) -> dict:
    return gsm8k.read(raw, item.gold)


_ARC_FIELDS = ("question", "choices", "answerKey")
_GPQA_FIELDS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
_MMLU_FIELDS = ("question", "choices", "answer", "subject")
_HELLASWAG_OFFICIAL = ("activity_label", "ctx_a", "ctx_b", "endings", "label")

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("arc_challenge", "ARC-Challenge", "allenai/ai2_arc", 32, {
            "paper": Source("ARC-Challenge", "test", _ARC_FIELDS, per_row(_arc_item), "arc_challenge"),
            "official": Source("ARC-Challenge", "validation", _ARC_FIELDS, official.build_arc,
                               "arc_challenge_validation", title="ARC-Challenge (validation)"),
        }, CHOICE_PARSERS, _read_choice(first_option), _arc_item),
        Task("arc_easy", "ARC-Easy", "allenai/ai2_arc", 32, {
            "paper": Source("ARC-Easy", "test", _ARC_FIELDS, per_row(_arc_item), "arc_easy"),
        }, CHOICE_PARSERS, _read_choice(first_option), _arc_item),
        Task("gpqa", "GPQA", "Idavidrein/gpqa", 64, {
            "paper": Source("gpqa_main", "train", _GPQA_FIELDS, per_row(_gpqa_item), "gpqa", title="GPQA (main)"),
            "official": Source("gpqa_diamond", "train", _GPQA_FIELDS, official.build_gpqa, "gpqa_diamond",
                               title="GPQA (diamond)"),
        }, CHOICE_PARSERS, _read_choice(gpqa_choice), _gpqa_item, gated=True),
        Task("hellaswag", "HellaSwag", "Rowan/hellaswag", 32, {
            "paper": Source(None, "validation", ("ctx", "endings", "label"), per_row(_hellaswag_item), "hellaswag"),
            "official": Source(None, "validation", _HELLASWAG_OFFICIAL, official.build_hellaswag, "hellaswag"),
        }, CHOICE_PARSERS, _read_choice(first_option), _hellaswag_item),
        Task("mmlu", "MMLU", "cais/mmlu", 32, {
            "paper": Source("all", "test", _MMLU_FIELDS, per_row(_mmlu_item), "mmlu"),
            "official": Source("all", "test", _MMLU_FIELDS, official.build_mmlu, "mmlu", "dev", "mmlu_dev"),
        }, CHOICE_PARSERS, _read_choice(first_option), _mmlu_item),
        Task("gsm8k", "GSM8K", "openai/gsm8k", 512, {
            "official": Source("main", "test", ("question", "answer"), official.build_gsm8k, "gsm8k"),
        }, gsm8k.PARSERS, _read_number),
    )
}
# the tasks the paper's protocol defines (its five multiple-choice runners)
PAPER_TASKS: dict[str, Task] = {n: t for n, t in TASKS.items() if t.make_item is not None}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the tasks are: {', '.join(TASKS)}") from None
