"""generate.py's fast sampling (key/value cache, confidence threshold, adaptive factor), NFE, and the EOS/EoT rule:
EOS revealed last but revealed, under every option combination."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from test_generate import reference_generate, run_cli

from generate import CACHE_MODES, generate, left_pad

MASK, EOS, EOT, VOCAB = 31, 30, 29, 32


@pytest.fixture
def prompts(rng):
    return [torch.randint(0, 400, (n,), generator=rng) for n in (3, 11, 7)]


@pytest.fixture(params=[1.0, 0.2], ids=["exact", "hybrid"])
def model(tiny_model, request):
    tiny_model.config.hybrid_exact_ratio = request.param
    yield tiny_model
    tiny_model.config.hybrid_exact_ratio = 0.2


def test_defaults_reproduce_the_plain_sampler(model, prompts):
    ids, mask = left_pad(prompts, model.config.pad_token_id)
    kw = dict(steps=6, gen_length=12, block_length=4)
    plain = generate(model, ids, mask, **kw)
    explicit, nfe = generate(model, ids, mask, cache="none", threshold=None, factor=None, return_nfe=True, **kw)
    assert torch.equal(plain, explicit) and nfe.tolist() == [6, 6, 6]
    for i, s in enumerate(prompts):
        ref = reference_generate(model, s[None], mask_id=model.config.mask_token_id, **kw)
        assert torch.equal(plain[i, ids.shape[1] - len(s) :], ref[0])


@pytest.mark.parametrize("cache", CACHE_MODES)
@pytest.mark.parametrize("rule", [{}, {"threshold": 0.02}, {"factor": 1.0}], ids=["fixed", "threshold", "factor"])
def test_padded_batch_equals_each_prompt_alone(model, prompts, cache, rule):
    kw = dict(steps=12, gen_length=12, block_length=4, cache=cache, return_nfe=True, **rule)
    ids, mask = left_pad(prompts, model.config.pad_token_id)
    out, nfe = generate(model, ids, mask, **kw)
    assert not (out[:, ids.shape[1] :] == model.config.mask_token_id).any()
    for i, s in enumerate(prompts):
        alone, alone_nfe = generate(model, s[None], **kw)
        assert torch.equal(out[i, ids.shape[1] - len(s) :], alone[0])
        assert alone_nfe.tolist() == [int(nfe[i])]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_with_guidance_padded_equals_alone(tiny_model, prompts, cache):
    kw = dict(steps=8, gen_length=8, block_length=4, cache=cache, cfg_scale=1.5, threshold=0.02)
    ids, mask = left_pad(prompts, tiny_model.config.pad_token_id)
    out, nfe = generate(tiny_model, ids, mask, return_nfe=True, **kw)
    for i, s in enumerate(prompts):
        alone, alone_nfe = generate(tiny_model, s[None], return_nfe=True, **kw)
        assert torch.equal(out[i, ids.shape[1] - len(s) :], alone[0]) and int(alone_nfe[0]) == int(nfe[i])
    assert (nfe % 2 == 0).all()  # a guided step is two evaluations


def test_bf16_model_with_cache_and_threshold(tiny_model_dir, prompts):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    ids, mask = left_pad(prompts, model.config.pad_token_id)
    for cache in CACHE_MODES:
        out, nfe = generate(model, ids, mask, steps=12, gen_length=12, block_length=4, cache=cache, factor=1.0,
                            return_nfe=True)
        assert not (out[:, ids.shape[1] :] == model.config.mask_token_id).any() and (nfe <= 12).all()


def test_cache_is_the_plain_sampler_where_nothing_is_stale(model, prompts):
    ids, mask = left_pad(prompts, model.config.pad_token_id)
    plain = generate(model, ids, mask, steps=3, gen_length=12, block_length=4)
    for cache in ("prefix", "dual"):  # one step per block: only the full forward that fills the cache
        assert torch.equal(generate(model, ids, mask, steps=3, gen_length=12, block_length=4, cache=cache), plain)
    # a single block has nothing after it: the dual cache is the prefix cache
    prefix = generate(model, ids, mask, steps=4, gen_length=8, block_length=8, cache="prefix")
    assert torch.equal(generate(model, ids, mask, steps=4, gen_length=8, block_length=8, cache="dual"), prefix)


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_threshold_and_factor_are_sane_on_a_real_model(model, prompts, cache):
    ids, mask = left_pad(prompts, model.config.pad_token_id)
    one_per_step = generate(model, ids, mask, steps=12, gen_length=12, block_length=4, cache=cache)
    # no confidence reaches 1 on a random model: threshold 1 and a vanishing factor reveal one token per step
    for rule in ({"threshold": 1.0}, {"factor": 1e-12}):
        out, nfe = generate(model, ids, mask, steps=12, gen_length=12, block_length=4, cache=cache,
                            return_nfe=True, **rule)
        assert torch.equal(out, one_per_step) and nfe.tolist() == [12, 12, 12]
    # a threshold every confidence passes reveals each block in one forward: the one-step-per-block sampler
    one_step = generate(model, ids, mask, steps=3, gen_length=12, block_length=4)
    out, nfe = generate(model, ids, mask, steps=12, gen_length=12, block_length=4, cache=cache, threshold=1e-9,
                        return_nfe=True)
    assert torch.equal(out, one_step) and nfe.tolist() == [3, 3, 3]


class ScriptedCacheModel(torch.nn.Module):
    """A mask predictor with fixed per-position confidences that takes the cache arguments: answer position j
    predicts ``prefer[j]`` with probability ``probs[j]`` (the rest spread evenly). Records revealed-count per call."""

    def __init__(self, prefer, probs, prompt_len=2):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=MASK, eos_token_id=EOS, max_sequence_length=256)
        self.prefer, self.probs, self.p = prefer, probs, prompt_len
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, attention_mask=None, use_cache=False, past_key_values=None, cache_position=None):
        self.calls.append((x.shape[1], cache_position))
        start = cache_position or 0
        b, l = x.shape
        logits = torch.zeros(b, l, VOCAB, dtype=torch.float64)
        for j in range(l):
            a = start + j - self.p
            if 0 <= a < len(self.prefer):
                p = self.probs[a]
                rest = (1 - p) / (VOCAB - 1)
                logits[:, j] = torch.log(torch.tensor(rest))
                logits[:, j, self.prefer[a]] = torch.log(torch.tensor(p))
        return SimpleNamespace(logits=logits, past_key_values=("kv",) if use_cache else None)


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_threshold_reveals_exactly_the_confident_and_factor_follows_its_rule(cache):
    prefer = [5, 6, 7, 8, 9, 10, 11, 12]
    probs = [0.95, 0.5, 0.97, 0.2, 0.91, 0.6, 0.3, 0.4]
    seen = []
    model = ScriptedCacheModel(prefer, probs)
    out, nfe = generate(model, torch.tensor([[1, 2]]), steps=8, gen_length=8, block_length=8, cache=cache,
                        threshold=0.9, return_nfe=True,
                        callback=lambda s, x: seen.append((x[0, 2:] != MASK).nonzero()[:, 0].tolist()))
    assert out[0, 2:].tolist() == prefer
    # step 1: the three >= 0.9; then one per step (the most confident), as no other reaches 0.9
    assert seen[0] == [0, 2, 4] and seen[1] == [0, 2, 4, 5] and seen[2] == [0, 1, 2, 4, 5]
    assert nfe.tolist() == [6] and len(model.calls) == 6
    if cache != "none":  # the first forward sees the whole sequence, the others only the window
        assert model.calls[0] == (10, None)
        assert model.calls[1] == ((8, 2) if cache == "prefix" else (8, 2))
    # factor 1: reveal n while the n-th confidence >= 1 - 1/(n+1): 0.97 >= 0.5, 0.95 >= 0.67, 0.91 >= 0.75,
    # 0.6 < 0.8 -> 3 in the first step
    seen.clear()
    generate(ScriptedCacheModel(prefer, probs), torch.tensor([[1, 2]]), steps=8, gen_length=8, block_length=8,
             cache=cache, factor=1.0, callback=lambda s, x: seen.append(int((x[0, 2:] != MASK).sum())))
    assert seen[0] == 3
    # the step budget caps the work: with 2 steps the second reveals everything left
    seen.clear()
    out, nfe = generate(ScriptedCacheModel(prefer, probs), torch.tensor([[1, 2]]), steps=2, gen_length=8,
                        block_length=8, cache=cache, threshold=0.9, return_nfe=True,
                        callback=lambda s, x: seen.append(int((x[0, 2:] != MASK).sum())))
    assert seen == [3, 8] and nfe.tolist() == [2]


def test_dual_window_is_the_block_and_prefix_window_runs_to_the_end():
    model = ScriptedCacheModel(list(range(5, 13)), [0.5] * 8)
    generate(model, torch.tensor([[1, 2]]), steps=4, gen_length=8, block_length=4, cache="dual")
    assert model.calls == [(10, None), (4, 2), (10, None), (4, 6)]
    model = ScriptedCacheModel(list(range(5, 13)), [0.5] * 8)
    generate(model, torch.tensor([[1, 2]]), steps=4, gen_length=8, block_length=4, cache="prefix")
    assert model.calls == [(10, None), (8, 2), (10, None), (4, 6)]


class EOSFavouringModel(ScriptedCacheModel):
    """The answer's tail predicts EOS (and one position EoT) more confidently than anything else."""

    def __init__(self, gen_length, prompt_len=2):
        prefer = [5 + (j % 7) for j in range(gen_length)]
        probs = [0.3 + 0.05 * (j % 5) for j in range(gen_length)]
        for j in range(gen_length // 3, gen_length):
            prefer[j], probs[j] = EOS, 0.99
        prefer[gen_length // 3] = EOT
        super().__init__(prefer, probs, prompt_len)

    def forward(self, x, attention_mask=None, use_cache=False, past_key_values=None, cache_position=None):
        out = super().forward(x, attention_mask, use_cache, past_key_values, cache_position)
        if x.shape[0] == 2:  # CFG's unconditional copy (this test's batches hold one prompt): other favourites
            out.logits[1] = out.logits[1].roll(1, dims=-1)
        return out


def test_no_answer_keeps_a_mask_and_eos_comes_last_under_every_option():
    """The EOS bug: ranked like revealed positions (-inf), EOS/EoT predictions were never revealed and answers kept
    masks. Now they rank below every other masked position and above the revealed ones."""
    rules = [{}, {"threshold": 0.9}, {"factor": 1.0}]
    for cache, rule, temperature, remasking, conf_inf, logits_inf, cfg, eot, (steps, gen, block) in itertools.product(
            CACHE_MODES, rules, (0.0, 0.7), ("low_confidence", "random"), (True, False), (True, False), (0.0, 1.0),
            (EOT, None), ((16, 16, 8), (4, 16, 16), (6, 12, 4))):
        if rule and remasking == "random":
            continue
        events = []
        last = {}

        def watch(step, x):
            answer = x[0, 2:]
            before = last.get("x", torch.full_like(answer, MASK))
            new = (before == MASK) & (answer != MASK)
            events.append((new, answer.clone()))
            last["x"] = answer.clone()

        model = EOSFavouringModel(gen)
        out = generate(model, torch.tensor([[1, 2]]), steps=steps, gen_length=gen, block_length=block, cache=cache,
                       temperature=temperature, remasking=remasking, cfg_scale=cfg, eot_token_id=eot,
                       confidence_eos_eot_inf=conf_inf, logits_eos_inf=logits_inf,
                       generator=torch.Generator().manual_seed(0), callback=watch, **rule)
        options = (cache, rule, temperature, remasking, conf_inf, logits_inf, cfg, eot, steps, gen, block)
        assert not (out == MASK).any(), options
        if logits_inf:
            assert not (out == EOS).any(), options
        if conf_inf and not logits_inf:
            specials = torch.tensor([EOS] + ([eot] if eot is not None else []))
            ordinary = ~torch.isin(out[0, 2:], specials)  # positions whose final token is not EOS/EoT
            for new, answer in events:
                revealed_special = new & torch.isin(answer, specials)
                for b0 in range(0, gen, block):
                    if revealed_special[b0 : b0 + block].any():  # then no ordinary token of the block is masked
                        assert not ((answer == MASK) & ordinary)[b0 : b0 + block].any(), options
        if conf_inf and not logits_inf and temperature == 0 and cfg == 0:
            assert (out[0, 2:] == EOS).sum() >= gen // 2, options  # EOS was revealed, not left masked


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(cache="full"), "cache must be one of none, prefix, dual; got 'full'"),
        (dict(threshold=0.0), r"threshold must be a number in \(0, 1\]"),
        (dict(threshold=1.5), r"threshold must be a number in \(0, 1\]"),
        (dict(threshold=float("nan")), r"threshold must be a number in \(0, 1\]"),
        (dict(factor=0.0), "factor must be a finite number > 0"),
        (dict(factor=-1.0), "factor must be a finite number > 0"),
        (dict(factor=float("inf")), "factor must be a finite number > 0"),
        (dict(threshold=0.9, factor=1.0), "not both"),
        (dict(threshold=0.9, remasking="random"), "needs remasking low_confidence"),
    ],
)
def test_bad_fast_settings_are_explained(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, torch.tensor([[1, 2, 3]]), steps=4, gen_length=8, block_length=4, **kwargs)


def test_cache_needs_a_model_that_takes_it():
    class NoCache(ScriptedCacheModel):
        def forward(self, x, attention_mask=None):
            return super().forward(x, attention_mask)

    with pytest.raises(ValueError, match="needs a model whose forward takes use_cache"):
        generate(NoCache([5, 6], [0.5, 0.5]), torch.tensor([[1, 2]]), steps=2, gen_length=2, block_length=2,
                 cache="dual")


def test_cli_fast_flags_print_nfe_and_tokens_per_second(tiny_model_dir, capsys):
    base = ["--model", str(tiny_model_dir), "--prompt", "Hello there", "--prompt", "A longer question?",
            "--gen-length", "8", "--steps", "8", "--block-length", "4"]
    code, out, err = run_cli(capsys, *base, "--cache", "dual", "--threshold", "0.5")
    assert code == 0 and out.count("=== [") == 2
    assert "cache=dual threshold=0.5" in err and "NFE [" in err and "tokens/s" in err
    code, plain, err = run_cli(capsys, *base)
    assert code == 0 and "NFE [8, 8]" in err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--cache", "full"], "--cache: invalid choice: 'full'"),
        (["--threshold", "0"], "--threshold must be a number in (0, 1]"),
        (["--factor", "-2"], "--factor must be a finite number > 0 (e.g. 1.0); got -2.0"),
        (["--threshold", "0.9", "--factor", "1"], "give --threshold or --factor, not both"),
        (["--threshold", "0.9", "--remasking", "random"], "needs --remasking low_confidence"),
    ],
)
def test_cli_rejects_bad_fast_flags_before_loading(tmp_path, capsys, flags, message):
    # the model does not exist: the flag is reported first, so nothing was loaded
    code, out, err = run_cli(capsys, "--model", str(tmp_path / "missing"), "--prompt", "x", *flags)
    assert code == 2 and message in err and "--model" not in err and out == ""
    assert len(err.strip().splitlines()) == 1
