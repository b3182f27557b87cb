"""Checkpoints that a kill at any moment cannot corrupt.

``state.pt`` (model weights, optimizer, step, learning curve, the run's arguments) is the one thing ``--resume``
reads; it is written to a temporary file and moved into place with ``os.replace`` (atomic on POSIX). The exported
model directory (config, safetensors, tokenizer, remote code) is a product of the state: it is written beside the
target and swapped in, so the target is always either the previous complete export or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..code_identity import CODE_RECORD, write_code
from ..locking import DirLock
from ..llada import CODE_FILES
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model")


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def export_model(out: Path, model, tokenizer, source_dir: Path, extra_files: dict[str, str]):
    """Write a complete model directory at ``out`` (replacing it atomically). The remote-code files are copies
    of the package's code with their digest (:func:`support_basis.code_identity.write_code`).
    The tokenizer files are copied from ``source_dir`` (the model trained from) as they are, so their portable
    form (read by transformers 4.49 and 5.x) survives. ``extra_files``: name -> text written alongside."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged and swapped through siblings of its own (unique names): a user's DIR.partial or DIR.old is never touched
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    model.save_pretrained(tmp, safe_serialization=True)
    present = [n for n in TOKENIZER_FILES if (source_dir / n).is_file()]
    for name in present:
        shutil.copyfile(source_dir / name, tmp / name)
    if not present:
        tokenizer.save_pretrained(tmp)
    write_code(tmp)  # save_pretrained may have copied the remote code already: replaced by the package's
    _portable_config(tmp / "config.json")
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) if out.exists() else None
    if old is not None:
        os.replace(out, old)  # onto the empty directory just made: atomic on POSIX
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


# What export_model writes into a model directory: a directory holding anything else is not training's to replace.
EXPORT_MARKERS = ("training_args.json", "training_log.jsonl")
_EXPORTED = set(CODE_FILES) | set(TOKENIZER_FILES) | set(EXPORT_MARKERS) | {CODE_RECORD,
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"}


def foreign_entries(out: Path) -> list[str]:
    """The entries of an existing ``out`` that ``export_model`` would not have written (sorted), or ``["(no
    training_args.json / training_log.jsonl)"]``-style reasons when it is not a training output at all. Empty for a
    directory training may replace: missing, empty, or a model directory this project's training wrote."""
    out = Path(out)
    if not out.exists():
        return []
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return []
    missing = [m for m in EXPORT_MARKERS if m not in names]
    if missing:
        return [f"(not written by training: no {' or '.join(missing)})"]
    return [n for n in names if n not in _EXPORTED and not (n.startswith("model-") and n.endswith(".safetensors"))]


class RunLock(DirLock):
    """The lock on a training output (``OUT.state/lock``), so that two runs never write one ``--out``."""

    def __init__(self, out: Path):
        super().__init__(Path(str(Path(out)) + ".state") / "lock")

    def release(self, keep_if: Path | None = None) -> None:
        """Drop the lock; where ``keep_if`` (the run's state file) does not exist, also remove the lock and its
        directory if nothing else is in it, so a run that failed before its first save leaves nothing behind."""
        if self._file is None:
            return
        if keep_if is not None and not Path(keep_if).exists():
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:  # not empty: the run's own files
                pass
        super().release()


def _portable_config(path: Path):
    """Loadable by transformers 4.49 and 5.x alike: both read ``torch_dtype``; no version stamp."""
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = str(cfg.pop("dtype", cfg.get("torch_dtype", "float32"))).replace("torch.", "")
    cfg.pop("transformers_version", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
