"""The errors standard (README, "Troubleshooting"), held for every command line of the project.

Each bad input below goes through a real command line and must end with exit status 2, exactly ONE line on
stderr (``<program>: error: ...``) naming the input and what to do, nothing on stdout, and no file created or
changed (no partial output). Most cases call the command's ``main(argv)`` in-process (the same parsing and checks
as the script, without a ~3 s interpreter start each); ``test_as_a_subprocess`` runs a representative case of
every entry point through the real script. An unexpected exception must keep its traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from broken_inputs import broken_data, broken_models, official_sources, write_jsonl
from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
SMALL = ["--gen_length", "8", "--block_length", "8", "--steps", "2", "--no_progress"]


# ------------------------------------------------------------------------------------------------------------
# The entry points, called as their scripts call them
# ------------------------------------------------------------------------------------------------------------


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_errors_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runner(task):
    def run(argv):
        from support_basis.evaluation import cli

        return cli.main(task, argv)

    return run


def _generate(argv):
    import generate

    return generate.main(argv)


ENTRY = {
    "generate": _generate,
    "run_arc_easy": _runner("arc_easy"),
    "run_hellaswag": _runner("hellaswag"),
    "run_mmlu": _runner("mmlu"),
    "run_gpqa": _runner("gpqa"),
    **{name: (lambda name: lambda argv: _script(name).main(argv))(name) for name in (
        "prepare_model", "summarize_results", "lm_eval_llada", "efficiency_experiment", "entry_distributions",
        "make_tiny_model")},
}


@dataclass
class Case:
    id: str
    entry: str
    argv: object  # (ctx, work dir) -> list[str]
    expect: tuple[str, ...]
    setup: object = None  # (ctx, work dir) -> None, before the snapshot
    marks: list = field(default_factory=list)


def case(id, entry, argv, *expect, setup=None, marks=()):
    return pytest.param(Case(id, entry, argv, expect, setup, list(marks)), id=id, marks=list(marks))


def gen(*extra):
    return lambda c, w: ["--model", str(c.tiny), "--prompt", "Hi", "--gen-length", "8", "--steps", "2",
                         "--block-length", "8", *extra]


def gen_model(key, *extra):
    return lambda c, w: ["--model", str(c.bad[key]), "--prompt", "Hi", *extra]


def run(*extra, model=None, data=None):
    return lambda c, w: ["--model_name", str(model(c) if model else c.tiny), "--out_dir", str(w / "out"),
                         "--data_path", str(data(c) if data else FIXTURES), "--limit", "2", *SMALL, *extra]


def run_dir_setup(edit):
    """A finished run's directory in ``w/out``, then ``edit(run_dir)`` damages it."""
    def setup(c, w):
        out = w / "out" / "arc_easy" / "ratio0.2_deg6__steps2_gen8_block8"
        out.mkdir(parents=True)
        (out / "run.json").write_text(json.dumps(c.identity))
        (out / "records.jsonl").write_text(c.records)
        edit(out, c)
    return setup


def prep(*extra, source=None):
    return lambda c, w: ["--source", str(source(c) if source else c.src["good"]), "--out", str(w / "bs"), *extra]


def llada_args(args):
    return lambda c, w: ["--model", "llada_bs", "--model_args", args.format(tiny=c.tiny, official=c.bad["official"]),
                         "--tasks", "arc_easy", "--device", "cpu"]


def entries(*extra, model=None):
    return lambda c, w: ["--model", str(model(c) if model else c.tiny), "--trust-remote-code", "--out",
                         str(w / "out"), "--no-plots", *extra]


def non_utf8_file(c, w):
    (w / "texts.txt").write_bytes(b"caf\xe9 au lait\n")


CASES = [
    # --- generate.py: flags (checked before the model loads) --------------------------------------------------
    case("gen-steps-0", "generate", gen("--steps", "0"), "steps must be a positive integer"),
    case("gen-blocks", "generate", gen("--gen-length", "10", "--block-length", "4"), "multiple of block_length"),
    case("gen-temperature-negative", "generate", gen("--temperature", "-1"), "temperature", "-1"),
    case("gen-temperature-inf", "generate", gen("--temperature", "inf"), "temperature", "inf"),
    case("gen-temperature-absurd", "generate", gen("--temperature", "1e308"), "temperature", "1e+308"),
    case("gen-temperature-nan", "generate", gen("--temperature", "nan"), "temperature", "nan"),
    case("gen-cfg-inf", "generate", gen("--cfg-scale", "inf"), "cfg_scale", "inf"),
    case("gen-exact-ratio", "generate", gen("--exact-ratio", "1.5"), "--exact-ratio must be in [0, 1]", "1.5"),
    case("gen-degree", "generate", gen("--chebyshev-degree", "0"), "--chebyshev-degree", "0"),
    case("gen-batch-size", "generate", gen("--batch-size", "0"), "--batch-size", "'0'"),
    case("gen-seed", "generate", gen("--seed", "-1"), "--seed", "'-1'"),
    case("gen-remasking", "generate", gen("--remasking", "top_p"), "--remasking", "top_p"),
    case("gen-unknown-flag", "generate", gen("--bogus"), "unrecognized arguments: --bogus"),
    case("gen-no-prompt", "generate", lambda c, w: ["--model", str(c.tiny)], "--prompt", "required"),
    case("gen-device-cuda", "generate", gen("--device", "cuda"), "--device cuda", "no usable CUDA", marks=[NO_CUDA]),
    case("gen-device-word", "generate", gen("--device", "gpu"), "--device 'gpu' is not a device"),
    case("gen-prompt-not-utf8", "generate", lambda c, w: ["--model", str(c.tiny), "--prompt", "caf\udce9"],
         "--prompt #1 is not valid UTF-8", "0xe9"),
    # --- generate.py: the model directory -----------------------------------------------------------------------
    case("gen-model-missing", "generate", lambda c, w: ["--model", str(w / "nowhere"), "--prompt", "Hi"],
         "does not exist", "make_tiny_model.py"),
    case("gen-model-not-a-dir", "generate", lambda c, w: ["--model", str(w), "--prompt", "Hi"],
         "not a model directory (no config.json)"),
    case("gen-suffix-window", "generate", gen("--suffix-window", "-1"), "--suffix-window", "-1"),
    case("gen-suffix-tail", "generate", gen("--suffix-window", "2", "--suffix-tail", "99"), "--suffix-tail", "99",
         "larger than the suffix"),
    case("gen-suffix-dropout", "generate", gen("--suffix-dropout", "poisson"), "--suffix-dropout", "poisson"),
    case("gen-threshold-alpha", "generate", gen("--threshold", "0.9", "--threshold-alpha", "2"), "--threshold-alpha",
         "[0, 1]"),
    case("gen-model-is-a-file", "generate", lambda c, w: ["--model", str(c.tiny / "config.json"), "--prompt", "Hi"],
         "is a file"),
    case("gen-official-layout", "generate", gen_model("official"), "not a LLaDA-BS model", "prepare_model.py"),
    case("gen-bad-hybrid-value", "generate", gen_model("bad_hybrid"), "config.json", "hybrid_exact_ratio", "1.5"),
    case("gen-config-not-json", "generate", gen_model("bad_json"), "config.json is not valid JSON", "line 1"),
    case("gen-truncated-weights", "generate", gen_model("truncated"), "model.safetensors is truncated"),
    case("gen-garbage-weights", "generate", gen_model("garbage"), "model.safetensors is not a safetensors file"),
    case("gen-stale-single-file", "generate", gen_model("stale_single"), "both model.safetensors and"),
    case("gen-missing-shard", "generate", gen_model("missing_shard"), "model-00002-of-00002.safetensors", "missing"),
    case("gen-shards-vs-index", "generate", gen_model("mixed_shards"), "does not hold the tensors the index maps"),
    case("gen-truncated-shard", "generate", gen_model("truncated_shard"), "model-00001-of-00002", "truncated"),
    case("gen-no-tokenizer", "generate", gen_model("no_tokenizer"), "no tokenizer (tokenizer.json)"),
    case("gen-layers-vs-weights", "generate", gen_model("layers_mismatch"), "weights do not match config.json",
         "missing (e.g. model.transformer.blocks.2."),
    case("gen-width-vs-weights", "generate", gen_model("width_mismatch"), "weights do not match config.json",
         "of another shape", "(64,"),
    case("gen-tying-vs-weights", "generate", gen_model("tying_mismatch"), "weights do not match config.json",
         "not in the architecture (e.g. model.transformer.ff_out.weight)"),
    case("gen-tensor-missing", "generate", gen_model("tensor_missing"), "1 missing", "attn_out.weight"),
    case("gen-no-rope-theta", "generate", gen_model("no_rope_theta"), "config.json has no rope_theta"),
    case("gen-rope-theta-zero", "generate", gen_model("rope_theta_zero"), "rope_theta must be a finite number > 0",
         "got 0"),
    case("gen-heads-zero", "generate", gen_model("heads_zero"), "n_heads must be an integer >= 1", "got 0"),
    case("gen-mask-id-not-tokenizers", "generate", gen_model("mask_not_tokenizers"), "mask_token_id is",
         "<|mdm_mask|>"),
    case("gen-tokenizer-config", "generate", gen_model("bad_tokenizer_config"), "tokenizer_config.json",
         "not valid JSON"),
    # --- generate.py: the prompts (after the model loads, before any output) -----------------------------------
    case("gen-ids-outside-vocabulary", "generate", gen_model("foreign_tokenizer", "--gen-length", "8", "--steps", "2",
                                                             "--block-length", "8"),
         "mask_token_id is", "the tokenizer's <|mdm_mask|> is"),  # a foreign tokenizer: caught before loading
    case("gen-prompt-too-long", "generate", lambda c, w: ["--model", str(c.tiny), "--prompt", "Hi", "--prompt",
                                                          "word " * 1200, "--gen-length", "32"],
         "--prompt #2", "max_sequence_length (1024)"),
    case("gen-empty-prompt", "generate", gen("--no-chat", "--prompt", ""), "--prompt #2 ('')", "empty"),
    # --- the benchmark runners: flags ---------------------------------------------------------------------------
    case("run-steps-0", "run_arc_easy", run("--steps", "0"), "--steps", "expected an integer >= 1; got '0'"),
    case("run-suffix-window", "run_arc_easy", run("--suffix_window", "-4"), "--suffix_window", "-4"),
    case("run-suffix-tail", "run_arc_easy", run("--suffix_window", "2", "--suffix_tail", "9"), "--suffix_tail",
         "larger than the suffix"),
    case("run-threshold-alpha", "run_arc_easy", run("--threshold_alpha", "0.3"), "--threshold_alpha",
         "give --threshold too"),
    case("run-block-0", "run_arc_easy", run("--block_length", "0"), "--block_length", "got '0'"),
    case("run-steps-above-answer", "run_arc_easy", run("--steps", "100"), "--steps (100) is more than the answer "
         "length (8 tokens)"),
    case("run-out-dir-empty", "run_arc_easy", lambda c, w: ["--model_name", str(c.tiny), "--out_dir", "",
                                                            "--data_path", str(FIXTURES), *SMALL],
         "--out_dir is empty"),
    case("gen-prompt-blank", "generate", gen("--prompt", "   "), "--prompt #2", "is empty; give some text"),
    case("gen-prompt-mask-text", "generate", gen("--prompt", "fill <|mdm_mask|> in"), "--prompt #2",
         "contains the mask token"),
    case("run-temperature-negative", "run_arc_easy", run("--temperature", "-1"), "temperature", "-1"),
    case("run-temperature-inf", "run_arc_easy", run("--temperature", "inf"), "temperature", "inf"),
    case("run-cfg-nan", "run_arc_easy", run("--cfg_scale", "nan"), "cfg_scale", "nan"),
    case("run-device-cuda", "run_arc_easy", run("--device", "cuda"), "--device cuda", marks=[NO_CUDA]),
    case("run-limit-0", "run_arc_easy", run("--limit", "0"), "--limit", "'0'"),
    case("run-batch-size-0", "run_arc_easy", run("--batch_size", "0"), "--batch_size", "'0'"),
    case("run-seed-negative", "run_arc_easy", run("--seed", "-5"), "--seed", "'-5'"),
    case("run-configs", "run_arc_easy", run("--configs", "0.2-6"), "'0.2-6'", "RATIO:DEGREE"),
    case("run-configs-ratio", "run_arc_easy", run("--configs", "1.5:6"), "--exact_ratio", "1.5"),
    case("run-exact-ratio", "run_arc_easy", run("--exact_ratio", "2"), "--exact_ratio must be in [0, 1]"),
    case("run-degree", "run_arc_easy", run("--chebyshev_degree", "0"), "--chebyshev_degree", "0"),
    case("run-answer-parser", "run_arc_easy", run("--answer_parser", "regex"), "--answer_parser", "regex"),
    case("run-out-dir-file", "run_arc_easy", lambda c, w: [*run()(c, w), "--out_dir", str(w / "file")],
         "--out_dir", "is a file", setup=lambda c, w: (w / "file").write_text("x")),
    case("run-out-dir-under-file", "run_arc_easy", lambda c, w: [*run()(c, w), "--out_dir", str(w / "file" / "o")],
         "is a file, so the directory cannot be created", setup=lambda c, w: (w / "file").write_text("x")),
    # --- the benchmark runners: the model directory -------------------------------------------------------------
    case("run-model-missing", "run_arc_easy", run(model=lambda c: c.tiny.parent / "nowhere"),
         "--model_name", "does not exist"),
    case("run-official-layout", "run_arc_easy", run(model=lambda c: c.bad["official"]), "prepare_model.py"),
    case("run-bad-hybrid-value", "run_arc_easy", run(model=lambda c: c.bad["bad_hybrid"]), "config.json", "1.5"),
    case("run-truncated-weights", "run_arc_easy", run(model=lambda c: c.bad["truncated"]), "truncated"),
    case("run-ids-outside-vocabulary", "run_arc_easy", run(model=lambda c: c.bad["foreign_tokenizer"]),
         "mask_token_id is", "the tokenizer's <|mdm_mask|> is"),
    case("run-prompt-too-long", "run_arc_easy", run("--gen_length", "1024", "--block_length", "32", "--steps", "32"),
         "max_sequence_length (1024)", "--gen_length"),
    # --- the benchmark runners: data ----------------------------------------------------------------------------
    case("data-missing", "run_arc_easy", run(data=lambda c: c.tiny.parent / "nodata"), "no local ARC-Easy data"),
    case("data-broken-line", "run_arc_easy", run(data=lambda c: c.data["broken_line"]), "arc_easy.jsonl, line 2",
         "not valid JSON"),
    case("data-not-utf8", "run_arc_easy", run(data=lambda c: c.data["not_utf8"]), "arc_easy.jsonl is not UTF-8",
         "line 2"),
    case("data-line-not-object", "run_arc_easy", run(data=lambda c: c.data["not_object"]), "line 2",
         "expected a JSON object"),
    case("data-json-list", "run_arc_easy", run(data=lambda c: c.data["json_list"]), "arc_easy.json", "not a record"),
    case("data-missing-field", "run_arc_easy", run(data=lambda c: c.data["missing_field"]), "no field 'choices'"),
    case("data-arc-key", "run_arc_easy", run(data=lambda c: c.data["bad_key"]), "answerKey 'Z'"),
    case("data-empty", "run_arc_easy", run(data=lambda c: c.data["empty"]), "no ARC-Easy records"),
    case("data-hellaswag-label", "run_hellaswag", run(data=lambda c: c.data["hellaswag_label"]), "label '7'",
         "out of range"),
    case("data-hellaswag-negative", "run_hellaswag", run(data=lambda c: c.data["hellaswag_negative"]), "label -1"),
    case("data-mmlu-answer", "run_mmlu", run(data=lambda c: c.data["mmlu_answer"]), "answer 4", "out of range"),
    case("data-mmlu-negative", "run_mmlu", run(data=lambda c: c.data["mmlu_negative"]), "answer -1"),
    case("data-mmlu-letter", "run_mmlu", run(data=lambda c: c.data["mmlu_text"]), "answer 'B' is not an index"),
    case("data-arc-fewer-texts", "run_arc_easy", run(data=lambda c: c.data["arc_fewer_texts"]), "record 0",
         "4 labels but 3 option texts"),
    case("data-arc-null-question", "run_arc_easy", run(data=lambda c: c.data["arc_null_question"]), "record 0",
         "question is None"),
    case("data-duplicate-id", "run_arc_easy", run(data=lambda c: c.data["arc_duplicate_id"]), "records 0 and 1",
         "same id"),
    case("data-mmlu-choices-string", "run_mmlu", run(data=lambda c: c.data["mmlu_choices_string"]),
         "choices must be a list of option texts", "str"),
    case("data-mmlu-subject-number", "run_mmlu", run(data=lambda c: c.data["mmlu_subject_number"]), "subject is 7"),
    case("data-gpqa-correct-twice", "run_gpqa", run(data=lambda c: c.data["gpqa_correct_twice"]),
         "is also an Incorrect Answer"),
    case("data-hellaswag-empty-ending", "run_hellaswag", run(data=lambda c: c.data["hellaswag_empty_ending"]),
         "endings[3] is ' '"),
    # --- the benchmark runners: earlier results in --out_dir ----------------------------------------------------
    case("run-other-configuration", "run_arc_easy", run(), "different configuration", "seed",
         setup=run_dir_setup(lambda d, c: (d / "run.json").write_text(json.dumps({**c.identity, "seed": 7})))),
    case("run-data-changed", "run_arc_easy", run(), "records made from other data", "item 0",
         setup=run_dir_setup(lambda d, c: (d / "records.jsonl").write_text(
             c.records.replace(c.first_fp, "0123456789abcdef")))),
    case("run-json-corrupt", "run_arc_easy", run(), "run.json is not valid JSON", "delete",
         setup=run_dir_setup(lambda d, c: (d / "run.json").write_text("{"))),
    case("run-records-broken-line", "run_arc_easy", run(), "records.jsonl, line 1", "not valid JSON",
         setup=run_dir_setup(lambda d, c: (d / "records.jsonl").write_text("{oops\n" + c.records))),
    case("run-records-not-object", "run_arc_easy", run(), "records.jsonl, line 3", "not a record",
         setup=run_dir_setup(lambda d, c: (d / "records.jsonl").write_text(c.records + "[1]\n"))),
    # --- prepare_model.py --------------------------------------------------------------------------------------
    case("prep-source-missing", "prepare_model", prep(source=lambda c: c.tiny.parent / "nowhere"),
         "no such directory"),
    case("prep-source-file", "prepare_model", prep(source=lambda c: c.tiny / "config.json"), "is a file"),
    case("prep-revision-local", "prepare_model", prep("--revision", "main"), "--revision main",
         "is a local directory, not a hub id"),
    case("prep-truncated-shard", "prepare_model", prep(source=lambda c: c.src["truncated_shard"]),
         "model-00002-of-00002.safetensors is truncated"),
    case("prep-shards-vs-index", "prepare_model", prep(source=lambda c: c.src["mixed_shards"]),
         "does not hold the tensors the index maps"),
    case("prep-stale-single-file", "prepare_model", prep(source=lambda c: c.src["stale_single"]),
         "both model.safetensors and"),
    case("prep-config-not-json", "prepare_model", prep(source=lambda c: c.src["bad_json"]), "config.json",
         "not valid JSON"),
    case("prep-no-tokenizer", "prepare_model", prep(source=lambda c: c.src["no_tokenizer"]), "no tokenizer"),
    case("prep-unsupported-config", "prepare_model", prep(source=lambda c: c.src["unsupported"]), "config.json",
         "block_type='sequential'"),
    case("prep-out-file", "prepare_model", lambda c, w: [*prep()(c, w), "--out", str(w / "file")], "--out",
         "is a file", setup=lambda c, w: (w / "file").write_text("x")),
    case("prep-out-not-empty", "prepare_model", prep(), "not empty", "--force",
         setup=lambda c, w: ((w / "bs").mkdir(), (w / "bs" / "notes.txt").write_text("x"))),
    case("prep-force-on-non-model-dir", "prepare_model", prep("--force"), "refusing",
         setup=lambda c, w: ((w / "bs").mkdir(), (w / "bs" / "notes.txt").write_text("x"))),
    case("prep-out-inside-source", "prepare_model", lambda c, w: [*prep()(c, w), "--out", str(c.src["good"] / "x")],
         "outside --source"),
    case("prep-exact-ratio", "prepare_model", prep("--exact-ratio", "1.5"), "--exact-ratio must be in [0, 1]"),
    case("prep-degree", "prepare_model", prep("--chebyshev-degree", "x"), "--chebyshev-degree", "'x'"),
    # --- summarize_results.py ----------------------------------------------------------------------------------
    case("sum-missing-dir", "summarize_results", lambda c, w: [str(w / "nowhere")], "is not a directory"),
    case("sum-no-runs", "summarize_results", lambda c, w: [str(w)], "no finished runs"),
    case("sum-corrupt-summary", "summarize_results", lambda c, w: [str(w)], "summary.json is not valid JSON",
         setup=lambda c, w: write_jsonl(w / "arc_easy" / "exact" / "summary.json", ['{"task": ']).parent),
    case("sum-not-a-summary", "summarize_results", lambda c, w: [str(w)], "not a run summary", "'accuracy'",
         setup=lambda c, w: write_jsonl(w / "arc_easy" / "exact" / "summary.json", [{"task": "arc_easy",
                                                                                      "config": "exact"}])),
    *[case(f"sum-bad-{field}-{value}", "summarize_results", lambda c, w: [str(w)], f"{field} is {said}",
           setup=lambda c, w, f=field, v=value: write_jsonl(
               w / "arc_easy" / "exact" / "summary.json",
               ['{"task": "arc_easy", "config": "exact", "accuracy": 0.5, "stderr": 0.1, "n": 4, "unparsed": 0, '
                f'"{f}": {v}' + "}"]))
      for field, value, said in (("accuracy", "NaN", "nan"), ("n", -5, "-5"), ("accuracy", '"0.7"', "'0.7'"),
                                 ("stderr", 2, "2"))],
    # --- scripts/lm_eval_llada.py (model arguments checked before lm-eval starts) -------------------------------
    case("lm-mc-num", "lm_eval_llada", llada_args("pretrained={tiny},mc_num=0"), "mc_num", "0"),
    case("lm-suffix-dropout", "lm_eval_llada", llada_args("pretrained={tiny},suffix_dropout=poisson"),
         "suffix_dropout", "poisson"),
    case("lm-threshold-alpha", "lm_eval_llada", llada_args("pretrained={tiny},threshold=0.9,threshold_alpha=7"),
         "threshold_alpha", "[0, 1]"),
    case("lm-exact-ratio", "lm_eval_llada", llada_args("pretrained={tiny},exact_ratio=abc"), "exact_ratio", "'abc'"),
    case("lm-unknown-key", "lm_eval_llada", llada_args("pretrained={tiny},foo=1"), "unknown model argument", "foo"),
    case("lm-hint", "lm_eval_llada", llada_args("model_path={tiny}"), "did you mean pretrained"),
    case("lm-no-pretrained", "lm_eval_llada", llada_args("mc_num=2"), "pretrained=DIR"),
    case("lm-missing-dir", "lm_eval_llada", llada_args("pretrained={tiny}-nowhere"), "pretrained=", "does not exist"),
    case("lm-official", "lm_eval_llada", llada_args("pretrained={official}"), "prepare_model.py"),
    case("lm-mc-batch", "lm_eval_llada", llada_args("pretrained={tiny},mc_num=10,mc_batch_size=4"),
         "multiple of mc_batch_size"),
    case("lm-temperature", "lm_eval_llada", llada_args("pretrained={tiny},temperature=inf"), "temperature", "inf"),
    case("lm-device", "lm_eval_llada", llada_args("pretrained={tiny},device=gpu"), "device", "'gpu'"),
    case("lm-batch-auto", "lm_eval_llada", llada_args("pretrained={tiny},batch_size=auto"), "batch_size", "auto"),
    # --- efficiency_experiment.py -------------------------------------------------------------------------------
    case("eff-out-file", "efficiency_experiment", lambda c, w: ["--quick", "--out", str(w / "file")], "--out",
         "is a file", setup=lambda c, w: (w / "file").write_text("x")),
    case("eff-n", "efficiency_experiment", lambda c, w: ["--n", "0", "--out", str(w / "o")], "--n", "0"),
    case("eff-n-too-large", "efficiency_experiment", lambda c, w: ["--n-sweep", "100000000", "--out", str(w / "o")],
         "n = 100000000", "GiB", "use a smaller n"),
    case("eff-ratio", "efficiency_experiment", lambda c, w: ["--ratio", "1", "--out", str(w / "o")], "--ratio"),
    case("eff-thresholds", "efficiency_experiment", lambda c, w: ["--thresholds", "0.2,abc", "--out", str(w / "o")],
         "--thresholds", "abc"),
    case("eff-degree", "efficiency_experiment", lambda c, w: ["--degree", "9", "--out", str(w / "o")], "--degree",
         "degree <= 4"),
    case("eff-device-cuda", "efficiency_experiment", lambda c, w: ["--device", "cuda", "--out", str(w / "o")],
         "--device", "'cuda'", marks=[NO_CUDA]),
    # --- entry_distributions.py ---------------------------------------------------------------------------------
    case("ent-model-missing", "entry_distributions", entries(model=lambda c: c.tiny.parent / "nowhere"),
         "--model", "does not exist"),
    case("ent-model-not-a-dir", "entry_distributions", lambda c, w: ["--model", str(w), "--out", str(w / "o")],
         "no config.json"),
    case("ent-out-file", "entry_distributions", lambda c, w: [*entries()(c, w), "--out", str(w / "file")], "--out",
         "is a file", setup=lambda c, w: (w / "file").write_text("x")),
    case("ent-texts-empty", "entry_distributions", lambda c, w: [*entries()(c, w), "--texts", str(w / "t.txt")],
         "--texts", "no non-empty line", setup=lambda c, w: (w / "t.txt").write_text("\n\n")),
    case("ent-texts-missing", "entry_distributions", lambda c, w: [*entries()(c, w), "--texts", str(w / "no.txt")],
         "--texts", "does not exist"),
    case("ent-texts-not-utf8", "entry_distributions", lambda c, w: [*entries()(c, w), "--texts",
                                                                    str(w / "texts.txt")],
         "not UTF-8", "0xe9", setup=non_utf8_file),
    case("ent-images-missing", "entry_distributions", lambda c, w: [*entries()(c, w), "--images", str(w / "imgs")],
         "--images", "not a directory"),
    case("ent-max-tokens", "entry_distributions", entries("--max-tokens", "1"), "--max-tokens", "1"),
    case("ent-n", "entry_distributions", entries("--n", "1"), "--n", "1"),
    case("ent-batch-size", "entry_distributions", entries("--batch-size", "0"), "--batch-size", "'0'"),
    case("ent-device-cuda", "entry_distributions", entries("--device", "cuda"), "--device cuda", marks=[NO_CUDA]),
    case("ent-truncated-weights", "entry_distributions", entries(model=lambda c: c.bad["truncated"]), "truncated"),
    case("ent-wrong-family", "entry_distributions", entries("--family", "vit"), "no vit projections found"),
    case("ent-layers", "entry_distributions", entries("--layers", "7"), "--layers", "out of range"),
    # --- make_tiny_model.py -------------------------------------------------------------------------------------
    case("tiny-vocab-huge", "make_tiny_model", lambda c, w: [str(w / "m"), "--vocab-size", "2000000"],
         "--vocab-size must be in [300, 1000000]", "2000000"),
    case("tiny-out-file", "make_tiny_model", lambda c, w: [str(w / "file")], "is a file",
         setup=lambda c, w: (w / "file").write_text("x")),
    case("tiny-heads", "make_tiny_model", lambda c, w: [str(w / "m"), "--d-model", "10", "--n-heads", "3"],
         "d_model (10) must be divisible by n_heads (3)"),
    case("tiny-exact-ratio", "make_tiny_model", lambda c, w: [str(w / "m"), "--exact-ratio", "3"],
         "hybrid_exact_ratio", "3.0"),
    case("tiny-layers", "make_tiny_model", lambda c, w: [str(w / "m"), "--n-layers", "0"], "--n-layers", "'0'"),
    case("tiny-vocab", "make_tiny_model", lambda c, w: [str(w / "m"), "--vocab-size", "100"], "--vocab-size", "100"),
    case("tiny-embedding-std", "make_tiny_model", lambda c, w: [str(w / "m"), "--embedding-std", "0"],
         "--embedding-std", "0.0"),
]


# ------------------------------------------------------------------------------------------------------------
# Fixtures: the broken inputs (built once per module) and a finished run to damage
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    ctx = SimpleNamespace(tiny=tiny_model_dir, bad=broken_models(tiny_model_dir, root / "models"),
                          src=official_sources(tiny_model_dir, root / "sources"),
                          data=broken_data(FIXTURES, root / "data"))
    # a real finished run (2 items), whose run.json and records the run-directory cases copy and damage
    from support_basis.evaluation import cli

    out = root / "finished"
    cli.main("arc_easy", ["--model_name", str(tiny_model_dir), "--out_dir", str(out), "--data_path", str(FIXTURES),
                          "--limit", "2", *SMALL])
    run_dir = out / "arc_easy" / "ratio0.2_deg6__steps2_gen8_block8"
    ctx.identity = json.loads((run_dir / "run.json").read_text())
    ctx.records = (run_dir / "records.jsonl").read_text()
    ctx.first_fp = json.loads(ctx.records.splitlines()[0])["item_fp"]
    return ctx


@pytest.fixture(autouse=True)
def _quiet_progress_bars():
    """transformers' "Loading weights" bar also writes to stderr; the cases count stderr lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its size and modification time: 'nothing written' is an equal snapshot."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def call(entry, argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        entry(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error(code, out, err, expect, context=""):
    lines = err.strip().splitlines()
    assert code == 2, f"{context}: exit status {code}, stderr:\n{err[-3000:]}"
    assert len(lines) == 1, f"{context}: stderr is not one line:\n{err[-3000:]}"
    assert ": error: " in lines[0] and "Traceback" not in err, lines[0]
    for text in expect:
        assert text in lines[0], f"{context}: {text!r} not in {lines[0]!r}"
    assert out == "", f"{context}: printed on stdout: {out[:500]!r}"


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, ctx, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    if case.setup:
        case.setup(ctx, work)
    before = snapshot(work)
    code, out, err = call(ENTRY[case.entry], case.argv(ctx, work), capsys)
    assert_user_error(code, out, err, case.expect, case.id)
    assert snapshot(work) == before, f"{case.id}: left output behind"


def test_the_table_covers_every_entry_point():
    assert {c.values[0].entry for c in CASES} == set(ENTRY)
    assert len(CASES) >= 120


def test_an_unexpected_exception_keeps_its_traceback(tiny_model_dir, monkeypatch, capsys):
    import generate
    from support_basis import generate_cli

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(generate_cli, "load_model_and_tokenizer", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        generate.main(gen()(SimpleNamespace(tiny=tiny_model_dir), None))


# ------------------------------------------------------------------------------------------------------------
# The real scripts as subprocesses: one representative bad input per entry point
# ------------------------------------------------------------------------------------------------------------

SUBPROCESS = [
    ("generate.py", gen_model("bad_hybrid"), ("config.json", "hybrid_exact_ratio")),
    ("scripts/run_arc_challenge.py", lambda c, w: [*run()(c, w), "--out_dir", str(w / "file")], ("is a file",)),
    ("scripts/run_arc_easy.py", run("--limit", "0"), ("--limit",)),
    ("scripts/run_gpqa.py", run("--batch_size", "x"), ("--batch_size",)),
    ("scripts/run_hellaswag.py", run(data=lambda c: c.data["hellaswag_label"]), ("out of range",)),
    ("scripts/run_mmlu.py", run("--answer_parser", "x"), ("--answer_parser",)),
    ("scripts/prepare_model.py", prep(source=lambda c: c.src["truncated_shard"]), ("truncated",)),
    ("scripts/summarize_results.py", lambda c, w: [str(w / "nowhere")], ("is not a directory",)),
    ("scripts/lm_eval_llada.py", llada_args("pretrained={tiny},mc_num=0"), ("mc_num",)),
    ("scripts/efficiency_experiment.py", lambda c, w: ["--quick", "--out", str(w / "file")], ("is a file",)),
    ("scripts/entry_distributions.py", lambda c, w: [*entries()(c, w), "--texts", str(w / "file")],
     ("no non-empty line",)),
    ("scripts/make_tiny_model.py", lambda c, w: [str(w / "file")], ("is a file",)),
]
RUN_ALL = [
    (["--model"], "--model needs a value"),
    (["--limit", "--smoke"], "--limit needs a value"),
    (["--limit", "0"], "--limit must be a positive integer"),
    (["--batch-size", "x"], "--batch-size must be a positive integer"),
    (["--tasks", "squad"], "unknown task 'squad'"),
    (["--tasks", " "], "--tasks is empty"),
    (["--tasks", "arc_easy,squad"], "unknown task 'squad'"),
    (["--tasks", "*"], "unknown task '*'"),  # not the repository's file names
    (["--ratios", "0.2,abc"], "--ratios: 'abc' is not a number"),
    (["--degrees", "4 4.5"], "--degrees: '4.5' is not a whole number"),
    # a runner's flag is checked by every runner before --smoke writes its model and data: nothing is left
    (["--smoke", "--dtype", "bogus"], "argument --dtype: invalid choice: 'bogus'"),
    (["--smoke", "--tasks", "mmlu", "--", "--answer_parser", "strict"], "--answer_parser strict"),
    (["--no-exact", "--ratios", ""], "no configuration to run"),
    (["--bogus"], "unknown option --bogus"),
    # --smoke keeps a --model (and --data-dir) the user gave: the runner refuses this one, nothing is written
    (["--smoke", "--model", "/nonexistent/model", "--data-dir", str(FIXTURES)], "--model_name /nonexistent/model"),
]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1", RUN_ALL_PYTHON=sys.executable)


@pytest.mark.slow
@pytest.mark.parametrize("script,argv,expect", SUBPROCESS, ids=[s[0] for s in SUBPROCESS])
def test_as_a_subprocess(script, argv, expect, ctx, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "file").write_text("")
    before = snapshot(work)
    res = subprocess.run([sys.executable, str(REPO / script), *argv(ctx, work)], capture_output=True, text=True,
                         env=_env(), timeout=300)
    assert_user_error(res.returncode, res.stdout, res.stderr, expect, script)
    assert res.stderr.startswith(f"{Path(script).name}: error: ")
    assert snapshot(work) == before


@pytest.mark.slow
def test_run_all_sh(tmp_path):
    smoke = REPO / "results-smoke"
    smoke_before = snapshot(smoke) if smoke.exists() else None  # a developer's own smoke results may be there
    for argv, expect in RUN_ALL:
        res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--out", str(tmp_path / "out"), *argv],
                             capture_output=True, text=True, env=_env(), timeout=60)
        assert_user_error(res.returncode, res.stdout, res.stderr, (expect,), f"run_all.sh {argv}")
        assert not (tmp_path / "out").exists()
        assert (snapshot(smoke) if smoke.exists() else None) == smoke_before
