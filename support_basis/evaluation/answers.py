"""Reading the chosen letter out of a generated answer, the way a person grading it would.

The paper's runners take the first ``\\b[A-E]\\b`` in the text, so "A good choice is C." scores as A. Here, in order:

1. the whole answer is a letter, possibly decorated: ``B``, ``(B)``, ``B.``, ``**B**``, ``B) Paris``, ``B: ...``;
2. an explicit statement: ``answer is B``, ``Answer: (C)``, ``option D``, ``choice A``, ``I choose B``;
3. the answer repeats exactly one choice's text (the model wrote the option instead of its letter);
4. the first standalone letter that is not the article "A" of a sentence (``A`` followed by a lowercase word
   other than a verb or connective: "A cat ..." is an article, "A is correct" a letter);
otherwise no answer (``None``). Only the letters of the question's own choices count.

:func:`paper_choice` is the paper's parser, for numbers comparable with the paper's (``--answer_parser paper``).
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"

_DECORATION = r"[\s*_`'\"]*"
_WHOLE = re.compile(rf"^{_DECORATION}\(?([A-J])\)?{_DECORATION}(?:[.):\-]|$)")
_STATED = re.compile(
    r"(?:answer\s*(?:is|:)?|option|choice|choose|select|pick|letter)\s*(?:is\s*)?[:\-]?\s*[\(\[*\"']*([A-J])\b",
    re.IGNORECASE,
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-J])(?![A-Za-z0-9'])")


def parse_choice(text: str, n_choices: int, choices: list[str] | None = None) -> str | None:
    """The letter (``A``..) a reader would say ``text`` chose among ``n_choices`` options, or ``None``."""
    valid = LETTERS[:n_choices]
    t = text.strip()
    if not t:
        return None
    m = _WHOLE.match(t)
    if m and m.group(1) in valid and not _is_article(t, m.start(1)):
        return m.group(1)
    for m in _STATED.finditer(t):
        if m.group(1).upper() in valid and (m.group(1).isupper() or len(t) - m.end() < 3):
            return m.group(1).upper()
    if choices:
        matches = [i for i, c in enumerate(choices) if _normalise(c) and _normalise(c) == _normalise(t)]
        if len(matches) == 1:
            return valid[matches[0]]
    for m in _STANDALONE.finditer(t):
        if m.group(1) in valid and not _is_article(t, m.start(1)):
            return m.group(1)
    return None


_PAPER = re.compile(r"\b[A-E]\b")
# every reading a record can hold: the two above, OpenCompass's (the official protocol: opencompass.py) and, for
# GSM8K's numbers, lm-eval's flexible and strict extraction (gsm8k.py); each task reads with its own subset
PARSERS = ("reader", "paper", "opencompass", "flexible", "strict")


def paper_choice(text: str) -> str | None:
    """The paper's runners' parse: the first standalone capital ``A``..``E`` anywhere in ``text`` (so "A good
    choice is C." gives ``A``), whatever the number of choices; ``None`` if there is none."""
    m = _PAPER.search(text)
    return m.group(0) if m else None


_LETTER_VERBS = r"(?:is|was|seems|appears|looks|would|should|must|can|could|because|since|as|and|or|fits)\b"


def _is_article(text: str, pos: int) -> bool:
    """``A`` at ``pos`` reads as the article: followed by a lowercase word that is not a verb or connective
    ("A cat sleeps" is an article, "A is correct" names the letter)."""
    return (
        text[pos] == "A"
        and re.match(r"A\s+[a-z]", text[pos:]) is not None
        and re.match(rf"A\s+{_LETTER_VERBS}", text[pos:]) is None
    )


def _normalise(s: str) -> str:
    return re.sub(r"[\s.]+", " ", s).strip().lower()
