"""One identity for the model code: the package's ``support_basis.llada`` is what runs; a model directory's copies
are checked against it.

A LLaDA-BS model directory carries copies of the model code (``CODE_FILES``), so that it also loads with
``trust_remote_code`` outside this project. This project's own entry points never run those copies: they load
the package's classes (:mod:`support_basis.loading`), whatever directory the weights come from. When a directory
is written (``prepare_model.py``, ``make_tiny_model.py``, training), ``CODE_RECORD`` records the SHA-256 of the
copies; every entry point then compares the directory's copies with the package's and says, in one line on
stderr, when they differ (a stale or edited copy) or cannot be checked (no record), naming the command that
refreshes them. Reads files only: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .llada import CODE_FILES, PACKAGE_DIR

CODE_RECORD = "bs_code.json"
"""The file beside the copies that records their digest (and the package version that wrote them)."""

REFRESH = "llada-prepare --refresh-code"
"""The command that rewrites a directory's copies from the installed package (``scripts/prepare_model.py``)."""

_SAID: set[str] = set()  # directories already reported in this process (one line per directory, not per load)


def code_digest(directory: str | Path) -> str:
    """SHA-256 over the names and bytes of ``CODE_FILES`` in ``directory`` (a missing file counts as absent)."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        path = Path(directory) / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<absent>")
        digest.update(b"\0")
    return digest.hexdigest()


def package_digest() -> str:
    """The digest of the code that runs: the package's own ``support_basis/llada``."""
    return code_digest(PACKAGE_DIR)


def code_status(directory: str | Path) -> str | None:
    """``None`` when ``directory``'s copies equal the package's code; otherwise one sentence saying what differs
    (no record, a stale copy, an edited copy) and how to refresh it."""
    directory = Path(directory)
    found, expected = code_digest(directory), package_digest()
    record = _read_record(directory)
    refresh = f"refresh them with `{REFRESH} {directory}`"
    if record is None:
        return (f"{directory}: its model code is not checked (no {CODE_RECORD}: the directory was made before code "
                f"hashes); this package's code runs ({PACKAGE_DIR}), not the directory's copies; {refresh}")
    if found == expected:
        return None
    differing = [n + ("" if (directory / n).is_file() else " missing") for n in CODE_FILES
                 if _file_digest(directory / n) != _file_digest(PACKAGE_DIR / n)]
    how = ("changed since it was written" if record.get("sha256") != found
           else f"a stale copy, written from other code by support_basis {record.get('version', '?')}")
    return (f"{directory}: its model code differs from this package's ({', '.join(differing)}; {how}); this "
            f"package's code runs ({PACKAGE_DIR}), not the directory's copies; {refresh}")


def report_code(directory: str | Path) -> None:
    """Print :func:`code_status`'s sentence on stderr, once per directory and process."""
    key = str(Path(directory).resolve())
    if key in _SAID:
        return
    _SAID.add(key)
    status = code_status(directory)
    if status is not None:
        print(f"# {status}", file=sys.stderr, flush=True)


def write_code(directory: str | Path) -> None:
    """Copy the package's ``CODE_FILES`` into ``directory`` and record their digest. Every file is written beside
    its target and moved into place (the record last), so a failure never leaves a half-written file."""
    from . import __version__

    directory = Path(directory)
    stage = Path(tempfile.mkdtemp(prefix=".bs-code.", dir=directory))
    try:
        for name in CODE_FILES:
            shutil.copyfile(PACKAGE_DIR / name, stage / name)
        record = {"sha256": package_digest(), "version": __version__, "files": list(CODE_FILES)}
        (stage / CODE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        for name in CODE_FILES + (CODE_RECORD,):
            target = directory / name
            if target.is_symlink():
                target.unlink()
            os.replace(stage / name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def refresh_code(directory: str | Path, flag: str = "--refresh-code") -> Path:
    """Rewrite a model directory's code copies from the package (:func:`write_code`), after checking that it is a
    LLaDA-BS model directory with weights and that it is writable; a :class:`UserError` otherwise, with nothing
    written."""
    from .model_dir import check_weights

    path = Path(directory).expanduser()
    if not path.is_dir():
        raise UserError(f"{flag} {directory}: no such directory; pass a LLaDA-BS model directory")
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{flag} {directory}: not a model directory (no config.json)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "llada":
        raise UserError(f"{flag} {directory}: config.json is not a LLaDA config (model_type {model_type!r})")
    check_weights(path)  # a directory without weights is refused here (the wrong path, most likely)
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag} {directory}: the directory is not writable; copy it somewhere writable (or fix its "
                        "permissions) and refresh that")
    try:
        write_code(path)
    except OSError as err:
        raise UserError(f"{flag} {directory}: cannot write the code copies ({err.strerror or err}); nothing was "
                        "changed") from None
    _SAID.discard(str(path.resolve()))
    return path


def _read_record(directory: Path) -> dict | None:
    try:
        record = json.loads((directory / CODE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def sync_shipped(root: str | Path) -> list[Path]:
    """Rewrite the code copies the repository ships (``LLaDA-8B-Instruct-BS/`` with its model card, and the tiny
    checkpoint) from the package; a test fails while they differ. Returns the directories written."""
    from .llada import MODEL_CARD
    from .loading import DEFAULT_MODEL

    template = Path(root) / "LLaDA-8B-Instruct-BS"
    write_code(template)
    shutil.copyfile(MODEL_CARD, template / "README.md")
    write_code(DEFAULT_MODEL)
    return [template, DEFAULT_MODEL]


if __name__ == "__main__":  # python -m support_basis.code_identity: a developer's sync after editing the model code
    for written in sync_shipped(Path(__file__).resolve().parents[1]):
        print(f"wrote the code copies of {written}")
