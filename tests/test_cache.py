"""The model's key/value cache (``use_cache`` / ``past_key_values`` / ``cache_position``): a window forward against
a float64 transcription of its contract, equality with the full forward on an unchanged sequence, padding, dtypes,
hybrid attention, and the errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from generate import returned_cache


@pytest.fixture
def exact_model(tiny_model):
    tiny_model.config.hybrid_exact_ratio = 1.0
    yield tiny_model
    tiny_model.config.hybrid_exact_ratio = 0.2


def reference_window_logits(model, old_ids, new_ids, start, end):
    """Float64, exact attention, the contract written out: the window ``[start, end)`` of ``new_ids`` computed
    afresh, every other position's keys/values taken from a full forward of ``old_ids`` (unpadded, batch 1)."""
    m = copy.deepcopy(model).double()
    tr, cfg = m.model.transformer, m.config
    hd = cfg.d_model // cfg.n_heads
    with torch.no_grad():
        old_hidden = m(old_ids, output_hidden_states=True).hidden_states  # the input of every block
        h = tr.wte(new_ids[:, start:end])
        total = old_ids.shape[1]
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)

        def rope(t, pos):  # t (1, H, L, hd)
            ang = pos.double()[:, None] * inv
            cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
            t1, t2 = t.chunk(2, -1)
            return t * cos + torch.cat([-t2, t1], -1) * sin

        def heads(x, proj, n):
            return proj(x).view(1, x.shape[1], n, hd).transpose(1, 2)

        for i, block in enumerate(tr.blocks):
            kv = cfg.effective_n_kv_heads
            old = block.attn_norm(old_hidden[i])
            k_all = rope(heads(old, block.k_proj, kv), torch.arange(total))
            v_all = heads(old, block.v_proj, kv)
            x = block.attn_norm(h)
            pos = torch.arange(start, end)
            k_all[:, :, start:end] = rope(heads(x, block.k_proj, kv), pos)
            v_all[:, :, start:end] = heads(x, block.v_proj, kv)
            q = rope(heads(x, block.q_proj, cfg.n_heads), pos)
            group = cfg.n_heads // kv
            k_all, v_all = k_all.repeat_interleave(group, 1), v_all.repeat_interleave(group, 1)
            w = F.softmax(q @ k_all.transpose(-1, -2) / math.sqrt(hd), -1)
            att = (w @ v_all).transpose(1, 2).reshape(1, end - start, cfg.d_model)
            h = h + block.attn_out(att)
            g = block.ff_norm(h)
            h = h + block.ff_out(F.silu(block.ff_proj(g)) * block.up_proj(g))
        return tr.ff_out(tr.ln_f(h)) if "ff_out" in tr else F.linear(tr.ln_f(h), tr.wte.weight)


@pytest.mark.parametrize("start,end", [(9, 14), (9, 24), (0, 5)])
def test_window_with_stale_cache_matches_float64_contract(exact_model, rng, start, end):
    old = torch.randint(0, 400, (1, 24), generator=rng)
    new = old.clone()
    new[:, start:end] = torch.randint(0, 400, (1, end - start), generator=rng)  # the window changed since
    cache = returned_cache(exact_model(old, use_cache=True))
    got = exact_model(new[:, start:end], past_key_values=cache, cache_position=start).logits
    ref = reference_window_logits(exact_model, old, new, start, end)
    assert float((got.double() - ref).norm() / ref.norm()) < 1e-5
    # the approximation is real: the full forward of the new sequence differs
    full = exact_model(new).logits[:, start:end]
    assert float((full - got).norm() / full.norm()) > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unchanged_sequence_window_equals_full_forward_padded(tiny_model_dir, rng, dtype):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_model_dir, dtype=dtype).eval()
    model.config.hybrid_exact_ratio = 1.0
    ids = torch.randint(0, 400, (3, 26), generator=rng)
    mask = torch.ones(3, 26, dtype=torch.long)
    mask[1, :6] = 0
    mask[2, :11] = 0
    full = model(ids, attention_mask=mask, use_cache=True)
    assert len(returned_cache(full)) == model.config.n_layers
    assert returned_cache(full)[0][0].shape == (3, model.config.effective_n_kv_heads, 26, 16)
    assert returned_cache(full)[0][0].dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for start, end, keep in ((14, 20, None), (14, 26, slice(0, 6)), (20, 26, 6)):
        out = model(ids[:, start:end], attention_mask=mask, past_key_values=returned_cache(full),
                    cache_position=start, logits_to_keep=keep).logits.float()
        want = full.logits[:, start : start + out.shape[1]].float()
        assert float((out - want).norm() / want.norm()) < tol
    # a padded row's window equals the same sequence alone (padding never reaches attention)
    alone = ids[2:3, 11:]
    cache = returned_cache(model(alone, use_cache=True))
    solo = model(alone[:, 9:15], past_key_values=cache, cache_position=9).logits.float()
    batched = model(ids[:, 20:26], attention_mask=mask, past_key_values=returned_cache(full),
                    cache_position=20).logits[2:3].float()
    assert float((solo - batched).norm() / solo.norm()) < tol


def test_hybrid_window_is_close_to_full_forward(tiny_model, rng):
    """Hybrid attention: a window's thresholds come from its own rows' scores, so on an unchanged sequence it
    differs from the full forward only by the placement of the thresholds."""
    ids = torch.randint(0, 400, (2, 40), generator=rng)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0, :5] = 0
    full = tiny_model(ids, attention_mask=mask, use_cache=True)
    out = tiny_model(ids[:, 24:32], attention_mask=mask, past_key_values=returned_cache(full),
                     cache_position=24).logits
    want = full.logits[:, 24:32]
    err = float((out - want).norm() / want.norm())
    assert 0 < err < 1e-3


def test_cache_errors(tiny_model, rng):
    ids = torch.randint(0, 400, (2, 12), generator=rng)
    cache = returned_cache(tiny_model(ids, use_cache=True))
    with pytest.raises(ValueError, match="do not pass past_key_values"):
        tiny_model(ids, use_cache=True, past_key_values=cache, cache_position=0)
    with pytest.raises(ValueError, match="needs past_key_values"):
        tiny_model(ids, cache_position=3)
    with pytest.raises(ValueError, match="cache_position must be the int"):
        tiny_model(ids[:, 2:5], past_key_values=cache)
    with pytest.raises(ValueError, match="does not fit in the cache"):
        tiny_model(ids[:, 2:8], past_key_values=cache, cache_position=10)
    with pytest.raises(ValueError, match="does not fit in the cache"):
        tiny_model(ids[:1, 2:5], past_key_values=cache, cache_position=2)
    with pytest.raises(ValueError, match="one per layer"):
        tiny_model(ids[:, 2:5], past_key_values=cache[:1], cache_position=2)
    with pytest.raises(ValueError, match="whole cached sequence"):
        tiny_model(ids[:, 2:5], attention_mask=torch.ones(2, 3), past_key_values=cache, cache_position=2)


def test_no_deprecated_cache_name_on_any_transformers(tiny_model, rng, monkeypatch):
    """transformers 5.x renamed the output's `past_key_values` to `cache` and warns on the old name; neither the
    model's forward nor the cached sampler may use it (a user would see the warning on every run)."""
    import logging

    from generate import generate

    said = []
    monkeypatch.setattr(logging.Logger, "warning_once", lambda self, msg, *a, **k: said.append(str(msg)))
    ids = torch.randint(0, 400, (2, 12), generator=rng)
    out = tiny_model(ids, use_cache=True)
    tiny_model(ids[:, 4:8], past_key_values=returned_cache(out), cache_position=4)
    generate(tiny_model, ids[:, :6], steps=4, gen_length=8, block_length=4, mask_id=tiny_model.config.mask_token_id,
             cache="dual")
    assert not [m for m in said if "deprecated" in m], said
    assert len(returned_cache(out)) == tiny_model.config.n_layers
