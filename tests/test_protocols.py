"""--protocol official and GSM8K: the OpenCompass prompts character for character, shots from the right split, the
answer extraction rules, each protocol's settings and identity, resume and batch-size independence, bad input,
and the report beside the published figures."""

from __future__ import annotations

import json
import random

import pytest

from conftest import REPO, SHARED_REFERENCE
from support_basis.errors import UserError
from support_basis.evaluation import cli
from support_basis.evaluation.data import load_items
from support_basis.evaluation.gsm8k import gold_number, read
from support_basis.evaluation.opencompass import first_option, gpqa_choice, gsm8k_number
from support_basis.evaluation.protocols import PUBLISHED
from support_basis.evaluation.records import config_name
from support_basis.evaluation.report import write_report
from support_basis.evaluation.tasks import TASKS

FIXTURES = REPO / "tests" / "fixtures" / "data"
BOS, USER = "<|startoftext|>", "<|start_header_id|>user<|end_header_id|>\n\n"
BOT, EOT = "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"


@pytest.fixture(scope="module")
def llada_template():
    """The chat template of LLaDA-8B-Instruct's tokenizer_config.json (../shared/reference; where that is absent,
    the shipped tiny LLaDA's, which carries the same template), as a renderer."""
    import jinja2

    path = SHARED_REFERENCE / "tokenizer_config.json"
    if not path.is_file():
        path = REPO / "support_basis" / "checkpoints" / "llada-tiny" / "tokenizer_config.json"
    template = jinja2.Environment().from_string(json.loads(path.read_text())["chat_template"])
    return lambda item: template.render(messages=item.messages(), bos_token=BOS, add_generation_prompt=True)


def official(task, **kw):
    return load_items(TASKS[task], str(FIXTURES), protocol="official", **kw)


def test_mmlu_official_prompt_is_opencompass_five_shot(llada_template):
    item = official("mmlu")[0]
    hint = ("There is a single choice question about elementary mathematics. Answer the question by replying A, B, "
            "C or D.")
    shots = "".join(
        f"{USER}{hint}\nQuestion: Dev question {k + 1} about elementary mathematics: what is {3 + k} + {4 + 2 * k}?\n"
        f"A. {6 + 3 * k}\nB. {7 + 3 * k}\nC. {8 + 3 * k}\nD. {9 + 3 * k}\nAnswer:{EOT}{BOT}B{EOT}" for k in range(5))
    final = f"{USER}{hint}\nQ: What is 7 * 8?\nA. 54\nB. 56\nC. 58\nD. 64\nA:{EOT}{BOT}"
    assert llada_template(item) == BOS + shots + final
    # untrimmed, as the config formats each turn (the template trims)
    assert item.prompt.endswith("\nA: ") and item.history[0][1] == "B\n" and len(item.history) == 5


def test_mmlu_shots_come_from_the_dev_split_never_the_item(tmp_path):
    items = official("mmlu")
    assert {it.subject for it in items} <= {json.loads(line)["subject"]
                                            for line in (FIXTURES / "mmlu_dev.jsonl").read_text().splitlines()}
    for it in items:
        assert all("Dev question" in user for user, _ in it.history) and "Dev question" not in it.prompt
    (tmp_path / "mmlu.jsonl").write_text((FIXTURES / "mmlu.jsonl").read_text())
    with pytest.raises(UserError, match="no few-shot data for MMLU.*mmlu_dev.jsonl"):
        load_items(TASKS["mmlu"], str(tmp_path), protocol="official")
    # a few-shot file holding a test question (the test split given by mistake): refused, never asked with itself
    dev = [json.loads(line) for line in (FIXTURES / "mmlu_dev.jsonl").read_text().splitlines()]
    test_row = json.loads((FIXTURES / "mmlu.jsonl").read_text().splitlines()[0])
    (tmp_path / "shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [test_row] + dev))
    with pytest.raises(UserError, match="record 0 .* one of its own few-shot examples"):
        load_items(TASKS["mmlu"], str(tmp_path), protocol="official", fewshot_path=str(tmp_path / "shots.jsonl"))
    short = dev[:4]
    (tmp_path / "mmlu_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    with pytest.raises(UserError, match="has 4 few-shot rows in the dev split; the official prompt needs 5"):
        load_items(TASKS["mmlu"], str(tmp_path), protocol="official")


def test_hellaswag_arc_gsm8k_official_prompts(llada_template):
    item = official("hellaswag")[0]
    assert llada_template(item) == (
        f"{BOS}{USER}A man is standing on a ladder next to a house.\nQuestion: Which ending makes the most sense?\n"
        "A. paints the window frame with a small brush.\nB. eats the ladder slowly.\nC. flies over the roof.\n"
        f"D. turns into a cat.\nYou may choose from 'A', 'B', 'C', 'D'.\nAnswer:{EOT}{BOT}")
    arc = official("arc_challenge")
    assert llada_template(arc[0]) == (f"{BOS}{USER}Question: Which form of energy does a solar panel collect?\n"
                                      f"A. sound\nB. light\nC. heat from the ground\nD. wind\nAnswer:{EOT}{BOT}")
    rows = (FIXTURES / "arc_challenge_validation.jsonl").read_text().splitlines()
    kept = [json.loads(r)["id"] for r in rows if len(json.loads(r)["choices"]["text"]) == 4]
    assert [it.id for it in arc] == kept and len(kept) < len(rows)  # 3- and 5-choice items left out, as there
    gsm = official("gsm8k")[1]
    text = llada_template(gsm)
    assert text.startswith(f"{BOS}{USER}Question: Angelo and Melanie want to plan how many hours over the next week")
    assert text.count(USER) == 5 and text.count(BOT) == 5 and "The answer is 201" in text
    assert text.endswith(f"{USER}Question: A shop sells 1,200 pens a day for 2 days. How many pens does it sell?\n"
                         f"Let's think step by step\nAnswer:{EOT}{BOT}")
    assert gsm.gold == "2400" and official("gsm8k")[2].gold == "-3"


def test_gpqa_official_prompt_and_shuffle():
    items = official("gpqa")
    rows = [json.loads(line) for line in (FIXTURES / "gpqa_diamond.jsonl").read_text().splitlines()]
    rng = random.Random(0)  # OpenCompass: random.seed(0), then one shuffle per row in file order
    for item, row in zip(items, rows):
        answers = [row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
        rng.shuffle(answers)
        assert item.choices == tuple(answers) and item.gold == "ABCD"[answers.index(row["Correct Answer"])]
        assert item.prompt.startswith("\nHere are some example questions from experts. Answer the final question")
        assert item.prompt.endswith(
            f"The correct answer is (C)\n\nQuestion:\n{row['Question']}\nChoices:\nA. {answers[0]}\nB. {answers[1]}\n"
            f"C. {answers[2]}\nD. {answers[3]}\nWhen you're ready to answer, please use the format 'The correct "
            "answer is (X)' where X is the correct letter choice from 'ABCD'.")


@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("B.", "B"), ("The answer is C", "C"), ("ANSWER: d", "A"),  # a lowercase letter is no option: the cushion finds ANSWER's A ("answer: D", "D"),
    ("I think (B) is right", "B"), ("The Doctor", "D"), ("", ""), ("none", ""),
    ("A cat and a dog", "A"), ("The correct answer is: B", "B"),
])
def test_first_option_reads_as_opencompass(text, expected):
    assert first_option(text) == expected


def test_gpqa_and_gsm8k_official_readings():
    assert gpqa_choice("so The correct answer is (B).") == "B" and gpqa_choice("THE CORRECT ANSWER IS ( c )") == "c"
    assert gpqa_choice("B") == " "
    assert gsm8k_number("The answer is 1,234.") == "234"  # OpenCompass keeps commas: last number is 234
    assert gsm8k_number("so -3.5 is it\nQuestion: 7") == "-3.5" and gsm8k_number("none") == "NULL"


@pytest.mark.parametrize("raw,gold,expected", [
    ("so 10 apples.\n#### 10", "10", {"opencompass": ("10", True), "flexible": ("10", True), "strict": ("10", True)}),
    ("The answer is 1,234.", "1234", {"opencompass": ("234", False), "flexible": ("1,234.", True),
                                      "strict": (None, False)}),
    ("#### 1,234 then 7", "1234", {"opencompass": ("7", False), "flexible": ("7", False), "strict": ("1,234", True)}),
    ("it falls to -3 degrees", "-3", {"opencompass": ("-3", True), "flexible": ("-3", True), "strict": (None, False)}),
    ("cost $18.", "18", {"opencompass": ("18", True), "flexible": ("$18.", True), "strict": (None, False)}),
    ("5 meters\nQuestion: what is 9?", "5", {"opencompass": ("5", True), "flexible": ("5", True),
                                             "strict": (None, False)}),
    ("no number here", "4", {"opencompass": (None, False), "flexible": (None, False), "strict": (None, False)}),
])
def test_gsm8k_strict_flexible_and_official_extraction(raw, gold, expected):
    assert read(raw, gold) == expected


def test_gsm8k_gold_needs_a_number_after_hashes():
    assert gold_number("x\n#### 2,400") == "2400" and gold_number("#### -3") == "-3"
    for bad, message in [("no hashes", "has no '#### N'"), (None, "it must be the worked solution"),
                         ("#### twelve", "which is not a number")]:
        with pytest.raises(ValueError, match=message):
            gold_number(bad)


class Args:
    def __init__(self, task, *argv):
        self.a = cli.build_parser(task).parse_args(["--model_name", "m", *argv])


@pytest.mark.parametrize("task,protocol,expected", [
    ("mmlu", "official", (3, 3, 3, False, "opencompass")), ("hellaswag", "official", (3, 3, 3, False, "opencompass")),
    ("arc_challenge", "official", (512, 512, 512, False, "opencompass")),
    ("gpqa", "official", (64, 64, 64, True, "opencompass")), ("gsm8k", "official", (512, 512, 512, True, "opencompass")),
    ("mmlu", "paper", (32, 32, 8, False, "reader")), ("gpqa", "paper", (64, 32, 16, False, "reader")),
])
def test_protocol_settings(task, protocol, expected):
    s = cli.settings_from_args(Args(task, "--protocol", protocol).a, TASKS[task], 1.0, 6)
    assert (s["gen_length"], s["block_length"], s["steps"], s["confidence_eos_eot_inf"], s["answer_parser"]) \
        == expected and s["protocol"] == protocol
    assert config_name(s, cli.default_settings(TASKS[task], protocol)) == ("official_exact" if protocol == "official" else "exact")


def test_gsm8k_published_semi_autoregressive_setting_is_recognised():
    from support_basis.evaluation.protocols import published_for

    a = Args("gsm8k", "--gen_length", "256", "--block_length", "8", "--confidence_eos_eot_inf", "0").a
    s = cli.settings_from_args(a, TASKS["gsm8k"], 1.0, 6)
    assert (s["steps"], s["block_length"]) == (256, 8) and published_for("gsm8k", s).opencompass == 78.9
    assert published_for("gsm8k", {**s, "cache": "dual", "threshold": 0.9}) is None  # Fast-dLLM's: not published
    assert cli.settings_from_args(Args("gsm8k", "--gen_length", "256").a, TASKS["gsm8k"], 1.0, 6)["block_length"] \
        == 256  # official: one block unless said


def run(model_dir, out, task, *extra):
    args = ["--model_name", str(model_dir), "--data_path", str(FIXTURES), "--out_dir", str(out), "--no_progress",
            "--protocol", "official", "--gen_length", "8", *extra]
    return cli.main(task, args)


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory):
    """A tiny random model with a 4096-token window: the official few-shot prompts are ~1.5k tokens."""
    from support_basis.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny4k") / "m", seed=0, max_sequence_length=4096)


def test_gsm8k_runs_resumes_and_does_not_depend_on_batch_size(long_model_dir, tmp_path):
    [one] = run(long_model_dir, tmp_path / "a", "gsm8k", "--batch_size", "1", "--configs", "exact", "0.2:4")[:1]
    run(long_model_dir, tmp_path / "b", "gsm8k", "--batch_size", "3", "--limit", "2", "--configs", "exact")
    [resumed] = run(long_model_dir, tmp_path / "b", "gsm8k", "--batch_size", "3", "--configs", "exact")
    name = "gsm8k/official_exact__steps8_gen8_block8"
    assert resumed["resumed_items"] == 2 and resumed["items_this_run"] == 3
    a, b = ((tmp_path / d / name / "records.jsonl").read_text() for d in ("a", "b"))
    assert a == b
    rec = json.loads(a.splitlines()[0])
    assert {"parsed", "correct", "parsed_flexible", "correct_flexible", "parsed_strict", "correct_strict"} <= set(rec)
    assert set(one["by_parser"]) == {"opencompass", "flexible", "strict"} and one["protocol"] == "official"
    run_json = json.loads((tmp_path / "a" / name / "run.json").read_text())
    assert run_json["protocol"] == "official" and run_json["confidence_eos_eot_inf"] is True


def test_official_mmlu_runs_and_its_identity_is_its_own(long_model_dir, tmp_path):
    [summary] = run(long_model_dir, tmp_path, "mmlu", "--limit", "3", "--configs", "exact")
    assert summary["config"] == "official_exact__steps8_gen8_block8" and summary["answer_parser"] == "opencompass"
    assert "macro_accuracy" in summary["by_parser"]["opencompass"]
    # the paper protocol's run of the same task and model lands in its own directory
    paper = cli.main("mmlu", ["--model_name", str(long_model_dir), "--data_path", str(FIXTURES), "--out_dir",
                              str(tmp_path), "--no_progress", "--gen_length", "8", "--block_length", "8", "--limit",
                              "3", "--configs", "exact"])
    assert paper[0]["config"] == "exact__gen8_block8" and paper[0]["protocol"] == "paper"


def test_report_puts_the_exact_baseline_beside_the_published_figure(tmp_path):
    settings = {"protocol": "official", "gen_length": 3, "block_length": 3, "steps": 3, "temperature": 0.0,
                "cfg_scale": 0.0, "remasking": "low_confidence", "cache": "none", "threshold": None, "factor": None,
                "confidence_eos_eot_inf": False, "dtype": "bfloat16", "limit": None}
    for task, acc, macro in [("mmlu", 0.70, 0.62), ("hellaswag", 0.76, None)]:
        d = tmp_path / task / "official_exact"
        d.mkdir(parents=True)
        reading = {"accuracy": acc, "stderr": 0.01, "unparsed": 0, **({"macro_accuracy": macro} if macro else {})}
        (d / "summary.json").write_text(json.dumps({
            "task": task, "config": "official_exact", "protocol": "official", "accuracy": acc, "stderr": 0.01,
            "n": 100, "unparsed": 0, "answer_parser": "opencompass", "settings": settings,
            "by_parser": {"opencompass": reading, "reader": reading}}))
    md, csv_path, _ = write_report(tmp_path)
    text = md.read_text()
    assert f"| MMLU (n=100) | 3/3, 3 steps | {PUBLISHED['mmlu'][0].opencompass:.1f} | 65.5 | 62.00 | -3.40 | " \
           "**off by more than 2 points** |" in text  # MMLU as published: the mean over subjects
    assert "| HellaSwag (n=100) | 3/3, 3 steps | 75.3 | 74.6 | 76.00 | +0.70 | within 2 points |" in text
    assert "MMLU is more than 2 points from the published figure. Likely causes" in text and "dtype" not in \
        text.split("Likely causes")[1].split("\n")[0].split(";")[0]  # ran bfloat16 already: not named first
    rows = csv_path.read_text().splitlines()
    assert "gap_vs_published" in rows[0] and "-3.40" in rows[1] + rows[2]


@pytest.mark.parametrize("task,argv,message", [
    ("arc_easy", ["--protocol", "official"], "arc_easy has no official setting"),
    ("gsm8k", ["--protocol", "paper"], "gsm8k has no paper protocol"),
    ("mmlu", ["--protocol", "official", "--no_chat"], "--no_chat: the official protocol"),
    ("gsm8k", ["--answer_parser", "reader"], "--answer_parser reader: GSM8K answers are read by opencompass"),
    ("hellaswag", ["--fewshot_path", "x.jsonl"], "--fewshot_path: hellaswag under --protocol paper"),
])
def test_protocol_refusals_are_one_line(task, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(task, ["--model_name", str(tmp_path / "never-loaded"), "--out_dir", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("row,message", [
    ({"question": "q?"}, "record 0 has no field 'answer'"),
    ({"question": "q?", "answer": "it is 4"}, "record 0 is not a valid GSM8K item: answer 'it is 4' has no '#### N'"),
    ({"question": "", "answer": "#### 4"}, "question is ''"),
])
def test_gsm8k_bad_rows_are_refused_before_the_model(row, message, tmp_path, capsys):
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit) as e:
        cli.main("gsm8k", ["--model_name", str(REPO / "support_basis" / "checkpoints" / "llada-tiny"), "--data_path", str(tmp_path),
                           "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_unknown_protocol_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main("mmlu", ["--model_name", "m", "--protocol", "openai"])
    assert e.value.code == 2 and "invalid choice: 'openai'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_all_official_smoke(tmp_path):
    """run_all.sh --smoke --protocol official end to end (two tasks, two items): report files, refusals."""
    import os
    import subprocess
    import sys

    out, env = tmp_path / "res", dict(os.environ, RUN_ALL_PYTHON=sys.executable)
    res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--protocol", "official", "--out", str(out),
                          "--tasks", "gsm8k hellaswag", "--limit", "2", "--degrees", "4"], capture_output=True,
                         text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "gsm8k" / "official_ratio0.2_deg4__steps32_gen32_block32" / "summary.json").is_file()
    assert "GSM8K (n=2)" in (out / "summary.md").read_text()
    for argv, message in [(["--tasks", "gsm8k"], "gsm8k has no paper protocol"),
                          (["--protocol", "official", "--tasks", "arc_easy"], "arc_easy has no official setting"),
                          (["--protocol", "openai"], "--protocol must be paper or official")]:
        bad = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--out", str(tmp_path / "x"), *argv],
                             capture_output=True, text=True, env=env, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and not (tmp_path / "x").exists(), bad.stderr
