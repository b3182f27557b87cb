"""What the official protocol scores: OpenCompass's post-processing of a generated answer, rule for rule.

LLaDA-8B-Instruct's published figures were scored by OpenCompass (LLaDA's ``opencompass/`` tree, the configs named
in :mod:`support_basis.evaluation.protocols`). A number comparable with them needs the same reading of an answer,
quirks included, so each function here is a transcription of one OpenCompass post-processor's behaviour (Apache-2.0,
OpenCompass Contributors), tested on hand-written outputs in ``tests/test_protocols.py``:

- :func:`first_option`: ``first_option_postprocess(text, options='ABCD')`` (MMLU ``mmlu_gen_a484b3``, HellaSwag
  ``hellaswag_gen_6faab5``, ARC-C ``ARC_c_gen_1e0de5``): an ordered list of patterns, the first that matches
  decides, and the answer is the first of A, B, C, D (in that order, not by position) found in the matched group;
  last come the "cushion" patterns, any ``X:`` and then any capital A-D at all ("The Doctor" reads as D);
- :func:`gpqa_choice`: ``GPQA_Simple_Eval_postprocess_`` (``gpqa_fewshot_gen``): the letter inside the first
  "The correct answer is (X)", case-insensitive;
- :func:`gsm8k_number`: ``gsm8k_postprocess`` (``gsm8k_gen_1d7fe4``): the last number before any "Question:", commas
  not removed ("1,234" reads as 234), and :func:`gsm8k_equal`, its evaluator's comparison.
"""

from __future__ import annotations

import re

# first_option_postprocess's patterns, in its order ({o}: the options' characters). The Chinese ones are kept: LLaDA answers in Chinese at times,
# and a pattern that cannot match English text changes nothing for it. Two adjacent literals in OpenCompass's list
# are joined by a missing comma ('故选?...' + '只有选?项?...是?对'); the joined pattern is kept as it runs there.
_PATTERNS = (
    r"答案是?\s*([{o}])", r"答案是?\s*：\s*([{o}])", r"答案是?\s*:\s*([{o}])", r"答案选项应?该?是\s*([{o}])",
    r"答案选项应?该?为\s*([{o}])", r"答案应该?是\s*([{o}])", r"答案应该?选\s*([{o}])", r"答案选项为?\s*：\s*([{o}])",
    r"答案选项为?\s+\(?\*?\*?([{o}])\*?\*?\)?", r"答案选项是?\s*:\s*([{o}])", r"答案为\s*([{o}])", r"答案选\s*([{o}])",
    r"选择?\s*([{o}])", r"故选?\s*([{o}])只有选?项?\s?([{o}])\s?是?对", r"只有选?项?\s?([{o}])\s?是?错",
    r"只有选?项?\s?([{o}])\s?不?正确", r"只有选?项?\s?([{o}])\s?错误", r"说法不?对选?项?的?是\s?([{o}])",
    r"说法不?正确选?项?的?是\s?([{o}])", r"说法错误选?项?的?是\s?([{o}])", r"([{o}])\s?是正确的",
    r"([{o}])\s?是正确答案", r"选项\s?([{o}])\s?正确", r"所以答\s?([{o}])", r"所以\s?([{o}][.。$]?$)",
    r"所有\s?([{o}][.。$]?$)", r"[\s，：:,]([{o}])[。，,\.]?$", r"[\s，,：:][故即]([{o}])[。\.]?$",
    r"[\s，,：:]因此([{o}])[。\.]?$", r"[是为。]\s?([{o}])[。\.]?$", r"因此\s?([{o}])[。\.]?$",
    r"显然\s?([{o}])[。\.]?$", r"答案是\s?(\S+)(?:。|$)", r"答案应该是\s?(\S+)(?:。|$)", r"答案为\s?(\S+)(?:。|$)",
    r"(?i)ANSWER\s*:\s*([{o}])", r"[Tt]he answer is:?\s+\(?([{o}])\)?", r"[Tt]he answer is:?\s+\(?\*?\*?([{o}])\*?\*?\)?",
    r"[Tt]he answer is option:?\s+\(?([{o}])\)?", r"[Tt]he correct answer is:?\s+\(?([{o}])\)?",
    r"[Tt]he correct answer is option:?\s+\(?([{o}])\)?", r"[Tt]he correct answer is:?.*?boxed{{([{o}])}}",
    r"[Tt]he correct option is:?.*?boxed{{([{o}])}}", r"[Tt]he correct answer option is:?.*?boxed{{([{o}])}}",
    r"[Tt]he answer to the question is:?\s+\(?([{o}])\)?", r"^选项\s?([{o}])", r"^([{o}])\s?选?项",
    r"(\s|^)[{o}][\s。，,：:\.$]", r"1.\s?(.*?)$", r"1.\s?([{o}])[.。$]?$",
    r"([{o}]):", r"([{o}])",  # the "cushion"
)
_COMPILED: dict[str, list[re.Pattern]] = {}


def first_option(text: str, options: str = "ABCD") -> str:
    """The option OpenCompass's ``first_option_postprocess`` reads in ``text``, or ``""`` for none.

    A pattern that matches with an empty or whitespace-only group does not decide (no option is in it): the next
    pattern is tried, as there."""
    patterns = _COMPILED.get(options)
    if patterns is None:
        patterns = _COMPILED[options] = [re.compile(p.format(o=options), re.DOTALL) for p in _PATTERNS]
    text = text.strip()
    for pattern in patterns:
        m = pattern.search(text)
        if not m:
            continue
        found = m.group(1) if m.group(1) else m.group(0)
        for option in options:
            if option in found:
                return option
    return ""


_GPQA = re.compile(r"The correct answer is \(([^)]+)\)", re.IGNORECASE)


def gpqa_choice(text: str) -> str:
    """GPQA's official reading: what is inside the first "The correct answer is (...)", stripped; ``" "`` if none
    (so it never equals a letter)."""
    m = _GPQA.search(text)
    return m.group(1).strip() if m else " "


_NUMBER = re.compile(r"\-?\d+\.\d+|\-?\d+")


def gsm8k_number(text: str) -> str:
    """GSM8K's official reading: the last number (``-1.5``, ``42``) before the first "Question:", ``"NULL"`` if
    none. Commas are not removed, so "1,234" reads as ``234``, as OpenCompass scores it."""
    numbers = _NUMBER.findall(text.split("Question:")[0])
    return numbers[-1] if numbers else "NULL"


def gsm8k_equal(pred: str, reference: str) -> bool:
    """OpenCompass's GSM8K comparison: equal strings, or ``float(pred)`` within 1e-6 of ``int(reference)``."""
    try:
        return pred == reference or abs(float(pred) - int(reference)) < 1e-6
    except (ValueError, OverflowError):
        return False


def hellaswag_text(text: str) -> str:
    """HellaSwag text as OpenCompass's ``hellaswag.jsonl`` holds it (lm-eval's legacy preprocessing of the hub rows:
    strip, " [title]" -> ". ", bracketed WikiHow artefacts removed, double spaces made single)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")
