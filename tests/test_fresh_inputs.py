"""Round-4 bad inputs: the native kernel's compiler, a named kernel that cannot run, summaries, the demo's state."""

from __future__ import annotations

import pytest

from support_basis.llada import hybrid_native


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """The native kernel as if never built in this process, cached in an empty directory."""
    monkeypatch.setattr(hybrid_native, "_STATE", {})
    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(tmp_path))
    return monkeypatch


def test_cc_is_a_command_line(fresh_native):
    fresh_native.setenv("CC", "env gcc")  # a wrapper and its compiler, as CC='ccache gcc'
    assert hybrid_native.native_library() is not None, hybrid_native.native_error()


def test_a_missing_compiler_is_said_and_a_named_native_kernel_refused(fresh_native):
    from support_basis.llada.hybrid_attention import kernel_problem

    fresh_native.setenv("CC", "no-such-cc --flag")
    problem = kernel_problem("native", "cpu")
    assert "CC='no-such-cc --flag': 'no-such-cc' is not found" in problem and "kernel 'auto'" in problem
    assert kernel_problem("auto", "cpu") == "" and kernel_problem("eager", "cuda") == ""
    assert "runs on the CPU" in kernel_problem("native", "cuda")


def test_generate_refuses_a_kernel_that_cannot_run_before_loading(fresh_native, capsys):
    import generate

    fresh_native.setenv("CC", "no-such-cc")
    with pytest.raises(SystemExit) as exit_:
        generate.main(["--prompt", "Hi", "--kernel", "native"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--kernel native" in err[0], err


@pytest.mark.slow
def test_torch_compile_traces_the_cached_tables_without_warnings():
    """The op's cached tables (the fit's, the sample's) under torch.compile: no Dynamo lru_cache warning (four at
    a compile of the model before) and the same values."""
    import warnings

    import torch

    from support_basis.llada import hybrid_fit, hybrid_sample

    def tables(half):
        coef = hybrid_fit.evaluation_coefficients(hybrid_fit.fit_chebyshev(half, 6), 6)
        return coef, hybrid_sample._jitter(64, half.device), hybrid_sample._unmasked_positions(8, 8, 64, half.device)

    half = torch.tensor([[[2.0]], [[5.0]]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compiled = torch.compile(tables, backend="eager")(half)  # Dynamo traces (where it warned), no codegen
    assert not [w for w in seen if "lru_cache" in str(w.message)], [str(w.message) for w in seen]
    for got, expected in zip(compiled, tables(half)):
        torch.testing.assert_close(got, expected)


def test_a_second_runner_on_the_same_output_is_refused_naming_the_holder(tiny_model_dir, tmp_path, capsys):
    import os

    from conftest import REPO
    from support_basis.evaluation import cli
    from support_basis.locking import DirLock

    out = tmp_path / "out"
    lock = DirLock(out / "arc_easy" / ".lock")
    assert lock.acquire() is None
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main("arc_easy", ["--model_name", str(tiny_model_dir), "--data_path",
                                  str(REPO / "tests" / "fixtures" / "data"), "--limit", "2", "--gen_length", "8",
                                  "--block_length", "8", "--steps", "2", "--no_progress", "--out_dir", str(out)])
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and f"process {os.getpid()}" in err[0], err
    assert [p.name for p in (out / "arc_easy").iterdir()] == [".lock"]  # nothing of the run was written


@pytest.mark.slow
def test_a_second_run_all_on_the_same_out_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "res"
    out.mkdir()
    holder = subprocess.Popen(["flock", str(out / ".run_all.lock"), "sleep", "60"])
    try:
        import time

        time.sleep(0.5)
        env = dict(os.environ, RUN_ALL_PYTHON=sys.executable)
        res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--tasks", "arc_easy", "--limit", "2",
                              "--no-hybrid", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    finally:
        holder.kill()
    assert res.returncode == 2 and "is being written by another run_all.sh" in res.stderr, res.stderr[-2000:]
    assert not (out / "arc_easy").exists()


def test_transformers_generate_points_to_the_diffusion_sampler(tiny_model):
    import torch

    with pytest.raises(NotImplementedError, match="masked-diffusion model.*support_basis.sampling.generate"):
        tiny_model.generate(torch.tensor([[5, 6]]), max_new_tokens=4)


@pytest.mark.slow
def test_generate_with_a_closed_an_ascii_or_a_full_stdout(tiny_model_dir):
    import os
    import subprocess
    import sys

    from conftest import REPO

    argv = [sys.executable, str(REPO / "generate.py"), "--model", str(tiny_model_dir), "--gen-length", "8", "--steps",
            "2", "--block-length", "8"]
    closed = subprocess.run(" ".join(argv + ["--prompt", "Hi", ">&-"]), shell=True, capture_output=True, text=True)
    assert closed.returncode == 2 and closed.stderr.strip().endswith("give it somewhere to write (a file, a pipe, "
                                                                     "or /dev/null)"), closed.stderr
    ascii_ = subprocess.run(argv + ["--prompt", "Grüße"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONIOENCODING="ascii"))
    assert ascii_.returncode == 0 and "=== [0] Gr\\xfc\\xdfe" in ascii_.stdout, ascii_.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            res = subprocess.run(argv + ["--prompt", "Hi"], stdout=full, stderr=subprocess.PIPE, text=True)
        assert res.returncode == 2 and "no space left" in res.stderr and "resumed" not in res.stderr, res.stderr


def test_lm_eval_gen_length_that_fills_the_model_is_one_line(tiny_model_dir):
    pytest.importorskip("lm_eval")
    from support_basis import lm_eval_llada

    harness = lm_eval_llada.LLaDABSEvalHarness(pretrained=str(tiny_model_dir), device="cpu")  # gen_length 1024
    with pytest.raises(lm_eval_llada.ModelArgError, match="gen_length=1024 leaves no room for a prompt"):
        harness.generate_until([])  # said before the first request: the model has 1024 positions


def test_a_bias_that_requires_grad_runs_with_autograd(rng):
    import torch

    from support_basis.llada.hybrid_attention import hybrid_attention
    from support_basis.reference import hybrid_attention_reference

    q, k, v = (torch.randn(1, 2, 16, 8, generator=rng) for _ in range(3))
    bias = (0.1 * torch.randn(1, 1, 16, 16, generator=rng)).requires_grad_()
    with torch.enable_grad():  # the suite runs without autograd (conftest); this case is about it
        out = hybrid_attention(q, k, v, bias, exact_ratio=0.2, chebyshev_degree=6)  # was a baddbmm(out=...) error
        out.sum().backward()
    assert bias.grad is not None and torch.isfinite(bias.grad).all()
    ref = hybrid_attention_reference(q, k, v, bias.detach(), exact_ratio=0.2, chebyshev_degree=6)
    assert (out.detach().double() - ref).abs().max() < 1e-3


def test_an_unreachable_hub_id_is_one_line_within_seconds(monkeypatch):
    """Offline and not cached: said at once (transformers' own retries took most of a minute)."""
    import time

    from support_basis.errors import UserError
    from support_basis.model_dir import check_model_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="cannot be reached .HF_HUB_OFFLINE is set. and the model is not in the local"):
        check_model_dir("nobody-here/no-such-model", "--model")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: unreachable here (one line), or reachable and no such model
    with pytest.raises(UserError, match="cannot be reached|no such model"):
        check_model_dir("nobody-here/no-such-model", "--model")
    assert time.perf_counter() - t0 < 30
