"""Turn an official LLaDA-8B-Instruct snapshot into a ready LLaDA-8B-Instruct-BS model directory (the library
behind ``scripts/prepare_model.py``, whose docstring describes the result).

``prepare(source, out, ...)`` checks the source first (config, parameter names, every shard's header, size and
tensor names against the index, the tokenizer), assembles the directory beside ``out`` and moves it into place at
the end, so nothing is ever half-written. Every expected failure is a :class:`PrepareError` worded for a person.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError, check_output_dir, read_json_object
from .code_identity import write_code
from .llada import MODEL_CARD
from .llada.configuration_llada import HYBRID_VALIDATORS
from .model_dir import check_weights, expected_tensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "generation_config.json",
)
AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModel": "modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
}
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.md"]


class PrepareError(UserError):
    """A problem with the source or the destination, worded for the person running the script."""


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id, downloaded (weights, config, tokenizer) to the HF cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PrepareError(f"--source {source} is a file; pass the directory of the checkpoint")
        if revision is not None:  # a local directory has one version: the revision would be silently ignored
            raise PrepareError(f"--revision {revision}: --source {source} is a local directory, not a hub id; "
                               "check out that revision there (or pass the hub id), and drop --revision")
        return path
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise PrepareError(
            f"--source {source}: no such directory, and not a hub id of the form ORG/NAME "
            "(e.g. GSAI-ML/LLaDA-8B-Instruct)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as err:  # offline, unknown repo, gated, ...
        raise PrepareError(
            f"could not download {source} from the Hugging Face hub ({type(err).__name__}: {err}). On a machine "
            f"with internet run `huggingface-cli download {source} --local-dir DIR` (about 16 GB) and pass "
            "--source DIR"
        ) from None


def weight_files(src: Path) -> tuple[list[Path], set[str]]:
    """The checkpoint's weight files and parameter names (:func:`support_basis.model_dir.check_weights`: every
    shard named by the index exists, has a complete header and the size it describes, and holds exactly the
    tensors the index maps to it)."""
    try:
        return check_weights(src)
    except UserError as err:
        raise PrepareError(str(err)) from None


def check_source(src: Path) -> tuple[dict, list[Path], list[Path]]:
    """Validate the source; return its config dict, weight files and tokenizer files."""
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise PrepareError(f"{src} has no config.json: is it a LLaDA checkpoint directory?")
    try:
        cfg = read_json_object(cfg_path, fix="download it again")
    except UserError as err:
        raise PrepareError(str(err)) from None
    if cfg.get("model_type") != "llada":
        raise PrepareError(
            f"{src}/config.json has model_type={cfg.get('model_type')!r}; expected 'llada' "
            "(a LLaDA-8B-Instruct or LLaDA-8B-Base checkpoint)"
        )
    files, names = weight_files(src)
    if not files:
        raise PrepareError(f"{src} has PyTorch .bin weights only; this script links safetensors (download the "
                           "*.safetensors files of the checkpoint)")
    try:
        expected = set(expected_tensors(cfg))
    except ValueError as err:
        raise PrepareError(f"{cfg_path}: {err}") from None
    if names != expected:
        missing, unexpected = sorted(expected - names), sorted(names - expected)
        raise PrepareError(
            f"the parameters of {src} do not match the LLaDA architecture of its config: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    tokenizer = [src / f for f in TOKENIZER_FILES if (src / f).is_file()]
    if not any(f.name in ("tokenizer.json", "tokenizer.model") for f in tokenizer):
        raise PrepareError(f"{src} has no tokenizer (tokenizer.json): download the tokenizer files too")
    return cfg, files, tokenizer


def prepare(
    source: str,
    out: str | Path,
    *,
    exact_ratio: float = 0.2,
    chebyshev_degree: int = 6,
    copy: bool = False,
    force: bool = False,
    revision: str | None = None,
) -> Path:
    """Build the BS directory at ``out`` from ``source``; return its path."""
    from .llada.configuration_llada import validate_chebyshev_degree, validate_exact_ratio

    exact_ratio = validate_exact_ratio(exact_ratio, "--exact-ratio")
    chebyshev_degree = validate_chebyshev_degree(chebyshev_degree, "--chebyshev-degree")
    src = resolve_source(source, revision).resolve()
    out = Path(out).expanduser().resolve()
    if out == src or src in out.parents:
        raise PrepareError("--out must lie outside --source (the source checkpoint is left untouched)")
    try:
        check_output_dir(out, "--out")
    except UserError as err:
        raise PrepareError(str(err)) from None
    if out.exists() and any(out.iterdir()):
        if not force:
            raise PrepareError(f"--out {out} exists and is not empty; pass --force to replace its contents")
        if not (out / "config.json").is_file():  # --force deletes the old contents: only ever a model directory
            raise PrepareError(f"--out {out} is not empty and not a model directory (no config.json); refusing to "
                               "delete it even with --force: pass a new or empty directory")
    cfg, weights, tokenizer = check_source(src)

    # assemble beside --out, then move into place: a failure leaves nothing half-written, --force no stale file
    anchor = out.parent
    while not anchor.exists():
        anchor = anchor.parent
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=anchor))
    stage.chmod(0o755)  # mkdtemp makes it private
    try:
        _assemble(stage, cfg, weights, tokenizer, copy, exact_ratio, chebyshev_degree)
        out.parent.mkdir(parents=True, exist_ok=True)
        old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out


def _assemble(out: Path, cfg: dict, weights, tokenizer, copy: bool, exact_ratio: float, chebyshev_degree: int):
    """Write the BS directory's files into ``out`` (an empty directory)."""
    for f in weights + tokenizer:
        _place(f, out / f.name, copy)
    cfg = dict(cfg)
    cfg.pop("transformers_version", None)
    cfg.update(
        hybrid_exact_ratio=exact_ratio,
        hybrid_chebyshev_degree=chebyshev_degree,
        auto_map=AUTO_MAP,
        architectures=["LLaDAModelLM"],
    )
    cfg.setdefault("torch_dtype", "bfloat16")
    from .llada.configuration_llada import LLaDAConfig

    defaults = LLaDAConfig()  # every knob in the file, at its default where the source has none
    for knob in HYBRID_VALIDATORS:
        cfg.setdefault(knob, getattr(defaults, knob))
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_code(out)  # copies of the package's code, for trust_remote_code users, with their digest
    shutil.copyfile(MODEL_CARD, out / "README.md")


def _place(src: Path, dst: Path, copy: bool):
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src, dst)
