"""support_basis/lm_eval_llada.py: the lm-evaluation-harness backend on the tiny model, with two local tasks
(tests/fixtures/lm_eval: a multiple-choice task and a generation task on data written for this project).

Covers the Monte Carlo estimator against a one-sample-per-forward transcription, its invariances (batching,
order, processes), lm-eval's Python API on both request types, the chat template, argument errors, the optional
dependency, and the command line run by two processes (torchrun) against the single-process result.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "lm_eval"
SMALL = dict(mc_num=4, mc_batch_size=2, steps=4, gen_length=8, block_length=8, exact_ratio=0.5, chebyshev_degree=4)


@pytest.fixture(scope="module")
def lm_mod():
    pytest.importorskip("lm_eval")
    import support_basis.lm_eval_llada as mod

    return mod


@pytest.fixture(scope="module")
def model_args(lm_mod, tiny_model_dir):
    return dict(pretrained=str(tiny_model_dir), device="cpu", batch_size=64, **SMALL)


@pytest.fixture(scope="module")
def harness(lm_mod, model_args):
    return lm_mod.LLaDABSEvalHarness(**model_args)


@pytest.fixture(scope="module")
def task_manager(lm_mod):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(FIXTURES), include_defaults=False)  # the fixture tasks only: fast


@pytest.fixture(scope="module")
def single_process_run(model_args, task_manager):
    """Both fixture tasks through lm-eval's Python API, by registered name, in this process."""
    from lm_eval import simple_evaluate

    with torch.no_grad():
        return simple_evaluate(model="llada_bs", model_args=model_args, tasks=["tiny_mc", "tiny_gen"],
                               task_manager=task_manager, log_samples=True)


def _instances(request_type, arguments):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=request_type, doc={}, arguments=a, idx=i) for i, a in enumerate(arguments)]


PAIRS = [  # (context ids, continuation ids) on the tiny vocabulary, continuation lengths 1, 3, 5 and 2
    ([5, 17, 42, 99, 7], [13]),
    ([8, 30], [61, 62, 63]),
    ([], [70, 71, 72, 73, 74]),
    ([11, 12, 13, 14, 15, 16, 17], [40, 41]),
]


def reference_loglikelihood(model, ctx, cont, counts, masks, mask_id, cfg):
    """One request, one Monte Carlo sample per forward, no padding: mean of (T / k) * sum CE over masked tokens,
    negated; with ``cfg`` LLaDA's ``u + (cfg + 1)(c - u)`` with the context masked for ``u``."""
    x = torch.tensor([ctx + cont])
    total = 0.0
    for k, m in zip(counts.tolist(), masks):
        noisy = x.clone()
        noisy[0, len(ctx) :][m] = mask_id
        logits = model(noisy).logits.double()
        if cfg > 0:
            un = noisy.clone()
            un[0, : len(ctx)] = mask_id
            un_logits = model(un).logits.double()
            logits = un_logits + (cfg + 1) * (logits - un_logits)
        ce = F.cross_entropy(logits[0, len(ctx) :][m], x[0, len(ctx) :][m], reduction="sum")
        total += float(ce) * len(cont) / k
    return -total / len(counts)


# ----------------------------------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------------------------------


def test_stratified_counts_and_random_masks(lm_mod):
    g = torch.Generator().manual_seed(0)
    counts = lm_mod.stratified_mask_counts(5, 20, 5, g)
    assert counts.shape == (20,) and counts.min() >= 1 and counts.max() <= 5
    for group in counts.view(4, 5):  # a group as long as the continuation covers every count once
        assert sorted(group.tolist()) == [1, 2, 3, 4, 5]
    big = lm_mod.stratified_mask_counts(7, 4000, 8, g).double()
    assert abs(big.mean().item() - 4.0) < 0.1  # each count uniform on 1..T: mean (T + 1) / 2
    masks = lm_mod.random_masks(counts, 5, g)
    assert masks.shape == (20, 5) and torch.equal(masks.sum(-1), counts)
    a = lm_mod.sample_continuation_masks(6, 8, 4, seed=3)
    b = lm_mod.sample_continuation_masks(6, 8, 4, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    one = lm_mod.sample_continuation_masks(1, 128, 32, seed=3)
    assert one[0].tolist() == [1] and one[1].tolist() == [[True]]  # one-token continuation: a single, exact sample
    with pytest.raises(ValueError, match="multiple"):
        lm_mod.stratified_mask_counts(5, 10, 4, g)


@pytest.mark.parametrize("cfg", [0.0, 0.5])
def test_estimator_matches_one_sample_per_forward(lm_mod, tiny_model, cfg):
    """Rows of several requests share padded forwards (batch_size 3 splits requests across batches) and equal the
    unpadded per-sample transcription drawn from the same per-request generators."""
    mask_id = tiny_model.config.mask_token_id
    got = lm_mod.mc_loglikelihoods(tiny_model, PAIRS, mask_id=mask_id, pad_id=tiny_model.config.pad_token_id,
                                   mc_num=2, mc_batch_size=2, cfg=cfg, batch_size=3, seed=7)
    for (ctx, cont), value in zip(PAIRS, got):
        counts, masks = lm_mod.sample_continuation_masks(len(cont), 2, 2, lm_mod.request_seed(7, ctx, cont))
        want = reference_loglikelihood(tiny_model, ctx, cont, counts, masks, mask_id, cfg)
        assert value == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert value < 0


def test_one_token_continuation_is_the_exact_log_probability(lm_mod, tiny_model):
    ctx, cont = PAIRS[0]
    mask_id = tiny_model.config.mask_token_id
    value = lm_mod.mc_loglikelihoods(tiny_model, [(ctx, cont)], mask_id=mask_id, pad_id=0, mc_num=128,
                                     mc_batch_size=32)[0]
    logits = tiny_model(torch.tensor([ctx + [mask_id]])).logits[0, -1].double()
    assert value == pytest.approx(float(logits.log_softmax(-1)[cont[0]]), abs=1e-5)


def test_estimates_do_not_depend_on_batching_order_or_duplicates(lm_mod, tiny_model):
    kw = dict(mask_id=tiny_model.config.mask_token_id, pad_id=tiny_model.config.pad_token_id, mc_num=4,
              mc_batch_size=2, seed=11)
    together = lm_mod.mc_loglikelihoods(tiny_model, PAIRS + PAIRS[:2], batch_size=64, **kw)
    alone = [lm_mod.mc_loglikelihoods(tiny_model, [p], batch_size=5, **kw)[0] for p in PAIRS]
    reversed_ = lm_mod.mc_loglikelihoods(tiny_model, PAIRS[::-1], batch_size=7, **kw)[::-1]
    torch.testing.assert_close(torch.tensor(together[:4]), torch.tensor(alone), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(reversed_), torch.tensor(alone), rtol=1e-5, atol=1e-5)
    assert together[4:] == together[:2]  # duplicates: scored once
    other_seed = lm_mod.mc_loglikelihoods(tiny_model, PAIRS, batch_size=64, **{**kw, "seed": 12})
    assert other_seed[0] == pytest.approx(together[0], abs=1e-5)  # one token: exact, no randomness
    assert all(abs(a - b) > 1e-6 for a, b in zip(other_seed[1:3], together[1:3]))  # 3 and 5 tokens: new masks


def test_greedy_check_decodes_one_token_per_step(lm_mod, tiny_model, harness):
    from generate import generate

    mask_id, pad_id = tiny_model.config.mask_token_id, tiny_model.config.pad_token_id
    pairs = []
    for ctx, t in (([5, 17, 42], 3), ([8, 30, 31, 32, 33], 2), ([9], 1)):
        out = generate(tiny_model, torch.tensor([ctx]), steps=t, gen_length=t, block_length=t, mask_id=mask_id)
        greedy = out[0, len(ctx) :].tolist()
        wrong = [(greedy[0] + 1) % 300] + greedy[1:]
        pairs += [(ctx, greedy), (ctx, wrong)]
    got = lm_mod.greedy_matches(tiny_model, pairs, mask_id=mask_id, pad_id=pad_id, batch_size=4)
    assert got == [True, False] * 3
    harness.check_greedy = True
    try:
        result = harness.loglikelihood(_instances("loglikelihood", [("Hello", " world"), ("Hello", " water")]))
    finally:
        harness.check_greedy = False
    assert all(isinstance(g, bool) for _, g in result)


# ----------------------------------------------------------------------------------------------------------------
# lm-eval: likelihood path, generation path, chat template
# ----------------------------------------------------------------------------------------------------------------


def test_multiple_choice_task_through_simple_evaluate(single_process_run, harness):
    result = single_process_run["results"]["tiny_mc"]
    samples = single_process_run["samples"]["tiny_mc"]
    assert len(samples) == 8 and 0.0 <= result["acc,none"] <= 1.0
    hits, requests, logged = [], [], []
    for s in samples:
        lls = [float(r[0][0]) for r in s["resps"]]
        assert all(ll < 0 for ll in lls) and all(r[0][1] in (False, "False") for r in s["resps"])
        hits.append(float(max(range(len(lls)), key=lls.__getitem__) == s["target"]))
        requests += [tuple(a) for a in s["arguments"]]
        logged += lls
    assert result["acc,none"] == pytest.approx(sum(hits) / len(hits))
    # the same requests scored directly by another instance (same seed), in another order: the same numbers
    again = harness.loglikelihood(_instances("loglikelihood", requests[::-1]))[::-1]
    assert [v for v, _ in again] == pytest.approx(logged, rel=1e-5, abs=1e-5)


def test_generation_task_through_simple_evaluate(single_process_run):
    samples = single_process_run["samples"]["tiny_gen"]
    assert len(samples) == 4 and "exact_match,none" in single_process_run["results"]["tiny_gen"]
    for s in samples:
        answer = s["resps"][0][0]
        assert isinstance(answer, str) and "\n" not in answer and "Q:" not in answer


def test_generate_until_matches_the_sampler_and_cuts_at_stop_strings(harness):
    from generate import generate

    prompts = ["Q: What is 2 plus 3?\nA:", "Question: Which force pulls a ball down?\nAnswer:", "Hello"]
    raw = harness.generate_until(_instances("generate_until", [(p, {"until": []}) for p in prompts]))
    alone = [harness.generate_until(_instances("generate_until", [(p, {"until": []})]))[0] for p in prompts]
    assert raw == alone  # greedy: batching and padding change nothing
    ids = torch.tensor([harness.tok_encode(prompts[2])])
    out = generate(harness.model, ids, steps=4, gen_length=8, block_length=8, eot_token_id=harness.eot_id)
    out = out[0, ids.shape[1] :]
    stops = torch.isin(out, torch.tensor(harness.stop_ids)).nonzero()
    out = out[: int(stops[0]) if len(stops) else len(out)]
    assert raw[2] == harness.tokenizer.decode(out.tolist(), skip_special_tokens=True)
    assert len(raw[0]) >= 4
    stop = raw[0][2:4]  # a stop string taken from the uncut answer
    cut = harness.generate_until(_instances("generate_until", [(prompts[0], {"until": [stop], "max_gen_toks": 5})]))
    assert cut == [raw[0][: raw[0].find(stop)]]


def test_chat_template_through_simple_evaluate(model_args, task_manager, harness):
    from lm_eval import simple_evaluate

    run = simple_evaluate(model="llada_bs", model_args=model_args, tasks=["tiny_gen"], task_manager=task_manager,
                          apply_chat_template=True, log_samples=True, limit=2)
    prompt = run["samples"]["tiny_gen"][0]["arguments"][0][0]
    bos = harness.tokenizer.bos_token
    assert prompt.startswith(bos + "<|start_header_id|>user<|end_header_id|>")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = harness.tok_encode(prompt)
    assert ids.count(harness.tokenizer.bos_token_id) == 1 and ids[0] == harness.tokenizer.bos_token_id
    assert harness.tokenizer_name and harness.chat_template(True) == harness.tokenizer.chat_template


def test_loglikelihood_rolling_is_not_implemented(harness):
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        harness.loglikelihood_rolling(_instances("loglikelihood_rolling", [("some text",)]))


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, match",
    [
        ({"exact_ratio": 1.5}, "exact_ratio"),
        ({"exact_ratio": "abc"}, "exact_ratio"),
        ({"chebyshev_degree": 0}, "chebyshev_degree"),
        ({"chebyshev_degree": 2.5}, "chebyshev_degree"),
        ({"mc_num": 0}, "mc_num"),
        ({"mc_num": 10, "mc_batch_size": 4}, "multiple of mc_batch_size"),
        ({"cfg": -1.0}, "cfg"),
        ({"steps": 1, "block_length": 4}, "steps"),
        ({"gen_length": 6, "block_length": 4}, "multiple of block_length"),
        ({"remasking": "top_p"}, "remasking"),
        ({"temperature": -0.5}, "temperature"),
        ({"dtype": "int8"}, "dtype"),
        ({"batch_size": "auto"}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"check_greedy": "maybe"}, "check_greedy"),
        ({"model_path": "x"}, "did you mean pretrained"),
        ({"pretrained": None}, "pretrained"),
    ],
)
def test_bad_model_arguments_are_reported_before_loading(lm_mod, model_args, override, match):
    with pytest.raises(ValueError, match=match):
        lm_mod.LLaDABSEvalHarness(**{**model_args, **override})


def test_missing_model_directory(lm_mod, tmp_path):
    from support_basis.errors import UserError

    with pytest.raises(UserError, match="make_tiny_model"):
        lm_mod.LLaDABSEvalHarness(pretrained=str(tmp_path / "nope"), device="cpu")


def test_model_arguments_win_over_the_harness_flags(lm_mod, tiny_model_dir):
    """lm-eval passes --batch_size/--device next to --model_args (its command line defaults to cuda:0)."""
    lm = lm_mod.LLaDABSEvalHarness.create_from_arg_string(
        f"pretrained={tiny_model_dir},batch_size=5,exact_ratio=1,chebyshev_degree=3",
        {"batch_size": 1, "max_batch_size": None, "device": "cuda:0" if not torch.cuda.is_available() else "cpu"})
    assert lm.batch_size == 5 and lm.device.type == "cpu"
    assert lm.model.config.hybrid_exact_ratio == 1.0 and lm.model.config.hybrid_chebyshev_degree == 3
    assert (lm.rank, lm.world_size) == (0, 1)


@pytest.fixture
def local_tasks_only(lm_mod, monkeypatch):
    """lm-eval's task index limited to the --include_path folder (its ~14k built-in task files cost seconds)."""
    import lm_eval.tasks

    class LocalTasksOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)


def _cli(argv, capsys, tmp_path):
    from support_basis.lm_eval_cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err, err
    assert err[-1].startswith(Path(sys.argv[0]).name + ": error: "), err
    assert not (tmp_path / "out").exists()  # nothing written
    return err[-1]


def test_an_unknown_task_is_one_line(local_tasks_only, model_args, capsys, tmp_path):
    """lm-eval's "Tasks not found" traceback becomes one line naming the task and how to list the names."""
    argv = ["--model", "llada_bs", "--model_args", f"pretrained={model_args['pretrained']},mc_num=2",
            "--tasks", "tiny_mc,no_such_task", "--include_path", str(FIXTURES), "--device", "cpu",
            "--output_path", str(tmp_path / "out")]
    line = _cli(argv, capsys, tmp_path)
    assert "--tasks: lm-eval has no task named no_such_task;" in line and "ls tasks" in line
    argv[argv.index("--tasks") + 1] = ""  # lm-eval reads "" as this folder, which holds no task YAML
    line = _cli(argv, capsys, tmp_path)
    assert "--tasks names no task" in line


def test_task_data_out_of_reach_is_one_line(local_tasks_only, model_args, capsys, tmp_path):
    """A hub task with the Hub out of reach (here: offline mode, as conftest sets) and its data not cached: one line
    naming the dataset and what to do, not datasets' ConnectionError traceback."""
    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: no-such-org/no-such-dataset\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\ndoc_to_target: 0\n")
    argv = ["--model", "llada_bs", "--model_args", f"pretrained={model_args['pretrained']},mc_num=2",
            "--tasks", "hub_task", "--include_path", str(tmp_path), "--device", "cpu",
            "--output_path", str(tmp_path / "out")]
    line = _cli(argv, capsys, tmp_path)
    assert "'no-such-org/no-such-dataset'" in line and "Hugging Face Hub" in line and "HF_DATASETS_CACHE" in line


@pytest.mark.parametrize("err,expect", [
    (ValueError("Tasks not found: a, b"), "no task named a, b;"),  # lm-eval 0.4.13's wording
    (ValueError("Tasks not found: a. Try `lm-eval --tasks {list_groups,list}` to list"), "no task named a;"),  # 0.4.9
    (ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)"), "Couldn't reach 'x/y'"),
    (ValueError("No tasks specified, or no tasks found. Please verify the task names."), "--tasks names no task"),
    (ValueError("some other bug"), None),
    (ConnectionError("Connection reset by peer"), None),  # not datasets' words for a dataset: no claim about data
    (RuntimeError("Tasks not found: a"), None),
])
def test_which_lm_eval_failures_are_reworded(lm_mod, err, expect):
    from support_basis.lm_eval_cli import lm_eval_failure

    line = lm_eval_failure(err)
    assert (line is None) if expect is None else (expect in line and "\n" not in line)


@pytest.mark.slow
def test_project_works_without_lm_eval_and_the_backend_says_how_to_install():
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "import generate, support_basis, support_basis.hf_backend\n"
        "try:\n"
        "    import support_basis.lm_eval_llada\n"
        "except ImportError as err:\n"
        "    print('MESSAGE:', err)\n"
    )
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MESSAGE:" in out.stdout and "pip install lm-eval" in out.stdout


# ----------------------------------------------------------------------------------------------------------------
# The command line, two processes
# ----------------------------------------------------------------------------------------------------------------

# Runs scripts/lm_eval_llada.py exactly as a user would, except that lm-eval's task index is limited to the
# --include_path folder (indexing lm-eval's ~10k built-in task files costs ~15 s per process here).
CLI_DRIVER = """
import runpy, sys
import lm_eval.tasks

class LocalTasksOnly(lm_eval.tasks.TaskManager):
    def __init__(self, *args, **kwargs):
        kwargs["include_defaults"] = False
        super().__init__(*args, **kwargs)

lm_eval.tasks.TaskManager = LocalTasksOnly
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(single_process_run, model_args, tmp_path):
    """torchrun --nproc_per_node 2 (accelerate's multi-process state; gloo on CPU): lm-eval shards the requests by
    rank and gathers; every sample equals the single-process run (per-request seeds)."""
    driver = tmp_path / "driver.py"
    driver.write_text(CLI_DRIVER)
    args = ",".join(f"{k}={v}" for k, v in model_args.items() if k not in ("device", "batch_size"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(driver), str(REPO / "scripts" / "lm_eval_llada.py"),
           "--model", "llada_bs", "--model_args", args, "--tasks", "tiny_mc,tiny_gen", "--include_path",
           str(FIXTURES), "--batch_size", "16", "--device", "cpu", "--output_path", str(tmp_path / "out"),
           "--log_samples"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "on rank 0" in log and "on rank 1" in log
    assert "outlived destroy_process_group()" not in log  # each rank freed its group before shutdown
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    for task in ("tiny_mc", "tiny_gen"):
        rows = [json.loads(line) for f in (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
                for line in f.read_text().splitlines()]
        two = {r["doc_id"]: r for r in rows}
        one = {r["doc_id"]: r for r in single_process_run["samples"][task]}
        assert sorted(two) == sorted(one)
        for doc_id, row in one.items():
            if task == "tiny_mc":
                want = [float(r[0][0]) for r in row["resps"]]
                got = [float(r[0][0]) for r in two[doc_id]["resps"]]
                assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
            else:
                assert two[doc_id]["resps"][0][0] == row["resps"][0][0]
        for metric, value in single_process_run["results"][task].items():
            if metric.endswith(",none") and "stderr" not in metric:
                assert results["results"][task][metric] == pytest.approx(value)
