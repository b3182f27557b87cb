"""The shipped trained tiny LLaDA (support_basis/checkpoints/llada-tiny): complete, one copy of the code, and it answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support_basis.evaluation.answers import parse_choice
from support_basis.evaluation.tasks import TASKS
from support_basis.synthetic import heldout_problems, to_row

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "support_basis" / "checkpoints" / "llada-tiny"


def test_directory_is_complete_and_shares_the_model_code():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (CKPT / name).is_file(), name
    from support_basis.code_identity import code_status

    assert code_status(CKPT) is None  # byte-identical copies of the package's code, with their digest
    assert not any(p.is_symlink() for p in CKPT.iterdir())
    size = sum(p.stat().st_size for p in CKPT.iterdir())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MB"
    cfg = json.loads((CKPT / "config.json").read_text())
    assert {"hybrid_exact_ratio", "hybrid_chebyshev_degree"} <= cfg.keys() and cfg["auto_map"]


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(CKPT, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(CKPT)


def _answers(model, tokenizer, prompts, **kw):
    from generate import encode_prompts, generate

    ids, mask = encode_prompts(tokenizer, prompts, True, "cpu")
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    x = generate(model, ids, mask, steps=8, gen_length=32, block_length=32, eot_token_id=eot,
                 confidence_eos_eot_inf=True, **kw)
    return [t.strip() for t in tokenizer.batch_decode(x[:, ids.shape[1]:], skip_special_tokens=True)]


def _mc(model, tokenizer, kind, n=48):
    items = [TASKS["arc_challenge"].make_item(i, to_row(p, "arc_challenge", i))
             for i, p in enumerate(heldout_problems(kind, n, seed=99))]
    got = _answers(model, tokenizer, [it.prompt for it in items])
    return [parse_choice(g, 4, list(it.choices)) for g, it in zip(got, items)], [it.gold for it in items]


def test_it_answers_the_comparisons_and_hybrid_agrees(shipped):
    """Fixed held-out multiple choice through the runners' ARC prompt and reader parser. Measured on the shipped
    model: 46/48 on "largest", 44/48 on "smallest" (the issue's >= 90 % targets, met on the 1000-item table too) and
    40/48 on "sub" (chance 12/48); the bounds leave a few items of slack for another platform's float rounding.
    Hybrid 0.2/6 gives the same answers."""
    model, tokenizer = shipped
    kinds = {"largest": 43, "smallest": 41, "sub": 34}
    results = {}
    for ratio in (1.0, 0.2):
        model.config.hybrid_exact_ratio = ratio
        results[ratio] = {kind: _mc(model, tokenizer, kind) for kind in kinds}
    exact = results[1.0]
    for kind, least in kinds.items():
        assert sum(p == g for p, g in zip(*exact[kind])) >= least, (kind, exact[kind])
    same = sum(a == b for k in exact for a, b in zip(exact[k][0], results[0.2][k][0]))
    assert same >= 0.9 * 48 * len(kinds), same
    model.config.hybrid_exact_ratio = 0.2


def test_generate_cli_uses_it_by_default(capsys):
    import generate

    generate.main(["--prompt", "In the list c=41, q=73, m=25, what is the value of q?", "--gen-length", "32",
                   "--steps", "8"])
    out, err = capsys.readouterr()
    assert "support_basis/checkpoints/llada-tiny" in err
    assert out.strip().splitlines()[-1].strip() in {"41", "73", "25"}  # a value read from the list
