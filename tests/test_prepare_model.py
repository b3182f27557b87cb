"""scripts/prepare_model.py on a tiny checkpoint saved in the official layout (sharded, official config)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from conftest import REPO
from support_basis.prepare import PrepareError, prepare
from test_model import official_llada_forward

OFFICIAL_ONLY_KEYS = ("hybrid_exact_ratio", "hybrid_chebyshev_degree", "hybrid_num_samples", "auto_map")


@pytest.fixture(scope="module")
def official_layout(tiny_model_dir, tmp_path_factory):
    """The tiny model as GSAI-ML publishes LLaDA: two shards + index, an official-style config, the tokenizer,
    and the official repository's own code files (stand-ins here; prepare_model must not use them)."""
    src = tmp_path_factory.mktemp("official") / "LLaDA-tiny-Instruct"
    src.mkdir()
    state = load_file(tiny_model_dir / "model.safetensors")
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({k: state[k].to(torch.bfloat16).contiguous() for k in part}, src / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    for k in OFFICIAL_ONLY_KEYS:
        cfg.pop(k, None)
    cfg["auto_map"] = {"AutoModel": "modeling_llada.LLaDAModelLM"}  # points at the official code
    cfg["transformers_version"] = "4.46.3"
    (src / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / f).write_bytes((tiny_model_dir / f).read_bytes())
    (src / "modeling_llada.py").write_text("raise ImportError('the official code must not be used')\n")
    return src


def test_prepared_directory_reproduces_the_official_weights(official_layout, tmp_path, rng):
    out = prepare(str(official_layout), tmp_path / "bs", exact_ratio=0.2, chebyshev_degree=4)
    assert (out / "model-00001-of-00002.safetensors").is_symlink()
    model = AutoModel.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    assert (model.config.hybrid_exact_ratio, model.config.hybrid_chebyshev_degree) == (0.2, 4)
    assert AutoTokenizer.from_pretrained(out, trust_remote_code=True).chat_template
    model.config.hybrid_exact_ratio = 1.0
    ids = torch.randint(0, model.config.vocab_size, (2, 21), generator=rng)
    ours = model(ids).logits.double()
    official = {}
    for shard in sorted(official_layout.glob("*.safetensors")):
        official.update(load_file(shard))
    ref = official_llada_forward({k: v.float() for k, v in official.items()}, model.config, ids)
    assert float((ours - ref).norm() / ref.norm()) < 1e-5


def test_copy_mode_and_force(official_layout, tmp_path):
    out = prepare(str(official_layout), tmp_path / "bs", copy=True)
    assert not (out / "model-00001-of-00002.safetensors").is_symlink()
    with pytest.raises(PrepareError, match="not empty"):
        prepare(str(official_layout), out)
    prepare(str(official_layout), out, force=True, exact_ratio=1.0)
    assert json.loads((out / "config.json").read_text())["hybrid_exact_ratio"] == 1.0


def broken_copy(src, tmp_path, edit):
    import shutil

    dst = tmp_path / "broken"
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model-00002-of-00002.safetensors").unlink(), "missing"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), "model_type='llama'"),
        (
            lambda d: (d / "config.json").write_text(
                json.dumps({**json.loads((d / "config.json").read_text()), "n_layers": 3})
            ),
            "do not match",
        ),
    ],
)
def test_clear_errors_for_a_wrong_source(official_layout, tmp_path, edit, message):
    src = broken_copy(official_layout, tmp_path, edit)
    with pytest.raises(PrepareError, match=message):
        prepare(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_cli_errors(tmp_path, official_layout):
    script = str(REPO / "scripts" / "prepare_model.py")
    res = subprocess.run([sys.executable, script, "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no such directory" in res.stderr
    res = subprocess.run([sys.executable, script, "--source", str(official_layout), "--out", str(tmp_path / "o"),
                          "--exact-ratio", "1.5"], capture_output=True, text=True)
    assert res.returncode == 2 and "--exact-ratio must be in [0, 1]" in res.stderr
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, script, "--source", "GSAI-ML/LLaDA-8B-Instruct", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "huggingface-cli download" in res.stderr
