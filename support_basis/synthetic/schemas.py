"""One synthetic problem as a row of each benchmark's hub schema (what ``--data_path`` files hold).

The rows go through the runners' own ``Task.make_item`` (``support_basis/evaluation/tasks.py``), so a synthetic
item is prompted exactly as a real ARC / GPQA / HellaSwag / MMLU item. Each row carries the problem's kind as its
subject (GPQA: its "High-level domain"), which the runners' summaries break accuracy down by.
"""

from __future__ import annotations

from ..evaluation.answers import LETTERS
from .problems import Problem


def _arc(p: Problem, idx: int) -> dict:
    return {"id": f"{p.kind}-{p.uid}", "question": p.question, "subject": p.kind,
            "choices": {"text": list(p.choices), "label": list(LETTERS[: len(p.choices)])},
            "answerKey": LETTERS[p.answer_index]}


def _gpqa(p: Problem, idx: int) -> dict:
    wrong = [c for i, c in enumerate(p.choices) if i != p.answer_index]
    row = {"Record ID": f"{p.kind}-{p.uid}", "Question": p.question, "Correct Answer": p.answer,
           "High-level domain": p.kind}
    row.update({f"Incorrect Answer {i + 1}": w for i, w in enumerate(wrong)})
    return row


def _hellaswag(p: Problem, idx: int) -> dict:
    return {"ind": idx, "activity_label": p.kind, "ctx_a": p.question, "ctx_b": "", "ctx": p.question,
            "endings": list(p.choices), "label": str(p.answer_index), "subject": p.kind}


def _mmlu(p: Problem, idx: int) -> dict:
    return {"question": p.question, "choices": list(p.choices), "answer": p.answer_index, "subject": p.kind}


def _gsm8k(p: Problem, idx: int) -> dict:
    """GSM8K's schema: the question and a worked answer ending in ``#### N`` (every synthetic answer is a number)."""
    return {"question": p.question, "answer": f"The answer is {p.answer}.\n#### {p.answer}", "subject": p.kind}


SCHEMA_WRITERS = {"arc_challenge": _arc, "arc_easy": _arc, "gpqa": _gpqa, "hellaswag": _hellaswag, "mmlu": _mmlu}
# the official protocol's files: other splits/subsets of the same schemas (see evaluation/tasks.py), and GSM8K
OFFICIAL_FILES = {"arc_challenge_validation": _arc, "gpqa_diamond": _gpqa, "gsm8k": _gsm8k}


def to_row(problem: Problem, task: str, idx: int = 0) -> dict:
    """``problem`` as a row of ``task``'s hub schema."""
    try:
        return {**SCHEMA_WRITERS, **OFFICIAL_FILES}[task](problem, idx)
    except KeyError:
        raise ValueError(f"unknown task {task!r}; the tasks are: {', '.join(SCHEMA_WRITERS)}") from None
