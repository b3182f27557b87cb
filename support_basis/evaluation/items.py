"""An item, ready to prompt, and the checks every task's rows go through before one is made."""

from __future__ import annotations

from dataclasses import dataclass

from .answers import LETTERS


@dataclass(frozen=True)
class Item:
    """One question, ready to prompt.

    ``prompt`` is the last user turn; ``history`` the (user, assistant) turns before it (a protocol's few-shot
    examples as a conversation, empty for a single-turn prompt). ``choices`` are the options in display order
    (empty for a numeric answer); ``gold`` the correct letter, or GSM8K's number."""

    idx: int
    id: str
    prompt: str
    choices: tuple[str, ...]
    gold: str
    subject: str | None = None
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict]:
        """The conversation the chat template renders: history turns, then the prompt as the user's turn."""
        turns = [m for user, bot in self.history
                 for m in ({"role": "user", "content": user}, {"role": "assistant", "content": bot})]
        return turns + [{"role": "user", "content": self.prompt}]


class RowError(ValueError):
    """Row ``index`` of the data cannot make an item; the message says why."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def text(value, what: str) -> str:
    """A non-empty string field, else ``ValueError`` naming it and the value (a null question would be asked as
    "Question: None")."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is {value!r}: it must be non-empty text")
    return value


def texts(values, what: str, n: int | None = None) -> list[str]:
    """A list of non-empty option texts (``n`` of them where given), else ``ValueError`` (a string would be split
    into letters, a null option shown as "None")."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{what} must be a list of option texts; got {type(values).__name__} {values!r:.60}")
    out = [text(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if n is not None and len(out) != n:
        raise ValueError(f"{what} has {len(out)} options; this task has {n}")
    return out  # repeated options stay: the published sets hold a few, and refusing one would stop a whole run


def gold_index(value, n_choices: int, item: str, field: str) -> int:
    """A 0-based answer index (int or digit string) checked against the number of choices, as ARC checks its
    key: an index out of range would otherwise score every answer wrong, silently."""
    try:
        gold = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{item}: {field} {value!r} is not an index 0..{n_choices - 1}") from None
    if isinstance(value, bool) or not 0 <= gold < min(n_choices, len(LETTERS)):
        raise ValueError(f"{item}: {field} {value!r} is out of range for its {n_choices} choices (0..{n_choices - 1})")
    return gold


def arc_options(row: dict, idx) -> tuple[list[str], list, str]:
    """An ARC row's option texts, labels and answer key, checked (texts match labels, the key is a label)."""
    if not isinstance(row["choices"], dict):
        raise ValueError(f"choices must be an object with label and text lists; got {row['choices']!r:.60}")
    labels, options = list(row["choices"]["label"]), texts(row["choices"]["text"], "choices.text")
    if len(labels) != len(options):
        raise ValueError(f"choices has {len(labels)} labels but {len(options)} option texts")
    text(row["question"], "question")
    if row["answerKey"] not in labels:
        raise ValueError(f"ARC item {row.get('id', idx)}: answerKey {row['answerKey']!r} not among labels {labels}")
    return options, labels, row["answerKey"]


def lettered(options) -> str:
    """``A. first\nB. second ...``: options under their letters, one per line."""
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def per_row(make_item):
    """A whole-data builder from a one-row builder ``make_item(idx, row) -> Item`` (row errors name the row)."""
    def build(rows: list[dict], shots=None) -> list[Item]:
        items = []
        for idx, row in enumerate(rows):
            try:
                items.append(make_item(idx, row))
            except (KeyError, TypeError, ValueError, IndexError) as err:
                raise RowError(idx, str(err)) from None
        return items
    return build
