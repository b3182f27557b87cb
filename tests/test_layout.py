"""The house rules a change could quietly break: the library never imports a script or a top-level module, nothing
edits ``sys.path``, no source file grows past 700 lines, the README stays a user's guide."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

TOP_LEVEL = {"generate", "app", "configuration_llada", "modeling_llada", "hybrid_attention", "hybrid_fit",
             "hybrid_sample", "hybrid_native", "hybrid_triton"}
SCRIPTS = {p.stem for p in (REPO / "scripts").glob("*.py")} | {p.stem for p in (REPO / "bench").glob("*.py")}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py") if not p.is_symlink())


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, statically or through ``importlib.import_module``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    return names


@pytest.mark.parametrize("path", python_files("support_basis"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_imports_no_script_and_no_top_level_module(path):
    wrong = imported_modules(path) & (TOP_LEVEL | SCRIPTS)
    assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: import support_basis.* instead"


def test_nothing_edits_sys_path():
    for path in python_files("support_basis", "scripts", "bench", "tests", "LLaDA-8B-Instruct-BS") + [
            REPO / "generate.py", REPO / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                pytest.fail(f"{path.relative_to(REPO)}:{node.lineno} uses sys.path; the project is installed")


def test_no_source_file_outside_tests_exceeds_700_lines():
    long = {str(p.relative_to(REPO)): n for p in python_files("support_basis", "scripts", "bench",
                                                               "LLaDA-8B-Instruct-BS") + [REPO / "generate.py",
                                                                                           REPO / "app.py"]
            if (n := len(p.read_text().splitlines())) > 700}
    assert not long, long


def test_readme_is_a_guide_that_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300, len(lines)
    fence = lines.index("```bash")
    setup, test = lines[fence + 1], lines[fence + 2]
    assert "pip install torch==" in setup and "pip install -e " in setup, setup
    assert test == "python -m pytest -q", test
    ci = (REPO / ".ci" / "run").read_text()  # CI installs what the README says and runs the README's command
    assert setup.split("pip install -e ")[1] in ci and "\n.venv/bin/python -m pytest -q\n" in ci
