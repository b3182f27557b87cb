"""A chat turn of the web demo, as a stream of ``View`` states (no Gradio here: the page only shows them).

One turn: the conversation so far plus the new question go through the chat template; one decode streams its
canvas (or, in compare mode, two decodes of the same prompt and seed, exact attention and the chosen hybrid
setting, interleaved forward by forward on the one shared model) until the answer is complete. Bad input ends the
turn with a message in the page and leaves the conversation as it was.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..loading import tokenize_prompts
from . import render
from .shared_model import SharedModel
from .stepping import DecodeRun, Failed, Finished, Settings, Step, agreement, check_settings

EXACT, HYBRID = "exact", "hybrid"


@dataclass
class View:
    """What the page shows. ``chat``: the chat box's messages (role/content dicts); ``history``: the conversation
    as the model sees it; ``canvases``: (main, comparison) HTML; ``agreement`` and ``message`` HTML; ``question``:
    what stays in the input box; ``busy``: a decode is still running."""

    chat: list[dict]
    history: list[dict]
    canvases: tuple[str, str]
    agreement: str = ""
    message: str = ""
    question: str = ""
    busy: bool = False


def knob_title(exact_ratio: float, chebyshev_degree: int) -> str:
    if exact_ratio >= 1.0:
        return "exact attention"
    return f"hybrid attention (exact ratio {exact_ratio:g}, Chebyshev degree {chebyshev_degree})"


@dataclass
class _Side:
    """One decode's progress as the page shows it."""

    title: str
    settings: Settings
    canvases: list[tuple[int, ...]] = field(default_factory=list)  # the answer region after each step
    last: Step | None = None
    finished: Finished | None = None
    failed: Failed | None = None


class Demo:
    """The demo over one ``SharedModel``: ``turn(...)`` streams one chat turn."""

    def __init__(self, shared: SharedModel, *, delay_seconds: float = 0.0):
        self.shared = shared
        tokenizer = shared.tokenizer
        self.tokenizer = tokenizer
        self.token_text = render.TokenText(tokenizer)
        self.mask_id = shared.model.config.mask_token_id
        vocab = tokenizer.get_vocab()
        self.eot_id = vocab.get("<|eot_id|>")
        self.chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.delay_seconds = delay_seconds

    def prompt_ids(self, history: list[dict], question: str) -> list[int]:
        """Token ids of the conversation plus ``question``, through the chat template as generate.py does it."""
        if not self.chat_template:
            return tokenize_prompts(self.tokenizer, [question], chat=False)[0]
        messages = history + [{"role": "user", "content": question}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenize_prompts(self.tokenizer, [text], chat=False)[0]

    def empty_canvas(self, title: str) -> str:
        return render.canvas_html(self.token_text, [], [], [], self.mask_id, title=title, step=None,
                                  stats="the answer's canvas appears here, step by step")

    def turn(self, chat: list[dict], history: list[dict], question: str, settings: Settings, *,
             compare: bool = False, delay_seconds: float | None = None) -> Iterator[View]:
        """Stream the views of one turn. ``delay_seconds`` paces the display (at least that long between two
        shown steps, so a fast decode can be watched); the decode itself never waits for the display."""
        delay = self.delay_seconds if delay_seconds is None else delay_seconds
        if len(history) != len(chat):  # the conversation is what the client sent: never a hidden one it did not
            history = [{"role": m["role"], "content": m["content"]} for m in chat
                       if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
        question = (question or "").strip()
        idle = (self.empty_canvas(""), self.empty_canvas("") if compare else "")
        if not question:
            yield View(chat, history, idle, message=render.message_html("Type a question first.", kind="info"))
            return
        try:
            settings = check_settings(settings)
            ids = self.prompt_ids(history, question)
        except ValueError as err:
            yield View(chat, history, idle, message=render.message_html(str(err)), question=question)
            return

        sides = {HYBRID: _Side(knob_title(settings.exact_ratio, settings.chebyshev_degree), settings)}
        if compare:
            exact = settings.with_knobs(1.0, settings.chebyshev_degree)
            sides = {EXACT: _Side(knob_title(1.0, settings.chebyshev_degree) + " (reference)", exact), **sides}
        events: queue.Queue = queue.Queue()
        runs = [DecodeRun(self.shared, ids, side.settings, tag=tag, events=events, eot_token_id=self.eot_id)
                for tag, side in sides.items()]
        pending_chat = chat + [{"role": "user", "content": question}, {"role": "assistant", "content": "\u2026"}]
        try:
            for run in runs:
                run.start()
            shown = 0.0
            while any(s.finished is None and s.failed is None for s in sides.values()):
                batch = [events.get()]
                if delay <= 0:  # show the newest state; every step still counts for the agreement
                    while True:
                        try:
                            batch.append(events.get_nowait())
                        except queue.Empty:
                            break
                for tag, event in batch:
                    self._record(sides[tag], event)
                if delay > 0:
                    time.sleep(max(0.0, shown + delay - time.perf_counter()))
                    shown = time.perf_counter()
                failed = next((s.failed for s in sides.values() if s.failed is not None), None)
                if failed is not None:
                    yield View(chat, history, self._canvases(sides), message=render.message_html(failed.message),
                               question=question)
                    return
                done = all(s.finished is not None for s in sides.values())
                if not done:
                    yield View(pending_chat, history, self._canvases(sides), self._agreement(sides), busy=True)
            answer = self._answer(sides[HYBRID])
            shown_answer = answer
            if compare:
                shown_answer = (f"**{sides[HYBRID].title}:** {answer}\n\n"
                                f"**{sides[EXACT].title}:** {self._answer(sides[EXACT])}")
            final_chat = chat + [{"role": "user", "content": question}, {"role": "assistant", "content": shown_answer}]
            final_history = history + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            yield View(final_chat, final_history, self._canvases(sides), self._agreement(sides))
        finally:
            for run in runs:  # the page went away (or the turn ended): stop at the next forward
                run.cancel()

    @staticmethod
    def _record(side: _Side, event):
        if isinstance(event, Step):
            side.last = event
            side.canvases.append(event.tokens)
        elif isinstance(event, Finished):
            side.finished = event
        elif isinstance(event, Failed):
            side.failed = event

    def _answer(self, side: _Side) -> str:
        text = self.tokenizer.decode(list(side.finished.tokens), skip_special_tokens=True).strip()
        return text or "(an empty answer: only end-of-text tokens)"

    def _canvas(self, side: _Side) -> str:
        step = side.last
        if step is None:
            return self.empty_canvas(side.title)
        f = side.finished
        stats = render.step_stats(step.step, side.settings.steps, step.nfe, step.step_seconds, step.model_seconds,
                                  mean_seconds=None if f is None else f.seconds / max(f.steps, 1))
        return render.canvas_html(self.token_text, step.tokens, step.revealed, step.confidence, self.mask_id,
                                  title=side.title, step=step.step, stats=stats)

    def _canvases(self, sides: dict[str, _Side]) -> tuple[str, str]:
        if EXACT in sides:
            return self._canvas(sides[HYBRID]), self._canvas(sides[EXACT])
        return self._canvas(sides[HYBRID]), ""

    @staticmethod
    def _agreement(sides: dict[str, _Side]) -> str:
        """Agreement at every step both decodes have reached (a decode that ended early keeps its final canvas)."""
        if EXACT not in sides:
            return ""
        a, b = sides[EXACT], sides[HYBRID]
        if not a.canvases or not b.canvases:
            return ""
        reached = [len(s.canvases) if s.finished is None else float("inf") for s in (a, b)]
        n = int(min(min(reached), max(len(a.canvases), len(b.canvases))))
        per_step = [agreement(a.canvases[min(k, len(a.canvases) - 1)], b.canvases[min(k, len(b.canvases) - 1)])
                    for k in range(n)]
        final = None
        if a.finished is not None and b.finished is not None:
            final = agreement(a.finished.tokens, b.finished.tokens)
        return render.agreement_html(per_step, final)
