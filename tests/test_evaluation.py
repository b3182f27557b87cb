"""The evaluation core: answer parsing, tasks and data, records and resuming, sharding, errors, run_all.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from support_basis.evaluation import cli
from support_basis.evaluation.answers import parse_choice
from support_basis.evaluation.data import DataError, load_items
from support_basis.evaluation.records import score
from support_basis.evaluation.report import write_report
from support_basis.evaluation.tasks import PAPER_TASKS, get_task

FIXTURES = REPO / "tests" / "fixtures" / "data"
CHOICES = ["London", "Berlin", "Paris", "Rome", "Oslo"]


@pytest.mark.parametrize(
    "text,n,expected",
    [
        ("B", 4, "B"), ("(C)", 4, "C"), ("B.", 4, "B"), ("**D**", 4, "D"), ("B) Paris", 4, "B"), ("A", 4, "A"),
        ("A good choice is C.", 4, "C"),  # the paper's regex says A
        ("A cat sleeps; the answer is B", 4, "B"), ("The answer is (A)", 4, "A"), ("Answer: D", 4, "D"),
        ("I think it is option C because", 4, "C"), ("A is correct", 4, "A"), ("answer: c", 4, "C"),
        ("E", 4, None), ("E", 5, "E"),  # only the question's own letters
        ("Paris", 4, "C"),  # the option's text instead of its letter
        ("Let me think. A plant needs light.", 4, None), ("", 4, None), ("   ", 4, None),
    ],
)
def test_parse_choice_reads_like_a_person(text, n, expected):
    assert parse_choice(text, n, CHOICES[:n]) == expected


@pytest.mark.parametrize("task_name", sorted(PAPER_TASKS))
def test_fixture_items_follow_the_paper_prompts(task_name):
    task = get_task(task_name)
    items = load_items(task, str(FIXTURES))
    assert len(items) >= 4 and [it.idx for it in items] == list(range(len(items)))
    for it in items:
        assert it.gold in "ABCDE"[: len(it.choices)]
        assert it.prompt.rstrip().endswith("Answer:")
        for letter, choice in zip("ABCDE", it.choices):
            assert f"\n{letter}. {choice}" in it.prompt
    marker = {"arc_challenge": "science question", "arc_easy": "science question",
              "gpqa": "graduate-level science question", "hellaswag": "four possible endings",
              "mmlu": "Questions:"}[task_name]
    assert marker in items[0].prompt


def test_arc_label_schemes_and_choice_counts():
    items = load_items(get_task("arc_challenge"), str(FIXTURES))
    by_id = {it.id: it for it in items}
    numeric = by_id["Fixture-ARC-3"]  # labels 1-4, answer "4"
    assert numeric.gold == "D" and numeric.choices[3] == "wood"
    assert len(by_id["Fixture-ARC-4"].choices) == 3 and len(by_id["Fixture-ARC-5"].choices) == 5


def test_gpqa_shuffle_is_fixed_per_question_and_keeps_the_key():
    task = get_task("gpqa")
    rows = [json.loads(line) for line in (FIXTURES / "gpqa.jsonl").read_text().splitlines()]
    a, b = load_items(task, str(FIXTURES)), load_items(task, str(FIXTURES))
    assert [it.choices for it in a] == [it.choices for it in b]
    for it, row in zip(a, rows):
        assert it.choices["ABCD".index(it.gold)] == row["Correct Answer"]
    assert len({it.gold for it in a}) > 1  # the correct answer is not always in the same place


@pytest.mark.parametrize("task_name", ["arc_easy", "mmlu", "hellaswag", "gpqa"])
def test_a_parquet_file_gives_the_items_of_its_jsonl(task_name, tmp_path):
    """The hub's own format (nested lists and structs) read locally gives the same items; a corrupt file is one
    DataError naming it (it went through datasets' loader, which logged a line before the error)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / f"{task_name}.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{task_name}.parquet")
    task = get_task(task_name)
    assert load_items(task, str(tmp_path)) == load_items(task, str(FIXTURES))
    (tmp_path / f"{task_name}.parquet").write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(DataError, match=f"could not read {tmp_path / task_name}.parquet"):
        load_items(task, str(tmp_path))


def test_data_errors_say_what_to_do(tmp_path, monkeypatch):
    task = get_task("mmlu")
    with pytest.raises(DataError, match="mmlu.jsonl"):
        load_items(task, str(tmp_path))
    (tmp_path / "mmlu.jsonl").write_text(json.dumps({"question": "q", "choices": ["a", "b"], "subject": "s"}) + "\n")
    with pytest.raises(DataError, match="no field 'answer'"):
        load_items(task, str(tmp_path))
    import datasets

    def gated(*args, **kwargs):
        raise RuntimeError("Dataset 'Idavidrein/gpqa' is a gated dataset on the Hub. You must be authenticated")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(DataError, match="huggingface-cli login"):
        load_items(get_task("gpqa"))

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="--data_path"):
        load_items(get_task("hellaswag"))


def run(tiny_model_dir, out_dir, task="arc_challenge", *extra):
    args = ["--model_name", str(tiny_model_dir), "--data_path", str(FIXTURES), "--out_dir", str(out_dir),
            "--no_progress", "--gen_length", "8", "--block_length", "8", "--steps", "2", *extra]
    return cli.main(task, args)


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_writes_records_and_summary(tiny_model_dir, tmp_path):
    [summary] = run(tiny_model_dir, tmp_path, "mmlu", "--batch_size", "4")
    run_dir = tmp_path / "mmlu" / "ratio0.2_deg6__steps2_gen8_block8"
    records = read_records(run_dir / "records.jsonl")
    assert [r["idx"] for r in records] == list(range(6))
    for r in records:
        assert set(r) >= {"raw_output", "parsed", "gold", "correct", "choices", "subject"}
        assert r["correct"] == (r["parsed"] == r["gold"])
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["n"] == 6 and saved["settings"]["steps"] == 2 and saved["settings"]["exact_ratio"] == 0.2
    assert set(saved["per_subject"]) == {r["subject"] for r in records}
    assert summary["accuracy"] == score(records)["accuracy"]
    assert saved["items_per_s"] > 0 and saved["wall_seconds"] > 0


def test_batching_does_not_change_results(tiny_model_dir, tmp_path):
    run(tiny_model_dir, tmp_path / "b1", "hellaswag", "--batch_size", "1")
    run(tiny_model_dir, tmp_path / "b3", "hellaswag", "--batch_size", "3")
    name = "hellaswag/ratio0.2_deg6__steps2_gen8_block8/records.jsonl"
    assert (tmp_path / "b1" / name).read_text() == (tmp_path / "b3" / name).read_text()


def test_resume_skips_finished_items_and_redoes_a_torn_line(tiny_model_dir, tmp_path, monkeypatch):
    run(tiny_model_dir, tmp_path, "arc_easy", "--limit", "3")
    path = tmp_path / "arc_easy" / "ratio0.2_deg6__steps2_gen8_block8" / "records.jsonl"
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # a crash while writing item 1
    import support_basis.evaluation.runner as runner

    calls = []
    real = runner.generate
    monkeypatch.setattr(runner, "generate", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    [summary] = run(tiny_model_dir, tmp_path, "arc_easy", "--limit", "4")  # items 1, 2 redone, 3 new
    assert sum(calls) == 3 and summary["n"] == 4 and summary["resumed_items"] == 1
    assert path.read_text().startswith(full)  # the redone items are the same records
    calls.clear()
    run(tiny_model_dir, tmp_path, "arc_easy", "--limit", "4")
    assert calls == []


def test_several_configurations_in_one_process(tiny_model_dir, tmp_path):
    summaries = run(tiny_model_dir, tmp_path, "gpqa", "--configs", "exact", "0.2:4", "0.5:2", "--limit", "2")
    assert [s["config"] for s in summaries] == ["exact__steps2_gen8_block8", "ratio0.2_deg4__steps2_gen8_block8",
                                                "ratio0.5_deg2__steps2_gen8_block8"]
    assert [s["settings"]["exact_ratio"] for s in summaries] == [1.0, 0.2, 0.5]


def test_clear_errors(tiny_model_dir, tmp_path, capsys):
    run(tiny_model_dir, tmp_path, "arc_easy", "--limit", "1")
    with pytest.raises(SystemExit) as e:  # same directory, another configuration
        run(tiny_model_dir, tmp_path, "arc_easy", "--limit", "1", "--seed", "7")
    assert e.value.code == 2 and "different configuration" in capsys.readouterr().err
    official = tmp_path / "official"
    official.mkdir()
    (official / "config.json").write_text(json.dumps({
        "model_type": "llada", "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig"}}))
    (official / "configuration_llada.py").write_text(
        "from transformers import PretrainedConfig\nclass LLaDAConfig(PretrainedConfig):\n    model_type = 'llada'\n")
    for argv, message in [
        (["--model_name", str(official)], "not a LLaDA-BS model"),
        (["--model_name", str(tmp_path / "nowhere")], "not a model directory"),
        (["--model_name", str(tiny_model_dir), "--exact_ratio", "1.5"], "--exact_ratio must be in [0, 1]"),
        (["--model_name", str(tiny_model_dir), "--configs", "0.2-6"], "RATIO:DEGREE"),
        (["--model_name", str(tiny_model_dir), "--data_path", str(tmp_path / "nodata")], "no local ARC-Easy data"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli.main("arc_easy", ["--out_dir", str(tmp_path / "o"), "--data_path", str(FIXTURES), *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err, message
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        get_task("squad")


@pytest.mark.slow
def test_two_processes_equal_one(tiny_model_dir, tmp_path):
    """`accelerate launch` with two CPU processes: the merged records equal a single-process run's."""
    base = [str(REPO / "scripts" / "run_arc_challenge.py"), "--model_name", str(tiny_model_dir), "--data_path",
            str(FIXTURES), "--no_progress", "--gen_length", "8", "--block_length", "8", "--steps", "2", "--batch_size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # `--multi_gpu` is accelerate's multi-process launcher (torch.distributed.run); without CUDA it runs on CPU
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *base,
                          "--out_dir", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "outlived destroy_process_group()" not in two.stderr  # each rank freed its group before shutdown
    run(tiny_model_dir, tmp_path / "one", "arc_challenge", "--batch_size", "5")
    name = "arc_challenge/ratio0.2_deg6__steps2_gen8_block8"
    assert (tmp_path / "two" / name / "records.jsonl").read_text() == (tmp_path / "one" / name / "records.jsonl").read_text()
    assert not list((tmp_path / "two" / name).glob("records.rank*"))
    assert json.loads((tmp_path / "two" / name / "summary.json").read_text())["world_size"] == 2


def test_report_tabulates_the_grid(tmp_path):
    for task, config, acc, n in [("arc_easy", "exact", 0.8, 100), ("arc_easy", "ratio0.2_deg6", 0.75, 100),
                                 ("mmlu", "exact", 0.6, 50), ("mmlu", "ratio0.2_deg4", 0.62, 50)]:
        d = tmp_path / task / config
        d.mkdir(parents=True)
        se = (acc * (1 - acc) / n) ** 0.5
        (d / "summary.json").write_text(json.dumps({"task": task, "config": config, "accuracy": acc, "stderr": se,
                                                    "n": n, "unparsed": 1, "items_per_s": 2.0}))
    md, csv_path, png = write_report(tmp_path)
    text = md.read_text()
    assert "| ARC-Easy (n=100) | 80.00 ± 4.00 | - | 75.00 ± 4.33 (-5.00) |" in text
    assert "62.00 ± 6.86 (+2.00)" in text
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("task,config,protocol,accuracy,stderr") and len(rows) == 5
    assert png.stat().st_size > 1000


@pytest.mark.slow
def test_run_all_smoke_pipeline(tmp_path):
    """run_all.sh end to end (a subset, to stay fast): tiny model, fixture data, report files."""
    out = tmp_path / "results"
    env = dict(os.environ, RUN_ALL_PYTHON=sys.executable)
    res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--out", str(out), "--tasks",
                          "arc_easy,gpqa arc_easy", "--ratios", "0.2,0.2", "--limit", "2"],  # commas; twice = once
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("ARC-Easy [ratio0.2_deg4]") == 1, res.stdout
    for f in ("summary.md", "summary.csv", "accuracy.png"):
        assert (out / f).is_file()
    table = (out / "summary.md").read_text()
    assert "ARC-Easy (n=2)" in table and "GPQA (main) (n=2)" in table and "ratio0.2_deg4" in table
    bad = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--out", str(out), "--tasks", "squad"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "unknown task 'squad'" in bad.stderr


@pytest.mark.parametrize("configs,expect", [
    (["0.2:4", "0.20:4", "0.2:6"], [(0.2, 4), (0.2, 6)]),  # the same configuration written twice runs once
    (["exact", "1:4", "1.0:6"], [(1.0, 6)]),  # exact attention has no degree
    (["1.5:4", "exact"], [(1.5, 4), (1.0, 6)]),  # out of range stays as given: its validator names it
])
def test_configs_listed_twice_run_once(configs, expect):
    a = cli.build_parser("arc_easy").parse_args(["--model_name", "m", "--configs", *configs])
    assert cli.parse_configs(a) == expect


def test_check_flags_checks_and_writes_nothing(tmp_path, capsys):
    """--check_flags (run_all.sh's first pass): a bad combination is one line; a good one returns at once, with no
    model (the path need not exist), no data and no output directory."""
    base = ["--model_name", str(tmp_path / "no-model-yet"), "--out_dir", str(tmp_path / "out"), "--check_flags"]
    assert cli.main("arc_easy", base) == []
    with pytest.raises(SystemExit) as exit_info:
        cli.main("arc_easy", [*base, "--gen_length", "30", "--block_length", "8"])
    assert exit_info.value.code == 2 and "--gen_length (30) must be a multiple" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
