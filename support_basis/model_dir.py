"""Checks of a model directory before anything is loaded, each failure a one-line :class:`UserError`.

:func:`check_model_dir` is what every command line runs on its ``--model`` before loading it: a directory (not a
file, not a missing path) with a readable ``config.json``; for LLaDA-BS, this project's remote code (an official
checkpoint without it is told to run ``scripts/prepare_model.py``); weights whose every safetensors file has a
complete header and exactly the size the header describes (a truncated download names the file); a tokenizer.
:func:`load_config` then builds the config with this package's code, so a bad ``hybrid_*`` value in
``config.json`` is one line naming the file. :func:`check_weights` is shared with ``prepare_model.py``, which also
needs each shard's tensor names to equal the index's. Only ``load_config`` and ``check_device`` import torch /
transformers; the rest reads files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import UserError, one_line, read_json_object

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_MAX_HEADER = 100 << 20  # safetensors refuses headers above 100 MB
MAKE_HINT = ("build the tiny smoke model with `python scripts/make_tiny_model.py DIR`, or prepare the official "
             "weights with `python scripts/prepare_model.py --source GSAI-ML/LLaDA-8B-Instruct --out DIR`")


def _named(flag: str, name: str) -> str:
    """``--model DIR`` or, for a ``key=`` flag (lm-eval's model arguments), ``pretrained=DIR``."""
    return f"{flag}{name}" if flag.endswith("=") else f"{flag} {name}"


def is_hub_id(name: str) -> bool:
    """``ORG/NAME`` that is not a local path: left to the hub (its errors are caught at load)."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and not Path(name).expanduser().exists()


def check_model_dir(name: str, flag: str = "--model", *, llada: bool = True, tokenizer: bool = True) -> dict | None:
    """Check a model directory's files; return its ``config.json`` as a dict (``None`` for a hub id).

    With ``llada`` the directory must be a LLaDA-BS directory: ``model_type`` llada, an ``auto_map`` whose code
    files are present and the hybrid fields; with ``tokenizer`` it must hold a tokenizer. Raises
    :class:`UserError` naming the path, what is wrong and the fix.
    """
    if is_hub_id(name):
        check_hub(name, flag)
        return None
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"{_named(flag, name)} is not a model directory (it does not exist); {MAKE_HINT}")
    if not path.is_dir():
        raise UserError(f"{_named(flag, name)} is a file; pass the model directory (the one holding config.json)")
    if not (path / "config.json").is_file():
        raise UserError(f"{_named(flag, name)} is not a model directory (no config.json); {MAKE_HINT}")
    cfg = read_json_object(path / "config.json", fix="re-create the directory (or restore config.json)")
    if llada:
        _check_llada_layout(name, path, cfg, flag)
    files, _ = check_weights(path)
    if llada and files:
        _check_weights_match_config(path, cfg, files)
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{path} has no tokenizer (tokenizer.json): copy the checkpoint's tokenizer files "
                        "(tokenizer.json, tokenizer_config.json, special_tokens_map.json) into it, or re-run "
                        "scripts/prepare_model.py")
    for extra in ("tokenizer_config.json", "special_tokens_map.json"):
        if (path / extra).is_file():
            read_json_object(path / extra, fix="copy that file again from the checkpoint")
    if (path / "tokenizer.json").is_file():
        vocab = read_json_object(path / "tokenizer.json", fix="copy that file again from the checkpoint")
        if llada:
            _check_mask_token(path, cfg, vocab)
    return cfg


def check_hub(name: str, flag: str = "--model") -> None:
    """A hub id is reachable, or cached: asked once, with a short timeout, before anything loads (transformers
    would otherwise retry for most of a minute offline). Offline with the files cached, the rest of the process
    runs with ``HF_HUB_OFFLINE=1`` (no retries); offline without them, a :class:`UserError`."""
    import os

    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            HfApi().model_info(name, timeout=10)
            return
        except Exception as err:  # noqa: BLE001  (offline, a firewall, an unknown or gated repo: said below)
            reason = f"{type(err).__name__}: {one_line(str(err))[:160]}"
            if getattr(getattr(err, "response", None), "status_code", None) in (401, 403, 404):
                raise UserError(f"{_named(flag, name)}: the Hugging Face Hub has no such model, or it is gated "
                                f"({reason}); check the name (or log in with `hf auth login`)") from None
    if cached:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the cached snapshot, without a minute of retries
        return
    raise UserError(f"{_named(flag, name)}: the Hugging Face Hub cannot be reached ({reason}) and the model is not "
                    "in the local cache; download it where the Hub is reachable (`hf download ORG/NAME --local-dir "
                    "DIR`) and pass the directory")


MASK_TOKEN = "<|mdm_mask|>"


def _check_mask_token(path: Path, cfg: dict, tokenizer: dict) -> None:
    """The config's ``mask_token_id`` is the tokenizer's ``<|mdm_mask|>`` (else every step predicts garbage)."""
    added = {t.get("content"): t.get("id") for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)}
    ids = (tokenizer.get("model") or {}).get("vocab") or {}
    mask = added.get(MASK_TOKEN, ids.get(MASK_TOKEN) if isinstance(ids, dict) else None)
    if mask is None:
        raise UserError(f"{path / 'tokenizer.json'} has no {MASK_TOKEN} token: not a LLaDA tokenizer; copy the "
                        "checkpoint's own tokenizer files into the directory")
    if cfg.get("mask_token_id") != mask:
        raise UserError(f"{path / 'config.json'}: mask_token_id is {cfg.get('mask_token_id')!r} but the tokenizer's "
                        f"{MASK_TOKEN} is {mask}; set mask_token_id to {mask} (or use the tokenizer the model was "
                        "trained with)")


def expected_tensors(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes a LLaDA-BS checkpoint of config ``cfg`` (a config.json dict) holds: the
    model's own parameters, built on the meta device (no memory). ``ValueError`` for a config it rejects."""
    import torch

    from .llada.configuration_llada import LLaDAConfig
    from .llada.modeling_llada import LLaDAModelLM

    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in cfg.items() if k != "auto_map"}))
    return {name: tuple(t.shape) for name, t in model.named_parameters()}


def _check_weights_match_config(path: Path, cfg: dict, files: list[Path]) -> None:
    """Every tensor the config's architecture needs is in the weights with its shape, and nothing else is (a
    config and weights of different models would load with part of the model random)."""
    try:
        expected = expected_tensors(cfg)
    except ValueError as err:
        raise UserError(f"{path / 'config.json'}: {err}; fix that value in the file") from None
    found = {}
    for f in files:
        if f.suffix == ".safetensors":
            found.update(safetensors_header(f))
    if not found:
        return
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    reshaped = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in the architecture (e.g. {unexpected[0]})")
        if reshaped:
            parts.append(f"{len(reshaped)} of another shape (e.g. {reshaped[0]}: {found[reshaped[0]]} in the "
                         f"weights, {expected[reshaped[0]]} from config.json)")
        raise UserError(f"{path}: the weights do not match config.json ({'; '.join(parts)}); the config and the "
                        "weights come from different models: restore the directory's own config.json (or "
                        "re-create the directory)")


def _check_llada_layout(name: str, path: Path, cfg: dict, flag: str) -> None:
    if cfg.get("model_type") != "llada":
        raise UserError(f"{_named(flag, name)}: config.json has model_type {cfg.get('model_type')!r}, not 'llada'; "
                        "pass a LLaDA-BS model directory")
    prepare = (f"run `python scripts/prepare_model.py --source {name} --out DIR` and pass DIR")
    auto_map = cfg.get("auto_map")
    if not isinstance(auto_map, dict) or "AutoModel" not in auto_map:
        raise UserError(f"{_named(flag, name)} is not a LLaDA-BS model: an official LLaDA checkpoint without this "
                        f"project's model code (config.json has no auto_map); {prepare}")
    if "rope_theta" not in cfg:  # the class default (500000) would silently run a model trained with another base
        raise UserError(f"{path / 'config.json'} has no rope_theta: add the RoPE base the model was trained with "
                        "(LLaDA-8B: 500000; the shipped tiny LLaDA: 10000)")
    absent = [f for f in ("hybrid_exact_ratio", "hybrid_chebyshev_degree") if f not in cfg]
    if absent:
        raise UserError(f"{_named(flag, name)} is not a LLaDA-BS model: config.json has no {' / '.join(absent)} (an "
                        f"official LLaDA directory?); {prepare}")


def load_config(name: str, flag: str = "--model", **overrides):
    """The directory's config object, built by this package's ``LLaDAConfig`` (never the directory's copy of it),
    with ``overrides`` set (``None`` values skipped). A value the config rejects (e.g. ``hybrid_exact_ratio: 1.5``
    in config.json, or an override) is a :class:`UserError` naming it; any other error keeps its traceback."""
    from .llada.configuration_llada import ConfigValueError, LLaDAConfig

    where = name if is_hub_id(name) else f"{Path(name).expanduser() / 'config.json'}"
    try:
        config = LLaDAConfig.from_pretrained(name)
    except ConfigValueError as err:
        raise UserError(f"{where}: {err}; fix that value in the file") from None
    except OSError as err:
        raise UserError(f"{_named(flag, name)}: cannot load it ({err}); check the name, or download it and pass the "
                        "directory") from None
    for key, value in overrides.items():
        if value is not None:
            try:
                setattr(config, key, value)
            except ConfigValueError as err:
                raise UserError(str(err)) from None
    return config


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------


def safetensors_names(path: Path) -> set[str]:
    """The tensor names of one safetensors file (see ``safetensors_header``)."""
    return set(safetensors_header(path))


def safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of one safetensors file, after checking that its header is complete and that
    the file is exactly as long as the header says (a truncated download fails here, naming the file)."""
    path = Path(path)
    again = "download it again (or re-create the directory)"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = f.read(n) if n is not None and n <= min(_MAX_HEADER, size - 8) else None
    except FileNotFoundError:
        raise UserError(f"{path} is missing" + (" (a broken link)" if path.is_symlink() else "") + f"; {again}") \
            from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    if n is None:
        raise UserError(f"{path} is truncated ({size} bytes, not even a safetensors header); {again}")
    if raw is None:
        what = "is truncated" if n <= _MAX_HEADER else "is not a safetensors file"
        raise UserError(f"{path} {what} (its header claims {n} bytes, the file has {size}); {again}")
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        shapes = {k: tuple(int(x) for x in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, IndexError, ValueError, AttributeError):
        raise UserError(f"{path} is not a safetensors file (its header is not valid); {again}") from None
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        what = "is truncated" if size < expected else "has trailing bytes (corrupt)"
        raise UserError(f"{path} {what}: {size} bytes, its header describes {expected}; {again}")
    return shapes


def check_weights(path: Path) -> tuple[list[Path], set[str]]:
    """A directory's weight files (index first, if sharded) and parameter names, every file checked.

    Sharded: every shard the index names exists, is complete, and holds exactly the tensors the index maps to
    it. A ``model.safetensors`` beside an index is refused (transformers would load the stale single file).
    """
    path = Path(path)
    index, single = path / "model.safetensors.index.json", path / "model.safetensors"
    if index.is_file():
        if single.exists():
            raise UserError(f"{path} holds both model.safetensors and model.safetensors.index.json (one of them is "
                            "stale); remove the one that does not belong to this checkpoint")
        data = read_json_object(index, fix="download it again")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map; download it again")
        by_shard: dict[str, set[str]] = {}
        for tensor, shard in weight_map.items():
            by_shard.setdefault(str(shard), set()).add(tensor)
        missing = [s for s in sorted(by_shard) if not (path / s).exists()]
        if missing:
            raise UserError(f"{path} is incomplete: the index names {len(by_shard)} shards and "
                            f"{len(missing)} are missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})"
                            "; finish the download")
        for shard, names in sorted(by_shard.items()):
            found = safetensors_names(path / shard)
            if found != names:
                extra, lacking = sorted(found - names), sorted(names - found)
                raise UserError(f"{path / shard} does not hold the tensors the index maps to it ({len(lacking)} "
                                f"missing, e.g. {lacking[:2]}; {len(extra)} not in the index, e.g. {extra[:2]}); the "
                                "shards and the index come from different downloads: download them again")
        return [index] + [path / s for s in sorted(by_shard)], set(weight_map)
    if single.exists():
        return [single], safetensors_names(single)
    if any(path.glob("*.bin")):
        return [], set()  # PyTorch pickles: transformers checks them itself
    raise UserError(f"{path} has no weights: expected model.safetensors, or model.safetensors.index.json with its "
                    "shards; finish the download (or re-create the directory)")


# ----------------------------------------------------------------------------------------------------------------
# After loading: devices and token ids
# ----------------------------------------------------------------------------------------------------------------


def check_device(device: str, flag: str = "--device") -> str:
    """``device`` resolved (``auto`` -> cuda if available, else cpu) after checking it exists on this machine."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {device}: this machine has no usable CUDA (torch {torch.__version__}, "
                            f"{torch.cuda.device_count()} GPUs visible); use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {device}: only {torch.cuda.device_count()} GPUs are visible (cuda:0 .. "
                            f"cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{flag} {device}: MPS is not available on this machine; use --device cpu (or auto)")
    elif dev.type != "cpu":
        raise UserError(f"{flag} {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return str(dev)


def embedding_rows(config) -> int | None:
    """How many token ids have an embedding row: LLaDA's ``embedding_size`` (which may exceed ``vocab_size``), else
    ``vocab_size``; ``None`` if the config has neither."""
    return getattr(config, "embedding_size", None) or getattr(config, "vocab_size", None)


def check_token_ids(token_lists, config, labels=None) -> None:
    """Every id of every list must have an embedding row; else the tokenizer does not belong to the model.
    ``labels[i]`` names list ``i`` in the message (default ``prompt #i+1``)."""
    rows = embedding_rows(config)
    if rows is None:
        return
    mask = getattr(config, "mask_token_id", None)
    for i, ids in enumerate(token_lists):
        label = labels[i] if labels is not None else f"prompt #{i + 1}"
        bad = [t for t in ids if not 0 <= t < rows]
        if bad:
            raise UserError(f"{label} tokenises to id {bad[0]}, outside the model's vocabulary (0 .. {rows - 1}): "
                            "the tokenizer files do not belong to this model; copy the model's own tokenizer")
        if mask is not None and mask in ids:  # the text <|mdm_mask|> would be a position to fill, not a question
            raise UserError(f"{label} contains the mask token (id {mask}, the text <|mdm_mask|>): the sampler would "
                            "fill it in as part of the answer; remove it from the text")
