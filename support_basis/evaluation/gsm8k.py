"""GSM8K's answers: the gold number of a row and the three readings of a generated solution.

- ``flexible`` and ``strict``: lm-eval's ``gsm8k`` task (its ``flexible-extract`` and ``strict-match`` filters and
  its ``exact_match`` normalisation: commas, ``$``, anything up to ``#### `` and a final ``.`` removed, case
  ignored). The answer is cut at lm-eval's stop string "Question:" first, as its generation stops there.
  ``flexible`` is the last number-like run (``-?[$0-9.,]{2,}`` or ``-?[0-9]+``), ``strict`` the number after the
  first ``#### ``.
- ``opencompass``: OpenCompass's ``gsm8k_postprocess`` (what LLaDA's published GSM8K figures scored), see
  :mod:`support_basis.evaluation.opencompass`.

Each reading gives the string it extracted (``None`` where it found nothing) and whether it is correct.
"""

from __future__ import annotations

import re

from .opencompass import gsm8k_equal, gsm8k_number

PARSERS = ("opencompass", "flexible", "strict")
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def gold_number(answer) -> str:
    """The number after ``#### `` in a GSM8K ``answer`` field, commas removed; ``ValueError`` naming the problem
    for an answer without ``#### N`` (the row cannot be scored)."""
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer is {answer!r}: it must be the worked solution ending in '#### N'")
    if "#### " not in answer:
        raise ValueError(f"answer {answer[-60:]!r} has no '#### N' (GSM8K's answers end with the number after '#### ')")
    number = answer.split("#### ")[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", number):
        raise ValueError(f"answer ends in '#### {number[:40]}', which is not a number")
    return number


def _normalise(text: str) -> str:
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def _first_group(match) -> str | None:
    if isinstance(match, tuple):
        match = next((m for m in match if m), None)
    return match.strip() if match else None


def read(raw: str, gold: str) -> dict[str, tuple[str | None, bool]]:
    """``{parser: (extracted, correct)}`` for every parser in :data:`PARSERS`; ``gold`` as :func:`gold_number`."""
    cut = raw.split("Question:")[0]
    strict = _first_group(_STRICT.findall(cut)[0]) if _STRICT.search(cut) else None
    flexible_all = _FLEXIBLE.findall(cut)
    flexible = _first_group(flexible_all[-1]) if flexible_all else None
    official = gsm8k_number(raw)
    return {
        "opencompass": (None if official == "NULL" else official, gsm8k_equal(official, gold)),
        "flexible": (flexible, flexible is not None and _normalise(flexible) == _normalise(gold)),
        "strict": (strict, strict is not None and _normalise(strict) == _normalise(gold)),
    }
