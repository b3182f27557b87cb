"""HTML of the web demo's pieces: a canvas, its statistics, the agreement strip, a message. Pure functions.

A canvas is the answer region after a step: masks as grey blocks, the tokens revealed at this step on a background
coloured by their confidence (red = low, green = high), earlier tokens plain, special tokens (EOS, EoT) as a dim
symbol. Inline styles only (the page's HTML component keeps them; no stylesheet to load). Every piece carries a
``data-*`` attribute or class the browser test reads (``sb-canvas``, ``data-step``, ``sb-mask``, ``sb-new``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache

MASK_GLYPH = "\u2591\u2591"  # light shade: a still-masked position
SPECIAL_GLYPH = "\u2205"  # empty set: EOS / EoT and other special tokens


class TokenText:
    """The display text of one token id (byte-level pieces joined as the tokenizer would), cached per id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.text = lru_cache(maxsize=None)(self._text)

    def _text(self, token_id: int) -> str:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        return self.tokenizer.convert_tokens_to_string([token]) if token is not None else f"<{token_id}>"


def confidence_colour(confidence: float) -> str:
    """CSS background for a token revealed with ``confidence`` in [0, 1]: red (0) through yellow to green (1)."""
    c = min(max(float(confidence), 0.0), 1.0)
    return f"hsl({120 * c:.0f}, 80%, 78%)"


def _token_span(text: str, *, cls: str, style: str = "", title: str = "") -> str:
    title_attr = f' title="{html.escape(title, quote=True)}"' if title else ""
    return f'<span class="{cls}" style="{style}"{title_attr}>{html.escape(text)}</span>'


def canvas_html(token_text: TokenText, tokens: Sequence[int], revealed: Sequence[bool],
                confidence: Sequence[float | None], mask_id: int, *, title: str, step: int | None,
                stats: str = "") -> str:
    """One canvas: ``tokens`` of the answer region (``mask_id`` where masked), ``revealed`` / ``confidence`` of the
    current step (see ``stepping.Step``), a ``title`` and a one-line ``stats`` under it; ``step`` None = not started.
    """
    pieces = []
    box = "border-radius:3px;padding:0 1px;margin:0 1px;"
    for token, new, conf in zip(tokens, revealed, confidence):
        if token == mask_id:
            pieces.append(_token_span(MASK_GLYPH, cls="sb-mask", style=box + "background:#d4d4d8;color:#a1a1aa;"))
            continue
        special = token in token_text.special_ids
        text = token_text.text(token)
        shown = SPECIAL_GLYPH if special else text.replace("\n", "\u21b5\n")
        tip = (f"{text!r} " if special else "") + (f"p={conf:.2f}" if conf is not None else "")
        if new:
            colour = confidence_colour(conf) if conf is not None else "#e5e7eb"
            pieces.append(_token_span(shown, cls="sb-new", style=box + f"background:{colour};color:#111827;",
                                      title=tip))
        elif special:
            pieces.append(_token_span(shown, cls="sb-old sb-special", style="color:#9ca3af;", title=tip))
        else:
            pieces.append(_token_span(shown, cls="sb-old", style="color:inherit;"))
    step_attr = "" if step is None else f' data-step="{step}"'
    return (
        f'<div class="sb-canvas"{step_attr} style="font-family:ui-monospace,monospace;font-size:14px;'
        'line-height:1.9;">'
        f'<div class="sb-title" style="font-weight:600;">{html.escape(title)}</div>'
        f'<div class="sb-stats" style="color:#6b7280;font-size:12px;">{html.escape(stats)}</div>'
        f'<div class="sb-tokens" style="white-space:pre-wrap;word-break:break-word;">{"".join(pieces)}</div>'
        "</div>"
    )


def step_stats(step: int, total: int, nfe: int, step_seconds: float, model_seconds: float,
               mean_seconds: float | None = None) -> str:
    """``step 5/16 · 0.21 s/step (model 0.18 s) · NFE 5``; with ``mean_seconds``, the finished decode's mean."""
    timing = f"{step_seconds:.3f} s this step (model {model_seconds:.3f} s)"
    if mean_seconds is not None:
        timing = f"done: {mean_seconds:.3f} s/step on average"
    return f"step {step}/{total} \u00b7 {timing} \u00b7 NFE {nfe}"


def legend_html() -> str:
    """What the colours mean."""
    swatches = "".join(
        f'<span style="background:{confidence_colour(c)};padding:0 6px;margin:0 1px;border-radius:3px;">'
        f"{c:.1f}</span>"
        for c in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        '<div class="sb-legend" style="font-size:12px;color:#4b5563;">'
        f"revealed this step, by confidence: {swatches} \u00b7 "
        f'<span style="background:#d4d4d8;color:#a1a1aa;padding:0 3px;border-radius:3px;">{MASK_GLYPH}</span> '
        f"still masked \u00b7 {SPECIAL_GLYPH} end of text \u00b7 plain: revealed at an earlier step</div>"
    )


def agreement_html(per_step: Sequence[float], final: float | None) -> str:
    """A strip of bars (one per step, height = share of positions where exact and hybrid agree) and the figures."""
    if not per_step:
        return ""
    bars = "".join(
        f'<span title="step {i}: {a:.0%}" style="display:inline-block;width:6px;margin-right:1px;'
        f'height:{max(2, round(28 * a))}px;background:{confidence_colour(a)};vertical-align:bottom;"></span>'
        for i, a in enumerate(per_step, 1)
    )
    figures = f"agreement at step {len(per_step)}: {per_step[-1]:.1%}"
    if final is not None:
        figures += f" \u00b7 final answer: {final:.1%} of positions agree"
    return (
        f'<div class="sb-agreement" data-final="{"" if final is None else f"{final:.6f}"}" '
        'style="font-size:13px;">'
        f'<div style="height:30px;">{bars}</div><div>exact vs hybrid, same prompt and seed: {figures}</div></div>'
    )


def message_html(message: str, *, kind: str = "error") -> str:
    """A message in the page (an input to fix, or an internal error in one line)."""
    colour = {"error": "#b91c1c", "info": "#1d4ed8"}[kind]
    return (
        f'<div class="sb-message sb-{kind}" style="color:{colour};font-weight:600;">'
        f"{html.escape(message)}</div>"
    )
