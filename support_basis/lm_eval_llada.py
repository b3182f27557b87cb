"""lm-evaluation-harness backend for LLaDA-BS: any standard task, with the hybrid (support-basis) attention on.

Registered with lm-eval as ``llada_bs``. Importing this module registers it; the harness's own command line
does not import it, so run the harness through ``scripts/lm_eval_llada.py`` (same arguments as ``lm_eval``)::

    python scripts/lm_eval_llada.py --model llada_bs \\
        --model_args pretrained=models/LLaDA-8B-Instruct-BS,exact_ratio=0.2,chebyshev_degree=6,mc_num=128,cfg=0.5 \\
        --tasks arc_challenge --batch_size 32
    accelerate launch --num_processes 8 scripts/lm_eval_llada.py ...      # data parallel, one process per GPU
    torchrun --nproc_per_node 2 scripts/lm_eval_llada.py ... --device cpu  # several CPU processes (gloo)

or from Python::

    import support_basis.lm_eval_llada  # registers "llada_bs"
    from lm_eval import simple_evaluate
    simple_evaluate(model="llada_bs", model_args={"pretrained": DIR, "exact_ratio": 0.2}, tasks=["hellaswag"])

Request types
-------------
``loglikelihood`` (multiple-choice tasks): LLaDA's Monte Carlo estimate for a masked diffusion model. For a pair
(context ``c``, continuation ``y`` of ``T`` tokens) each Monte Carlo sample masks ``k`` of the ``T`` continuation
tokens (uniformly random positions, the context is never masked), runs the model once and scores
``(T / k) * sum over masked positions of -log p(y_i | c, unmasked y)``; the log-likelihood is minus the mean over
``mc_num`` samples. This is the masked-diffusion ELBO, a lower bound on ``log p(y | c)`` (exact for ``T = 1``).
The ``k`` are stratified within each group of ``mc_batch_size`` samples: one random offset per group, the group's
ratios ``k / T`` spread evenly over ``(0, 1]`` (as LLaDA's ``eval_llada.py`` does for its mini-batch). With
``cfg > 0`` the logits are LLaDA's unsupervised classifier-free guidance ``u + (cfg + 1) (l - u)``, ``u`` from the
same sequence with the context masked out. A one-token continuation needs one sample (every sample masks that
token with ratio 1), so it gets exactly one. ``is_greedy`` is ``False`` unless ``check_greedy=True``, which
decodes the continuation greedily with :func:`generate.generate` (``T`` steps, one token revealed per step, most
confident first -- LLaDA's ``suffix_greedy_prediction``) and compares; only tasks scoring greedy matches (e.g.
``lambada``) read it, so it is off by default as in LLaDA's published runs.

``generate_until``: :func:`generate.generate` (batched, left-padded prompts) with the sampler knobs given as model
arguments, the answer cut at the first EOS / ``<|eot_id|>`` token and then at the first stop string of the
request's ``until``. The sampler is configured only by model arguments: of a request's generation kwargs only
``until`` is used (``max_gen_toks``, ``temperature``, ``do_sample`` ... are ignored, with one log line; LLaDA
generates into a fixed ``gen_length`` canvas). With lm-eval's ``--apply_chat_template`` the prompts go through
the tokenizer's chat template (LLaDA's, with its BOS), as lm-eval does for any chat model.

``loglikelihood_rolling`` (perplexity tasks) raises ``NotImplementedError``.

Batching, determinism, processes
--------------------------------
Requests are batched across each other: every Monte Carlo sample of every request is one row, rows are ordered by
sequence length (longest first) and ``batch_size`` rows go through one forward (twice as many sequences with
CFG), left-padded with an attention mask; logits are computed for the continuation positions only
(``logits_to_keep``). Identical requests are scored once. Each request's masks come from its own generator, seeded
with a hash of ``(seed, context tokens, continuation tokens)``: a request's estimate does not depend on
``batch_size``, on the other requests, on their order or on how many processes share the work (up to float
rounding of differently shaped batches). Generation at ``temperature=0`` with ``low_confidence`` remasking is
deterministic; with sampling it is reproducible for a fixed ``seed``, ``batch_size`` and number of processes.
Under ``accelerate launch`` (or ``torchrun``) every process takes its shard of the requests (lm-eval shards by
rank and gathers the metrics) and runs on ``Accelerator().device``. Without CUDA the processes join a gloo group;
start them with ``torchrun --nproc_per_node N`` (``accelerate launch --cpu`` starts a single process).

Model arguments (``--model_args k=v,...``; also ``batch_size`` / ``device`` here or via lm-eval's own flags,
the model argument wins)
-----------------------------------------------------------------------------------------------------------------
``pretrained``        LLaDA-BS model directory (or hub id) -- required
``exact_ratio``       ``hybrid_exact_ratio`` in [0, 1]; 1.0 = exact attention (default: the directory's config)
``chebyshev_degree``  ``hybrid_chebyshev_degree`` >= 1 (default: the directory's config)
``kernel``            ``hybrid_kernel``: auto | triton | native | compiled | eager (default: the directory's config)
``mc_num``            Monte Carlo samples per request (default 128, LLaDA's)
``mc_batch_size``     stratification group, must divide ``mc_num`` (default ``min(mc_num, 32)``, LLaDA's default
                      mini-batch; LLaDA's published runs passed ``--batch_size 8``, i.e. groups of 8)
``cfg``               classifier-free guidance scale for likelihoods (default 0; LLaDA used 0.5 on ARC-C,
                      HellaSwag, GPQA, PIQA and 2.0 on TruthfulQA for the Base model). Also used when generating.
``check_greedy``      compute ``is_greedy`` (default False)
``steps``, ``gen_length``, ``block_length``   sampler schedule (default 1024 / 1024 / 1024, LLaDA's lm-eval runs)
``temperature``       sampling temperature (default 0 = greedy); ``remasking``: low_confidence | random
``logits_eos_inf``, ``confidence_eos_eot_inf``   the sampler's EOS options (default False)
``cache``             the fast sampler's key/value cache for generation: none (default) | prefix | dual
``threshold``         reveal every position with confidence >= threshold in (0, 1] per step (default: off)
``factor``            adaptive parallel decoding factor > 0 (default: off; excludes ``threshold``)
``early_stop``, ``suffix_window``, ``suffix_tail``, ``suffix_dropout``, ``threshold_alpha``   decode only what
                      matters (``support_basis.sampling.generate``; default: off)
``max_length``        longest sequence (default: the config's ``max_sequence_length``); longer contexts are cut
                      from the left, with a warning
``dtype``             auto (bfloat16 on CUDA, float32 otherwise) | float32 | bfloat16 | float16
``device``            auto | cpu | cuda | cuda:N ... (under ``accelerate launch``: the process's device)
``seed``              seed of the Monte Carlo masks and of the sampler (default 1234)
``batch_size``        Monte Carlo rows (likelihood) or prompts (generation) per forward (default 32); it never
                      changes a likelihood estimate, only speed and memory

Bad values raise :class:`ModelArgError` (a ``ValueError``, and a ``support_basis.errors.UserError`` that
``scripts/lm_eval_llada.py`` turns into one line on stderr with exit status 2) naming the argument before the
model is loaded; unknown arguments are rejected. :meth:`LLaDABSEvalHarness.check_arguments` runs every check,
the model directory's included, without loading anything (the wrapper calls it before lm-eval starts).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as _err:  # lm-eval is an optional dependency of this project
    raise ImportError(
        "support_basis.lm_eval_llada is the lm-evaluation-harness backend and needs the optional package lm-eval: "
        "pip install lm-eval  (the rest of the project works without it)"
    ) from _err

import torch
from tqdm import tqdm

from .errors import UserError, finite, parse_number, whole
from .llada.configuration_llada import validate_chebyshev_degree, validate_exact_ratio, validate_kernel
from .loading import left_pad, load_tokenizer, load_weights
from .model_dir import check_model_dir, load_config
from .likelihood import (  # noqa: F401  (re-exported: the estimator's functions, as before)
    greedy_matches,
    mc_loglikelihoods,
    random_masks,
    request_seed,
    sample_continuation_masks,
    stratified_mask_counts,
)
from .sampling import check_fast_sampling, check_schedule, check_streaming, generate
from .suffix import SuffixRule

logger = logging.getLogger(__name__)

MODEL_NAME = "llada_bs"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# what users coming from LLaDA's eval_llada.py may type
_ARG_HINTS = {"model_path": "pretrained", "cfg_scale": "cfg", "is_check_greedy": "check_greedy",
              "hybrid_exact_ratio": "exact_ratio", "hybrid_chebyshev_degree": "chebyshev_degree"}


def cut_at_stop_strings(text: str, until: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any non-empty stop string."""
    cut = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:cut]


# ----------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------


class ModelArgError(UserError, ValueError):
    """A bad model argument (``--model_args``): names the argument, the value and the rule."""


def _arg(check, *args, **kwargs):
    """``check(*args, **kwargs)`` with its ``ValueError`` reported as a :class:`ModelArgError`."""
    try:
        return check(*args, **kwargs)
    except ModelArgError:
        raise
    except ValueError as err:
        raise ModelArgError(f"{MODEL_NAME} model argument: {err}") from None


def _as_int(name: str, value, minimum: int = 1) -> int:
    return _arg(whole, value, name, minimum)


def _as_float(name: str, value, minimum: float = 0.0) -> float:
    return _arg(finite, value, name, minimum)


def _streaming_args(early_stop, window, tail, dropout, alpha, threshold, gen_length, block_length) -> dict:
    """The sampler's early-stop, pruned-suffix and context-aware-threshold arguments, parsed and checked."""
    rule = SuffixRule(None if window is None else _as_int("suffix_window", window, minimum=0),
                      None if tail is None else _as_int("suffix_tail", tail, minimum=0), dropout)
    alpha = None if alpha is None else parse_number(alpha)
    _arg(check_streaming, rule, gen_length, block_length, threshold, alpha)
    return dict(early_stop=_as_bool("early_stop", early_stop), suffix_window=rule.window, suffix_tail=rule.tail,
                suffix_dropout=rule.dropout, threshold_alpha=alpha)


def _as_bool(name: str, value) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ModelArgError(f"{name} must be true or false; got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# The lm-eval model
# ----------------------------------------------------------------------------------------------------------------


@register_model(MODEL_NAME)
class LLaDABSEvalHarness(LM):
    """lm-eval ``LM`` for a LLaDA-BS model directory (see the module docstring for the arguments and methods)."""

    def __init__(
        self,
        pretrained: str | None = None,
        exact_ratio: float | None = None,
        chebyshev_degree: int | None = None,
        kernel: str | None = None,
        mc_num: int = 128,
        mc_batch_size: int | None = None,
        cfg: float = 0.0,
        check_greedy: bool = False,
        steps: int = 1024,
        gen_length: int = 1024,
        block_length: int = 1024,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        logits_eos_inf: bool = False,
        confidence_eos_eot_inf: bool = False,
        cache: str = "none",
        threshold: float | None = None,
        factor: float | None = None,
        early_stop: bool = False,
        suffix_window: int | None = None,
        suffix_tail: int | None = None,
        suffix_dropout: str | None = None,
        threshold_alpha: float | None = None,
        max_length: int | None = None,
        dtype: str = "auto",
        device: str | None = "auto",
        seed: int = 1234,
        batch_size: int | str = 32,
        max_batch_size: int | None = None,  # lm-eval passes it; there is no automatic batch size here
        trust_remote_code: bool = True,  # lm-eval may pass it; the model directory always needs remote code
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            hints = [f"{k} (did you mean {_ARG_HINTS[k]}?)" if k in _ARG_HINTS else k for k in unknown]
            valid = [n for n in inspect.signature(type(self).__init__).parameters if n not in ("self", "unknown")]
            raise ModelArgError(f"{MODEL_NAME}: unknown model argument(s): {', '.join(hints)}. Valid: "
                                f"{', '.join(valid)}")
        if not pretrained:
            raise ModelArgError(f"{MODEL_NAME}: give the model directory as pretrained=DIR")
        self.exact_ratio = None if exact_ratio is None else _arg(
            validate_exact_ratio, parse_number(exact_ratio), "exact_ratio")
        self.chebyshev_degree = None if chebyshev_degree is None else _arg(
            validate_chebyshev_degree, _as_int("chebyshev_degree", chebyshev_degree), "chebyshev_degree")
        self.kernel = None if kernel is None else _arg(validate_kernel, kernel, "kernel")
        self.mc_num = _as_int("mc_num", mc_num)
        self.mc_batch_size = min(self.mc_num, 32) if mc_batch_size is None else _as_int("mc_batch_size", mc_batch_size)
        if self.mc_num % self.mc_batch_size:
            raise ModelArgError(f"mc_num ({self.mc_num}) must be a multiple of mc_batch_size ({self.mc_batch_size})")
        self.cfg = _as_float("cfg", cfg)
        self.check_greedy = _as_bool("check_greedy", check_greedy)
        self._sampler_args(steps, gen_length, block_length, temperature, remasking, logits_eos_inf,
                           confidence_eos_eot_inf, cache, threshold, factor)
        self.streaming = _streaming_args(early_stop, suffix_window, suffix_tail, suffix_dropout, threshold_alpha,
                                         self.threshold, self.gen_length, self.block_length)
        if dtype not in ("auto", *DTYPES):
            raise ModelArgError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        self.seed = _as_int("seed", seed, minimum=0)
        if isinstance(batch_size, str) and batch_size.startswith("auto"):
            raise ModelArgError("batch_size must be a positive integer (this backend has no automatic batch "
                                f"size); got {batch_size!r}")
        self.batch_size = _as_int("batch_size", batch_size)
        self._max_length_arg = None if max_length is None else _as_int("max_length", max_length, minimum=2)
        if getattr(self, "_checks_only", False):  # check_arguments(): the directory's files too, nothing loaded
            check_model_dir(str(pretrained), "pretrained=")
            _arg(_pick_device, device)
            return

        self._join_processes(device)
        self.pretrained = str(pretrained)
        self.model, self.tokenizer = self._load(self.pretrained, dtype)
        config = self.model.config
        self._token_ids(config)
        self.max_length = self._max_length_arg or int(getattr(config, "max_sequence_length", 4096))
        self._warned: set[str] = set()
        self._log_start(config)

    def _log_start(self, config) -> None:
        if self.batch_size == 1 and self.mc_num > 1 and self.rank == 0:
            logger.warning("%s: batch_size=1 runs one Monte Carlo sample per forward (lm-eval's default); pass "
                           "--batch_size 32 or more for speed (the estimates do not depend on it)", MODEL_NAME)
        if self.rank == 0:
            logger.info("%s: %s on %s, exact_ratio=%s chebyshev_degree=%s mc_num=%d mc_batch_size=%d cfg=%s "
                        "batch_size=%d world_size=%d", MODEL_NAME, self.pretrained, self.device,
                        config.hybrid_exact_ratio, config.hybrid_chebyshev_degree, self.mc_num,
                        self.mc_batch_size, self.cfg, self.batch_size, self.world_size)

    # lm-eval passes batch_size / device from its own flags next to --model_args; a model argument wins
    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def check_arguments(cls, arg_dict, additional_config=None) -> None:
        """Every check :meth:`create_from_arg_obj` would make before loading (arguments, the model directory's
        files, the device), without loading anything; raises :class:`UserError` (``ModelArgError`` for an
        argument)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        self = cls.__new__(cls)
        self._checks_only = True
        self.__init__(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def _sampler_args(self, steps, gen_length, block_length, temperature, remasking, logits_eos_inf,
                      confidence_eos_eot_inf, cache, threshold, factor) -> None:
        """The generation sampler's model arguments, parsed and checked (``ModelArgError`` naming the argument)."""
        self.steps, self.gen_length, self.block_length = (
            _as_int("steps", steps), _as_int("gen_length", gen_length), _as_int("block_length", block_length))
        self.temperature = _as_float("temperature", temperature)
        self.remasking = remasking
        _arg(check_schedule, self.steps, self.gen_length, self.block_length, remasking, self.temperature, self.cfg)
        self.logits_eos_inf = _as_bool("logits_eos_inf", logits_eos_inf)
        self.confidence_eos_eot_inf = _as_bool("confidence_eos_eot_inf", confidence_eos_eot_inf)
        self.cache_mode = cache
        self.threshold = None if threshold is None else parse_number(threshold)  # checked just below
        self.factor = None if factor is None else parse_number(factor)
        _arg(check_fast_sampling, self.cache_mode, self.threshold, self.factor, remasking)

    def _join_processes(self, device) -> None:
        """Under ``accelerate launch`` / torchrun with several processes, join their group (rank, world size, this
        process's device); alone, pick ``device``."""
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # accelerate launch / torchrun with several processes
            from accelerate import Accelerator

            from .process_group import import_before_joining

            import_before_joining()  # before the group exists (see support_basis/process_group.py)
            on_cpu = not torch.cuda.is_available() or str(device).startswith("cpu")
            self.accelerator = Accelerator(cpu=on_cpu)  # cpu=True: gloo process group (else: no group on CPU)
            if self.accelerator.num_processes < 2:
                raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate found a single process")
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            self._device = self.accelerator.device
        else:
            self._device = _pick_device(device)

    def _token_ids(self, config) -> None:
        """The mask, padding, EoT and stop ids of the loaded model and tokenizer."""
        self.mask_id = int(config.mask_token_id)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else getattr(config, "pad_token_id", None)
        pad = pad if pad is not None else config.eos_token_id
        if pad == self.mask_id:
            raise ValueError(f"the tokenizer pads with the mask token ({self.mask_id}); set another pad token")
        self.pad_id = int(pad)
        vocab = self.tokenizer.get_vocab()
        self.eot_id = vocab.get("<|eot_id|>")
        self.stop_ids = sorted({i for i in (config.eos_token_id, self.tokenizer.eos_token_id, self.eot_id)
                                if i is not None})

    def _load(self, name: str, dtype: str):
        check_model_dir(name, "pretrained=")  # a LLaDA-BS directory with complete files (UserError otherwise)
        config = load_config(name, "pretrained=", hybrid_exact_ratio=self.exact_ratio,
                             hybrid_chebyshev_degree=self.chebyshev_degree, hybrid_kernel=self.kernel)
        if not hasattr(config, "hybrid_exact_ratio"):  # a hub id, not checked on disk
            raise UserError(f"pretrained={name} is not a LLaDA-BS model (its config has no hybrid_exact_ratio); "
                            "prepare one with scripts/prepare_model.py")
        if getattr(config, "mask_token_id", None) is None:
            raise UserError(f"pretrained={name}: the config has no mask_token_id")
        torch_dtype = DTYPES.get(dtype) or (torch.bfloat16 if self._device.type == "cuda" else torch.float32)
        model = load_weights(name, config, torch_dtype, "pretrained=")  # the package's code, not the directory's
        tokenizer = load_tokenizer(name, "pretrained=")
        return model.to(self._device).eval().requires_grad_(False), tokenizer

    # ---- distributed primitives used by lm-eval's evaluator --------------------------------------------------

    def all_gather(self, tensor):
        return tensor if self.accelerator is None else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst=0):
        if self.accelerator is None:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, result, dst=dst)
        return result

    def barrier(self):
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    # ---- chat templates (lm-eval's --apply_chat_template) ----------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):  # named templates
            key = chat_template if isinstance(chat_template, str) and chat_template in template else "default"
            return template.get(key)
        return template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.pretrained}: the tokenizer has no chat template; drop --apply_chat_template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    # ---- tokenisation ----------------------------------------------------------------------------------------

    def tok_encode(self, text: str) -> list[int]:
        """Token ids of ``text``; the tokenizer's own special tokens, unless ``text`` already starts with BOS
        (a chat-templated prompt), so BOS never appears twice."""
        bos = self.tokenizer.bos_token
        return self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, split from the encoding of the whole text (trailing spaces of the
        context move to the continuation, as lm-eval does); the context is cut from the left when too long."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        cont = whole[len(ctx) :]
        if whole[: len(ctx)] != ctx or not cont:  # a merge across the boundary: encode the parts separately
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            raise ValueError(f"the continuation {continuation!r} is empty after tokenisation")
        if len(cont) >= self.max_length:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_length ({self.max_length})")
        if len(ctx) + len(cont) > self.max_length:
            self._warn_once("truncate", f"contexts longer than max_length ({self.max_length}) minus the "
                                        "continuation are cut from the left")
            ctx = ctx[len(ctx) + len(cont) - self.max_length :]
        return ctx, cont

    def _warn_once(self, key: str, message: str):
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s: %s", MODEL_NAME, message)

    # ---- request types ---------------------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``[(log p(continuation | context), is_greedy)]`` for ``Instance``s with ``args = (context, cont)``."""
        if not requests:
            return []
        pairs = [self._encode_pair(*req.args) for req in requests]
        progress = not disable_tqdm and self.rank == 0
        values = mc_loglikelihoods(self.model, pairs, mask_id=self.mask_id, pad_id=self.pad_id, mc_num=self.mc_num,
                                   mc_batch_size=self.mc_batch_size, cfg=self.cfg, batch_size=self.batch_size,
                                   seed=self.seed, progress=progress)
        if self.check_greedy:
            greedy = greedy_matches(self.model, pairs, mask_id=self.mask_id, pad_id=self.pad_id, cfg=self.cfg,
                                    batch_size=self.batch_size, progress=progress)
        else:
            self._warn_once("greedy", "is_greedy is reported False (check_greedy=False); tasks that score greedy "
                                      "matches (e.g. lambada's acc) need check_greedy=True")
            greedy = [False] * len(pairs)
        results = list(zip(values, greedy))
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            f"{MODEL_NAME} does not implement loglikelihood_rolling (perplexity tasks such as wikitext): a masked "
            "diffusion model has no left-to-right token probabilities; use multiple-choice (loglikelihood) or "
            "generate_until tasks")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One answer per ``Instance`` with ``args = (context, gen_kwargs)``: LLaDA's sampler with the model
        arguments' settings, cut at EOS / ``<|eot_id|>`` and at the first of ``gen_kwargs["until"]``."""
        if self.gen_length >= self.max_length:  # no room for a prompt (multiple-choice tasks never get here)
            raise ModelArgError(f"gen_length={self.gen_length} leaves no room for a prompt in the model's "
                                f"{self.max_length} positions (max_length / max_sequence_length); pass a smaller "
                                "gen_length (and block_length, steps) in --model_args")
        if not requests:
            return []
        prompts, stops = [], []
        for req in requests:
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            stops.append([until] if isinstance(until, str) else list(until))
            ignored = sorted(gen_kwargs)
            if ignored:
                self._warn_once("gen_kwargs", f"generation kwargs {ignored} are ignored: the sampler is set by the "
                                              "model arguments (steps, gen_length, block_length, temperature, ...)")
            ids = self.tok_encode(context) or [self.pad_id]
            room = self.max_length - self.gen_length
            if len(ids) > room:
                self._warn_once("truncate_gen", f"prompts longer than max_length - gen_length ({room}) are cut "
                                                "from the left")
                ids = ids[-room:]
            prompts.append(ids)
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        answers: list[str] = [""] * len(prompts)
        stop_ids = torch.tensor(self.stop_ids, device=self.device, dtype=torch.long)
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        for idx in tqdm(batches, desc="llada_bs generate_until", disable=disable_tqdm or self.rank != 0):
            ids, mask = left_pad([prompts[i] for i in idx], self.pad_id)
            out = generate(self.model, ids.to(self.device), mask.to(self.device), steps=self.steps,
                           gen_length=self.gen_length, block_length=self.block_length, temperature=self.temperature,
                           cfg_scale=self.cfg, remasking=self.remasking, mask_id=self.mask_id,
                           eot_token_id=self.eot_id, logits_eos_inf=self.logits_eos_inf,
                           confidence_eos_eot_inf=self.confidence_eos_eot_inf, generator=generator,
                           cache=self.cache_mode, threshold=self.threshold, factor=self.factor, **self.streaming)
            gen = out[:, ids.shape[1] :]
            is_stop = torch.isin(gen, stop_ids)
            ends = torch.where(is_stop.any(-1), is_stop.int().argmax(-1), gen.shape[1]).tolist()
            for row, i in enumerate(idx):
                text = self.tokenizer.decode(gen[row, : ends[row]].tolist(), skip_special_tokens=True)
                answers[i] = cut_at_stop_strings(text, stops[i])
        for req, answer in zip(requests, answers):
            self.cache_hook.add_partial("generate_until", req.args, answer)
        return answers


def _pick_device(device: str | None) -> torch.device:
    """``auto``/None: CUDA when available, else CPU. A CUDA device on a machine without CUDA falls back to the
    CPU with a warning (lm-eval's command line passes ``cuda:0`` unless told ``--device``)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N, ...; got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        logger.warning("%s: device %r requested but CUDA is not available; using the CPU", MODEL_NAME, device)
        return torch.device("cpu")
    return dev
