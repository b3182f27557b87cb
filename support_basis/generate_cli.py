"""The command line of LLaDA's diffusion sampler (``llada-generate``, and ``python generate.py`` in a checkout).

Every flag, prompt and the model directory are checked before the model loads; an expected failure is one line
on stderr with exit status 2 (``support_basis.errors``). The model's code is this package's, whatever directory
the weights come from (``support_basis.loading``).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from .errors import ArgumentParser, UserError, cli, number, positive_int, utf8_text
from .llada.configuration_llada import (
    KERNELS,
    validate_chebyshev_degree,
    validate_exact_ratio,
    validate_exact_split,
    validate_fit,
)
from .loading import DEFAULT_MODEL, left_pad, load_model_and_tokenizer, load_tokenizer, pad_id_of, tokenize_prompts
from .llada.hybrid_attention import kernel_problem
from .model_dir import check_device, check_token_ids, load_config
from .sampling import CACHE_MODES, REMASKING, SamplerSettingError, check_fast_sampling, check_schedule, generate
from .sampling import check_streaming
from .suffix import DROPOUTS, SuffixRule

STREAMING_FLAGS = {"suffix_window": "--suffix-window", "suffix_tail": "--suffix-tail",
                   "suffix_dropout": "--suffix-dropout", "threshold": "--threshold",
                   "threshold_alpha": "--threshold-alpha"}
from .sampling import model_device


@cli(resumes=False)  # the answers are printed, not kept: a rerun starts over
def main(argv=None):
    """The command line: every flag, prompt and the model directory are checked before the model loads; an
    expected failure is one line on stderr with exit status 2 (``support_basis.errors``)."""
    p = _parser()
    a = p.parse_args(argv)
    texts, asked_steps = _check_flags(p, a)
    # the prompts are checked against the tokenizer and config before the weights load (a minute for the 8B)
    overrides = dict(hybrid_exact_ratio=a.exact_ratio, hybrid_chebyshev_degree=a.chebyshev_degree,
                     hybrid_exact_split=a.exact_split, hybrid_fit=a.fit, hybrid_kernel=a.kernel)
    tokenizer = load_tokenizer(a.model, "--model")
    config = load_config(a.model, "--model", **overrides)
    mask_id = config.mask_token_id
    if tokenizer.pad_token_id == mask_id:
        p.error(f"the tokenizer pads with the mask token ({mask_id}); set another pad token")
    chat = not a.no_chat and bool(getattr(tokenizer, "chat_template", None))
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    encoded = _checked_prompts(tokenizer, texts, chat, config, a.gen_length)  # all of them, before any output
    model, tokenizer = load_model_and_tokenizer(a.model, a.dtype, a.device, tokenizer=tokenizer, **overrides)
    if not a.no_chat and not chat:
        print(f"# {a.model}: the tokenizer has no chat template, so the prompts go in as raw text (--no-chat says "
              "so and silences this)", file=sys.stderr)
    generator = torch.Generator(device=model_device(model)).manual_seed(a.seed)
    torch.manual_seed(a.seed)
    if asked_steps > a.steps:  # said once everything is checked: an error stays the only line on stderr
        print(f"# --steps {asked_steps} is more than --gen-length {a.gen_length}: using {a.steps} steps",
              file=sys.stderr)
    print(f"# {a.model}: exact_ratio={model.config.hybrid_exact_ratio} "
          f"chebyshev_degree={model.config.hybrid_chebyshev_degree} kernel={model.config.hybrid_kernel} "
          f"steps={a.steps} gen_length={a.gen_length} "
          f"block_length={a.block_length} temperature={a.temperature} chat={chat} cache={a.cache} "
          f"threshold={a.threshold} factor={a.factor}" + "".join(
              f" {k}={getattr(a, k)}" for k in ("early_stop", "suffix_window", "suffix_tail", "suffix_dropout",
                                                "threshold_alpha") if getattr(a, k) not in (None, False)),
          file=sys.stderr)
    _answer_all(a, model, tokenizer, encoded, eot, generator)


def _parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="a LLaDA(-BS) model directory or hub id (default: the shipped tiny LLaDA, "
                   "support_basis/checkpoints/llada-tiny)")
    p.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several")
    p.add_argument("--steps", type=int, default=128, help="total denoising steps (default 128)")
    p.add_argument("--gen-length", type=int, default=128, help="answer length in tokens (default 128)")
    p.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block (default 32)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--cfg-scale", type=float, default=0.0)
    p.add_argument("--remasking", default="low_confidence", choices=REMASKING)
    p.add_argument("--exact-ratio", type=float, default=None, help="hybrid_exact_ratio (default: the model's)")
    p.add_argument("--chebyshev-degree", type=int, default=None, help="hybrid_chebyshev_degree (default: model's)")
    p.add_argument("--exact-split", type=float, default=None,
                   help="hybrid_exact_split: share of the exact budget for the largest scores (0.5 = paper; default: "
                   "the model's)")
    p.add_argument("--fit", default=None, help="hybrid_fit: chebyshev (paper) or empirical (default: the model's)")
    p.add_argument("--kernel", default=None, choices=KERNELS,
                   help="hybrid_kernel: what computes the attention weights (default: the model's, normally auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=number(0, 2**63 - 1, integer=True), default=0)
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per forward batch (default 8)")
    p.add_argument("--no-chat", action="store_true", help="send the raw text (no chat template)")
    p.add_argument("--no-eot-stop", action="store_true",
                   help="do not reveal EOS/<|eot_id|> last (default: reveal them last, as LLaDA's chat demo)")
    p.add_argument("--show-steps", action="store_true", help="print the answer after every denoising step")
    p.add_argument("--cache", default="none", choices=CACHE_MODES,
                   help="key/value cache: none (default), prefix (reuse the keys/values before the block), dual "
                   "(also those after it); refreshed at every block start")
    p.add_argument("--threshold", type=float, default=None,
                   help="reveal every masked position whose confidence is >= THRESHOLD, in (0, 1] (at least one "
                   "per step; e.g. 0.9); --steps then only caps the work")
    p.add_argument("--early-stop", action="store_true",
                   help="stop a prompt once a revealed block holds EOS/<|eot_id|> (its later positions become EOS)")
    p.add_argument("--suffix-window", type=int, default=None, metavar="W",
                   help="each forward computes only the next W masked positions after the block (and --suffix-tail "
                   "last ones), at their true positions (Streaming-dLLM)")
    p.add_argument("--suffix-tail", type=int, default=None, metavar="T",
                   help="with --suffix-window/--suffix-dropout: also the last T positions (default 1; 0 with dropout)")
    p.add_argument("--suffix-dropout", default=None, choices=DROPOUTS,
                   help="DPad's suffix dropout over the first --suffix-window positions (all without it), drawn from "
                   "--seed")
    p.add_argument("--threshold-alpha", type=float, default=None, metavar="A",
                   help="with --threshold T: T * (1 - A * (1 - masked share)), A in [0, 1] (Streaming-dLLM)")
    p.add_argument("--factor", type=float, default=None,
                   help="adaptive parallel decoding: reveal the n most confident while the n-th confidence is "
                   ">= 1 - FACTOR/(n+1), FACTOR > 0 (e.g. 1.0); excludes --threshold")
    return p


def _check_flags(p: ArgumentParser, a) -> tuple[list[str], int]:
    """Check every flag and prompt text (``p.error`` on the first bad one); cap ``a.steps`` at the answer length
    and resolve the default model. Returns the prompt texts and the steps asked for."""
    try:
        check_fast_sampling(a.cache, a.threshold, a.factor, a.remasking, flags={
            "cache": "--cache", "threshold": "--threshold", "factor": "--factor", "remasking": "--remasking"})
        check_schedule(a.steps, a.gen_length, a.block_length, a.remasking, a.temperature, a.cfg_scale)
        check_streaming(SuffixRule(a.suffix_window, a.suffix_tail, a.suffix_dropout), a.gen_length, a.block_length,
                        a.threshold, a.threshold_alpha, flags=STREAMING_FLAGS)
        asked_steps = a.steps  # a step reveals at least one token: more than gen_length only repeat forwards
        a.steps = min(a.steps, a.gen_length)
        if a.exact_ratio is not None:
            validate_exact_ratio(a.exact_ratio, "--exact-ratio")
        if a.chebyshev_degree is not None:
            validate_chebyshev_degree(a.chebyshev_degree, "--chebyshev-degree")
        if a.exact_split is not None:
            validate_exact_split(a.exact_split, "--exact-split")
        if a.fit is not None:
            validate_fit(a.fit, "--fit")
    except ValueError as err:
        p.error(str(err))
    if a.kernel:  # a named kernel that cannot run here (no C compiler, no Triton) is said before a model loads
        problem = kernel_problem(a.kernel, check_device(a.device).split(":")[0])
        if problem:
            p.error(f"--kernel {a.kernel}: {problem}")
    texts = [utf8_text(t, f"--prompt #{i + 1}") for i, t in enumerate(a.prompt)]
    for i, text in enumerate(texts):  # under the chat template a blank prompt would still tokenise to a turn
        if not text.strip():
            p.error(f"--prompt #{i + 1} ({text!r}) is empty; give some text")
    if a.model is None:
        a.model = str(DEFAULT_MODEL)
        print(f"# no --model given: using the shipped tiny LLaDA ({DEFAULT_MODEL}), trained on this project's "
              "synthetic tasks (scripts/train_llada.py)", file=sys.stderr)

    return texts, asked_steps


def _answer_all(a, model, tokenizer, encoded, eot, generator) -> None:
    """Decode the prompts in batches of ``a.batch_size``; print each answer, and each batch's NFE and speed on
    stderr."""
    mask_id = model.config.mask_token_id
    for start in range(0, len(a.prompt), a.batch_size):
        prompts = a.prompt[start : start + a.batch_size]
        try:
            ids, mask = (t.to(model_device(model)) for t in left_pad(encoded[start : start + a.batch_size],
                                                                     pad_id_of(tokenizer)))
            show = _step_printer(tokenizer, ids.shape[1], mask_id, a.steps) if a.show_steps else None
            t0 = time.perf_counter()
            out, nfe = generate(model, ids, mask, steps=a.steps, gen_length=a.gen_length,
                                block_length=a.block_length, temperature=a.temperature, cfg_scale=a.cfg_scale,
                                remasking=a.remasking, eot_token_id=eot, confidence_eos_eot_inf=not a.no_eot_stop,
                                generator=generator, callback=show, cache=a.cache, threshold=a.threshold,
                                factor=a.factor, return_nfe=True, early_stop=a.early_stop,
                                suffix_window=a.suffix_window, suffix_tail=a.suffix_tail,
                                suffix_dropout=a.suffix_dropout, threshold_alpha=a.threshold_alpha)
            seconds = time.perf_counter() - t0
        except SamplerSettingError as err:  # generate()'s checks name the setting and the rule; any other
            raise UserError(str(err)) from None  # error (a forward's, the loop's) keeps its traceback
        tokens = out.shape[0] * a.gen_length
        print(f"# prompts {start}-{start + len(prompts) - 1}: NFE {nfe.tolist()}, {tokens} tokens in {seconds:.2f} s "
              f"({tokens / seconds:.1f} tokens/s)", file=sys.stderr)
        answers = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        for i, (prompt, answer) in enumerate(zip(prompts, answers), start):
            print(f"=== [{i}] {prompt}\n{answer.strip()}")


def _checked_prompts(tokenizer, texts, chat, config, gen_length) -> list[list[int]]:
    """Every prompt's token ids, checked: not empty, inside the model's vocabulary, and short enough that prompt +
    answer fit ``max_sequence_length``; else a :class:`UserError` naming the prompt."""
    encoded = []
    for i, text in enumerate(texts):
        try:
            encoded += tokenize_prompts(tokenizer, [text], chat)
        except ValueError:  # tokenised to nothing
            raise UserError(f"--prompt #{i + 1} ({text!r}) is empty after tokenisation; give some text") from None
    check_token_ids(encoded, config, [f"--prompt #{i + 1}" for i in range(len(encoded))])
    limit = getattr(config, "max_sequence_length", None)
    for i, ids in enumerate(encoded):
        if limit is not None and len(ids) + gen_length > limit:
            raise UserError(f"--prompt #{i + 1} is {len(ids)} tokens; with --gen-length {gen_length} that exceeds "
                            f"the model's max_sequence_length ({limit}): shorten the prompt or the answer")
    return encoded


def _step_printer(tokenizer, prompt_len, mask_id, total):
    mask_text = tokenizer.convert_ids_to_tokens(mask_id)

    def show(step, x):
        texts = tokenizer.batch_decode(x[:, prompt_len:], skip_special_tokens=False)
        for j, t in enumerate(texts):
            print(f"[step {step}/{total}] ({j}) {t.replace(mask_text, '░')}", file=sys.stderr)

    return show


if __name__ == "__main__":
    main()
