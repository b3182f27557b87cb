"""The op's knobs beyond the paper (``hybrid_exact_split``, ``hybrid_fit``) along their whole path: the config
(validated at load and when set later), the model's one call site, the attention backend, and the command lines
(one-line errors before any model loads)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from support_basis.llada import hybrid_attention as ha
from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"

BAD = [
    ("hybrid_exact_split", 1.5, "must be in [0, 1]"),
    ("hybrid_exact_split", -0.1, "must be in [0, 1]"),
    ("hybrid_exact_split", float("nan"), "must be a number in [0, 1]"),
    ("hybrid_exact_split", "abc", "must be a number in [0, 1]"),
    ("hybrid_fit", "weighted", "must be one of chebyshev, empirical"),
    ("hybrid_fit", 3, "must be one of chebyshev, empirical"),
    ("hybrid_chebyshev_degree", ha.MAX_CHEBYSHEV_DEGREE + 1, f"must be an integer in [1, {ha.MAX_CHEBYSHEV_DEGREE}]"),
]


@pytest.mark.parametrize("field,value,message", BAD)
def test_config_rejects_bad_knobs_when_built_and_when_set(field, value, message):
    from configuration_llada import LLaDAConfig

    with pytest.raises(ValueError, match="^" + re.escape(f"{field} {message}")):
        LLaDAConfig(**{field: value})
    config = LLaDAConfig()
    with pytest.raises(ValueError, match=field):
        setattr(config, field, value)


def test_config_defaults_are_the_papers_and_round_trip(tmp_path):
    from configuration_llada import LLaDAConfig

    config = LLaDAConfig()
    assert (config.hybrid_exact_split, config.hybrid_fit) == (0.5, "chebyshev")
    config.hybrid_exact_split, config.hybrid_fit = 0.75, "empirical"
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["hybrid_exact_split"], saved["hybrid_fit"]) == (0.75, "empirical")
    again = LLaDAConfig.from_pretrained(tmp_path)
    assert (again.hybrid_exact_split, again.hybrid_fit) == (0.75, "empirical")


def test_a_config_json_with_a_bad_knob_fails_at_load(tiny_model_dir, tmp_path):
    import shutil

    from transformers import AutoConfig

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "hybrid_fit": "weighted"}))
    with pytest.raises(ValueError, match="hybrid_fit must be one of"):
        AutoConfig.from_pretrained(bad)


def test_setting_a_knob_changes_the_next_forward(tiny_model):
    """config -> LLaDAAttention.attend (its one call site) -> the op: each knob reaches the next forward."""
    config = tiny_model.config
    ids = torch.randint(0, config.vocab_size - 10, (1, 48), generator=torch.Generator().manual_seed(0))
    saved = (config.hybrid_exact_ratio, config.hybrid_chebyshev_degree, config.hybrid_exact_split, config.hybrid_fit)
    try:
        config.hybrid_exact_ratio, config.hybrid_chebyshev_degree = 0.2, 2
        base = tiny_model(ids).logits
        for field, value in (("hybrid_exact_split", 0.9), ("hybrid_fit", "empirical")):
            setattr(config, field, value)
            changed = tiny_model(ids).logits
            assert not torch.equal(changed, base), field
            setattr(config, field, {"hybrid_exact_split": 0.5, "hybrid_fit": "chebyshev"}[field])
            assert torch.equal(tiny_model(ids).logits, base), field
    finally:
        (config.hybrid_exact_ratio, config.hybrid_chebyshev_degree, config.hybrid_exact_split,
         config.hybrid_fit) = saved


def test_the_call_site_passes_every_knob(tiny_model, monkeypatch):
    import importlib

    module = importlib.import_module(type(tiny_model).__module__)
    seen = []
    original = module.hybrid_attention

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "hybrid_attention", spy)
    config = tiny_model.config
    saved = (config.hybrid_exact_split, config.hybrid_fit)
    try:
        config.hybrid_exact_split, config.hybrid_fit = 0.8, "empirical"
        tiny_model(torch.arange(20)[None])
    finally:
        config.hybrid_exact_split, config.hybrid_fit = saved
    assert seen and all(kw["exact_split"] == 0.8 and kw["fit"] == "empirical" for kw in seen)
    assert all(kw["exact_ratio"] == config.hybrid_exact_ratio for kw in seen)


def test_attention_backend_reads_the_knobs_from_the_config():
    from types import SimpleNamespace

    from support_basis.hf_backend import support_basis_attention_forward

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 30, 16, generator=g) for _ in range(3))
    module = SimpleNamespace(is_causal=False, config=SimpleNamespace(
        hybrid_exact_ratio=0.2, hybrid_chebyshev_degree=4, hybrid_exact_split=0.75, hybrid_fit="empirical"))
    out, _ = support_basis_attention_forward(module, q, k, v, None)
    want = ha.hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=4, exact_split=0.75, fit="empirical")
    assert torch.equal(out, want.transpose(1, 2))
    module.config.hybrid_fit = "weighted"
    with pytest.raises(ValueError, match="hybrid_fit must be one of"):
        support_basis_attention_forward(module, q, k, v, None)


# ------------------------------------------------------------------------------------------------------------
# command lines: the same one-line errors, before any model loads (a model path that does not exist proves it)
# ------------------------------------------------------------------------------------------------------------

CLI_CASES = [
    ("generate", ["--exact-split", "1.5"], ["--exact-split must be in [0, 1]", "1.5"]),
    ("generate", ["--exact-split", "nan"], ["--exact-split must be a number in [0, 1]", "nan"]),
    ("generate", ["--fit", "weighted"], ["--fit must be one of chebyshev, empirical", "'weighted'"]),
    ("generate", ["--chebyshev-degree", "5000"], ["--chebyshev-degree must be an integer in [1, 1024]", "5000"]),
    ("runner", ["--exact_split", "2"], ["--exact_split must be in [0, 1]", "2"]),
    ("runner", ["--fit", "weighted"], ["--fit must be one of chebyshev, empirical", "'weighted'"]),
    ("runner", ["--configs", "exact", "--fit", "weighted"], ["--fit must be one of"]),
    ("runner", ["--chebyshev_degree", "5000"], ["--chebyshev_degree must be an integer in [1, 1024]"]),
]


@pytest.mark.parametrize("entry,argv,expect", CLI_CASES)
def test_command_lines_reject_bad_knobs_in_one_line(entry, argv, expect, tmp_path, capsys):
    missing = str(tmp_path / "no-model")
    if entry == "generate":
        import generate

        def main():
            generate.main(["--model", missing, "--prompt", "Hi", *argv])
    else:
        from support_basis.evaluation import cli

        def main():
            cli.main("arc_easy", ["--model_name", missing, "--out_dir", str(tmp_path / "out"),
                                  "--data_path", str(FIXTURES), *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert ": error: " in err[0] and all(text in err[0] for text in expect), err[0]
    assert not (tmp_path / "out").exists()


def test_runner_settings_name_and_identity_carry_the_knobs(tmp_path):
    """A run with non-default knobs gets its own directory name and identity; exact attention ignores them."""
    from support_basis.evaluation import cli
    from support_basis.evaluation.records import config_name
    from support_basis.evaluation.tasks import get_task

    task = get_task("arc_easy")
    a = cli.build_parser("arc_easy").parse_args(["--model_name", "m", "--exact_split", "0.75", "--fit", "empirical"])
    hybrid = cli.settings_from_args(a, task, 0.2, 6)
    exact = cli.settings_from_args(a, task, 1.0, 6)
    assert (hybrid["exact_split"], hybrid["fit"]) == (0.75, "empirical")
    assert (exact["exact_split"], exact["fit"]) == (0.5, "chebyshev")
    defaults = {k: hybrid[k] for k in ("steps", "gen_length", "block_length", "temperature", "remasking",
                                        "cfg_scale", "cache", "threshold", "factor")}
    assert config_name(hybrid, defaults) == "ratio0.2_deg6_split0.75_empirical"
    assert config_name(exact, defaults) == "exact"
    paper = cli.settings_from_args(cli.build_parser("arc_easy").parse_args(["--model_name", "m"]), task, 0.2, 6)
    assert config_name(paper, defaults) == "ratio0.2_deg6"
