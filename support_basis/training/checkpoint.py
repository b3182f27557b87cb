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
from pathlib import Path

import torch

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


def export_model(out: Path, model, tokenizer, source_dir: Path, code_dir: Path, link_code: bool,
                 extra_files: dict[str, str]):
    """Write a complete model directory at ``out`` (replacing it atomically). The remote-code files come from
    ``code_dir``: relative symlinks with ``link_code`` (one source of truth inside a repository), else copies.
    The tokenizer files are copied from ``source_dir`` (the model trained from) as they are, so their portable
    form (read by transformers 4.49 and 5.x) survives. ``extra_files``: name -> text written alongside."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    present = [n for n in TOKENIZER_FILES if (source_dir / n).is_file()]
    for name in present:
        shutil.copyfile(source_dir / name, tmp / name)
    if not present:
        tokenizer.save_pretrained(tmp)
    for name in CODE_FILES:  # save_pretrained may have copied the remote code already: replace it
        target = (code_dir / name).resolve()
        (tmp / name).unlink(missing_ok=True)
        if link_code:
            os.symlink(os.path.relpath(target, out.resolve()), tmp / name)
        else:
            shutil.copyfile(target, tmp / name)
    _portable_config(tmp / "config.json")
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _portable_config(path: Path):
    """Loadable by transformers 4.49 and 5.x alike: both read ``torch_dtype``; no version stamp."""
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = str(cfg.pop("dtype", cfg.get("torch_dtype", "float32"))).replace("torch.", "")
    cfg.pop("transformers_version", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
