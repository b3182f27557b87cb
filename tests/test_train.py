"""scripts/train_llada.py and support_basis/training: LLaDA's SFT loss, batches, learning, exact resume, errors."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from conftest import load_script
from support_basis.training.data import Encoder, Example, SyntheticSource, collate
from support_basis.training.loss import corrupt, sft_loss

train_llada = load_script("train_llada")


def _reference_loss(model, ids, response, mask_id, eps, seed):
    """LLaDA's SFT loss written out per sequence and per token, from the full-sequence logits."""
    noisy, masked, p_mask = corrupt(ids, response, mask_id, eps, torch.Generator().manual_seed(seed))
    logits = model(noisy).logits.double()
    total = 0.0
    for b in range(ids.shape[0]):
        answer_len = int(response[b].sum())
        for j in range(ids.shape[1]):
            if masked[b, j]:
                ce = -torch.log_softmax(logits[b, j], -1)[ids[b, j]]
                total += ce / float(p_mask[b, 0]) / answer_len
    return total / ids.shape[0]


def test_loss_matches_a_literal_reference(tiny_model, tiny_tokenizer):
    src = SyntheticSource(Encoder(tiny_tokenizer), seed=3)
    ids, response = src.batch(0, 4, 0.5)
    mask_id = tiny_model.config.mask_token_id
    ours = sft_loss(tiny_model, ids, response, mask_id, 1e-3, torch.Generator().manual_seed(5))
    ref = _reference_loss(tiny_model, ids, response, mask_id, 1e-3, 5)
    assert abs(float(ours) - float(ref)) / float(ref) < 1e-5


def test_prompt_is_never_masked_and_rate_follows_t():
    ids = torch.randint(0, 100, (4000, 20))
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 8:] = True
    noisy, masked, p = corrupt(ids, response, 999, 1e-3, torch.Generator().manual_seed(0))
    assert not masked[:, :8].any() and (noisy[:, :8] == ids[:, :8]).all()
    assert (noisy[masked] == 999).all() and (noisy[~masked] == ids[~masked]).all()
    rate = masked[:, 8:].float().mean(-1)
    assert torch.corrcoef(torch.stack([rate, p[:, 0]]))[0, 1] > 0.9
    assert 0.45 < float(p.mean()) < 0.55


def test_collate_fills_responses_with_eos():
    ids, response = collate([Example([1, 2, 3], [7, 8]), Example([4], [9])], eos_id=0, min_response=4)
    assert ids.tolist() == [[1, 2, 3, 7, 8, 0, 0], [4, 9, 0, 0, 0, 0, 0]]
    assert response.tolist() == [[False] * 3 + [True] * 4, [False] + [True] * 6]


def test_batches_are_a_function_of_seed_and_step(tiny_tokenizer):
    a = SyntheticSource(Encoder(tiny_tokenizer), seed=1)
    b = SyntheticSource(Encoder(tiny_tokenizer), seed=1)
    for step in (0, 7, 123):
        assert all(torch.equal(x, y) for x, y in zip(a.batch(step, 3, 0.5), b.batch(step, 3, 0.5)))


def _train(model_dir, out, *extra):
    args = ["--model", str(model_dir), "--out", str(out), "--batch-size", "8", "--lr", "3e-3", "--warmup", "5",
            "--log-every", "10", "--save-every", "10", "--eval-every", "0", "--no-progress", "--threads", "2",
            "--kinds", "recall", *extra]
    with torch.enable_grad():
        assert train_llada.main(args) == 0


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def test_training_reduces_the_loss_and_resume_is_exact(tiny_model_dir, tmp_path):
    straight = tmp_path / "straight"
    _train(tiny_model_dir, straight, "--steps", "40")
    curve = [json.loads(line) for line in (straight / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [10, 20, 30, 40]
    assert curve[-1]["loss"] < 0.7 * curve[0]["loss"], curve  # it learns (the EOS filling, then the values)
    resumed = tmp_path / "resumed"
    _train(tiny_model_dir, resumed, "--steps", "40", "--stop-after", "20")
    assert json.loads((resumed / "training_log.jsonl").read_text().splitlines()[-1])["step"] == 20
    _train(tiny_model_dir, resumed, "--steps", "40", "--resume")
    from support_basis.code_identity import code_status

    assert code_status(resumed) is None  # copies of the package's code with their digest, no links
    assert not any(f.is_symlink() for f in resumed.iterdir())
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the exported directory is a complete model: it loads and keeps the configured hybrid knobs
    from transformers import AutoModel

    m = AutoModel.from_pretrained(resumed)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert m.config.hybrid_exact_ratio == cfg["hybrid_exact_ratio"]
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.old"))
    assert not list(tmp_path.glob(".*.partial-*")) and not list(tmp_path.glob(".*.old-*"))  # its own staging


def _refused(capsys, *argv) -> str:
    """Run training with ``argv``; assert a one-line error with exit status 2 and return it."""
    with pytest.raises(SystemExit) as exit_:
        train_llada.main([*argv, "--steps", "2", "--no-progress", "--eval-every", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    return err[0]


def test_training_never_deletes_what_it_did_not_write(tiny_model_dir, tmp_path, capsys):
    """An --out holding a user's files is refused (they stay) unless --force; an --out that contains --model is
    refused; DIR.partial and DIR.old beside --out are never touched while training replaces its own export."""
    import shutil

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's own file")
    err = _refused(capsys, "--model", str(tiny_model_dir), "--out", str(mine))
    assert "--out" in err and "not written by training" in err and "--force" in err, err
    assert (mine / "notes.txt").read_text() == "a user's own file" and not (tmp_path / "mine.state").exists()

    source = tmp_path / "models" / "start"
    shutil.copytree(tiny_model_dir, source)
    err = _refused(capsys, "--model", str(source), "--out", str(tmp_path / "models"))
    assert "contains the --model directory" in err, err
    assert (source / "model.safetensors").is_file()

    out = tmp_path / "run"
    for sibling in ("run.partial", "run.old"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "keep.txt").write_text(sibling)
    _train(tiny_model_dir, out, "--steps", "20")  # two saves: the second replaces training's own first export
    for sibling in ("run.partial", "run.old"):
        assert (tmp_path / sibling / "keep.txt").read_text() == sibling
    assert json.loads((out / "training_log.jsonl").read_text().splitlines()[-1])["step"] == 20
    shutil.rmtree(tmp_path / "run.state")  # a finished model whose training state is gone (or the shipped one)
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()  # the finished run's own output
    err = _refused(capsys, "--model", str(tiny_model_dir), "--out", str(out))
    assert "holds a finished model" in err and "--force" in err, err
    assert (out / "model.safetensors").read_bytes() == before

    _train(tiny_model_dir, mine, "--steps", "10", "--force")  # named: the user's directory is replaced
    assert not (mine / "notes.txt").exists() and (mine / "model.safetensors").is_file()


def test_a_second_run_on_the_same_out_says_who_holds_it(tiny_model_dir, tmp_path, capsys):
    from support_basis.training.checkpoint import RunLock

    out = tmp_path / "busy"
    lock = RunLock(out)
    assert lock.acquire() is None
    try:
        err = _refused(capsys, "--model", str(tiny_model_dir), "--out", str(out))
    finally:
        lock.release()
    assert f"is being trained by process {os.getpid()}" in err and "busy.state/lock" in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1; got 0"),
    (["--lr", "nan"], "--lr must be in (0, 1]"),
    (["--eps", "1.5"], "--eps must be in (0, 1)"),
    (["--kinds", "recall,mul"], "unknown kind(s) mul"),
    (["--data", "/nonexistent.jsonl"], "--data /nonexistent.jsonl: no such file"),
    (["--resume"], "--resume: no checkpoint at"),
    (["--save-every", "15"], "must be a multiple of --log-every"),
    (["--device", "cuda:0"], "CUDA is not available") if not torch.cuda.is_available() else (["--steps", "-1"], ">= 1"),
])
def test_bad_flags_fail_before_loading(tiny_model_dir, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_llada.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.state").exists()


def test_bad_model_dir_and_bad_data(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(SystemExit) as e:
        train_llada.main(["--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "not a model directory" in capsys.readouterr().err
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi", "response": "there"}\n{"prompt": 3}\n')
    from support_basis import loading

    def no_weights(*args, **kwargs):  # the data is refused before any weight loads (a minute for the 8B)
        raise AssertionError("the weights were loaded before the data was checked")

    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as e:
        mp.setattr(loading, "load_weights", no_weights)
        train_llada.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--data", str(data)])
    assert e.value.code == 2 and f"{data}, line 2" in capsys.readouterr().err
    data.write_text('{"prompt": "hi", "response": "there"}\n{"prompt": "fill", "response": "a <|mdm_mask|> b"}\n')
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as e:
        mp.setattr(loading, "load_weights", no_weights)
        train_llada.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--data", str(data)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{data}, line 2" in err and "<|mdm_mask|>" in err, err
    data.write_text('{"prompt": "hi", "response": "there"}\n{"prompt": "' + "word " * 3000 + '", "response": "x"}\n')
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as e:
        mp.setattr(loading, "load_weights", no_weights)
        train_llada.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--data", str(data)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "row 2" in err and "max_sequence_length" in err, err


@pytest.mark.parametrize("kind", ["recall", "largest", "smallest"])
def test_an_answer_shown_in_the_prompt_is_its_tokens_there(kind):
    """A byte-level BPE gives " 742" and "742" different ids: the answer must be the prompt's own token(s), so a
    model can copy it (the shipped tokenizer makes each number one token)."""
    from transformers import AutoTokenizer

    from conftest import REPO

    tok = AutoTokenizer.from_pretrained(REPO / "support_basis" / "checkpoints" / "llada-tiny")
    src = SyntheticSource(Encoder(tok), seed=random.randrange(2**31), kinds=(kind,))
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    for step in range(6):  # free-form and several benchmark wrappers
        ids, response = src.batch(step, 4, 0.9)
        for row, resp in zip(ids.tolist(), response.tolist()):
            prompt = row[: resp.index(True)]
            answer = row[resp.index(True) : row.index(eot, resp.index(True))]
            assert answer and any(prompt[i : i + len(answer)] == answer for i in range(len(prompt))), \
                (tok.decode(prompt[-40:]), tok.convert_ids_to_tokens(answer))


def test_embedding_std_redraws_only_the_embeddings(tiny_model_dir, tmp_path):
    """make_tiny_model --embedding-std: the token embeddings start at that scale, every other weight is the
    default build's (same seed), and the build is deterministic."""
    from support_basis.tiny_model import make_tiny_model

    out = make_tiny_model(tmp_path / "unit", seed=0, embedding_std=1.0)
    base, unit = _weights(tiny_model_dir), _weights(out)
    emb = "model.transformer.wte.weight"
    assert emb in unit and 0.95 < float(unit[emb].std()) < 1.05 and float(base[emb].std()) < 0.2
    assert base.keys() == unit.keys() and all(torch.equal(base[k], unit[k]) for k in base if k != emb)
    again = _weights(make_tiny_model(tmp_path / "again", seed=0, embedding_std=1.0))
    assert torch.equal(again[emb], unit[emb])
