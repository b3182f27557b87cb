"""The Gradio page of the web demo: widgets, events, the queue. The logic lives in ``session`` / ``stepping``.

``build_page(demo, model_name)`` returns the ``gr.Blocks``; ``launch(page, host, port)`` serves it offline (no
analytics, no share link, no server-side rendering, system fonts: nothing is fetched from the internet).
"""

from __future__ import annotations

import os

# Gradio reads these at import: set them before importing it (the app must work with no internet at all).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from .. import sampling  # noqa: E402

from . import render  # noqa: E402
from .session import Demo, View  # noqa: E402
from ..suffix import DROPOUTS  # noqa: E402
from .stepping import REMASKING, Settings, fast_sampling_parameters  # noqa: E402

# Several users' turns run at once; their forwards interleave on the one model (see shared_model).
CONCURRENT_TURNS = 4

THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


# The fast-sampling keywords whose "off" is None; their widgets send 0 (or "off") for it.
OFF_AT_ZERO = ("threshold", "factor", "suffix_window", "suffix_dropout", "threshold_alpha")


def _fast_widget(name: str, parameter):
    """A widget for one of generate()'s fast-sampling keywords (issue 10)."""
    if name == "cache":
        return gr.Dropdown(list(sampling.CACHE_MODES), value=parameter.default, label="cache",
                           info="keys/values kept: of the prompt side (prefix) or of all but the current block "
                                "(dual); approximate")
    if name == "threshold":
        return gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="threshold",
                         info="reveal every position at least this confident (0 = off: the fixed schedule)")
    if name == "factor":
        return gr.Slider(0.0, 4.0, value=0.0, step=0.1, label="factor",
                         info="reveal the n most confident while the n-th is >= 1 - factor/(n+1) (0 = off)")
    if name == "early_stop":
        return gr.Checkbox(value=False, label="early stop",
                           info="stop once a revealed block holds the end of the answer (EOS / <|eot_id|>)")
    if name == "suffix_window":
        return gr.Slider(0, 256, value=0, step=1, label="suffix window",
                         info="compute only this many masked positions after the block, and the last (0 = off)")
    if name == "suffix_dropout":
        return gr.Dropdown(["off", *DROPOUTS], value="off", label="suffix dropout",
                           info="DPad: keep a random subset of the masked suffix (over the window, if set)")
    if name == "threshold_alpha":
        return gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="threshold alpha",
                         info="with a threshold: lower it as the block fills, T (1 - alpha (1 - masked share)); 0 = off")
    raise ValueError(f"no widget for generate()'s keyword {name!r}")


def _fast_value(name: str, value):
    if name in OFF_AT_ZERO and (not value or value == "off"):
        return None
    return int(value) if name == "suffix_window" else value  # a slider may send 16.0


def build_page(demo: Demo, *, model_name: str) -> gr.Blocks:
    config = demo.shared.model.config
    defaults = Settings(exact_ratio=config.hybrid_exact_ratio, chebyshev_degree=config.hybrid_chebyshev_degree)
    max_len = int(getattr(config, "max_sequence_length", 4096))
    fast = fast_sampling_parameters()

    with gr.Blocks(title="Support-basis attention: LLaDA demo", analytics_enabled=False) as page:
        gr.Markdown(
            f"## Watch a masked-diffusion LM answer, with support-basis hybrid attention\n"
            f"Model: `{model_name}`. The answer starts as masks; every step the model predicts all masked "
            "positions and reveals the most confident ones. Compare mode decodes the same prompt and seed with "
            "exact attention and with the hybrid setting, side by side."
        )
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="chat", height=220, elem_id="sb-chat")
                question = gr.Textbox(placeholder="Ask a question and press Enter", show_label=False,
                                      elem_id="sb-question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="sb-send")
                    stop = gr.Button("Stop", elem_id="sb-stop")
                    clear = gr.Button("Clear", elem_id="sb-clear")
                message = gr.HTML("", elem_id="sb-message")
                gr.HTML(render.legend_html())
                with gr.Row():
                    canvas = gr.HTML(demo.empty_canvas(""), elem_id="sb-canvas-main")
                    canvas_exact = gr.HTML("", elem_id="sb-canvas-exact", visible=False)
                agreement = gr.HTML("", elem_id="sb-agreement")
            with gr.Column(scale=2):
                with gr.Accordion("Attention", open=True):
                    exact_ratio = gr.Slider(0.0, 1.0, value=defaults.exact_ratio, step=0.01, label="exact ratio",
                                            info="share of each head's scores weighted exactly (1 = exact attention)",
                                            elem_id="sb-exact-ratio")
                    degree = gr.Slider(1, 16, value=defaults.chebyshev_degree, step=1, label="Chebyshev degree",
                                       elem_id="sb-degree")
                    compare = gr.Checkbox(False, label="compare: exact vs hybrid, same prompt and seed",
                                          elem_id="sb-compare")
                with gr.Accordion("Sampling", open=True):
                    gen_length = gr.Slider(1, min(max_len, 1024), value=defaults.gen_length, step=1,
                                           label="gen length", info="answer tokens", elem_id="sb-gen-length")
                    steps = gr.Slider(1, 1024, value=defaults.steps, step=1, label="steps", info="total, all blocks",
                                      elem_id="sb-steps")
                    block_length = gr.Slider(1, min(max_len, 1024), value=defaults.block_length, step=1,
                                             label="block length", info="gen length must be a multiple of it",
                                             elem_id="sb-block-length")
                    temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature")
                    cfg_scale = gr.Slider(0.0, 4.0, value=defaults.cfg_scale, step=0.1, label="CFG scale")
                    remasking = gr.Dropdown(list(REMASKING), value=defaults.remasking, label="remasking")
                    seed = gr.Number(defaults.seed, precision=0, label="seed", minimum=0)
                    delay = gr.Slider(0.0, 1.0, value=demo.delay_seconds, step=0.01, label="display delay (s)",
                                      info="at least this long between shown steps, to watch a fast decode",
                                      elem_id="sb-delay")
                fast_widgets = {}
                if fast:
                    with gr.Accordion("Fast sampling", open=True):
                        fast_widgets = {name: _fast_widget(name, p) for name, p in fast.items()}

        knobs = [exact_ratio, degree, gen_length, steps, block_length, temperature, cfg_scale, remasking, seed]
        fast_names = list(fast_widgets)

        def respond(text, chat_value, history_value, compare_on, delay_s, *values):
            fast_values = ((n, _fast_value(n, v)) for n, v in zip(fast_names, values[len(knobs):]))
            s = Settings(*values[: len(knobs)], fast=tuple((n, v) for n, v in fast_values if v is not None))
            for view in demo.turn(list(chat_value or []), list(history_value or []), text, s, compare=compare_on,
                                  delay_seconds=delay_s or 0.0):
                yield _outputs(view)

        outputs = [chat, history, canvas, canvas_exact, agreement, message, question]
        inputs = [question, chat, history, compare, delay, *knobs, *fast_widgets.values()]
        events = [
            question.submit(respond, inputs, outputs, concurrency_limit=CONCURRENT_TURNS, show_progress="hidden"),
            send.click(respond, inputs, outputs, concurrency_limit=CONCURRENT_TURNS, show_progress="hidden"),
        ]
        stop.click(None, None, None, cancels=events)
        clear.click(lambda: ([], [], demo.empty_canvas(""), "", "", ""), None,
                    [chat, history, canvas, canvas_exact, agreement, message], queue=False)
        compare.change(lambda on: gr.update(visible=on), compare, canvas_exact, queue=False)
    return page


def _outputs(view: View):
    """The values of ``outputs`` in build_page, in its order."""
    return view.chat, view.history, *view.canvases, view.agreement, view.message, view.question


def launch(page: gr.Blocks, host: str, port: int):
    """Serve ``page`` until interrupted: queued events, nothing fetched from or sent to the internet."""
    page.queue(default_concurrency_limit=CONCURRENT_TURNS).launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, mcp_server=False, pwa=False,
        show_error=False, quiet=False, inbrowser=False, theme=gr.themes.Default(**THEME_FONTS),
        footer_links=[],
    )
