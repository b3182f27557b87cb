"""Loading a LLaDA-BS model and its tokenizer, and turning prompts into left-padded token batches.

The code that runs is this package's (``support_basis.llada``): the weights of any directory load into its
``LLaDAModelLM`` (:func:`load_weights`), never into a directory's copied ``modeling_llada.py``.

Shared by the command lines, the evaluation runners, lm-eval's backend, the demo and the benchmarks; every
expected failure is a :class:`support_basis.errors.UserError` naming the input and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UserError
from .llada import register_auto_classes
from .code_identity import report_code
from .model_dir import check_device, check_model_dir, is_hub_id, load_config

DEFAULT_MODEL = Path(__file__).resolve().parent / "checkpoints" / "llada-tiny"
"""The embedded default model: the tiny LLaDA trained on this project's synthetic tasks, shipped as package data
(it travels with ``pip install .``)."""


def load_tokenizer(name: str, flag: str = "--model"):
    """The tokenizer of a LLaDA-BS model directory (or hub id), after checking the directory's files: seconds, so
    a command line can check its prompts against it before the weights load."""
    from transformers import AutoTokenizer

    check_model_dir(name, flag)
    register_auto_classes()  # the tokenizer's config lookup finds "llada" here, not in the directory's remote code
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise UserError(f"{flag} {name}: cannot load its tokenizer ({err})") from None


def load_model_and_tokenizer(name: str, dtype: str = "auto", device: str = "auto", flag: str = "--model",
                             tokenizer=None, **config_overrides):
    """Load a LLaDA-BS model directory (or hub id) with its tokenizer (``tokenizer``, if given, is used as it is),
    after checking the directory's files (:func:`support_basis.model_dir.check_model_dir`) and the device;
    ``config_overrides`` (e.g. ``hybrid_exact_ratio=0.2``; ``None`` values are skipped) are set on the config
    before the weights load. Every expected failure is a :class:`support_basis.errors.UserError` naming the input
    and the fix."""
    check_model_dir(name, flag)
    device = check_device(device)
    config = load_config(name, flag, **config_overrides)
    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = load_weights(name, config, torch_dtype, flag)
    return model.to(device).eval(), tokenizer if tokenizer is not None else load_tokenizer(name, flag)


def load_weights(name: str, config, torch_dtype: torch.dtype, flag: str = "--model"):
    """This package's ``LLaDAModelLM`` with the weights of ``name`` (a directory or hub id) and ``config``: the one
    place every entry point builds the model, so the code that runs is the package's, never a directory's copy."""
    import transformers

    from .llada.modeling_llada import LLaDAModelLM

    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = LLaDAModelLM.from_pretrained(name, config=config, **{dtype_kw: torch_dtype})
    except OSError as err:
        raise UserError(f"{flag} {name}: cannot load it ({err})") from None
    if not is_hub_id(name):  # every check has passed: a stale or unchecked copy of the code is said, once
        report_code(Path(name).expanduser())
    return model


def tokenize_prompts(tokenizer, prompts: list, chat: bool) -> list[list[int]]:
    """Token ids of each prompt, tokenised as LLaDA's own sampler does it: with ``chat``, the chat template to text
    first, then the tokenizer's defaults. A prompt is a string (one user turn) or, with ``chat``, a conversation
    (a list of ``{"role", "content"}`` turns ending with the user's). Raises ``ValueError`` for a prompt that
    tokenises to nothing."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}] if isinstance(t, str) else t,
                                                 add_generation_prompt=True, tokenize=False) for t in prompts]
    elif any(not isinstance(t, str) for t in prompts):
        raise ValueError("a conversation (few-shot turns) needs the chat template; it cannot be sent raw")
    encoded = [tokenizer(t, verbose=False)["input_ids"] for t in prompts]  # length is checked by the callers
    if any(len(e) == 0 for e in encoded):
        raise ValueError("a prompt is empty after tokenisation")
    return encoded


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer, prompts: list[str], chat: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask``; with ``chat`` each prompt goes through the chat template."""
    ids, mask = left_pad(tokenize_prompts(tokenizer, prompts, chat), pad_id_of(tokenizer))
    return ids.to(device), mask.to(device)


def left_pad(seqs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(seqs), longest)`` int64: token sequences right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask
