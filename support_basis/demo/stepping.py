"""One decode streamed step by step, for the web demo.

``DecodeRun`` runs ``generate()`` (unchanged) in a worker thread on a ``SharedModel``; its ``callback(step, x)``
turns every denoising step into a ``Step`` snapshot of the answer region, which goes through a queue to the page.
The confidence of a token revealed at a step is the model's probability of that token at that step: the softmax
(mask token excluded) of the logits the decode's last forward produced at its position. With classifier-free
guidance it is the conditional model's probability (the first row of the guided forward's batch), not the guided
mixture the sampler ranks by.

Settings are checked before a decode starts (``check_settings``: generate's own ``check_schedule`` and the op's
validators), so a bad input is a message, never a partial decode.
"""

from __future__ import annotations

import dataclasses
import inspect
import queue
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import finite, whole
from ..llada.configuration_llada import validate_chebyshev_degree, validate_exact_ratio
from ..sampling import REMASKING, SamplerSettingError, check_schedule, check_streaming, generate, model_device
from ..suffix import SuffixRule

from .shared_model import Decode, DecodeCancelled, SharedModel

# generate()'s fast-sampling keywords the page offers, in display order, when generate() accepts them: Fast-dLLM's
# cache and parallel decoding, then the early stop, the pruned suffix and the context-aware threshold
SCHEDULE_KEYWORDS = ("cache", "threshold", "factor")
STREAMING_KEYWORDS = ("early_stop", "suffix_window", "suffix_dropout", "threshold_alpha")
FAST_SAMPLING_KEYWORDS = SCHEDULE_KEYWORDS + STREAMING_KEYWORDS


@dataclass(frozen=True)
class Settings:
    """One decode's settings: the hybrid knobs, generate()'s schedule and sampling options, the seed, and the
    fast-sampling keywords (``fast``: (name, value) pairs passed to generate() as they are)."""

    exact_ratio: float = 0.2
    chebyshev_degree: int = 6
    gen_length: int = 64
    steps: int = 32
    block_length: int = 32
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    seed: int = 0
    fast: tuple[tuple[str, object], ...] = ()

    def with_knobs(self, exact_ratio: float, chebyshev_degree: int) -> Settings:
        return dataclasses.replace(self, exact_ratio=exact_ratio, chebyshev_degree=chebyshev_degree)


def fast_sampling_parameters() -> dict[str, inspect.Parameter]:
    """The fast-sampling keywords generate() accepts now (empty until issue 10 lands), with their defaults."""
    params = inspect.signature(generate).parameters
    return {name: params[name] for name in FAST_SAMPLING_KEYWORDS if name in params}


def check_settings(s: Settings) -> Settings:
    """``s`` with whole numbers as ints; ``ValueError`` naming the setting, its value and the rule otherwise."""
    s = dataclasses.replace(
        s,
        gen_length=whole(s.gen_length, "gen length"),
        steps=whole(s.steps, "steps"),
        block_length=whole(s.block_length, "block length"),
        chebyshev_degree=whole(s.chebyshev_degree, "Chebyshev degree"),
        seed=whole(s.seed, "seed"),
        temperature=finite(s.temperature, "temperature"),
        cfg_scale=finite(s.cfg_scale, "CFG scale"),
        exact_ratio=validate_exact_ratio(s.exact_ratio, "exact ratio"),
    )
    validate_chebyshev_degree(s.chebyshev_degree, "Chebyshev degree")
    unknown = [name for name, _ in s.fast if name not in fast_sampling_parameters()]
    if unknown:
        raise ValueError(f"this generate() has no fast-sampling option {', '.join(unknown)}")
    fast = dict(s.fast)
    check_schedule(s.steps, s.gen_length, s.block_length, s.remasking, s.temperature, s.cfg_scale,
                   **{k: v for k, v in fast.items() if k in SCHEDULE_KEYWORDS})
    check_streaming(SuffixRule(fast.get("suffix_window"), None, fast.get("suffix_dropout")), s.gen_length,
                    s.block_length, fast.get("threshold"), fast.get("threshold_alpha"))
    if s.seed < 0:
        raise ValueError(f"seed must be >= 0; got {s.seed}")
    return s


@dataclass(frozen=True)
class Step:
    """The answer region after one denoising step.

    ``tokens (gen_length,)`` ids (the mask id where still masked); ``revealed`` marks the positions unmasked at
    this step; ``confidence`` the probability of each revealed token (None elsewhere, or where the step's logits
    could not be placed); ``step`` counts from 1; ``nfe`` forwards so far; ``step_seconds`` wall time since the
    previous step (includes waiting for another decode's forwards); ``model_seconds`` time in this step's forwards.
    """

    step: int
    tokens: tuple[int, ...]
    revealed: tuple[bool, ...]
    confidence: tuple[float | None, ...]
    nfe: int
    step_seconds: float
    model_seconds: float


@dataclass(frozen=True)
class Finished:
    """The decode ended: the final answer ids, steps run, forwards, wall and model seconds."""

    tokens: tuple[int, ...]
    steps: int
    nfe: int
    seconds: float
    model_seconds: float


@dataclass(frozen=True)
class Failed:
    """The decode stopped: ``expected`` for a bad input (a message for the user), else an internal error."""

    message: str
    expected: bool


def revealed_confidence(logits: torch.Tensor, seq_length: int, positions: torch.Tensor, tokens: torch.Tensor,
                        block_start: int, mask_id: int) -> list[float | None]:
    """Probability of ``tokens`` at absolute ``positions`` under the last forward's ``logits (rows, n, V)``.

    Row 0 is the decode's sequence (a CFG forward appends the unconditional rows). The logits cover the whole
    sequence (``n == seq_length``) or start at the current block (``logits_to_keep=slice(start, end)``, or a cached
    forward over ``x[:, start:]`` or ``x[:, start:end]``). Positions outside them get None.
    """
    n = logits.shape[1]
    offset = 0 if n == seq_length else block_start
    index = positions - offset
    inside = (index >= 0) & (index < n)
    result: list[float | None] = [None] * len(positions)
    if inside.any():
        rows = logits[0, index[inside]].double()  # a handful of rows: the cost of one softmax each
        rows[:, mask_id] = -torch.inf  # the mask token is never an answer (generate() excludes it the same way)
        probs = torch.softmax(rows, dim=-1).gather(1, tokens[inside].to(rows.device)[:, None])[:, 0]
        for slot, p in zip(inside.nonzero()[:, 0].tolist(), probs.tolist()):
            result[slot] = p
    return result


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions where two canvases show the same thing (the same token, or both still masked)."""
    if len(a) != len(b):
        raise ValueError(f"canvases differ in length ({len(a)} vs {len(b)})")
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 1.0


class DecodeRun:
    """One decode of one prompt in a worker thread; its events go to ``events`` as ``(tag, Step | Finished |
    Failed)``. ``cancel()`` stops it at its next forward (then it sends nothing more)."""

    def __init__(self, shared: SharedModel, prompt_ids: Sequence[int], settings: Settings, *, tag, events: queue.Queue,
                 eot_token_id: int | None = None):
        self.shared, self.prompt_ids, self.settings = shared, list(prompt_ids), settings
        self.tag, self.events, self.eot_token_id = tag, events, eot_token_id
        self.decode = Decode(settings.exact_ratio, settings.chebyshev_degree)
        self.thread = threading.Thread(target=self._run, name=f"decode-{tag}", daemon=True)

    def start(self) -> DecodeRun:
        self.thread.start()
        return self

    def cancel(self):
        self.decode.cancelled.set()

    def _run(self):
        self.shared.bind(self.decode)
        try:
            self._generate()
        except DecodeCancelled:
            pass
        except SamplerSettingError as err:  # generate()'s input checks: prompt too long, empty prompt, ...
            self.events.put((self.tag, Failed(str(err), expected=True)))
        except Exception as err:  # a bug: the page says so in one line, the server log keeps the traceback
            traceback.print_exc(file=sys.stderr)
            self.events.put((self.tag, Failed(f"internal error ({type(err).__name__}: {err})", expected=False)))
        finally:
            self.shared.bind(None)

    def _generate(self):
        model, s, d = self.shared.model, self.settings, self.decode
        mask_id = model.config.mask_token_id
        device = model_device(model)
        ids = torch.tensor([self.prompt_ids], dtype=torch.long, device=device)
        p = ids.shape[1]
        previous = torch.full((s.gen_length,), mask_id, dtype=torch.long)
        started = last = time.perf_counter()
        model_before, steps_done = 0.0, 0

        def on_step(step: int, x: torch.Tensor):
            nonlocal last, model_before, steps_done
            now_tokens = x[0, p:].cpu()
            revealed = (previous == mask_id) & (now_tokens != mask_id)
            positions = revealed.nonzero()[:, 0]
            confidence: list[float | None] = [None] * s.gen_length
            if len(positions) and d.logits is not None:
                block_start = p + int(positions.min()) // s.block_length * s.block_length
                values = revealed_confidence(d.logits, x.shape[1], positions + p, now_tokens[positions],
                                             block_start, mask_id)
                for i, v in zip(positions.tolist(), values):
                    confidence[i] = v
            now = time.perf_counter()
            self.events.put((self.tag, Step(step, tuple(now_tokens.tolist()), tuple(revealed.tolist()),
                                            tuple(confidence), d.nfe, now - last, d.forward_seconds - model_before)))
            last, model_before, steps_done = now, d.forward_seconds, step
            previous.copy_(now_tokens)

        generator = torch.Generator(device=device).manual_seed(s.seed)
        out, nfe = generate(model, ids, None, steps=s.steps, gen_length=s.gen_length, block_length=s.block_length,
                            temperature=s.temperature, cfg_scale=s.cfg_scale, remasking=s.remasking,
                            eot_token_id=self.eot_token_id, confidence_eos_eot_inf=True, generator=generator,
                            callback=on_step, return_nfe=True, **dict(s.fast))
        self.events.put((self.tag, Finished(tuple(out[0, p:].tolist()), steps_done, int(nfe[0]),
                                            time.perf_counter() - started, d.forward_seconds)))


__all__ = ["REMASKING", "FAST_SAMPLING_KEYWORDS", "Settings", "Step", "Finished", "Failed", "DecodeRun",
           "check_settings", "fast_sampling_parameters", "revealed_confidence", "agreement"]
