"""Silent wrong results that are now impossible (issue 11): sampled runs that depended on batch size or on where a
run resumed, records reused after the data changed, ``n`` and ``--limit`` disagreeing, a stale weight file left
by ``prepare_model.py --force``; and the two answer parsers (``--answer_parser reader|paper``)."""

from __future__ import annotations

import json

import pytest

from broken_inputs import official_layout
from conftest import REPO
from support_basis.evaluation import cli
from support_basis.evaluation.answers import paper_choice
from support_basis.evaluation.records import score
from support_basis.evaluation.report import write_report

FIXTURES = REPO / "tests" / "fixtures" / "data"
RUN = "arc_easy/ratio0.2_deg6__steps2_gen8_block8"
SAMPLED = "arc_easy/ratio0.2_deg6__steps2_gen8_block8_temp1"


def run(model, out, *extra, data=FIXTURES, task="arc_easy"):
    return cli.main(task, ["--model_name", str(model), "--out_dir", str(out), "--data_path", str(data),
                           "--gen_length", "8", "--block_length", "8", "--steps", "2", "--no_progress", *extra])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sampled_results_do_not_depend_on_batch_size_or_resumption(tiny_model_dir, tmp_path):
    sampled = ("--temperature", "1.0", "--limit", "5")
    run(tiny_model_dir, tmp_path / "b1", *sampled, "--batch_size", "1")
    run(tiny_model_dir, tmp_path / "b4", *sampled, "--batch_size", "4")
    run(tiny_model_dir, tmp_path / "resumed", "--temperature", "1.0", "--limit", "2", "--batch_size", "2")
    run(tiny_model_dir, tmp_path / "resumed", *sampled, "--batch_size", "3")
    one = (tmp_path / "b1" / SAMPLED / "records.jsonl").read_text()
    assert (tmp_path / "b4" / SAMPLED / "records.jsonl").read_text() == one
    assert (tmp_path / "resumed" / SAMPLED / "records.jsonl").read_text() == one
    run(tiny_model_dir, tmp_path / "seed", *sampled, "--seed", "1")  # the noise is real: another seed, other text
    other = records(tmp_path / "seed" / SAMPLED / "records.jsonl")
    assert [r["raw_output"] for r in other] != [r["raw_output"] for r in records(tmp_path / "b1" / SAMPLED /
                                                                                 "records.jsonl")]


def test_a_changed_data_file_is_refused_not_reused(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rows = [json.loads(line) for line in (FIXTURES / "arc_easy.jsonl").read_text().splitlines()]
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tiny_model_dir, tmp_path / "out", "--limit", "2", data=data)
    rows[3]["question"] = "Changed beyond the limit: not part of this run."
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [summary] = run(tiny_model_dir, tmp_path / "out", "--limit", "2", data=data)  # still the same two items
    assert summary["resumed_items"] == 2
    rows[1]["question"] = "A different question at the same index."
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = (tmp_path / "out" / RUN / "records.jsonl").read_text()
    with pytest.raises(SystemExit) as e:
        run(tiny_model_dir, tmp_path / "out", "--limit", "2", data=data)
    assert e.value.code == 2 and "item 1" in capsys.readouterr().err
    assert (tmp_path / "out" / RUN / "records.jsonl").read_text() == before


def test_records_of_items_the_data_no_longer_has_are_refused(tiny_model_dir, tmp_path, capsys):
    """A full run, then the data file loses its last two items: the run's records of them were counted nowhere
    and silently kept; now the run is refused, naming the first such item. With a --limit inside the data the
    records past it are a longer run's, and stay."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [json.loads(line) for line in (FIXTURES / "arc_easy.jsonl").read_text().splitlines()]
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tiny_model_dir, tmp_path / "out", data=data)
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-2]))
    [summary] = run(tiny_model_dir, tmp_path / "out", "--limit", "2", data=data)
    assert summary["n"] == 2
    for limit in ([], ["--limit", str(len(rows))]):  # the whole (shortened) data: no limit, or one past its end
        with pytest.raises(SystemExit) as e:
            run(tiny_model_dir, tmp_path / "out", *limit, data=data)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"item {len(rows) - 2}; the data has {len(rows) - 2}" in err, err


def test_limit_changed_on_resume_keeps_n_and_limit_together(tiny_model_dir, tmp_path):
    run(tiny_model_dir, tmp_path, "--limit", "3")
    [summary] = run(tiny_model_dir, tmp_path, "--limit", "2")
    saved = json.loads((tmp_path / RUN / "summary.json").read_text())
    assert summary["n"] == saved["n"] == saved["settings"]["limit"] == 2 and saved["resumed_items"] == 2
    assert len(records(tmp_path / RUN / "records.jsonl")) == 3  # the third item's record is kept, not scored
    [summary] = run(tiny_model_dir, tmp_path, "--limit", "3")
    assert summary["n"] == 3 and summary["items_this_run"] == 0


@pytest.mark.parametrize("text,letter", [("A good choice is C.", "A"), ("The answer is (B)", "B"), ("**D**", "D"),
                                         ("E", "E"), ("none here", None), ("a b c", None)])
def test_the_paper_parser_takes_the_first_standalone_capital(text, letter):
    assert paper_choice(text) == letter


def test_both_parsers_are_recorded_scored_and_reported(tiny_model_dir, tmp_path):
    recs = [{"idx": 0, "gold": "C", "parsed": "C", "parsed_paper": "A", "raw_output": "A good choice is C."},
            {"idx": 1, "gold": "B", "parsed": "B", "parsed_paper": "B", "raw_output": "B"},
            {"idx": 2, "gold": "D", "parsed": None, "raw_output": "D... or maybe not"}]  # older record: derived
    reader, paper = score(recs), score(recs, "paper")
    assert (reader["accuracy"], paper["accuracy"]) == (2 / 3, 2 / 3) and reader["unparsed"] == 1
    assert reader["by_parser"]["paper"]["correct"] == 2 and paper["answer_parser"] == "paper"
    assert score(recs[:1])["accuracy"] == 1.0 and score(recs[:1], "paper")["accuracy"] == 0.0

    [summary] = run(tiny_model_dir, tmp_path, "--limit", "3", "--answer_parser", "paper")
    assert summary["answer_parser"] == "paper" and summary["settings"]["answer_parser"] == "paper"
    assert summary["accuracy"] == summary["by_parser"]["paper"]["accuracy"]
    for r in records(tmp_path / RUN / "records.jsonl"):
        assert r["parsed_paper"] == paper_choice(r["raw_output"]) and r["correct_paper"] == (r["parsed_paper"] ==
                                                                                            r["gold"])
        assert "parsed" in r and len(r["item_fp"]) == 16
    [again] = run(tiny_model_dir, tmp_path, "--limit", "3")  # the parser is not part of the run's identity
    assert again["answer_parser"] == "reader" and again["items_this_run"] == 0

    exact = tmp_path / "arc_easy" / "exact"
    exact.mkdir()
    (exact / "summary.json").write_text(json.dumps({
        "task": "arc_easy", "config": "exact", "n": 3, "accuracy": 1.0, "stderr": 0.0, "unparsed": 0,
        "answer_parser": "reader", "by_parser": {"reader": {"accuracy": 1.0, "stderr": 0.0, "unparsed": 0},
                                                 "paper": {"accuracy": 0.5, "stderr": 0.1, "unparsed": 1}}}))
    md, csv_path, _ = write_report(tmp_path)
    text = md.read_text()
    assert "`--answer_parser reader`" in text and "`--answer_parser paper`" in text
    assert text.count("| ARC-Easy (n=3) | 100.00 ± 0.00") == 1 and "| ARC-Easy (n=3) | 50.00 ± 10.00" in text
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"answer_parser", "accuracy_reader", "accuracy_paper", "unparsed_paper"} <= set(header)


def test_prepare_force_leaves_no_stale_weight_file(tiny_model_dir, tmp_path):
    from support_basis.prepare import prepare
    from transformers import AutoModel

    single = official_layout(tiny_model_dir, tmp_path / "single")
    sharded = official_layout(tiny_model_dir, tmp_path / "sharded", sharded=True)
    out = prepare(str(single), tmp_path / "bs", copy=True)
    assert (out / "model.safetensors").is_file()
    prepare(str(sharded), out, force=True)
    assert not (out / "model.safetensors").exists() and (out / "model.safetensors.index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left
    AutoModel.from_pretrained(out)


def _refused(capsys, *args) -> str:
    capsys.readouterr()  # what earlier runs printed
    with pytest.raises(SystemExit) as exit_:
        run(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    return err[0]


def test_a_run_is_its_model_weights_records_and_claim(tiny_model_dir, tmp_path, capsys):
    """A model retrained in place (same path, same shapes, new values) is another run; records without the
    run.json that claims them, a repeated line and two different records of one item are refused, naming them."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    run(model, tmp_path / "out", "--limit", "2")
    before = (tmp_path / "out" / RUN / "records.jsonl").read_text()
    state = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 for k, v in state.items()}, model / "model.safetensors", metadata={"format": "pt"})
    err = _refused(capsys, model, tmp_path / "out", "--limit", "3")
    assert "holds results of another model" in err and "weights changed" in err, err
    assert (tmp_path / "out" / RUN / "records.jsonl").read_text() == before  # nothing appended

    run(tiny_model_dir, tmp_path / "b", "--limit", "2")
    run_dir = tmp_path / "b" / RUN
    lines = (run_dir / "records.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "records.jsonl").write_text(lines[0] + lines[1] + lines[0])
    err = _refused(capsys, tiny_model_dir, tmp_path / "b", "--limit", "2")
    assert "records.jsonl, line 3 repeats item 0" in err, err
    other = json.loads(lines[0]) | {"raw_output": "something else"}
    (run_dir / "records.jsonl").write_text(lines[0] + lines[1])
    (run_dir / "records.rank1.jsonl").write_text(json.dumps(other) + "\n")
    err = _refused(capsys, tiny_model_dir, tmp_path / "b", "--limit", "2")
    assert "line 1 conflicts with another record of item 0" in err, err
    (run_dir / "records.rank1.jsonl").unlink()
    (run_dir / "run.json").unlink()
    err = _refused(capsys, tiny_model_dir, tmp_path / "b", "--limit", "2")
    assert "holds records but no run.json" in err, err


def test_a_full_disk_is_one_line_and_keeps_the_finished_records(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Writing a record fails with ENOSPC: one line naming the file and what to do, exit 2, and the records
    written before it stay for the rerun."""
    import errno

    from support_basis.evaluation.records import RecordStore

    run(tiny_model_dir, tmp_path / "out", "--limit", "1")
    path = tmp_path / "out" / RUN / "records.jsonl"
    before = path.read_text()

    def full(self, records):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(RecordStore, "append", full)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(tiny_model_dir, tmp_path / "out", "--limit", "3")
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if ": error: " in line]  # after the model loaded (its bar)
    assert exit_.value.code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    err = errors[0]
    assert f"cannot write {path}: no space left on the device" in err and "run the same command again" in err, err
    assert path.read_text() == before


@pytest.mark.slow
def test_generate_into_a_full_device_is_one_line(tiny_model_dir):
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        res = subprocess.run([sys.executable, str(REPO / "generate.py"), "--model", str(tiny_model_dir), "--prompt",
                              "Hi", "--gen-length", "8", "--steps", "2", "--block-length", "8"], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=300)
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cannot write its output" in errors[0] and "no space left on the device" in errors[0], errors[0]


PRINTS_LINES = """
from support_basis.errors import cli

@cli
def main():
    for i in range(1_000_000):
        print("line", i)

main()
"""


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`generate.py ... | head -1`: the reader closes the pipe; the command stops with SIGPIPE's status (141), as
    Unix tools do, with nothing on stderr (it was a BrokenPipeError traceback)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", PRINTS_LINES], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_make_tiny_model_writes_its_directory_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """A full disk while writing (here: at the last file) leaves no directory, no staging sibling, and one line."""
    import errno

    from support_basis import tiny_model

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiny_model, "write_tokenizer_config", full)
    from conftest import load_script

    script = load_script("make_tiny_model")
    with pytest.raises(SystemExit) as e:
        script.main([str(tmp_path / "m")])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Writing model shards" not in line]
    assert e.value.code == 2 and len(err) == 1 and "no space left" in err[0].lower(), err  # (past the save bar)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "mine.txt").write_text("kept")  # an existing directory: files replaced, others kept
    script.main([str(tmp_path / "m")])
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "m" / "mine.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
