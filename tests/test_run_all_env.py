"""run_all.sh reads only its own RUN_ALL_* variables and resolves relative paths against the caller's directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_generic_variables_are_ignored_and_paths_are_the_callers(tmp_path):
    env = dict(os.environ, RUN_ALL_PYTHON=sys.executable, MODEL="gpt2", CACHE="/var/cache", KERNEL="6.1.0",
               PYTHON="python2", OUT="/nonexistent")
    res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--tasks", "arc_easy", "--limit", "2",
                          "--no-hybrid", "--out", "myres", "--early-stop", "--suffix-window", "8"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "myres" / "summary.md").is_file()  # the caller's directory, not the checkout
    assert not (REPO / "myres").exists()
    (run,) = [d for d in (tmp_path / "myres" / "arc_easy").iterdir() if d.is_dir()]
    assert "eosstop1" in run.name and "win8" in run.name


@pytest.mark.slow
def test_llada_eval_exits_0_after_a_run(tmp_path, tiny_model_dir):
    from pathlib import Path

    exe = Path(sys.executable).parent / "llada-eval"
    if not exe.exists():
        pytest.skip("llada-eval is not installed beside this interpreter")
    res = subprocess.run([str(exe), "--task", "arc_easy", "--model_name", str(tiny_model_dir), "--data_path",
                          str(REPO / "tests" / "fixtures" / "data"), "--limit", "2", "--gen_length", "8",
                          "--block_length", "8", "--steps", "2", "--no_progress", "--out_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "[{" not in res.stderr  # the summaries are printed as lines, not returned as a list
