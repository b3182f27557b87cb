"""The LLaDA-BS model directory: checkpoint compatibility, loading, the knobs' path, and the architecture's math.

Runs under transformers 5.x and 4.49 (CI runs this file under both).
"""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from conftest import REPO
from support_basis.llada import CODE_FILES
from support_basis.sampling import returned_cache

MODEL_DIR = REPO / "LLaDA-8B-Instruct-BS"


def official_config(shared_reference):
    from configuration_llada import LLaDAConfig

    return LLaDAConfig(**json.loads((shared_reference / "config.json").read_text()))


def test_state_dict_keys_equal_the_official_checkpoint(shared_reference):
    from modeling_llada import LLaDAModelLM

    with torch.device("meta"):
        model = LLaDAModelLM(official_config(shared_reference))
    index = json.loads((shared_reference / "model.safetensors.index.json").read_text())
    assert set(model.state_dict()) == set(index["weight_map"])
    n_params = sum(p.numel() for p in model.parameters())
    assert 8.0e9 < n_params < 8.1e9  # 8.0B parameters (16.03 GB in bf16, as the index's total_size)
    assert 2 * n_params == index["metadata"]["total_size"]


def test_model_directory_config_is_the_official_one_plus_the_knobs(shared_reference):
    ours = json.loads((MODEL_DIR / "config.json").read_text())
    official = json.loads((shared_reference / "config.json").read_text())
    for key, value in official.items():
        if key != "transformers_version":
            assert ours[key] == value, key
    assert ours["hybrid_exact_ratio"] == 0.2 and ours["hybrid_chebyshev_degree"] == 6
    from support_basis.llada.configuration_llada import HYBRID_VALIDATORS

    assert set(HYBRID_VALIDATORS) <= set(ours)  # every knob is in the file (hybrid_kernel too)
    assert ours["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM"


def test_shipped_code_copies_equal_the_package():
    """LLaDA-8B-Instruct-BS/ and the tiny checkpoint carry byte-identical copies of the package's code (after an
    edit of support_basis/llada: python -m support_basis.code_identity), and no file of the repository is a link."""
    import subprocess

    from support_basis.code_identity import code_status
    from support_basis.llada import MODEL_CARD
    from support_basis.loading import DEFAULT_MODEL

    for directory in (MODEL_DIR, DEFAULT_MODEL):
        assert code_status(directory) is None, "run: python -m support_basis.code_identity"
    assert (MODEL_DIR / "README.md").read_bytes() == MODEL_CARD.read_bytes()
    links = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True).stdout
    if links:  # a git checkout (an sdist has no index)
        assert not [line for line in links.splitlines() if line.startswith("120000")]


def test_top_level_modules_are_the_package():
    import configuration_llada
    import modeling_llada

    from support_basis.llada.configuration_llada import LLaDAConfig
    from support_basis.llada.modeling_llada import LLaDAModelLM

    assert modeling_llada.LLaDAModelLM is LLaDAModelLM and configuration_llada.LLaDAConfig is LLaDAConfig


@pytest.mark.slow
def test_model_directory_is_self_contained(tmp_path, tiny_model_dir):
    """A copy of the directory alone loads and runs as remote code: every module of this repository (installed
    with it) is blocked in that process, so only the directory's own files can be used."""
    alone = tmp_path / "copied"
    shutil.copytree(tiny_model_dir, alone)
    blocked = ["support_basis", "generate", *(name[:-3] for name in CODE_FILES)]
    code = (
        f"import sys, torch; sys.modules.update(dict.fromkeys({blocked!r}))  # None: importing them fails\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(alone)!r}, trust_remote_code=True)\n"
        "print(m(torch.tensor([[1, 2, 3]])).logits.shape)\n"
    )
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "torch.Size([1, 3," in res.stdout


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwarg", ["dtype", "torch_dtype"])
def test_loads_with_auto_classes_and_dtypes(tiny_model_dir, auto_class, dtype, kwarg):
    model = auto_class.from_pretrained(tiny_model_dir, trust_remote_code=True, **{kwarg: dtype})
    assert type(model).__name__ == "LLaDAModelLM"
    assert all(p.dtype == dtype for p in model.parameters())
    logits = model(torch.tensor([[5, 6, 7, 8]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size) and torch.isfinite(logits.float()).all()


def test_device_map_auto(tiny_model_dir, tiny_model):
    model = AutoModel.from_pretrained(tiny_model_dir, trust_remote_code=True, device_map="auto")
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    assert torch.allclose(model(ids).logits, tiny_model(ids).logits)


@pytest.mark.parametrize(
    "field,value", [("hybrid_exact_ratio", 1.5), ("hybrid_exact_ratio", -0.1), ("hybrid_exact_ratio", "abc"),
                    ("hybrid_chebyshev_degree", 0), ("hybrid_chebyshev_degree", 2.5)]
)
def test_invalid_knobs_fail_at_load_and_when_set(tiny_model_dir, tmp_path, tiny_model, field, value):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg[field] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field) as err:
        AutoModel.from_pretrained(bad, trust_remote_code=True)
    assert repr(value) in str(err.value)
    with pytest.raises(ValueError, match=field):
        setattr(tiny_model.config, field, value)
    assert tiny_model.config.hybrid_exact_ratio == 0.2 and tiny_model.config.hybrid_chebyshev_degree == 6


def test_knobs_set_after_loading_reach_the_next_forward(tiny_model_dir, monkeypatch):
    model = AutoModel.from_pretrained(tiny_model_dir)
    module = sys.modules[type(model).__module__]
    seen = []
    real = module.hybrid_attention

    def spy(*args, **kwargs):
        seen.append((kwargs["exact_ratio"], kwargs["chebyshev_degree"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "hybrid_attention", spy)
    ids = torch.randint(0, 400, (1, 24))
    base = model(ids).logits
    model.config.hybrid_chebyshev_degree = 4
    deg4 = model(ids).logits
    model.config.hybrid_exact_ratio = 1.0
    exact = model(ids).logits
    n = model.config.n_layers
    assert seen == [(0.2, 6)] * n + [(0.2, 4)] * n + [(1.0, 4)] * n
    assert not torch.equal(base, deg4) and not torch.equal(deg4, exact)


# ---------------------------------------------------------------------------------------------------------------
# The architecture against an independent dense float64 implementation of the official LLaDA math
# ---------------------------------------------------------------------------------------------------------------


def official_llada_forward(state, cfg, ids, attention_mask=None):
    """LLaDA as the official modeling file computes it (absolute RoPE positions, key-padding bias), in float64."""
    sd = {k: v.double() for k, v in state.items()}
    p = "model.transformer."
    d, h = cfg.d_model, cfg.n_heads
    hd = d // h
    b, l = ids.shape

    def rms(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    pos = torch.arange(l, dtype=torch.float64)
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.cat([pos[:, None] * inv, pos[:, None] * inv], -1)
    cos, sin = ang.cos(), ang.sin()

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    bias = torch.zeros(b, 1, 1, l, dtype=torch.float64)
    if attention_mask is not None:
        bias = bias.masked_fill(attention_mask[:, None, None, :] == 0, -math.inf)
    x = sd[p + "wte.weight"][ids]
    for i in range(cfg.n_layers):
        w = {k[len(f"{p}blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"{p}blocks.{i}.")}
        xn = rms(x, w["attn_norm.weight"])
        q = rope((xn @ w["q_proj.weight"].T).view(b, l, h, hd).transpose(1, 2))
        k = rope((xn @ w["k_proj.weight"].T).view(b, l, h, hd).transpose(1, 2))
        v = (xn @ w["v_proj.weight"].T).view(b, l, h, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, -1) @ v
        x = x + att.transpose(1, 2).reshape(b, l, d) @ w["attn_out.weight"].T
        hn = rms(x, w["ff_norm.weight"])
        x = x + (torch.nn.functional.silu(hn @ w["ff_proj.weight"].T) * (hn @ w["up_proj.weight"].T)) @ w[
            "ff_out.weight"
        ].T
    return rms(x, sd[p + "ln_f.weight"]) @ sd[p + "ff_out.weight"].T


def test_exact_ratio_one_matches_the_official_math(tiny_model, rng):
    tiny_model.config.hybrid_exact_ratio = 1.0
    try:
        ids = torch.randint(0, tiny_model.config.vocab_size, (2, 33), generator=rng)
        mask = torch.ones(2, 33, dtype=torch.long)
        mask[1, :9] = 0  # left padding
        ours = tiny_model(ids, attention_mask=mask).logits.double()
        ref = official_llada_forward(tiny_model.state_dict(), tiny_model.config, ids, mask)
        valid = mask.bool()
        err = (ours - ref)[valid].norm() / ref[valid].norm()
        assert err < 1e-5, float(err)
    finally:
        tiny_model.config.hybrid_exact_ratio = 0.2


def test_hybrid_forward_is_close_to_exact(tiny_model, rng):
    ids = torch.randint(0, tiny_model.config.vocab_size, (1, 48), generator=rng)
    hybrid = tiny_model(ids).logits
    tiny_model.config.hybrid_exact_ratio = 1.0
    try:
        exact = tiny_model(ids).logits
    finally:
        tiny_model.config.hybrid_exact_ratio = 0.2
    err = float((hybrid - exact).norm() / exact.norm())
    assert 0 < err < 0.05, err


@pytest.mark.parametrize("ratio", [0.2, 1.0])
def test_padded_batch_equals_each_sequence_alone(tiny_model, rng, ratio):
    tiny_model.config.hybrid_exact_ratio = ratio
    try:
        lengths = [5, 17, 30]
        l = max(lengths)
        ids = torch.full((3, l), tiny_model.config.pad_token_id)
        mask = torch.zeros(3, l, dtype=torch.long)
        seqs = [torch.randint(0, 400, (n,), generator=rng) for n in lengths]
        for i, s in enumerate(seqs):
            ids[i, l - len(s) :] = s
            mask[i, l - len(s) :] = 1
        batch = tiny_model(ids, attention_mask=mask).logits
        for i, s in enumerate(seqs):
            alone = tiny_model(s[None]).logits[0]
            assert (batch[i, l - len(s) :] - alone).abs().max() <= 1e-5
    finally:
        tiny_model.config.hybrid_exact_ratio = 0.2


def test_bf16_forward_is_close_to_fp32(tiny_model_dir, rng):
    m32 = AutoModel.from_pretrained(tiny_model_dir, trust_remote_code=True)
    m16 = AutoModel.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.bfloat16)
    ids = torch.randint(0, 400, (2, 20), generator=rng)
    a, b = m32(ids).logits, m16(ids).logits.float()
    assert torch.isfinite(b).all() and float((a - b).norm() / a.norm()) < 5e-2


def test_forward_options(tiny_model, rng):
    ids = torch.randint(0, 400, (2, 12), generator=rng)
    out = tiny_model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == tiny_model.config.n_layers + 1
    embeds = tiny_model.get_input_embeddings()(ids)
    assert torch.allclose(tiny_model(inputs_embeds=embeds).logits, out.logits)
    assert torch.equal(tiny_model(ids, return_dict=False)[0], out.logits)
    four_d = torch.ones(2, 1, 12, 12, dtype=torch.bool)
    assert torch.allclose(tiny_model(ids, attention_mask=four_d).logits, out.logits, atol=1e-6)
    cached = tiny_model(ids, use_cache=True)  # the diffusion key/value cache: tests/test_cache.py
    assert torch.equal(cached.logits, out.logits) and len(returned_cache(cached)) == tiny_model.config.n_layers
    with pytest.raises(ValueError, match="cache_position needs past_key_values"):
        tiny_model(ids, cache_position=2)
    with pytest.raises(ValueError, match="max_sequence_length"):
        tiny_model(torch.zeros(1, tiny_model.config.max_sequence_length + 1, dtype=torch.long))


def test_official_config_loads_with_auto_config(shared_reference, tmp_path):
    """The official config.json (no hybrid fields) loads through our code with the shipped defaults."""
    d = tmp_path / "official"
    d.mkdir()
    shutil.copy(shared_reference / "config.json", d / "config.json")
    shutil.copy(MODEL_DIR / "configuration_llada.py", d / "configuration_llada.py")  # the config needs nothing else
    cfg = AutoConfig.from_pretrained(d, trust_remote_code=True)
    assert (cfg.hybrid_exact_ratio, cfg.hybrid_chebyshev_degree) == (0.2, 6)
    assert cfg.use_cache is False and cfg.mask_token_id == 126336 and cfg.n_layers == 32


def test_forward_and_backward_with_autograd_on(tiny_model_dir, rng):
    """Loaded and called as-is (no torch.no_grad): the hybrid forward runs and gradients reach every weight."""
    model = AutoModel.from_pretrained(tiny_model_dir, trust_remote_code=True)
    ids = torch.randint(0, 400, (2, 16), generator=rng)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    with torch.enable_grad():
        model(ids, attention_mask=mask).logits.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["model.transformer.blocks.0.q_proj.weight"].abs().sum() > 0


def test_tied_embeddings_are_one_matrix_through_save_and_load(tmp_path):
    """``--weight-tying`` (the shipped tiny model's setting): no separate output layer is saved, and after loading
    the logits are the final hidden states against the input embedding (under either transformers)."""
    from support_basis.tiny_model import make_tiny_model
    from safetensors.torch import load_file

    out = make_tiny_model(tmp_path / "tied", weight_tying=True, seed=7)
    assert json.loads((out / "config.json").read_text())["weight_tying"] is True
    assert "model.transformer.ff_out.weight" not in load_file(str(out / "model.safetensors"))
    model = AutoModel.from_pretrained(out, trust_remote_code=True, dtype=torch.float64).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(7))
    res = model(ids, output_hidden_states=True)
    want = res.hidden_states[-1] @ model.model.transformer.wte.weight.T
    assert torch.allclose(res.logits, want, rtol=1e-10, atol=1e-12)
