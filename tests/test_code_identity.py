"""One identity for the model code: the package's code runs whatever directory the weights come from; a directory's
copies are checked against it and refreshed by ``llada-prepare --refresh-code``; the install works outside the
checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from support_basis import code_identity
from support_basis.code_identity import CODE_RECORD, code_status, refresh_code
from support_basis.errors import UserError
from support_basis.llada import CODE_FILES, PACKAGE_DIR

FIXTURES = REPO / "tests" / "fixtures" / "data"


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    return d


def test_a_fresh_directory_holds_the_package_code_and_its_digest(model_copy):
    assert code_status(model_copy) is None
    record = json.loads((model_copy / CODE_RECORD).read_text())
    assert record["sha256"] == code_identity.package_digest() and record["files"] == list(CODE_FILES)
    for name in CODE_FILES:
        assert (model_copy / name).read_bytes() == (PACKAGE_DIR / name).read_bytes()


def test_an_edited_missing_or_unrecorded_copy_is_said_with_the_refresh_command(model_copy):
    op = model_copy / "hybrid_attention.py"
    op.write_text(op.read_text() + "\n# an edit\n")
    said = code_status(model_copy)
    assert "hybrid_attention.py" in said and "changed since it was written" in said
    assert f"llada-prepare --refresh-code {model_copy}" in said and "this package's code runs" in said
    op.unlink()
    assert "hybrid_attention.py missing" in code_status(model_copy)
    (model_copy / CODE_RECORD).unlink()
    said = code_status(model_copy)
    assert "not checked" in said and "--refresh-code" in said
    refresh_code(model_copy)
    assert code_status(model_copy) is None


def test_a_copy_written_by_another_version_is_stale(model_copy):
    record = json.loads((model_copy / CODE_RECORD).read_text())
    for name in CODE_FILES[:1]:  # as an older package would have written it: copy and record agree
        (model_copy / name).write_text((model_copy / name).read_text() + "\n# older\n")
    record["sha256"], record["version"] = code_identity.code_digest(model_copy), "0.1.0"
    (model_copy / CODE_RECORD).write_text(json.dumps(record))
    assert "a stale copy, written from other code by support_basis 0.1.0" in code_status(model_copy)


def test_the_note_is_one_line_once_per_directory(model_copy, capsys):
    (model_copy / CODE_RECORD).unlink()
    code_identity.report_code(model_copy)
    code_identity.report_code(model_copy)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not checked" in err


def test_refresh_refuses_a_directory_without_weights_or_that_cannot_be_written(model_copy, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "llada"}))
    with pytest.raises(UserError, match="has no weights"):
        refresh_code(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["config.json"]
    with pytest.raises(UserError, match="no such directory"):
        refresh_code(tmp_path / "absent")
    op = model_copy / "hybrid_attention.py"
    op.write_text("# stale\n")
    before = {p.name: p.read_bytes() for p in model_copy.iterdir()}

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(code_identity.shutil, "copyfile", read_only)
    with pytest.raises(UserError, match="cannot write the code copies.*nothing was changed"):
        refresh_code(model_copy)
    assert {p.name: p.read_bytes() for p in model_copy.iterdir()} == before


def test_refresh_code_command_line(model_copy, tmp_path, capsys):
    from support_basis.prepare_cli import main

    (model_copy / "modeling_llada.py").write_text("# stale\n")
    main(["--refresh-code", str(model_copy)])
    assert code_status(model_copy) is None
    with pytest.raises(SystemExit) as exit_:
        main(["--refresh-code", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--refresh-code" in err[0]


def test_the_loader_builds_the_package_classes_from_any_directory(model_copy):
    """Even a directory whose copied model code is broken loads: its copies never run."""
    from support_basis.llada.modeling_llada import LLaDAModelLM
    from support_basis.loading import load_model_and_tokenizer

    (model_copy / "modeling_llada.py").write_text("raise RuntimeError('the copy ran')\n")
    model, _ = load_model_and_tokenizer(str(model_copy), device="cpu")
    assert type(model) is LLaDAModelLM
    assert not [m for m in sys.modules if m.startswith("transformers_modules")]


@pytest.mark.slow
def test_a_copied_tiny_checkpoint_loads_anywhere(tmp_path):
    """``cp -r`` of the shipped checkpoint is a complete model directory (no links): it loads as remote code in a
    process that never imports this package, and through the project's loader."""
    from support_basis.loading import DEFAULT_MODEL, load_model_and_tokenizer

    copy = tmp_path / "x"
    shutil.copytree(DEFAULT_MODEL, copy, symlinks=True)
    assert not any(p.is_symlink() for p in copy.iterdir())
    code = ("import sys, torch; sys.modules['support_basis'] = None\n"
            "from transformers import AutoModel\n"
            f"m = AutoModel.from_pretrained({str(copy)!r}, trust_remote_code=True)\n"
            "print(type(m).__module__, tuple(m(torch.tensor([[1, 2, 3]])).logits.shape[:2]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("transformers_modules") and "(1, 3)" in res.stdout, res.stderr
    model, _ = load_model_and_tokenizer(str(copy), device="cpu")
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[:2] == (1, 3)


def _edited_checkout(tmp_path) -> Path:
    """A copy of the checkout whose op negates its output (an edit that changes every answer)."""
    root = tmp_path / "edited"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns("__pycache__", ".*", "checkpoints", "tests", "docs"))
    op = root / "support_basis" / "llada" / "hybrid_attention.py"
    op.write_text(op.read_text() + "\n\n_unedited = hybrid_attention\n\n\ndef hybrid_attention(*args, **kwargs):\n"
                  "    return -_unedited(*args, **kwargs)\n")
    return root


def _run(argv, pythonpath=None):
    """``python argv`` with ``pythonpath`` ahead of the installed package (an edited copy of it), or without."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_an_edit_of_the_op_reaches_generate_and_a_runner_on_a_directory_prepared_before(tmp_path, tiny_model_dir):
    """The user's loop: edit the op in the checkout, rerun on a directory prepared before the edit. The output
    reflects the edit and the directory's stale copy is said in one line; the old code never runs silently."""
    edited = _edited_checkout(tmp_path)
    gen = ["--model", str(tiny_model_dir), "--prompt", "Hi", "--gen-length", "16", "--steps", "4", "--block-length",
           "16", "--device", "cpu"]
    before = _run([str(REPO / "generate.py"), *gen])
    after = _run([str(edited / "generate.py"), *gen], pythonpath=edited)
    assert before.returncode == 0 and after.returncode == 0, after.stderr
    assert "differs" not in before.stderr
    assert after.stdout != before.stdout  # the edit ran
    assert f"{tiny_model_dir}: its model code differs from this package's (hybrid_attention.py" in after.stderr
    runner = ["scripts/run_arc_easy.py", "--model_name", str(tiny_model_dir), "--data_path",
              str(FIXTURES), "--limit", "3", "--gen_length", "8", "--block_length", "8", "--steps", "2",
              "--no_progress", "--configs", "0.2:6"]
    outs = {}
    for name, root in (("before", None), ("after", edited)):
        res = _run([str((root or REPO) / runner[0]), *runner[1:], "--out_dir", str(tmp_path / name)], pythonpath=root)
        assert res.returncode == 0, res.stderr
        assert ("differs from this package's" in res.stderr) == (root is not None)
        outs[name] = sorted(p.read_text() for p in (tmp_path / name).rglob("records.jsonl"))
    assert outs["before"] and outs["before"] != outs["after"]


@pytest.mark.slow
def test_a_wheel_installs_one_package_that_works_outside_the_checkout(tmp_path):
    """``pip install .`` (not editable) into a fresh environment (this one's packages visible, the project itself
    not), then from another directory: llada-generate with the shipped tiny default, llada-eval --help, and the
    library import. The wheel holds one top-level package and no generic module names."""
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # this environment's packages (torch, transformers, ...) behind the new one's, without their .pth files: the
    # editable install of the checkout stays out, so only the wheel can provide support_basis
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib) / "parent_env.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    wheel_dir, source = tmp_path / "wheel", tmp_path / "source"
    # a copy of the checkout: setuptools builds in the source tree, and a stale build/ there could reach the wheel
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "__pycache__", "*.egg-info",
                                                                "results*", "outputs", "runs"))
    build = subprocess.run([str(py), "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(wheel_dir), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(wheel_dir.glob("*.whl"))
    import zipfile

    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"support_basis"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "support_basis/checkpoints/llada-tiny/model.safetensors" in names
    assert "support_basis/llada/MODEL_CARD.md" in names
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import support_basis; from support_basis.sampling import generate; "
                            "print(support_basis.__file__)"],
                           cwd=away, capture_output=True, text=True, env=env)
    assert where.returncode == 0 and str(venv) in where.stdout, where.stdout + where.stderr
    gen = subprocess.run([str(venv / "bin" / "llada-generate"), "--prompt", "What is 2 + 3?", "--gen-length", "16",
                          "--steps", "4", "--block-length", "16"], cwd=away, capture_output=True, text=True, env=env,
                         timeout=300)
    assert gen.returncode == 0 and gen.stdout.startswith("=== [0] What is 2 + 3?"), gen.stderr
    assert "differs" not in gen.stderr and "not checked" not in gen.stderr
    help_ = subprocess.run([str(venv / "bin" / "llada-eval"), "--help"], cwd=away, capture_output=True, text=True,
                           env=env)
    assert help_.returncode == 0 and "usage" in help_.stdout
    generic = subprocess.run([str(py), "-c", "import generate"], cwd=away, capture_output=True, text=True, env=env)
    assert generic.returncode != 0  # no generic top-level module installed
