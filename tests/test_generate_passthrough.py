"""The fast sampler's options end to end: the runners (records, summaries, run identity), run_all.sh and the
lm-eval backend's generate_until."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from generate import generate, left_pad, tokenize_prompts
from support_basis.evaluation import cli
from support_basis.evaluation.data import load_items
from support_basis.evaluation.tasks import get_task

FIXTURES = REPO / "tests" / "fixtures" / "data"
FAST = ["--cache", "dual", "--threshold", "0.05", "--gen_length", "16", "--block_length", "8", "--steps", "16"]


def run(model_dir, out_dir, *extra):
    return cli.main("arc_easy", ["--model_name", str(model_dir), "--data_path", str(FIXTURES), "--out_dir",
                                 str(out_dir), "--no_progress", "--limit", "3", *extra])


def test_runner_records_nfe_and_the_settings(tiny_model_dir, tiny_model, tiny_tokenizer, tmp_path):
    [summary] = run(tiny_model_dir, tmp_path, *FAST)
    run_dir = tmp_path / "arc_easy" / "ratio0.2_deg6__steps16_gen16_block8_cache-dual_thr0.05"
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    identity = json.loads((run_dir / "run.json").read_text())
    assert (identity["cache"], identity["threshold"], identity["factor"]) == ("dual", 0.05, None)
    # each record's answer and NFE are generate()'s with these settings
    items = load_items(get_task("arc_easy"), str(FIXTURES), 3)
    tokens = tokenize_prompts(tiny_tokenizer, [it.prompt for it in items], True)
    ids, mask = left_pad(tokens, tiny_tokenizer.pad_token_id)
    tiny_model.config.hybrid_exact_ratio = 0.2
    out, nfe = generate(tiny_model, ids, mask, steps=16, gen_length=16, block_length=8, cache="dual",
                        threshold=0.05, return_nfe=True,
                        eot_token_id=tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    answers = tiny_tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    assert [r["raw_output"] for r in records] == answers
    assert [r["nfe"] for r in records] == nfe.tolist()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["mean_nfe"] == pytest.approx(sum(nfe.tolist()) / 3) and saved["items_per_s"] > 0
    assert summary["settings"]["cache"] == "dual"


def test_runner_identity_includes_the_fast_options(tiny_model_dir, tmp_path, capsys):
    run(tiny_model_dir, tmp_path, *FAST)
    run_dir = tmp_path / "arc_easy" / "ratio0.2_deg6__steps16_gen16_block8_cache-dual_thr0.05"
    claim = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**claim, "threshold": 0.5}))
    with pytest.raises(SystemExit) as exit_:
        run(tiny_model_dir, tmp_path, *FAST)
    assert exit_.value.code == 2 and "threshold: 0.5 there vs 0.05 now" in capsys.readouterr().err
    # a directory written before these options existed holds their defaults: resuming it still works
    plain = ["--gen_length", "8", "--block_length", "8", "--steps", "2"]
    run(tiny_model_dir, tmp_path / "old", *plain)
    old_dir = tmp_path / "old" / "arc_easy" / "ratio0.2_deg6__steps2_gen8_block8"
    claim = json.loads((old_dir / "run.json").read_text())
    (old_dir / "run.json").write_text(json.dumps({k: v for k, v in claim.items()
                                                  if k not in ("cache", "threshold", "factor")}))
    [summary] = run(tiny_model_dir, tmp_path / "old", *plain)
    assert summary["resumed_items"] == 3 and summary["items_this_run"] == 0


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--cache", "half"], "--cache: invalid choice: 'half'"),
        (["--threshold", "1.5"], "--threshold must be a number in (0, 1]"),
        (["--factor", "0"], "--factor must be a finite number > 0"),
        (["--threshold", "0.9", "--factor", "1"], "give --threshold or --factor, not both"),
    ],
)
def test_runner_rejects_bad_fast_flags_before_loading(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path / "missing-model", tmp_path / "out", *flags)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_all_passes_the_fast_options(tiny_model_dir, tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, RUN_ALL_PYTHON=sys.executable)
    res = subprocess.run(["bash", str(REPO / "run_all.sh"), "--model", str(tiny_model_dir), "--data-dir",
                          str(FIXTURES), "--out", str(out), "--tasks", "arc_easy", "--limit", "1", "--no-exact",
                          "--degrees", "6", "--cache", "prefix", "--factor", "1.0"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    [summary] = list(out.glob("arc_easy/*/summary.json"))
    assert summary.parent.name == "ratio0.2_deg6__cache-prefix_fac1"
    assert "mean_nfe" in (out / "summary.csv").read_text().splitlines()[0]
    bad = subprocess.run(["bash", str(REPO / "run_all.sh"), "--model", str(tiny_model_dir), "--data-dir",
                          str(FIXTURES), "--out", str(out), "--tasks", "arc_easy", "--threshold", "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "--threshold must be a number in (0, 1]" in bad.stderr


@pytest.fixture(scope="module")
def lm_mod():
    pytest.importorskip("lm_eval")
    import support_basis.lm_eval_llada as mod

    return mod


def test_lm_eval_generate_until_uses_the_fast_options(lm_mod, tiny_model_dir):
    from lm_eval.api.instance import Instance

    harness = lm_mod.LLaDABSEvalHarness(pretrained=str(tiny_model_dir), device="cpu", steps=16, gen_length=16,
                                        block_length=8, cache="prefix", threshold="0.05", exact_ratio=0.2)
    prompt = "Q: What is 2 plus 3?\nA:"
    [answer] = harness.generate_until([Instance("generate_until", {}, (prompt, {"until": []}), 0)])
    ids = torch.tensor([harness.tok_encode(prompt)])
    with torch.no_grad():
        out = generate(harness.model, ids, steps=16, gen_length=16, block_length=8, cache="prefix", threshold=0.05,
                       eot_token_id=harness.eot_id)[0, ids.shape[1] :]
    stops = torch.isin(out, torch.tensor(harness.stop_ids)).nonzero()
    out = out[: int(stops[0]) if len(stops) else len(out)]
    assert answer == harness.tokenizer.decode(out.tolist(), skip_special_tokens=True)


@pytest.mark.parametrize("override,match", [({"cache": "full"}, "cache must be one of"),
                                            ({"threshold": "0"}, "threshold must be"),
                                            ({"factor": "-1"}, "factor must be"),
                                            ({"threshold": 0.9, "factor": 1}, "not both")])
def test_lm_eval_rejects_bad_fast_options_before_loading(lm_mod, tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        lm_mod.LLaDABSEvalHarness(pretrained=str(tmp_path / "missing"), device="cpu", **override)
