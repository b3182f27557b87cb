"""Tiny LLaDA-BS model directories: the same model code, a small config, a small byte-level BPE tokenizer.

``make_tiny_model(out_dir, ...)`` writes a directory that loads offline in about a second with
``AutoModel.from_pretrained(out_dir, trust_remote_code=True)`` and ``AutoTokenizer.from_pretrained(out_dir)``. The
tokenizer is trained here on a built-in paragraph (or the synthetic tasks' prompts); it carries LLaDA's special
tokens (``<|mdm_mask|>``, ``<|eot_id|>``, the header tokens, BOS/EOS) and LLaDA's chat template, and the config's
``mask_token_id`` / ``eos_token_id`` / ``pad_token_id`` point at them. The weights are random. Used by the tests,
the benchmarks, training (the start of the shipped tiny LLaDA) and ``scripts/make_tiny_model.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .code_identity import write_code

# LLaDA-8B-Instruct's chat template (Llama-3 style headers, BOS before the first message).
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

# LLaDA's special tokens, in the order of their official ids (126080 ...); here they follow the small vocabulary.
SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "[CLS]",
    "[gMASK]",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<role>",
    "</role>",
    "<|arithmetic_start|>",
    "<|arithmetic_end|>",
    "<|number_start|>",
    "<|number_end|>",
]

CORPUS = """\
Question: Which of these is a source of light? A. the Moon B. the Sun C. a mirror D. a window
Answer: B
The answer is the letter of the correct choice. Large language models read text as tokens.
A masked diffusion model starts from a sequence of mask tokens and reveals the answer step by step,
keeping its most confident predictions at every step. Attention compares every query with every key.
Science questions ask about plants, animals, energy, forces, the water cycle, rocks and the weather.
Mathematics questions ask about numbers, shapes, equations, probability and functions 0 1 2 3 4 5 6 7 8 9.
History, law, medicine, physics, chemistry and biology are subjects of the MMLU benchmark.
What happens next? She picks up the ball and throws it to her friend, who catches it with both hands.
"""


def build_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """A byte-level BPE with LLaDA's special tokens appended; returns a ``PreTrainedTokenizerFast``.

    ``corpus``: the lines its merges are learned from (default: a built-in paragraph); ``"synthetic"`` in the
    command line uses the synthetic task family's prompts, so that their words and numbers are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else CORPUS.splitlines() * 4, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        cls_token="[CLS]",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(
    out_dir: str | Path,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    mlp_hidden_size: int | None = None,
    vocab_size: int = 512,
    max_sequence_length: int = 1024,
    seed: int = 0,
    exact_ratio: float = 0.2,
    chebyshev_degree: int = 6,
    dtype: str = "float32",
    tokenizer_corpus: str = "builtin",
    rope_theta: float = 500000.0,
    weight_tying: bool = False,
    embedding_std: float | None = None,
) -> Path:
    """Write the directory and return its path. Deterministic for a given seed.

    ``embedding_std``: draw the token embeddings from N(0, embedding_std^2) instead of the model's own init
    (std 1/sqrt(d_model)); see ``docs/llada-tiny.md`` for what unit scale did for key lookups."""
    import torch

    from .llada.configuration_llada import LLaDAConfig
    from .llada.modeling_llada import LLaDAModelLM

    out = Path(out_dir)
    corpus = None
    if tokenizer_corpus == "synthetic":
        from .synthetic.corpus import tokenizer_corpus as synthetic_corpus

        corpus = synthetic_corpus(CHAT_TEMPLATE)
    tokenizer = build_tokenizer(vocab_size, corpus)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LLaDAConfig(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=mlp_hidden_size or 2 * d_model,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=max_sequence_length,
        rope_theta=rope_theta,
        weight_tying=weight_tying,
        mask_token_id=ids["<|mdm_mask|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|startoftext|>"],
        hybrid_exact_ratio=exact_ratio,
        hybrid_chebyshev_degree=chebyshev_degree,
        architectures=["LLaDAModelLM"],
        auto_map={
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        },
    )
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    if embedding_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0, embedding_std)
    model = model.to(getattr(torch, dtype))
    _write_whole(out, model, tokenizer, dtype, max_sequence_length)
    return out


def _write_whole(out: Path, model, tokenizer, dtype: str, max_sequence_length: int) -> None:
    """Write the directory whole or not at all: into a sibling staging directory first (a full disk or a crash
    there leaves OUT as it was), then moved in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
        model.save_pretrained(stage, safe_serialization=True)
        tokenizer.save_pretrained(stage)
        write_code(stage)  # the model directory's own copies of the code, with their digest
        _normalise_config(stage / "config.json", dtype)
        write_tokenizer_config(stage, max_sequence_length)
        if not out.exists():
            stage.rename(out)
        else:  # an existing directory (a model rewritten in place): file by file, each replaced atomically
            for f in sorted(stage.iterdir()):
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_tokenizer_config(out: Path, max_length: int):
    """The tokenizer config in the official checkpoint's portable form (read by transformers 4.49 and 5.x)."""
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "cls_token": "[CLS]",
        "additional_special_tokens": SPECIAL_TOKENS[4:],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "cls_token")}, indent=2) + "\n"
    )


def _normalise_config(path: Path, dtype: str):
    """Keep the written config loadable by transformers 4.49 and 5.x alike (both spell the dtype key)."""
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = dtype
    cfg.pop("dtype", None)
    cfg.pop("transformers_version", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
