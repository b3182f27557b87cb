#!/usr/bin/env python
"""Turn an official LLaDA-8B-Instruct snapshot into a ready LLaDA-8B-Instruct-BS model directory.

    python scripts/prepare_model.py --source GSAI-ML/LLaDA-8B-Instruct --out models/LLaDA-8B-Instruct-BS
    python scripts/prepare_model.py --source /data/LLaDA-8B-Instruct --out models/bs --exact-ratio 0.2 --chebyshev-degree 4

The output directory holds: links to the source's weights (``*.safetensors`` + index) and tokenizer files (or
copies with ``--copy``), a ``config.json`` that is the source's plus the hybrid-attention fields and an
``auto_map`` pointing at this project's code, and that code (``configuration_llada.py``, ``modeling_llada.py``,
``hybrid_attention.py``). Nothing is half-written: the source is checked first (config, parameter names, every
shard, the tokenizer). Load it with ``AutoModel.from_pretrained(OUT, trust_remote_code=True, dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_CODE_DIR = REPO / "LLaDA-8B-Instruct-BS"
CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "hybrid_attention.py")
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


class PrepareError(Exception):
    """A problem with the source or the destination, worded for the person running the script."""


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id, downloaded (weights, config, tokenizer) to the HF cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PrepareError(f"--source {source} is a file; pass the directory of the checkpoint")
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
    """The checkpoint's weight files and parameter names; every shard named by the index must exist."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (src / s).is_file()]
        if missing:
            raise PrepareError(
                f"{src} is incomplete: the index names {len(shards)} shards but {len(missing)} are missing "
                f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); finish the download"
            )
        return [index] + [src / s for s in shards], set(weight_map)
    single = src / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(single, "pt") as f:
            return [single], set(f.keys())
    raise PrepareError(
        f"{src} has no weights: expected model.safetensors.index.json with its shards, or model.safetensors"
    )


def check_source(src: Path) -> tuple[dict, list[Path], list[Path]]:
    """Validate the source; return its config dict, weight files and tokenizer files."""
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise PrepareError(f"{src} has no config.json: is it a LLaDA checkpoint directory?")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") != "llada":
        raise PrepareError(
            f"{src}/config.json has model_type={cfg.get('model_type')!r}; expected 'llada' "
            "(a LLaDA-8B-Instruct or LLaDA-8B-Base checkpoint)"
        )
    files, names = weight_files(src)
    expected = expected_parameter_names(cfg)
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


def expected_parameter_names(cfg: dict) -> set[str]:
    import torch

    sys.path.insert(0, str(REPO))
    from configuration_llada import LLaDAConfig
    from modeling_llada import LLaDAModelLM

    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in cfg.items() if k != "auto_map"}))
    return set(model.state_dict())


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
    sys.path.insert(0, str(REPO))
    from hybrid_attention import validate_chebyshev_degree, validate_exact_ratio

    exact_ratio = validate_exact_ratio(exact_ratio, "--exact-ratio")
    chebyshev_degree = validate_chebyshev_degree(chebyshev_degree, "--chebyshev-degree")
    src = resolve_source(source, revision).resolve()
    out = Path(out).expanduser().resolve()
    if out == src:
        raise PrepareError("--out must differ from --source (the source checkpoint is left untouched)")
    if out.exists() and any(out.iterdir()) and not force:
        raise PrepareError(f"--out {out} exists and is not empty; pass --force to replace its contents")
    cfg, weights, tokenizer = check_source(src)

    out.mkdir(parents=True, exist_ok=True)
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
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for name in CODE_FILES + ("README.md",):
        target = out / name
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(MODEL_CODE_DIR / name, target)
    return out


def _place(src: Path, dst: Path, copy: bool):
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src, dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="official checkpoint: a local directory or a hub id")
    p.add_argument("--out", required=True, help="the BS model directory to write")
    p.add_argument("--exact-ratio", type=float, default=0.2, help="hybrid_exact_ratio in [0, 1] (default 0.2)")
    p.add_argument("--chebyshev-degree", type=int, default=6, help="hybrid_chebyshev_degree >= 1 (default 6)")
    p.add_argument("--copy", action="store_true", help="copy weights and tokenizer instead of linking them")
    p.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --source")
    a = p.parse_args(argv)
    try:
        out = prepare(a.source, a.out, exact_ratio=a.exact_ratio, chebyshev_degree=a.chebyshev_degree,
                      copy=a.copy, force=a.force, revision=a.revision)
    except (PrepareError, ValueError) as err:
        print(f"prepare_model.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out}\nload it with: AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True, "
          "dtype=torch.bfloat16)")


if __name__ == "__main__":
    main()
