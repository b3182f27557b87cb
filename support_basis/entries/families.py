"""Which modules produce q and k, per model family (incl. fused QKV and its split)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from torch import nn

KINDS = ("q", "k")

_PRE_ROPE = "q_proj / k_proj outputs (pre-RoPE, before 1/sqrt(head_dim) scaling)"


@dataclass(frozen=True)
class FamilySpec:
    """How one model family exposes its query / key projections.

    ``q_pattern`` / ``k_pattern`` (separate projections) or ``qkv_pattern`` (one fused linear whose output is
    ``[q | k | v]`` along the last dim) are regexes matched against ``model.named_modules()`` names with
    ``re.search``; group 1 is the layer index. ``model_types`` are the ``config.model_type`` values that select the
    family outright; ``note`` says what the recorded entries are (it goes into every CSV row).
    """

    name: str
    description: str
    model_types: tuple[str, ...]
    note: str
    q_pattern: str | None = None
    k_pattern: str | None = None
    qkv_pattern: str | None = None
    needs_model_type: bool = False  # its module names are shared with another family: only chosen by model_type

    @property
    def fused(self) -> bool:
        return self.qkv_pattern is not None


FAMILIES: dict[str, FamilySpec] = {
    f.name: f
    for f in (
        FamilySpec(
            "llada",
            "LLaDA (transformer.blocks.N.q_proj / k_proj)",
            ("llada",),
            _PRE_ROPE,
            q_pattern=r"(?:^|\.)blocks\.(\d+)\.q_proj$",
            k_pattern=r"(?:^|\.)blocks\.(\d+)\.k_proj$",
        ),
        FamilySpec(
            "llama",
            "Llama / TinyLlama / Mistral-like (layers.N.self_attn.q_proj / k_proj)",
            ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite"),
            _PRE_ROPE,
            q_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.q_proj$",
            k_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.k_proj$",
        ),
        FamilySpec(
            "phi",
            "Phi, unfused (HF-native PhiForCausalLM: layers.N.self_attn.q_proj / k_proj)",
            ("phi",),
            _PRE_ROPE + "; Phi rotates only the first partial_rotary_factor of each head",
            q_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.q_proj$",
            k_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.k_proj$",
            needs_model_type=True,
        ),
        FamilySpec(
            "phi-fused",
            "Phi with a fused QKV linear (Wqkv / qkv_proj: Phi-2 remote code, Phi-3), split by head counts",
            ("phi3", "phi-msft", "mixformer-sequential"),
            "fused QKV output split [q | k | v] by head counts (pre-RoPE, before 1/sqrt(head_dim) scaling)",
            qkv_pattern=r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.(?:[A-Za-z_]+\.)?(?:Wqkv|qkv_proj)$",
        ),
        FamilySpec(
            "opt",
            "OPT (decoder.layers.N.self_attn.q_proj / k_proj)",
            ("opt",),
            "q_proj / k_proj outputs; OPT multiplies q by head_dim**-0.5 inside attention AFTER q_proj: the recorded "
            "q is WITHOUT that factor; OPT has learned absolute positions (no RoPE)",
            q_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.q_proj$",
            k_pattern=r"(?:^|\.)layers\.(\d+)\.self_attn\.k_proj$",
            needs_model_type=True,
        ),
        FamilySpec(
            "vit",
            "ViT (layer.N.attention.attention.query / key, or layers.N.attention.q_proj / k_proj in transformers 5)",
            ("vit",),
            "query / key projection outputs (no RoPE in ViT; before 1/sqrt(head_dim) scaling)",
            q_pattern=r"(?:^|\.)layers?\.(\d+)\.attention\.(?:attention\.)?(?:query|q_proj)$",
            k_pattern=r"(?:^|\.)layers?\.(\d+)\.attention\.(?:attention\.)?(?:key|k_proj)$",
        ),
        FamilySpec(
            "bert",
            "BERT-like encoders (encoder.layer.N.attention.self.query / key)",
            ("bert", "roberta", "xlm-roberta", "electra"),
            "query / key projection outputs (learned absolute positions, no RoPE; before 1/sqrt(head_dim) scaling)",
            q_pattern=r"(?:^|\.)layer\.(\d+)\.attention\.self\.(?:query|q_proj)$",
            k_pattern=r"(?:^|\.)layer\.(\d+)\.attention\.self\.(?:key|k_proj)$",
        ),
    )
}


class UnsupportedModelError(ValueError):
    """The model matches none of ``FAMILIES`` (the message lists them)."""


def _families_help() -> str:
    return "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values())


@dataclass
class LayerProjection:
    """The module(s) of one attention layer whose outputs are recorded.

    Separate projections: ``q_module`` / ``k_module`` (``q_name`` / ``k_name`` their module names), ``split`` is
    None. Fused: ``q_module is k_module`` is the QKV linear and ``split = (q_dim, k_dim, v_dim)`` cuts its last dim.
    """

    layer: int
    q_name: str
    k_name: str
    q_module: nn.Module
    k_module: nn.Module
    split: tuple[int, int, int] | None = None

    @property
    def fused(self) -> bool:
        return self.split is not None


def _model_type(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None)


def _matches(spec: FamilySpec, names: Sequence[str]) -> bool:
    pats = [spec.qkv_pattern] if spec.fused else [spec.q_pattern, spec.k_pattern]
    return all(any(re.search(p, n) for n in names) for p in pats)


def detect_family(model: nn.Module) -> str:
    """The family name (a key of ``FAMILIES``) of ``model``, from ``config.model_type`` and its module names.

    A family is a candidate when its projection patterns match module names; a candidate whose ``model_types``
    contain ``config.model_type`` wins; otherwise the first candidate that does not need a model type (so an
    unknown Llama-like model is ``llama``). Raises ``UnsupportedModelError`` listing the supported families.
    """
    names = [n for n, _ in model.named_modules()]
    mtype = _model_type(model)
    candidates = [f for f in FAMILIES.values() if _matches(f, names)]
    for f in candidates:
        if mtype in f.model_types:
            return f.name
    for f in candidates:
        if not f.needs_model_type:
            return f.name
    proj_like = [n for n in names if re.search(r"(q_proj|k_proj|query|key|qkv|Wqkv|c_attn|q_lin)$", n)][:6]
    raise UnsupportedModelError(
        f"unsupported model (model_type={mtype!r}, class {type(model).__name__}): no family's query/key "
        f"projections were found. Supported families: {_families_help()}. "
        f"Projection-like modules seen: {proj_like or 'none'}"
    )


def _config_int(cfg, *names):
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def fused_split_sizes(config, out_features: int) -> tuple[int, int, int]:
    """``(q_dim, k_dim, v_dim)`` of a fused QKV output of width ``out_features``, from the config's head counts.

    Reads ``num_attention_heads`` (or ``n_head`` / ``n_heads``), ``num_key_value_heads`` (or ``n_head_kv`` /
    ``n_kv_heads``; default: the head count) and ``head_dim`` (default ``hidden_size // heads``). Raises
    ``ValueError`` if ``head_dim * (heads + 2 * kv_heads) != out_features``.
    """
    heads = _config_int(config, "num_attention_heads", "n_head", "n_heads")
    if heads is None:
        raise ValueError("fused QKV: the config has no head count (num_attention_heads / n_head / n_heads)")
    kv = _config_int(config, "num_key_value_heads", "n_head_kv", "n_kv_heads") or heads
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model")
    head_dim = _config_int(config, "head_dim") or (hidden // heads if hidden else None)
    if head_dim is None or head_dim * (heads + 2 * kv) != out_features:
        raise ValueError(
            f"fused QKV of width {out_features} does not split as head_dim * (heads + 2 * kv_heads) with "
            f"heads={heads}, kv_heads={kv}, head_dim={head_dim}"
        )
    return heads * head_dim, kv * head_dim, kv * head_dim


def find_projections(model: nn.Module, family: str | None = None) -> list[LayerProjection]:
    """Every attention layer's q/k projection modules, sorted by layer index (0-based, contiguous check).

    ``family`` defaults to ``detect_family(model)``. Raises ``UnsupportedModelError`` for an unknown family name and
    ``ValueError`` if a layer index is matched twice (e.g. a model with two encoders) or a q has no k.
    """
    family = family or detect_family(model)
    if family not in FAMILIES:
        raise UnsupportedModelError(f"unknown family {family!r}. Supported families: {_families_help()}")
    spec = FAMILIES[family]
    found: dict[str, dict[int, tuple[str, nn.Module]]] = {"q": {}, "k": {}, "qkv": {}}
    pats = {"qkv": spec.qkv_pattern} if spec.fused else {"q": spec.q_pattern, "k": spec.k_pattern}
    for name, module in model.named_modules():
        for kind, pat in pats.items():
            m = re.search(pat, name)
            if m:
                layer = int(m.group(1))
                if layer in found[kind]:
                    raise ValueError(
                        f"layer {layer} matched twice for {kind} ({found[kind][layer][0]!r} and {name!r}); "
                        "pass a sub-module that holds a single stack of attention layers"
                    )
                found[kind][layer] = (name, module)
    out = []
    if spec.fused:
        for layer, (name, module) in sorted(found["qkv"].items()):
            width = getattr(module, "out_features", None)
            if width is None:
                raise ValueError(f"fused QKV module {name!r} has no out_features (expected an nn.Linear)")
            split = fused_split_sizes(model.config, width)
            out.append(LayerProjection(layer, name, name, module, module, split))
    else:
        if set(found["q"]) != set(found["k"]):
            raise ValueError(f"query layers {sorted(found['q'])} and key layers {sorted(found['k'])} differ")
        for layer in sorted(found["q"]):
            (qn, qm), (kn, km) = found["q"][layer], found["k"][layer]
            out.append(LayerProjection(layer, qn, kn, qm, km))
    if not out:
        raise UnsupportedModelError(f"no {family} projections found. Supported families: {_families_help()}")
    return out


def parse_layers(spec: Sequence[str | int] | str | None, num_layers: int) -> list[int]:
    """Layer indices from ``--layers`` tokens: ``None`` / ``"all"`` -> all; ints (negative counts from the end).

    Tokens may also be comma-separated (``"0,5,11"``). Returns sorted unique indices in ``[0, num_layers)``; raises
    ``ValueError`` naming the valid range for anything else.
    """
    if spec is None:
        return list(range(num_layers))
    tokens = [spec] if isinstance(spec, (str, int)) else list(spec)
    flat: list[str] = []
    for t in tokens:
        flat.extend(s for s in str(t).replace(",", " ").split() if s)
    if not flat or any(t.lower() == "all" for t in flat):
        if len(flat) > 1:
            raise ValueError("--layers: 'all' cannot be combined with layer indices")
        return list(range(num_layers))
    out = set()
    for t in flat:
        try:
            i = int(t)
        except ValueError:
            raise ValueError(f"--layers: {t!r} is not an integer or 'all'") from None
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise ValueError(f"--layers: layer {i} is out of range; the model has layers 0..{num_layers - 1}")
        out.add(j)
    return sorted(out)


