"""The web demo's logic without a browser (support_basis/demo/): the shared model (knobs per decode, FIFO
interleaving, NFE, cancellation), the streamed steps and their confidences, settings checks, a chat turn
(single and compare mode, bad input), and the HTML rendering. Tiny random model, a few seconds in all."""

from __future__ import annotations

import queue
import threading
import time

import pytest
import torch

from generate import generate, tokenize_prompts
from support_basis.demo import render
from support_basis.demo.session import Demo
from support_basis.demo.shared_model import FairLock, SharedModel
from support_basis.demo.stepping import (DecodeRun, Failed, Finished, Settings, Step, agreement, check_settings,
                                         fast_sampling_parameters, revealed_confidence)

SMALL = Settings(exact_ratio=0.2, chebyshev_degree=6, gen_length=16, steps=8, block_length=8)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """A model of this module's own: the demo sets the knobs on its config and hooks its forward."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model_dir).eval().requires_grad_(False)


@pytest.fixture
def shared(model, tiny_tokenizer):
    s = SharedModel(model, tiny_tokenizer)
    yield s
    s.close()


@pytest.fixture(scope="module")
def prompt(tiny_tokenizer):
    return tokenize_prompts(tiny_tokenizer, ["Which of these is a source of light?"], chat=True)[0]


def run_decode(shared, prompt, settings, tag="x"):
    """Events of one decode, in order, until it ends."""
    events: queue.Queue = queue.Queue()
    DecodeRun(shared, prompt, settings, tag=tag, events=events).start().thread.join(timeout=60)
    out = []
    while not events.empty():
        out.append(events.get()[1])
    return out


def alone(model, prompt, settings):
    """The reference: generate() called directly on the model with the knobs set, no demo machinery."""
    model.config.hybrid_exact_ratio = settings.exact_ratio
    model.config.hybrid_chebyshev_degree = settings.chebyshev_degree
    out, nfe = generate(model, torch.tensor([prompt]), None, steps=settings.steps, gen_length=settings.gen_length,
                        block_length=settings.block_length, temperature=settings.temperature,
                        cfg_scale=settings.cfg_scale, remasking=settings.remasking, confidence_eos_eot_inf=True,
                        generator=torch.Generator().manual_seed(settings.seed), return_nfe=True,
                        **dict(settings.fast))
    return tuple(out[0, len(prompt):].tolist()), int(nfe[0])


# ---------------------------------------------------------------------------------------------------------------
# Shared model
# ---------------------------------------------------------------------------------------------------------------


def test_fair_lock_serves_in_request_order():
    lock, order = FairLock(), []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        while lock._next_ticket < i + 2:  # wait until thread i holds its ticket before starting the next
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_steps_and_answer_equal_generate_alone(shared, model, prompt):
    events = run_decode(shared, prompt, SMALL)
    steps, end = events[:-1], events[-1]
    assert isinstance(end, Finished) and all(isinstance(e, Step) for e in steps)
    tokens, nfe = alone(model, prompt, SMALL)
    assert end.tokens == tokens and end.nfe == nfe == SMALL.steps and end.steps == SMALL.steps
    assert [s.step for s in steps] == list(range(1, SMALL.steps + 1))
    assert [s.nfe for s in steps] == list(range(1, SMALL.steps + 1))  # the hook counts as generate() does
    mask_id = model.config.mask_token_id
    masks = [sum(t == mask_id for t in s.tokens) for s in steps]
    assert masks[-1] == 0 and all(a > b for a, b in zip(masks, masks[1:]))  # low_confidence: a few every step
    for before, after in zip([(mask_id,) * SMALL.gen_length] + [s.tokens for s in steps], steps):
        newly = tuple(b == mask_id and a != mask_id for b, a in zip(before, after.tokens))
        assert after.revealed == newly and sum(newly) > 0
        assert all((c is not None) == r for c, r in zip(after.confidence, after.revealed))
    assert steps[-1].tokens == end.tokens


@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_confidence_is_the_models_probability_of_the_revealed_token(shared, model, prompt, cfg_scale):
    """Recompute each step's probabilities with a plain full forward of the canvas before it (conditional model,
    mask token excluded) and compare with the confidences the demo read from the sampler's own forwards."""
    settings = Settings(exact_ratio=1.0, chebyshev_degree=6, gen_length=16, steps=8, block_length=8,
                        cfg_scale=cfg_scale)
    steps = [e for e in run_decode(shared, prompt, settings) if isinstance(e, Step)]
    mask_id = model.config.mask_token_id
    model.config.hybrid_exact_ratio = 1.0
    before = (mask_id,) * settings.gen_length
    for step in steps:
        x = torch.tensor([list(prompt) + list(before)])
        logits = model(x).logits[0, len(prompt):].double()
        logits[:, mask_id] = -torch.inf
        probs = torch.softmax(logits, -1)
        for i, (token, conf) in enumerate(zip(step.tokens, step.confidence)):
            if step.revealed[i]:
                assert conf == pytest.approx(float(probs[i, token]), rel=1e-5, abs=1e-9)
        before = step.tokens


@pytest.mark.parametrize("fast", [(("cache", "prefix"),), (("cache", "dual"), ("threshold", 0.05)),
                                  (("factor", 1.0),),
                                  (("cache", "dual"), ("threshold", 0.05), ("early_stop", True),
                                   ("suffix_window", 2), ("threshold_alpha", 0.3)),
                                  (("suffix_window", 3), ("suffix_dropout", "uniform"))])
def test_fast_sampling_options_stream_with_confidences(shared, model, prompt, fast):
    if not fast_sampling_parameters():
        pytest.skip("generate() has no fast-sampling options")
    settings = Settings(exact_ratio=0.2, chebyshev_degree=6, gen_length=16, steps=8, block_length=8, fast=fast)
    events = run_decode(shared, prompt, settings)
    end = events[-1]
    assert isinstance(end, Finished), end
    tokens, nfe = alone(model, prompt, settings)
    assert end.tokens == tokens and end.nfe == nfe and events[-2].nfe == nfe
    for step in events[:-1]:
        revealed = [c for c, r in zip(step.confidence, step.revealed) if r]
        assert revealed and all(c is not None and 0.0 <= c <= 1.0 for c in revealed)


def test_revealed_confidence_places_full_and_block_logits():
    gen = torch.Generator().manual_seed(0)
    seq, vocab, mask_id, start = 12, 7, 6, 4
    full = torch.randn(1, seq, vocab, generator=gen)
    positions, tokens = torch.tensor([5, 7]), torch.tensor([2, 3])
    expect = [float(torch.softmax(full[0, p, :mask_id].double(), -1)[t]) for p, t in zip(positions, tokens)]
    assert revealed_confidence(full, seq, positions, tokens, start, mask_id) == pytest.approx(expect)
    block = full[:, start:start + 4]  # logits_to_keep=slice(start, end), or a cached forward of the block
    assert revealed_confidence(block, seq, positions, tokens, start, mask_id) == pytest.approx(expect)
    assert revealed_confidence(block, seq, torch.tensor([9]), torch.tensor([1]), start, mask_id) == [None]


def test_concurrent_decodes_interleave_and_keep_their_own_knobs(shared, model, prompt):
    """Two decodes with different knobs and seeds at once: forwards interleave (FIFO), each runs with its own
    decode's knobs, and the answers equal each decode's alone."""
    a = Settings(exact_ratio=1.0, chebyshev_degree=6, gen_length=16, steps=8, block_length=8, temperature=0.7, seed=1)
    b = Settings(exact_ratio=0.1, chebyshev_degree=2, gen_length=16, steps=8, block_length=8, temperature=0.7, seed=2)
    events: queue.Queue = queue.Queue()
    forwards = []  # runs after the demo's pre-hook, i.e. with the model's lock held: the order of the forwards
    order_hook = model.register_forward_pre_hook(
        lambda m, args: forwards.append((threading.current_thread().name, m.config.hybrid_exact_ratio)))
    shared._lock.acquire()  # hold the model until both decodes wait for it: then the FIFO order is fixed
    try:
        runs = [DecodeRun(shared, prompt, s, tag=t, events=events).start() for t, s in (("a", a), ("b", b))]
        while shared._lock._next_ticket < 3:
            time.sleep(0.001)
    finally:
        shared._lock.release()
    for run in runs:
        run.thread.join(timeout=60)
    order_hook.remove()
    assert sorted(forwards) == [("decode-a", 1.0)] * 8 + [("decode-b", 0.1)] * 8  # each with its own knobs
    switches = sum(x[0] != y[0] for x, y in zip(forwards, forwards[1:]))
    assert switches >= 4  # FIFO: a decode asking for the model waits one forward, not a whole decode
    seen = []
    while not events.empty():
        seen.append(events.get())
    final = {tag: e.tokens for tag, e in seen if isinstance(e, Finished)}
    assert final["a"] == alone(model, prompt, a)[0]
    assert final["b"] == alone(model, prompt, b)[0]
    assert final["a"] != final["b"]  # different seeds at temperature 0.7: the check above could not pass by chance


def test_cancelled_decode_stops_and_frees_the_model(shared, model, prompt):
    events: queue.Queue = queue.Queue()
    shared._lock.acquire()
    run = DecodeRun(shared, prompt, SMALL, tag="x", events=events).start()
    while shared._lock._next_ticket < 2:
        time.sleep(0.001)
    run.cancel()
    shared._lock.release()
    run.thread.join(timeout=30)
    assert not run.thread.is_alive()
    kinds = []
    while not events.empty():
        kinds.append(type(events.get()[1]))
    assert Finished not in kinds and Failed not in kinds and kinds.count(Step) <= 1
    assert isinstance(run_decode(shared, prompt, SMALL)[-1], Finished)  # the lock was released


def test_unbound_threads_pass_through(shared, model, prompt):
    model.config.hybrid_exact_ratio = 0.5
    model(torch.tensor([prompt]))
    assert model.config.hybrid_exact_ratio == 0.5 and shared._lock._next_ticket == shared._lock._serving


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, words", [
    (dict(gen_length=30, block_length=16), "multiple of block_length"),
    (dict(gen_length=64, block_length=16, steps=3), "at least the number of blocks"),
    (dict(exact_ratio=1.5), "exact ratio"),
    (dict(chebyshev_degree=0), "Chebyshev degree"),
    (dict(chebyshev_degree=2.5), "Chebyshev degree"),
    (dict(steps=None), "steps"),
    (dict(temperature=None), "temperature"),
    (dict(seed=-1), "seed"),
    (dict(remasking="random", fast=(("threshold", 0.9),)), "low_confidence"),
    (dict(fast=(("suffix_window", -1),)), "suffix_window"),
    (dict(fast=(("threshold_alpha", 0.5),)), "give threshold too"),
])
def test_check_settings_names_the_bad_value(change, words):
    with pytest.raises(ValueError, match=words):
        check_settings(Settings(**{**SMALL.__dict__, **change}))


def test_check_settings_takes_whole_floats():
    s = check_settings(Settings(gen_length=64.0, steps=32.0, block_length=32.0, chebyshev_degree=6.0, seed=3.0))
    assert (s.gen_length, s.steps, s.block_length, s.chebyshev_degree, s.seed) == (64, 32, 32, 6, 3)
    assert all(type(v) is int for v in (s.gen_length, s.steps, s.block_length, s.chebyshev_degree, s.seed))


# ---------------------------------------------------------------------------------------------------------------
# A chat turn
# ---------------------------------------------------------------------------------------------------------------


def test_turn_streams_then_answers(shared, tiny_tokenizer):
    demo = Demo(shared)
    views = list(demo.turn([], [], "Which of these is a source of light?", SMALL))
    assert len(views) >= 2 and all(v.busy for v in views[:-1]) and not views[-1].busy
    assert views[0].chat[-1] == {"role": "assistant", "content": "\u2026"}
    last = views[-1]
    assert [m["role"] for m in last.chat] == ["user", "assistant"] and last.history == last.chat
    assert last.chat[-1]["content"] and last.chat[-1]["content"] != "\u2026"
    assert f'data-step="{SMALL.steps}"' in last.canvases[0] and "done:" in last.canvases[0]
    assert last.message == "" and last.canvases[1] == "" and last.agreement == ""
    # the prompt is tokenised as generate.py does it, and the next turn carries the conversation
    assert demo.prompt_ids([], "Hi") == tokenize_prompts(tiny_tokenizer, ["Hi"], chat=True)[0]
    assert len(demo.prompt_ids(last.history, "Hi")) > len(demo.prompt_ids([], "Hi"))


def test_a_turn_keeps_no_conversation_the_client_did_not_send(shared):
    """The same question with an empty chat gets the same answer, whatever history the server held (a client's
    hidden state used to leak into its next turns)."""
    demo = Demo(shared)
    fresh = list(demo.turn([], [], "Which of these is a source of light?", SMALL))[-1]
    stale = [{"role": "user", "content": "What is 7 + 5?"}, {"role": "assistant", "content": "12"}]
    again = list(demo.turn([], stale, "Which of these is a source of light?", SMALL))[-1]
    assert again.chat == fresh.chat and again.history == fresh.history


def test_turn_paces_the_display_without_slowing_the_decode(shared):
    demo = Demo(shared)
    start = time.perf_counter()
    views = list(demo.turn([], [], "Hello", SMALL, delay_seconds=0.05))
    assert time.perf_counter() - start >= 0.05 * (SMALL.steps - 1)
    steps = [int(v.canvases[0].split('data-step="')[1].split('"')[0]) for v in views]
    assert steps == list(range(1, SMALL.steps + 1)) + [SMALL.steps]  # every step shown, then the answer


def test_compare_mode_exact_vs_hybrid(shared, model, prompt):
    demo = Demo(shared)
    settings = Settings(exact_ratio=0.05, chebyshev_degree=1, gen_length=16, steps=8, block_length=8)
    last = list(demo.turn([], [], "Which of these is a source of light?", settings, compare=True))[-1]
    hybrid, exact = last.canvases
    assert "exact ratio 0.05" in hybrid and "exact attention" in exact and 'data-step="8"' in exact
    assert last.agreement.count('title="step ') == 8
    exact_tokens = alone(model, prompt, settings.with_knobs(1.0, 1))[0]
    hybrid_tokens = alone(model, prompt, settings)[0]
    final = float(last.agreement.split('data-final="')[1].split('"')[0])
    assert final == pytest.approx(agreement(exact_tokens, hybrid_tokens))
    assert "exact attention" in last.chat[-1]["content"] and "hybrid attention" in last.chat[-1]["content"]


@pytest.mark.parametrize("question, change, words", [
    ("Hello", dict(gen_length=30, block_length=16), "multiple of block_length"),
    ("Hello " * 400, dict(gen_length=512, block_length=512), "max_sequence_length"),
    ("   ", {}, "Type a question"),
])
def test_bad_input_is_a_message_and_leaves_the_chat(shared, question, change, words):
    demo = Demo(shared)
    chat = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "answer"}]
    views = list(demo.turn(chat, chat, question, Settings(**{**SMALL.__dict__, **change})))
    assert words in views[-1].message and "Traceback" not in views[-1].message
    assert views[-1].chat == chat and views[-1].history == chat and not views[-1].busy


def test_closing_the_turn_cancels_its_decode(shared):
    demo = Demo(shared)
    turn = demo.turn([], [], "Hello", Settings(gen_length=64, steps=64, block_length=64), delay_seconds=0.2)
    next(turn)
    turn.close()
    deadline = time.time() + 10
    while any(t.name.startswith("decode-") for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.01)
    assert not any(t.name.startswith("decode-") for t in threading.enumerate())


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


class _Tok:
    all_special_ids = [9]

    def convert_ids_to_tokens(self, i):
        return {1: "a", 2: "<b>", 3: "\n", 9: "<eos>"}[i]

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)


def test_canvas_shows_masks_new_and_old_tokens():
    text = render.TokenText(_Tok())
    html = render.canvas_html(text, [1, 0, 2, 9, 0, 3], [False, False, True, True, False, False],
                              [None, None, 0.9, 0.1, None, None], 0, title="t & u", step=3, stats="s")
    assert html.count('class="sb-mask"') == 2 and html.count('class="sb-new"') == 2
    assert "&lt;b&gt;" in html and "<b>" not in html and "t &amp; u" in html  # text is escaped
    assert render.confidence_colour(0.9) in html and render.confidence_colour(0.1) in html
    assert render.SPECIAL_GLYPH in html and 'data-step="3"' in html and "\u21b5" in html


def test_confidence_colour_runs_red_to_green():
    assert render.confidence_colour(0.0).startswith("hsl(0,")
    assert render.confidence_colour(1.0).startswith("hsl(120,")
    assert render.confidence_colour(7.0) == render.confidence_colour(1.0)


def test_agreement():
    assert agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError):
        agreement([1], [1, 2])
    html = render.agreement_html([0.5, 1.0], 0.875)
    assert html.count('title="step ') == 2 and "87.5%" in html and 'data-final="0.875000"' in html
