"""``hybrid_kernel``, the one kernel switch, along its whole path: the config (validated at load and when set
later), the model's one call site (the next forward runs the kernel named), the attention backend, and the
command lines (``--kernel``, one-line errors before any model loads)."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import torch

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"


@pytest.fixture
def ran(tiny_model, monkeypatch):
    """The kernels the tiny model's forwards ran, in order: ``select_kernel`` of the op module the model's own
    (remote) code calls, wrapped to record what it returns."""
    op = importlib.import_module(type(tiny_model).__module__).hybrid_attention.__globals__
    chosen = []
    select = op["select_kernel"]

    def record(*args, **kwargs):
        chosen.append(select(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setitem(op, "select_kernel", record)
    return chosen


def test_setting_the_kernel_after_load_changes_the_next_forward(tiny_model, ran, rng):
    ids = torch.randint(0, 200, (1, 24), generator=rng)
    config = tiny_model.config
    assert config.hybrid_kernel == "auto" and config.hybrid_exact_ratio < 1
    outputs = {}
    try:
        # "compiled" is accepted too; its C++ build takes 20-40 s here, and test_hybrid_attention holds it to eager
        for kernel in ("auto", "eager", "native"):
            config.hybrid_kernel = kernel
            ran.clear()
            outputs[kernel] = tiny_model(ids).logits
            assert ran and set(ran) == {"native" if kernel == "auto" else kernel}, (kernel, ran)
    finally:
        config.hybrid_kernel = "auto"
    assert torch.allclose(outputs["eager"], outputs["native"], atol=1e-4)
    assert torch.equal(outputs["auto"], outputs["native"])


@pytest.mark.parametrize("value", ["cuda", "Native", 3, None])
def test_config_rejects_an_unknown_kernel_when_built_and_when_set(value):
    from support_basis.llada.configuration_llada import LLaDAConfig

    message = "hybrid_kernel must be one of auto, triton, native, compiled, eager"
    with pytest.raises(ValueError, match=message):
        LLaDAConfig(hybrid_kernel=value)
    config = LLaDAConfig()
    with pytest.raises(ValueError, match=message):
        config.hybrid_kernel = value
    assert config.hybrid_kernel == "auto"


def test_kernel_round_trips_through_config_json_and_old_files_default_to_auto(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    assert AutoConfig.from_pretrained(d).hybrid_kernel == "auto"
    cfg.pop("hybrid_kernel", None)  # a directory written before the switch existed
    (d / "config.json").write_text(json.dumps(cfg))
    assert AutoConfig.from_pretrained(d).hybrid_kernel == "auto"
    cfg["hybrid_kernel"] = "eager"
    (d / "config.json").write_text(json.dumps(cfg))
    assert AutoConfig.from_pretrained(d).hybrid_kernel == "eager"
    cfg["hybrid_kernel"] = "cuda"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="hybrid_kernel must be one of"):
        AutoConfig.from_pretrained(d)


def test_the_knobs_have_one_validator_each():
    """The op, the backend and the command lines use the configuration module's validators themselves."""
    from support_basis import hf_backend
    from support_basis.llada import configuration_llada as config
    from support_basis.llada import hybrid_attention as op

    for name in ("exact_ratio", "chebyshev_degree", "num_samples", "exact_split", "fit", "kernel"):
        validator = getattr(config, f"validate_{name}")
        assert getattr(op, f"validate_{name}") is validator, name
        assert config.HYBRID_VALIDATORS[f"hybrid_{name}"] is validator, name
    assert hf_backend.HYBRID_VALIDATORS is config.HYBRID_VALIDATORS  # the backend checks with the config's table


def test_backend_passes_the_kernel_from_the_config(monkeypatch, rng):
    from support_basis import hf_backend

    seen = {}
    monkeypatch.setattr(hf_backend, "hybrid_attention", lambda *a, **kw: seen.update(kw) or a[0])
    q = torch.randn(1, 2, 5, 8, generator=rng)
    module = torch.nn.Module()
    module.config = type("Config", (), {"hybrid_kernel": "eager"})()
    hf_backend.support_basis_attention_forward(module, q, q, q, None, is_causal=False)
    assert seen["kernel"] == "eager"
    module.config.hybrid_kernel = "gpu"
    with pytest.raises(ValueError, match="hybrid_kernel must be one of"):
        hf_backend.support_basis_attention_forward(module, q, q, q, None, is_causal=False)


def test_generate_cli_runs_the_kernel_named(tiny_model_dir, capsys):
    import generate

    generate.main(["--model", str(tiny_model_dir), "--prompt", "Hi", "--gen-length", "8", "--steps", "2",
                   "--block-length", "8", "--kernel", "eager"])
    assert "kernel=eager" in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["generate", "runner"])
def test_command_lines_refuse_an_unknown_kernel_in_one_line(entry, tmp_path, capsys):
    missing = str(tmp_path / "no-model")
    with pytest.raises(SystemExit) as exit_:
        if entry == "generate":
            import generate

            generate.main(["--model", missing, "--prompt", "Hi", "--kernel", "fused"])
        else:
            from support_basis.evaluation import cli

            cli.main("arc_easy", ["--model_name", missing, "--out_dir", str(tmp_path / "out"),
                                  "--data_path", str(FIXTURES), "--kernel", "fused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "--kernel" in err[0] and "'fused'" in err[0], err[0]
    assert not (tmp_path / "out").exists()


def test_runner_kernel_reaches_the_model_and_leaves_the_run_identity_alone(tiny_model_dir, tmp_path):
    """``--kernel`` is applied to the loaded model; the results directory is the same whichever kernel ran."""
    from support_basis.evaluation import cli

    out = tmp_path / "out"
    for kernel in ("eager", "native"):
        cli.main("arc_easy", ["--model_name", str(tiny_model_dir), "--out_dir", str(out), "--data_path",
                              str(FIXTURES), "--limit", "2", "--kernel", kernel, "--no_progress"])
    runs = sorted(p.name for p in (out / "arc_easy").iterdir())
    assert runs == ["ratio0.2_deg6"], runs
    records = (out / "arc_easy" / "ratio0.2_deg6" / "records.jsonl").read_text().splitlines()
    assert len(records) == 2  # the second run resumed the first: nothing to redo


def test_numpy_scalars_are_knob_values():
    """Values computed with NumPy (a sweep's np.linspace, a JSON round trip through pandas) are numbers too."""
    import numpy as np

    from support_basis.llada.configuration_llada import LLaDAConfig

    config = LLaDAConfig(hybrid_exact_ratio=np.float32(0.25), hybrid_chebyshev_degree=np.int64(4))
    assert (config.hybrid_exact_ratio, config.hybrid_chebyshev_degree) == (0.25, 4)
    assert type(config.hybrid_chebyshev_degree) is int and type(config.hybrid_exact_ratio) is float
    with pytest.raises(ValueError, match=r"hybrid_chebyshev_degree must be an integer.*np.float32\(4.5\)"):
        config.hybrid_chebyshev_degree = np.float32(4.5)
