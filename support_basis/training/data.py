"""Training batches: (prompt, answer) token pairs laid out as LLaDA's SFT expects them.

A row is ``prompt + answer + <|eot_id|> + EOS ... EOS``: every row of a batch is filled with EOS to the batch's
length, and the EOS filling is part of the response (LLaDA learns to end its answers by predicting EOS for the
rest of the canvas). ``min_response`` makes the canvas at least that long after the longest prompt, so the model
also sees long answer canvases like those it samples into (``gen_length`` 32 or 128).

Batches are a pure function of ``(seed, step)``: resuming at step N reproduces exactly the batches an
uninterrupted run would have seen, whatever happened before.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model_dir import MASK_TOKEN

from ..evaluation.tasks import TASKS
from ..synthetic import KINDS, to_row, training_problem


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    answer: list[int]  # the answer's tokens and the end-of-turn token


def collate(examples: list[Example], eos_id: int, min_response: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, response_mask)``, both ``(B, L)``, rows right-filled with EOS (part of the response)."""
    longest_prompt = max(len(e.prompt) for e in examples)
    length = max(max(len(e.prompt) + len(e.answer) for e in examples), longest_prompt + min_response)
    ids = torch.full((len(examples), length), eos_id, dtype=torch.long)
    response = torch.ones(len(examples), length, dtype=torch.bool)
    for i, e in enumerate(examples):
        ids[i, : len(e.prompt) + len(e.answer)] = torch.tensor(e.prompt + e.answer)
        response[i, : len(e.prompt)] = False
    return ids, response


class Encoder:
    """Prompts through the chat template exactly as the sampler and the runners tokenise them."""

    def __init__(self, tokenizer):
        from ..loading import tokenize_prompts

        self.tokenizer = tokenizer
        self._tokenize = tokenize_prompts
        vocab = tokenizer.get_vocab()
        self.eot_id = vocab.get("<|eot_id|>", tokenizer.eos_token_id)
        self.eos_id = tokenizer.eos_token_id

    def example(self, prompt: str, answer: str, lead_space: bool = False) -> Example:
        """``lead_space``: tokenise the answer as `` answer`` (a byte-level BPE gives " 742" and "742" different
        ids; the sampler's output is decoded and stripped, so the space never reaches a parser)."""
        prompt_ids = self._tokenize(self.tokenizer, [prompt], chat=True)[0]
        answer_ids = self.tokenizer((" " if lead_space else "") + answer.strip(), add_special_tokens=False)["input_ids"]
        return Example(prompt_ids, answer_ids + [self.eot_id])


# Benchmark wrappers a multiple-choice question is shown in during training (ARC's twice: it is the target format).
WRAPPERS = ("arc_challenge", "arc_challenge", "gpqa", "hellaswag", "mmlu")
# Minimum response lengths, drawn per batch: mostly just the batch's own length (LLaDA's EOS filling), so the
# answer tokens keep a large share of each sequence's loss; sometimes the samplers' 32 and 128-token canvases.
RESPONSE_CANVAS = (0, 0, 0, 0, 0, 0, 32, 32, 32, 128)


# How often each kind is drawn: the targets most; recall a little less than the comparisons, since no run here has
# learned its lookup (README); arithmetic is the stretch goal.
KIND_WEIGHTS = {"recall": 0.2, "largest": 0.35, "smallest": 0.35, "add": 0.05, "sub": 0.05}


class SyntheticSource:
    """The synthetic task family as an endless, seeded stream of batches, with a curriculum over ``progress``.

    A batch is one kind, one list length and one format (the question alone, or one benchmark's prompt), so its
    prompts have the same number of tokens and LLaDA's EOS filling adds nothing: the answer and its end-of-turn
    token are the whole response, and the answer carries half of each sequence's loss (with mixed lengths the EOS
    filling dilutes it, and a tiny model measured here stayed at chance for thousands of steps). A minority of
    batches get the samplers' 32- and 128-token canvases so the model also learns to fill them with EOS.
    Free-form answers are the value; multiple-choice answers are the chosen option's text, which the runners'
    reader parser scores (a tiny model learns the value long before it can bind it to a letter). An answer that the
    prompt shows after a space (" 742" in "largest: 742, ..." and in the options) is tokenised with that space, so
    the answer token is the very token the prompt holds: copied through tied embeddings, it needs no learned
    mapping from " 742" to "742" (an earlier shipped model's misses on largest/smallest were near-miss numbers).
    Curriculum: lists of 2-4 pairs for the first 20 % of steps, then 2-6, from 40 % the evaluated 4-8; 70 % of the
    batches free-form until 40 %, then 40 %. Kinds are drawn by ``KIND_WEIGHTS``.
    """

    def __init__(self, encoder: Encoder, seed: int, kinds: tuple[str, ...] = KINDS):
        self.encoder, self.seed, self.kinds = encoder, seed, kinds

    def batch(self, step: int, batch_size: int, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(f"{self.seed}:{step}")
        free_share = 0.7 if progress < 0.4 else 0.4
        wrapper = None if rng.random() < free_share else rng.choice(WRAPPERS)
        pairs = (2, 4) if progress < 0.2 else (2, 6) if progress < 0.4 else (4, 8)
        kind = rng.choices(self.kinds, weights=[KIND_WEIGHTS[k] for k in self.kinds])[0]
        kwargs = {"n_pairs": rng.randint(*pairs)} if kind == "recall" else {}
        examples = []
        for i in range(batch_size):
            p = training_problem(kind, rng, **kwargs)
            prompt = p.question if wrapper is None else TASKS[wrapper].make_item(i, to_row(p, wrapper, i)).prompt
            examples.append(self.encoder.example(prompt, p.answer, lead_space=f" {p.answer}" in prompt))
        return collate(examples, self.encoder.eos_id, rng.choice(RESPONSE_CANVAS))


class DataError(ValueError):
    """A training file that cannot be used; the message names the file, the line and what is wrong."""


class JsonlSource:
    """SFT data from a JSONL file: ``{"prompt": ..., "response": ...}`` or ``{"messages": [{"role", "content"},
    ...]}`` (the last message is the assistant's answer; earlier turns go through the chat template as the
    prompt). Shuffled per epoch with the seed; batch ``step`` is fixed by ``(seed, step)``."""

    def __init__(self, path: str | Path, encoder: Encoder, seed: int, min_response: int = 0):
        self.encoder, self.seed, self.min_response = encoder, seed, min_response
        self.path = Path(path)
        self.rows = _read_rows(self.path)

    def batch(self, step: int, batch_size: int, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.rows)
        first = step * batch_size
        picked = []
        for j in range(first, first + batch_size):
            epoch, pos = divmod(j, n)
            order = list(range(n))
            random.Random(f"{self.seed}:epoch{epoch}").shuffle(order)
            picked.append(self.rows[order[pos]])
        return collate([self._example(r) for r in picked], self.encoder.eos_id, self.min_response)

    def check_lengths(self, limit: int) -> None:
        """Every row fits the model's ``limit`` (``max_sequence_length``) with its EOS filling: else a
        :class:`DataError` naming the row, before any training step."""
        for n, row in enumerate(self.rows, 1):
            e = self._example(row)
            length = len(e.prompt) + max(len(e.answer), self.min_response)
            if length > limit:
                raise DataError(f"training data {self.path}, row {n}: {length} tokens (prompt {len(e.prompt)}, "
                                f"response {len(e.answer)}), more than the model's max_sequence_length ({limit}); "
                                "shorten or drop that row")

    def _example(self, row) -> Example:
        if isinstance(row, tuple):
            return self.encoder.example(*row)
        tok = self.encoder.tokenizer
        prompt_ids = tok(tok.apply_chat_template(row[:-1], add_generation_prompt=True, tokenize=False))["input_ids"]
        answer = tok(row[-1]["content"].strip(), add_special_tokens=False)["input_ids"]
        return Example(prompt_ids, answer + [self.encoder.eot_id])


def _read_rows(path: Path) -> list:
    if not path.is_file():
        raise DataError(f"training data {path}: no such file (give a JSONL file of prompt/response rows)")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"training data {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"training data {path}, line {n}: not JSON ({err.msg})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            rows.append((row["prompt"], row["response"]))
            texts = [row["prompt"], row["response"]]
        elif isinstance(row, dict) and _valid_messages(row.get("messages")):
            rows.append(row["messages"])
            texts = [m["content"] for m in row["messages"]]
        else:
            raise DataError(f"training data {path}, line {n}: expected {{\"prompt\": str, \"response\": str}} or "
                            "{\"messages\": [..., {\"role\": \"assistant\", \"content\": str}]}")
        if any(MASK_TOKEN in t for t in texts):  # it would tokenise to the mask id: a target the model must never learn
            raise DataError(f"training data {path}, line {n}: the text holds the mask token {MASK_TOKEN} (the position "
                            "the model fills in, never an answer or a prompt); remove it from that row")
    if not rows:
        raise DataError(f"training data {path}: the file holds no rows")
    return rows


def _valid_messages(m) -> bool:
    return (isinstance(m, list) and len(m) >= 2 and all(isinstance(x, dict) and isinstance(x.get("content"), str)
            and isinstance(x.get("role"), str) for x in m) and m[-1]["role"] == "assistant")
