"""generate.py: the diffusion sampler against a literal per-row transcription of the official algorithm, batching,
guidance, the EOS/EoT options, errors and the command line."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from generate import add_gumbel_noise, generate, left_pad, steps_per_block, transfer_schedule


def reference_generate(model, prompt, *, steps, gen_length, block_length, cfg_scale=0.0, mask_id, eos_eot=None):
    """Greedy LLaDA sampling for ONE unpadded prompt ``(1, P)``, written as the official sampler does it (full
    logits, float64 softmax over every position, a Python loop per row) with steps split by ``steps_per_block``
    and the mask token never predicted. ``eos_eot=(eos, eot)``: its ``confidence_eos_eot_inf`` at temperature 0,
    both logits set to -inf after the argmax (an EOS/EoT prediction has confidence 0, any other its probability
    renormalised without them)."""
    p = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], dim=1)
    prompt_index = x != mask_id
    for block, block_steps in enumerate(steps_per_block(steps, gen_length // block_length)):
        lo, hi = p + block * block_length, p + (block + 1) * block_length
        n_masked = int((x[:, lo:hi] == mask_id).sum())
        per_step = [n_masked // block_steps + (i < n_masked % block_steps) for i in range(block_steps)]
        for i in range(block_steps):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits, un_logits = torch.chunk(model(torch.cat([x, un_x])).logits, 2)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x).logits
            logits[..., mask_id] = -float("inf")  # the one deliberate addition (see generate's docstring)
            x0 = logits.argmax(-1)
            if eos_eot is not None:
                logits[..., list(eos_eot)] = -float("inf")
            x0_p = F.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            x0_p[:, hi:] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=torch.float64))
            for row in range(confidence.shape[0]):
                idx = torch.topk(confidence[row], k=per_step[i]).indices
                x[row, idx] = x0[row, idx]
    return x


@pytest.fixture
def prompts(rng):
    return [torch.randint(0, 400, (n,), generator=rng) for n in (3, 11, 7)]


@pytest.mark.parametrize("ratio", [0.2, 1.0])
@pytest.mark.parametrize("steps,gen_length,block_length", [(8, 8, 8), (6, 12, 4), (5, 8, 4), (8, 32, 32)])
def test_batched_greedy_equals_official_algorithm_per_prompt(tiny_model, prompts, ratio, steps, gen_length,
                                                             block_length):
    tiny_model.config.hybrid_exact_ratio = ratio
    try:
        cfg = tiny_model.config
        ids, mask = left_pad(prompts, cfg.pad_token_id)
        out = generate(tiny_model, ids, mask, steps=steps, gen_length=gen_length, block_length=block_length)
        assert out.shape == (3, ids.shape[1] + gen_length)
        for i, s in enumerate(prompts):
            ref = reference_generate(tiny_model, s[None], steps=steps, gen_length=gen_length,
                                     block_length=block_length, mask_id=cfg.mask_token_id)
            assert torch.equal(out[i, ids.shape[1] - len(s) :], ref[0])
            alone = generate(tiny_model, s[None], steps=steps, gen_length=gen_length, block_length=block_length)
            assert torch.equal(alone[0], ref[0])
        assert not (out[:, ids.shape[1] :] == cfg.mask_token_id).any()
    finally:
        tiny_model.config.hybrid_exact_ratio = 0.2


def test_cfg_with_and_without_mask(tiny_model, prompts):
    cfg = tiny_model.config
    kw = dict(steps=4, gen_length=8, block_length=8, cfg_scale=1.5)
    ids, mask = left_pad(prompts, cfg.pad_token_id)
    batched = generate(tiny_model, ids, mask, **kw)
    for i, s in enumerate(prompts):
        alone = generate(tiny_model, s[None], **kw)  # no attention mask at all
        ref = reference_generate(tiny_model, s[None], mask_id=cfg.mask_token_id, **kw)
        assert torch.equal(alone[0], ref[0])
        assert torch.equal(batched[i, ids.shape[1] - len(s) :], ref[0])


def test_logits_to_keep_equals_slicing(tiny_model, rng):
    ids = torch.randint(0, 400, (2, 20), generator=rng)
    full = tiny_model(ids).logits
    assert torch.allclose(tiny_model(ids, logits_to_keep=slice(5, 12)).logits, full[:, 5:12], atol=1e-5)
    assert torch.allclose(tiny_model(ids, logits_to_keep=3).logits, full[:, -3:], atol=1e-5)


class ScriptedModel(torch.nn.Module):
    """A stand-in mask predictor with fixed per-position preferences: position j of the answer predicts token
    ``prefer[j]`` with confidence increasing in ``rank[j]``. Records every call."""

    def __init__(self, prefer, rank, vocab=32, mask_id=31, eos_id=30, max_len=64):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=mask_id, eos_token_id=eos_id, max_sequence_length=max_len)
        self.prefer, self.rank, self.vocab, self.calls = prefer, rank, vocab, []
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, attention_mask=None):
        self.calls.append((x.clone(), None if attention_mask is None else attention_mask.clone()))
        b, l = x.shape
        g = len(self.prefer)
        logits = torch.zeros(b, l, self.vocab)
        logits[:, l - g :] = -5.0
        for j, (tok, r) in enumerate(zip(self.prefer, self.rank)):
            logits[:, l - g + j, tok] = 2.0 + r  # higher rank: more confident
        return SimpleNamespace(logits=logits)


def test_schedule_reveals_most_confident_first_and_counts_forwards():
    prefer = [5, 6, 7, 8, 9, 10, 11, 12]
    rank = [0, 7, 1, 6, 2, 5, 3, 4]
    model = ScriptedModel(prefer, rank)
    seen = []
    out = generate(model, torch.tensor([[1, 2]]), steps=4, gen_length=8, block_length=8,
                   callback=lambda step, x: seen.append((x[0, 2:] != 31).nonzero()[:, 0].tolist()))
    assert out[0, 2:].tolist() == prefer
    assert len(model.calls) == 4
    # 8 masked tokens over 4 steps: 2 per step, most confident (highest rank) first
    assert seen == [[1, 3], [1, 3, 5, 7], [1, 3, 4, 5, 6, 7], list(range(8))]


def test_blocks_are_revealed_left_to_right_and_uneven_steps():
    model = ScriptedModel(list(range(5, 13)), [7, 6, 5, 4, 3, 2, 1, 0])
    firsts = []
    generate(model, torch.tensor([[1]]), steps=5, gen_length=8, block_length=4,
             callback=lambda step, x: firsts.append(int((x[0, 1:] != 31).sum())))
    # 2 blocks share 5 steps as [3, 2]: block 0 reveals 4 tokens in 3 steps (2, 1, 1), block 1 in 2 steps (2, 2)
    assert steps_per_block(5, 2) == [3, 2]
    assert firsts == [2, 3, 4, 6, 8]
    assert len(model.calls) == 5


def test_eos_options_hold_at_every_temperature():
    prefer = [30, 6, 30, 8]  # EOS (30) is the most confident prediction at two positions
    rank = [9, 1, 8, 2]
    for temperature in (0.0, 0.7):
        gen = torch.Generator().manual_seed(0)
        order = []
        model = ScriptedModel(prefer, rank)
        generate(model, torch.tensor([[1]]), steps=4, gen_length=4, block_length=4, temperature=temperature,
                 confidence_eos_eot_inf=True, generator=gen,
                 callback=lambda s, x: order.append(x[0, 1:].tolist()))
        assert 30 not in order[1]  # EOS positions are revealed last, whatever their confidence
        model = ScriptedModel(prefer, rank)
        out = generate(model, torch.tensor([[1]]), steps=4, gen_length=4, block_length=4, temperature=temperature,
                       logits_eos_inf=True, generator=gen)
        assert 30 not in out[0].tolist()  # EOS never generated


def test_cfg_mixes_conditional_and_unconditional_logits():
    class Probe(ScriptedModel):
        def forward(self, x, attention_mask=None):
            out = super().forward(x, attention_mask)
            # the unconditional copy (prompt masked) prefers token 3 strongly
            unconditional = (x[:, :1] == self.config.mask_token_id)[:, :, None]
            out.logits = torch.where(unconditional & (torch.arange(self.vocab) == 3), 20.0, out.logits)
            return out

    model = Probe([5, 6], [1, 0])
    out = generate(model, torch.tensor([[1]]), steps=2, gen_length=2, block_length=2, cfg_scale=1.0)
    x, mask = model.calls[0]
    assert x.shape[0] == 2 and (x[1, :1] == 31).all() and mask is None  # second half: prompt masked, no mask
    assert out[0, 1:].tolist() == [5, 6]  # guidance pushes away from the unconditional favourite (3)


def test_gumbel_sampling_follows_softmax_of_logits_over_temperature():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0]).expand(40000, 4)
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.5, 1.0, 2.0):
        counts = torch.bincount(add_gumbel_noise(logits, temperature, gen).argmax(-1), minlength=4) / 40000
        assert torch.allclose(counts.double(), torch.softmax(logits[0].double() / temperature, 0), atol=0.01)
    assert add_gumbel_noise(logits, 0.0) is logits


def test_seeded_sampling_is_reproducible(tiny_model, prompts):
    ids, mask = left_pad(prompts, tiny_model.config.pad_token_id)
    kw = dict(steps=4, gen_length=8, block_length=4, temperature=1.0, remasking="random")
    a = generate(tiny_model, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(tiny_model, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    c = generate(tiny_model, ids, mask, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_transfer_schedule_spreads_remainder_first():
    assert transfer_schedule(torch.tensor([10, 8]), 4).tolist() == [[3, 3, 2, 2], [2, 2, 2, 2]]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(steps=4, gen_length=10, block_length=4), "multiple of block_length"),
        (dict(steps=1, gen_length=8, block_length=4), "at least the number of blocks"),
        (dict(steps=4, gen_length=4000, block_length=4000), "exceeds the model's max_sequence_length"),
        (dict(steps=4, gen_length=8, block_length=8, remasking="top_p"), "remasking must be one of"),
        (dict(steps=0, gen_length=8, block_length=8), "steps must be a positive integer"),
    ],
)
def test_bad_settings_are_explained(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.tensor([[1, 2, 3]]), **kwargs)


def test_bad_inputs_are_explained(tiny_model):
    cfg = tiny_model.config
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(tiny_model, torch.zeros(1, 0, dtype=torch.long), steps=2, gen_length=4, block_length=4)
    ids = torch.tensor([[cfg.mask_token_id, 5, 6]])
    with pytest.raises(ValueError, match="padding uses the mask token"):
        generate(tiny_model, ids, torch.tensor([[0, 1, 1]]), steps=2, gen_length=4, block_length=4)
    with pytest.raises(ValueError, match="is empty"):
        generate(tiny_model, ids, torch.tensor([[0, 0, 0]]), steps=2, gen_length=4, block_length=4)
    rows = tiny_model.get_input_embeddings().num_embeddings
    for bad, match in [(torch.tensor([[5, rows]]), f"token id {rows} outside the model's vocabulary \\[0, {rows}\\)"),
                       (torch.tensor([[-1, 5]]), "token id -1 outside"),  # was an IndexError (a GPU assert)
                       (torch.tensor([[5.0, 6.0]]), "integer token ids"),  # was embedding's RuntimeError
                       (torch.tensor([[True, False]]), "integer token ids")]:
        with pytest.raises(ValueError, match=match):
            generate(tiny_model, bad, steps=2, gen_length=4, block_length=4)


def run_cli(capsys, *args):
    """The command line in-process (``main(argv)``): returns (exit code, stdout, stderr)."""
    import generate as cli

    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int) and exit_.code:
            print(exit_.code, file=sys.stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_batches_prompts_and_shows_steps(tiny_model_dir, capsys):
    base = ["--model", str(tiny_model_dir), "--prompt", "Hello there", "--prompt", "A longer question here?",
            "--gen-length", "8", "--steps", "4", "--block-length", "4", "--exact-ratio", "0.3",
            "--chebyshev-degree", "4"]
    code1, one, _ = run_cli(capsys, *base, "--batch-size", "1")
    code2, two, err = run_cli(capsys, *base, "--batch-size", "2", "--show-steps")
    assert code1 == code2 == 0
    assert one == two and one.count("=== [") == 2
    assert "[step 4/4]" in err and "exact_ratio=0.3 chebyshev_degree=4" in err
    code, _, err = run_cli(capsys, *base, "--no-chat")
    assert code == 0 and "chat=False" in err


def test_cli_errors(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", str(tmp_path / "missing"), "--prompt", "x")
    assert code != 0 and "does not exist" in err
    code, _, err = run_cli(capsys, "--model", str(tiny_model_dir), "--prompt", "x", "--exact-ratio", "1.5")
    assert code == 2 and "--exact-ratio must be in [0, 1]" in err
    code, _, err = run_cli(capsys, "--model", str(tiny_model_dir), "--prompt", "x", "--steps", "1",
                           "--gen-length", "8", "--block-length", "4")
    assert code == 2 and "number of blocks" in err


def test_cli_checks_the_prompts_before_the_weights_load(tiny_model_dir, capsys, monkeypatch):
    """A prompt too long for the window is refused from the tokenizer and config alone (a minute sooner on the 8B)."""
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded before the prompts were checked")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    code, out, err = run_cli(capsys, "--model", str(tiny_model_dir), "--prompt", "apple " * 2000,
                             "--gen-length", "8", "--block-length", "8", "--steps", "8")
    assert code == 2 and out == "" and "exceeds the model's max_sequence_length" in err


@pytest.mark.slow
def test_cli_as_a_script(tiny_model_dir):
    res = subprocess.run([sys.executable, str(REPO / "generate.py"), "--model", str(tiny_model_dir), "--prompt",
                          "Hi", "--gen-length", "4", "--steps", "2", "--block-length", "4"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("=== [0] Hi")


def test_eos_last_ranks_as_llada_does(tiny_model, rng):
    """confidence_eos_eot_inf: the other positions' order is LLaDA's (renormalised without EOS/EoT). The model's
    EOS and EoT are two frequent tokens of its answers, so the option changes the outcome; where LLaDA reveals no
    EOS/EoT (so no tie among their zero confidences was ever broken by its topk), the two agree token for token."""
    cfg = tiny_model.config
    plain = [generate(tiny_model, torch.randint(0, 400, (n,), generator=rng)[None], steps=8, gen_length=8,
                      block_length=8)[0, -8:] for n in (3, 5, 9, 12)]
    common = torch.cat(plain).bincount().topk(2).indices.tolist()  # the answers' two most frequent tokens
    eos, eot = common
    compared = changed = 0
    for seed in range(24):
        prompt = torch.randint(0, 400, (3 + seed,), generator=torch.Generator().manual_seed(seed))[None]
        kw = dict(steps=8, gen_length=8, block_length=8)
        ours = generate(tiny_model, prompt, eos_token_id=eos, eot_token_id=eot, confidence_eos_eot_inf=True, **kw)
        ref = reference_generate(tiny_model, prompt, mask_id=cfg.mask_token_id, eos_eot=(eos, eot), **kw)
        answer = ref[0, -8:]
        if not torch.isin(answer, torch.tensor([eos, eot])).any():
            compared += 1
            assert torch.equal(ours, ref), seed
        changed += not torch.equal(ours, generate(tiny_model, prompt, **kw))
    assert compared >= 3 and changed >= 1


class _FixedAnswerModel(torch.nn.Module):
    """Every answer position's distribution fixed: (favourite, its probability, EOS/EoT probability beside it)."""

    V, MASK, EOS, EOT = 16, 15, 14, 13

    def __init__(self, rows, prompt_len=2):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        logits = torch.full((prompt_len + len(rows), self.V), -30.0)
        for j, (tok, p, special, e) in enumerate(rows):
            probs = torch.full((self.V,), (1 - p - e) / (self.V - 3))
            probs[[tok, special, self.MASK]] = torch.tensor([p, e, 0.0])
            logits[prompt_len + j] = probs.clamp_min(1e-12).log()
        self.register_buffer("table", logits)

    def forward(self, x, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[None].expand(x.shape[0], -1, -1).clone())


def test_eos_last_orders_the_other_positions_without_eos_probability():
    """LLaDA's ``confidence_eos_eot_inf`` takes EOS/EoT out of each position's distribution before ranking:
    probability 0.5 beside EOS 0.45 (0.91 renormalised) is revealed before 0.7 with nothing beside it."""
    m = _FixedAnswerModel([(5, 0.50, m_eos := _FixedAnswerModel.EOS, 0.45), (6, 0.60, m_eos, 0.0),
                           (7, 0.55, _FixedAnswerModel.EOT, 0.40), (8, 0.70, m_eos, 0.01)])
    order = []

    def watch(step, x):
        revealed = (x[0, 2:] != m.MASK).nonzero().flatten().tolist()
        order.extend(j for j in revealed if j not in order)

    kw = dict(steps=4, gen_length=4, block_length=4, mask_id=m.MASK, eos_token_id=m.EOS, eot_token_id=m.EOT)
    generate(m, torch.tensor([[1, 2]]), confidence_eos_eot_inf=True, callback=watch, **kw)
    assert order == [2, 0, 3, 1]
    order.clear()
    generate(m, torch.tensor([[1, 2]]), callback=watch, **kw)
    assert order == [3, 1, 2, 0]  # without the option: plain probabilities
