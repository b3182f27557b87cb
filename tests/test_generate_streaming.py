"""Decoding only what matters: early EOS stop, the pruned suffix at true positions (window + tail, DPad's dropout
schedules) and the context-aware threshold; each opt-in, the plain sampler untouched without them."""

from __future__ import annotations

import pytest
import torch

from support_basis.sampling import SamplerSettingError, generate
from support_basis.suffix import SuffixRule

CACHES = ["none", "prefix", "dual"]


@pytest.fixture(scope="module")
def shipped():
    from support_basis.loading import DEFAULT_MODEL, encode_prompts, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(DEFAULT_MODEL), device="cpu")
    prompts = ["Which number is the largest: 512, 87, 903, 240?", "What is 7 + 5?",
               "In the list c=41, q=73, m=25, what is the value of q?"]
    ids, mask = encode_prompts(tokenizer, prompts, True, "cpu")
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    return model, ids, mask, eot


def run(model, ids, mask, eot, **kw):
    settings = dict(steps=128, gen_length=128, block_length=32, eot_token_id=eot, confidence_eos_eot_inf=True,
                    return_nfe=True)
    return generate(model, ids, mask, **{**settings, **kw})


def test_early_stop_ends_each_sequence_at_its_eos_block_and_saves_its_forwards(shipped):
    model, ids, mask, eot = shipped
    plain, plain_nfe = run(model, ids, mask, eot, cache="dual", threshold=0.9)
    fast, nfe = run(model, ids, mask, eot, cache="dual", threshold=0.9, early_stop=True)
    eos, p = model.config.eos_token_id, ids.shape[1]
    for row in range(ids.shape[0]):
        answer = fast[row, p:]
        holds = torch.isin(answer.view(-1, 32), torch.tensor([eos, eot])).any(-1)
        first = int(holds.nonzero()[0]) if holds.any() else 3
        end = (first + 1) * 32
        assert torch.equal(answer[:end], plain[row, p : p + end])  # the same answer up to its stop
        assert torch.all(answer[end:] == eos)
    assert torch.all(nfe <= plain_nfe) and nfe.sum() < plain_nfe.sum()


@pytest.mark.parametrize("cache", CACHES)
def test_every_option_gives_each_sequence_what_it_gets_alone(shipped, cache):
    model, ids, mask, eot = shipped
    kw = dict(cache=cache, threshold=0.9, threshold_alpha=0.3, early_stop=True, suffix_window=16)
    batch, batch_nfe = run(model, ids, mask, eot, **kw)
    for row in range(ids.shape[0]):
        keep = mask[row].bool()
        alone, alone_nfe = run(model, ids[row : row + 1, keep], None, eot, **kw)
        assert torch.equal(batch[row, ids.shape[1] - int(keep.sum()):], alone[0]), row
        assert int(batch_nfe[row]) == int(alone_nfe[0])


def test_a_window_covering_the_suffix_is_the_plain_sampler(shipped):
    model, ids, mask, eot = shipped
    plain = run(model, ids, mask, eot, cache="prefix", threshold=0.9)
    whole = run(model, ids, mask, eot, cache="prefix", threshold=0.9, suffix_window=96)
    assert torch.equal(plain[0], whole[0]) and torch.equal(plain[1], whole[1])


def test_the_pruned_forward_sees_true_positions(tiny_model):
    """Window 3 + tail 1 after the block: the forward computes [0, block_end) and those four, at their positions."""
    seen = []
    real = tiny_model.forward

    def spy(x, **kw):
        seen.append((x.shape[1], None if kw.get("position_ids") is None else kw["position_ids"][0].tolist()))
        return real(x, **kw)

    ids = torch.tensor([[5, 6, 7]])
    tiny_model.forward = spy
    try:
        generate(tiny_model, ids, steps=4, gen_length=16, block_length=4, suffix_window=3, suffix_tail=1)
    finally:
        del tiny_model.forward
    length, positions = seen[0]
    assert positions == list(range(7)) + [7, 8, 9, 18] and length == 11
    assert seen[-1][1] == list(range(19))  # the last block: no suffix left


def test_the_context_aware_threshold_at_alpha_zero_is_the_threshold(shipped):
    model, ids, mask, eot = shipped
    a = run(model, ids, mask, eot, cache="dual", threshold=0.9)
    b = run(model, ids, mask, eot, cache="dual", threshold=0.9, threshold_alpha=0.0)
    lower = run(model, ids, mask, eot, cache="dual", threshold=0.9, threshold_alpha=0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert lower[1].sum() <= a[1].sum()  # a falling threshold reveals more per step


@pytest.mark.parametrize("dropout", ["gaussian", "uniform"])
def test_dropout_schedules_repeat_with_the_seed(tiny_model, dropout):
    ids = torch.tensor([[5, 6, 7, 8]])
    kw = dict(steps=16, gen_length=32, block_length=8, suffix_dropout=dropout, suffix_window=16, temperature=1.0)
    a = generate(tiny_model, ids, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(tiny_model, ids, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a, b)
    rule = SuffixRule(window=16, dropout=dropout)
    draws = {tuple(rule.positions(10, 60, torch.Generator().manual_seed(s), "cpu").tolist()) for s in range(8)}
    assert len(draws) > 1 and all(min(d, default=10) >= 10 and max(d, default=10) < 26 for d in draws)
    if dropout == "gaussian":  # near the block kept more often than at the window's end
        near = sum(10 in d for d in draws)
        far = sum(25 in d for d in draws)
        assert near >= far


def test_guidance_works_with_a_pruned_suffix(tiny_model):
    ids = torch.tensor([[5, 6, 7, 8]])
    out, nfe = generate(tiny_model, ids, steps=8, gen_length=16, block_length=4, cfg_scale=1.0, suffix_window=2,
                        return_nfe=True)
    assert not (out == tiny_model.config.mask_token_id).any() and int(nfe[0]) == 16


@pytest.mark.parametrize("kw,match", [
    (dict(suffix_window=-1), "suffix_window must be an integer >= 0"),
    (dict(suffix_window=4, suffix_tail=40), "suffix_tail .* larger than the suffix"),
    (dict(suffix_tail=1), "give suffix_window or suffix_dropout"),
    (dict(suffix_dropout="poisson"), "suffix_dropout must be one of gaussian, uniform"),
    (dict(threshold=0.9, threshold_alpha=1.5), r"threshold_alpha must be a number in \[0, 1\]"),
    (dict(threshold_alpha=0.3), "give threshold too"),
])
def test_bad_settings_name_the_setting_and_the_rule(tiny_model, kw, match):
    with pytest.raises(SamplerSettingError, match=match):
        generate(tiny_model, torch.tensor([[5, 6]]), steps=8, gen_length=32, block_length=8, **kw)


def test_early_stop_needs_an_eos_id(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.config, "eos_token_id", None)
    with pytest.raises(SamplerSettingError, match="early_stop needs the EOS id"):
        generate(tiny_model, torch.tensor([[5, 6]]), steps=8, gen_length=8, block_length=8, early_stop=True)


def test_a_runner_takes_the_options_and_names_its_configuration(tiny_model_dir, tmp_path):
    from conftest import REPO
    from support_basis.evaluation import cli

    out = tmp_path / "out"
    summaries = cli.main("arc_easy", ["--model_name", str(tiny_model_dir), "--data_path",
                                      str(REPO / "tests" / "fixtures" / "data"), "--limit", "3", "--gen_length", "16",
                                      "--block_length", "8", "--steps", "16", "--no_progress", "--configs", "0.2:6",
                                      "--out_dir", str(out), "--cache", "dual", "--threshold", "0.9",
                                      "--early_stop", "1", "--suffix_window", "4", "--threshold_alpha", "0.3"])
    (run_dir,) = [d for d in (out / "arc_easy").iterdir() if d.is_dir()]
    assert "eosstop1" in run_dir.name and "win4" in run_dir.name and "alpha0.3" in run_dir.name
    assert summaries[0]["n"] == 3


def test_the_lm_eval_backend_takes_the_options(tiny_model_dir):
    pytest.importorskip("lm_eval")
    from support_basis import lm_eval_llada

    harness = lm_eval_llada.LLaDABSEvalHarness(pretrained=str(tiny_model_dir), device="cpu", steps=8, gen_length=16,
                                               block_length=8, cache="dual", threshold=0.9, early_stop="true",
                                               suffix_window="4", threshold_alpha="0.3")
    assert harness.streaming == dict(early_stop=True, suffix_window=4, suffix_tail=None, suffix_dropout=None,
                                     threshold_alpha=0.3)


def test_ctrl_c_is_one_line_and_status_130(capsys):
    from support_basis.errors import cli

    @cli(prog="demo")
    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 130 and err == ["demo: interrupted (Ctrl-C); what was finished and written is kept"]


def test_an_unknown_knob_warns_once_with_the_nearest(tiny_model_dir):
    from support_basis.llada.configuration_llada import LLaDAConfig
    from support_basis.llada.modeling_llada import LLaDAModelLM

    with pytest.warns(UserWarning, match="no knob 'hybrid_exact_raito'.*did you mean hybrid_exact_ratio"):
        model = LLaDAModelLM.from_pretrained(tiny_model_dir, hybrid_exact_raito=0.5)
    assert model.config.hybrid_exact_ratio == 0.2
    with pytest.warns(UserWarning, match="no knob 'hybrid_degree'"):
        LLaDAConfig(hybrid_degree=4)


@pytest.mark.parametrize("kw,match", [
    (dict(input_ids=[[5, 6]]), "input_ids must be a tensor"),
    (dict(generator=123), "generator must be a torch.Generator"),
    (dict(mask_id=10**6), r"mask_id must be a token id of the model's vocabulary"),
    (dict(eos_token_id=-1), "eos_token_id must be a token id"),
    (dict(eot_token_id=10**6), "eot_token_id must be a token id"),
])
def test_bad_arguments_are_one_clear_error(tiny_model, kw, match):
    args = {"input_ids": torch.tensor([[5, 6]]), **kw}
    with pytest.raises(SamplerSettingError, match=match):
        generate(tiny_model, args.pop("input_ids"), steps=4, gen_length=8, block_length=8, **args)


def test_uint8_ids_and_numpy_steps_run_as_their_values(tiny_model):
    import numpy as np

    ids = torch.tensor([[5, 6, 7]])
    expected = generate(tiny_model, ids, steps=4, gen_length=8, block_length=8)
    got = generate(tiny_model, ids.to(torch.uint8), steps=np.int64(4), gen_length=np.int32(8), block_length=8)
    assert torch.equal(expected, got)


def test_the_forward_refuses_ids_outside_the_vocabulary(tiny_model):
    with pytest.raises(ValueError, match="token id 1000000 outside the model's vocabulary"):
        tiny_model(torch.tensor([[10**6]]))
