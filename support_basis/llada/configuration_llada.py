"""Configuration of LLaDA (masked-diffusion LM, GSAI-ML) with support-basis hybrid attention.

Field names follow the official LLaDA-8B-Instruct ``config.json`` (an OLMo-style config), so the official file
loads unchanged; the hybrid-attention fields are added:

    hybrid_exact_ratio       float in [0, 1]   share of each head's scores weighted exactly (1.0 = exact attention)
    hybrid_chebyshev_degree  int in [1, 1024]  degree of the Chebyshev approximation of exp for the rest
    hybrid_num_samples       int >= 1          scores sampled per head to place the thresholds (see hybrid_attention)
    hybrid_exact_split       float in [0, 1]   share of the exact budget given to the largest scores (0.5 = paper)
    hybrid_fit               str               "chebyshev" (paper: uniform on the interval) or "empirical" (on the
                                               head's own scores); see hybrid_attention
    hybrid_kernel            str               what computes the weights: "auto" (default), "triton", "native",
                                               "compiled", "eager" (same definition; see KERNELS)

They are validated when the config is built (at load) and whenever they are set later, and the model reads them
at every forward: ``model.config.hybrid_chebyshev_degree = 4`` changes the next forward. Their defaults and
validators live here, once; the op (``hybrid_attention.py``) and the command lines import them.
"""

from __future__ import annotations

import math
import numbers

from transformers import PretrainedConfig

# ----------------------------------------------------------------------------------------------------------------
# The hybrid-attention knobs: defaults and the one validator of each (the op, the model and every command line
# import them from here, so a bad value is reported the same way wherever it enters)
# ----------------------------------------------------------------------------------------------------------------

DEFAULT_NUM_SAMPLES = 8192
"""Scores sampled per (batch, head) to place the thresholds; a valid grid this small is enumerated exactly."""

DEFAULT_EXACT_SPLIT = 0.5
"""Share of the exact budget given to the largest scores (the paper splits it evenly)."""

FITS = ("chebyshev", "empirical")
"""``chebyshev``: least squares on Chebyshev nodes of the interval (the paper). ``empirical``: least squares on
the head's own (sampled) approximated scores, i.e. weighted by where the scores lie (see ``hybrid_attention``)."""

DEFAULT_FIT = "chebyshev"

MAX_CHEBYSHEV_DEGREE = 1024
"""Largest accepted degree: the fit's tables grow with the square of the degree (64 MB at 1024)."""

KERNELS = ("auto", "triton", "native", "compiled", "eager")
"""What computes the attention weights (same definition, same results up to rounding; see ``hybrid_attention``):
``auto`` picks per call (on CUDA the fused Triton kernel, else ``torch.compile``; on a CPU the native C kernel for
fp32 scores without autograd; else eager); ``triton`` the fused kernel that never materialises the scores (CUDA, or
the CPU under ``TRITON_INTERPRET=1``; no autograd); ``native`` the C kernel (CPU, no autograd); ``compiled``
``torch.compile`` of the torch kernel; ``eager`` plain torch (any device and dtype, autograd)."""

DEFAULT_KERNEL = "auto"


_WARNED: set[str] = set()


def warn_unknown_knobs(names, where: str) -> None:
    """Warn once per name for a ``hybrid_*`` name that is no knob (a typo such as ``hybrid_exact_raito`` would
    otherwise be stored, or dropped, and the knob keep its value silently), suggesting the closest knob."""
    import difflib
    import warnings

    for name in names:
        if name.startswith("hybrid_") and name not in HYBRID_VALIDATORS and name not in _WARNED:
            _WARNED.add(name)
            close = difflib.get_close_matches(name, HYBRID_VALIDATORS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            warnings.warn(f"{where} has no knob {name!r}: it changes nothing ({hint}the knobs: "
                          f"{', '.join(HYBRID_VALIDATORS)})", UserWarning, stacklevel=3)


class ConfigValueError(ValueError):
    """A config value outside its rule (a hybrid knob, an architecture field): the message names the field, the
    value and the rule. A ``ValueError``, so existing ``except ValueError`` keeps working; callers that turn errors
    into one line catch this class only, so other ``ValueError`` s keep their traceback."""


def validate_exact_ratio(value, name: str = "hybrid_exact_ratio") -> float:
    """Return ``value`` as a float in [0, 1] or raise ``ValueError`` naming ``name``, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigValueError(f"{name} must be a number in [0, 1] (1.0 means exact attention); got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ConfigValueError(f"{name} must be in [0, 1] (1.0 means exact attention); got {value!r}")
    return float(value)


def validate_chebyshev_degree(value, name: str = "hybrid_chebyshev_degree") -> int:
    """Return ``value`` as an int in [1, MAX_CHEBYSHEV_DEGREE] or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_CHEBYSHEV_DEGREE:
        raise ConfigValueError(f"{name} must be an integer in [1, {MAX_CHEBYSHEV_DEGREE}]; got {value!r}")
    return int(value)  # numpy integers too: the config stores a plain int


def validate_num_samples(value, name: str = "hybrid_num_samples") -> int:
    """Return ``value`` as an int >= 1 or raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def validate_exact_split(value, name: str = "hybrid_exact_split") -> float:
    """Return ``value`` as a float in [0, 1] or raise ``ValueError`` naming ``name``, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigValueError(f"{name} must be a number in [0, 1] (share of the exact budget given to the largest "
                         f"scores; 0.5 = the paper); got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ConfigValueError(f"{name} must be in [0, 1] (share of the exact budget given to the largest scores; "
                         f"0.5 = the paper); got {value!r}")
    return float(value)


def validate_fit(value, name: str = "hybrid_fit") -> str:
    """Return ``value`` if it is one of ``FITS`` or raise ``ValueError`` naming ``name``, the value and the choices."""
    if not isinstance(value, str) or value not in FITS:
        raise ConfigValueError(f"{name} must be one of {', '.join(FITS)} (chebyshev = the paper); got {value!r}")
    return value


def validate_kernel(value, name: str = "hybrid_kernel") -> str:
    """Return ``value`` if it is one of ``KERNELS`` or raise ``ValueError`` naming ``name``, the value and the
    choices."""
    if not isinstance(value, str) or value not in KERNELS:
        raise ConfigValueError(f"{name} must be one of {', '.join(KERNELS)} (auto = the fastest this device supports); "
                         f"got {value!r}")
    return value


HYBRID_VALIDATORS = {  # config field -> its validator (also the transformers backend's, for any model's config)
    "hybrid_exact_ratio": validate_exact_ratio,
    "hybrid_chebyshev_degree": validate_chebyshev_degree,
    "hybrid_num_samples": validate_num_samples,
    "hybrid_exact_split": validate_exact_split,
    "hybrid_fit": validate_fit,
    "hybrid_kernel": validate_kernel,
}
_INTEGER_FIELDS = ("hybrid_chebyshev_degree", "hybrid_num_samples")

# Architecture fields that must be positive integers (None allowed where an effective_* property derives them)
_POSITIVE_INTS = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "embedding_size",
                  "max_sequence_length", "mlp_ratio")

# What this implementation supports of the OLMo-style options (the official checkpoint uses exactly these).
_SUPPORTED = {
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "activation_type": ("silu",),
    "alibi": (False,),
    "rope": (True,),
    "attention_layer_norm": (False,),
    "multi_query_attention": (None, False),
}


class LLaDAConfig(PretrainedConfig):
    """LLaDA architecture + hybrid-attention knobs. Defaults are those of LLaDA-8B-Instruct."""

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_ratio: int = 4,
        mlp_hidden_size: int | None = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rope_full_precision: bool = True,
        rms_norm_eps: float = 1e-5,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        bias_for_layer_norm: bool | None = False,
        layer_norm_with_affine: bool = True,
        weight_tying: bool = False,
        input_emb_norm: bool = False,
        scale_logits: bool = False,
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        activation_type: str = "silu",
        alibi: bool = False,
        rope: bool = True,
        attention_layer_norm: bool = False,
        multi_query_attention: bool | None = None,
        init_std: float = 0.02,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        bos_token_id: int | None = 126080,
        use_cache: bool = False,
        hybrid_exact_ratio: float = 0.2,
        hybrid_chebyshev_degree: int = 6,
        hybrid_num_samples: int = DEFAULT_NUM_SAMPLES,
        hybrid_exact_split: float = DEFAULT_EXACT_SPLIT,
        hybrid_fit: str = DEFAULT_FIT,
        hybrid_kernel: str = DEFAULT_KERNEL,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rope_full_precision = rope_full_precision
        self.rms_norm_eps = rms_norm_eps
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.bias_for_layer_norm = bias_for_layer_norm
        self.layer_norm_with_affine = layer_norm_with_affine
        self.weight_tying = weight_tying
        self.input_emb_norm = input_emb_norm
        self.scale_logits = scale_logits
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.activation_type = activation_type
        self.alibi = alibi
        self.rope = rope
        self.attention_layer_norm = attention_layer_norm
        self.multi_query_attention = multi_query_attention
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        # LLaDA never caches keys/values (every diffusion step re-reads the whole sequence); transformers 5.x
        # no longer defines this attribute on the base class, and parts of transformers still read it.
        self.use_cache = use_cache
        self.hybrid_exact_ratio = hybrid_exact_ratio
        self.hybrid_chebyshev_degree = hybrid_chebyshev_degree
        self.hybrid_num_samples = hybrid_num_samples
        self.hybrid_exact_split = hybrid_exact_split
        self.hybrid_fit = hybrid_fit
        self.hybrid_kernel = hybrid_kernel
        kwargs.setdefault("tie_word_embeddings", weight_tying)
        warn_unknown_knobs(kwargs, "the config")
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id, **kwargs)
        self._check_architecture()

    def __setattr__(self, name, value):
        validator = HYBRID_VALIDATORS.get(name)
        if validator is not None:
            value = validator(_integral(value) if name in _INTEGER_FIELDS else value, name)
        super().__setattr__(name, value)

    def _check_architecture(self):
        """Every architecture field typed and in range (a value out of range gives garbage or a traceback deep in
        the model, not an error a person can act on): ``ValueError`` naming the field, its value and the rule."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if value is None and name in ("n_kv_heads", "mlp_hidden_size", "embedding_size"):
                continue  # derived (effective_*)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigValueError(f"{name} must be an integer >= 1; got {value!r}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigValueError(f"{name} must be a finite number > 0; got {value!r}")
        rows = self.effective_embedding_size
        if self.vocab_size > rows:
            raise ConfigValueError(f"vocab_size ({self.vocab_size}) exceeds embedding_size ({rows}): the model has no "
                             "embedding for the last ids")
        for name in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(self, name, None)
            if value is None and name != "mask_token_id":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < rows:
                raise ConfigValueError(f"{name} must be a token id in [0, {rows}) (the embedding's rows); got {value!r}")
        for name, allowed in _SUPPORTED.items():
            if getattr(self, name) not in allowed:
                raise ConfigValueError(
                    f"{name}={getattr(self, name)!r} is not supported by this LLaDA implementation "
                    f"(supported: {', '.join(repr(a) for a in allowed)})"
                )
        if self.d_model % self.n_heads:
            raise ConfigValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.effective_n_kv_heads:
            raise ConfigValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")

    @property
    def effective_n_kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def effective_mlp_hidden_size(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @property
    def effective_embedding_size(self) -> int:
        return self.embedding_size if self.embedding_size is not None else self.vocab_size


def _integral(value):
    """Accept 6.0 (e.g. from JSON or a command line) as 6; leave everything else for the validator to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
