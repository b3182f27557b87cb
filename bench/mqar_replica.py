#!/usr/bin/env python
"""The associative-recall benchmark's basic setting, replicated, and LLaDA's answer shape put into it.

    python bench/mqar_replica.py                              # next-token, answer at the key: learned in ~2 epochs
    python bench/mqar_replica.py --format sep                 # one token between key and answer: chance
    python bench/mqar_replica.py --objective masked           # LLaDA's objective (bidirectional, [M] in place)
    python bench/mqar_replica.py --objective masked --aux-at-key   # ... plus each answer predicted at its key

``bench/lookup_probe.py`` shows the tiny LLaDA's shape not learning a masked key lookup. This asks what differs
from a setting where small transformers are known to learn it: the basic multi-query associative recall of
HazyResearch/zoology (vocabulary 256, 64 tokens, 4 key-value pairs at the start, then the same keys asked again
at random later slots; 10,000 fixed training sequences; 2 layers, 1 head, d_model 128, dropout 0.1; AdamW lr 1e-3,
weight decay 0.1, batch 64), on PyTorch's own ``nn.TransformerEncoder`` with learned absolute positions.

- ``--objective next``: causal attention, teacher forcing. ``--format plain``: ``... q v ...`` and the answer
  ``v`` is predicted at the asked key ``q`` itself (the benchmark's shape). ``--format sep``: ``... q SEP v ...``,
  predicted at ``SEP``, so the predicting position must first fetch the key from the token before it (the shape
  of every LLaDA answer: "q=[M]" or the question's end, never the key's own token).
- ``--objective masked``: bidirectional attention; every asked value is the mask token and is predicted in place,
  as LLaDA's SFT does. ``--aux-at-key`` adds a second loss on the asked key's own position (predict the value
  there, the next-token shape, with the answer still masked), to see whether a key-position answer helps.

Held-out accuracy on 1,000 fixed sequences after each epoch, over all queries and over each sequence's first
query (no earlier answer visible, so no elimination). Chance is 1/pairs among the list's values.
Prints the curve, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import emit_json, machine, print_table, stock_encoder

from support_basis.errors import ArgumentParser  # one-line errors, exit 2

OBJECTIVES = ("next", "masked")
FORMATS = ("plain", "sep")
VOCAB, LENGTH = 256, 64
# ids: 0 fills the empty slots, keys [1, 128), values [128, 254), then the separator and the mask token
KEYS, VALUES, SEP_ID, MASK_ID = (1, 128), (128, 254), 254, 255


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", default="next", choices=OBJECTIVES)
    p.add_argument("--format", default="plain", choices=FORMATS)
    p.add_argument("--aux-at-key", action="store_true", help="masked objective only: also predict at the key")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--pairs", type=int, default=4, help="key-value pairs per sequence (default 4)")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pos-std", type=float, default=0.02,
                   help="initial scale of the learned positions (default 0.02; the token embeddings' is 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.aux_at_key and a.objective != "masked":
        p.error("--aux-at-key: only with --objective masked (next-token already predicts at the key)")
    if min(a.epochs, a.train_size, a.layers, a.heads) < 1:
        p.error(f"--epochs, --train-size, --layers and --heads must be >= 1; got {a.epochs}, {a.train_size}, "
                f"{a.layers}, {a.heads}")
    slots = (LENGTH - 2 * a.pairs) // (3 if a.format == "sep" else 2)
    if not 1 <= a.pairs <= slots:
        p.error(f"--pairs {a.pairs}: must be in [1, {slots}] for {LENGTH}-token sequences in format {a.format}")
    if not 0 < a.lr <= 1:
        p.error(f"--lr must be in (0, 1]; got {a.lr}")
    if not 0 <= a.pos_std <= 10:
        p.error(f"--pos-std must be in [0, 10]; got {a.pos_std}")
    if 128 % a.heads:
        p.error(f"--heads {a.heads}: must divide d_model 128")
    return a


def make_data(n: int, pairs: int, fmt: str, objective: str, generator):
    """``(x, target, at_key)``, each ``(n, 64)`` long; targets are -100 where there is no loss.

    ``target`` is the loss the objective trains (next: at the key or SEP; masked: at the masked value);
    ``at_key`` holds the value at the asked key's own position (the ``--aux-at-key`` loss), -100 elsewhere."""
    import torch

    keys = torch.argsort(torch.rand(n, KEYS[1] - KEYS[0], generator=generator), 1)[:, :pairs] + KEYS[0]
    values = torch.argsort(torch.rand(n, VALUES[1] - VALUES[0], generator=generator), 1)[:, :pairs] + VALUES[0]
    x = torch.zeros(n, LENGTH, dtype=torch.long)
    x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2] = keys, values
    width = 3 if fmt == "sep" else 2
    slots = (LENGTH - 2 * pairs) // width
    # the asked slots (sorted) and the order the keys are asked in, one random draw per sequence
    slot = torch.argsort(torch.rand(n, slots, generator=generator), 1)[:, :pairs].sort(1).values
    order = torch.argsort(torch.rand(n, pairs, generator=generator), 1)
    key_pos = 2 * pairs + width * slot
    val_pos = key_pos + width - 1
    asked_k, asked_v = keys.gather(1, order), values.gather(1, order)
    x.scatter_(1, key_pos, asked_k)
    if fmt == "sep":
        x.scatter_(1, key_pos + 1, torch.full_like(asked_k, SEP_ID))
    x.scatter_(1, val_pos, asked_v)
    target = torch.full_like(x, -100)
    at_key = torch.full_like(x, -100)
    if objective == "next":
        target.scatter_(1, val_pos - 1, asked_v)
    else:
        x.scatter_(1, val_pos, torch.full_like(asked_v, MASK_ID))
        target.scatter_(1, val_pos, asked_v)
        at_key.scatter_(1, key_pos, asked_v)
    return x, target, at_key


def run(a) -> list[dict]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    train = make_data(a.train_size, a.pairs, a.format, a.objective, gen)
    held = make_data(1000, a.pairs, a.format, a.objective, gen)
    model = stock_encoder(VOCAB, 128, a.heads, 4 * 128, a.layers, dropout=0.1, length=LENGTH, pos_std=a.pos_std)
    causal = a.objective == "next"
    mask = nn.Transformer.generate_square_subsequent_mask(LENGTH) if causal else None

    def forward(x):
        return model["out"](model["enc"](model["emb"](x) + model.pos, mask=mask, is_causal=causal))

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1)
    first = torch.zeros_like(held[1], dtype=torch.bool)  # each held-out sequence's first query
    first[torch.arange(1000), (held[1] >= 0).float().argmax(1)] = True
    curve, t0, step = [], time.perf_counter(), 0
    for epoch in range(1, a.epochs + 1):
        for idx in torch.randperm(a.train_size).split(64):
            logits = forward(train[0][idx]).flatten(0, 1)
            loss = F.cross_entropy(logits, train[1][idx].flatten(), ignore_index=-100)
            if a.aux_at_key:
                loss = loss + F.cross_entropy(logits, train[2][idx].flatten(), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            right = forward(held[0]).argmax(-1) == held[1]
        model.train()
        curve.append({"epoch": epoch, "step": step, "train_loss": round(float(loss.detach()), 4),
                      "accuracy": round(float(right[held[1] >= 0].float().mean()), 4),
                      "first_query": round(float(right[first].float().mean()), 4),
                      "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  epoch {epoch}: held-out accuracy {curve[-1]['accuracy']:.3f}", flush=True)
    return curve


def main(argv=None) -> int | None:
    a = parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    curve = run(a)
    setting = (f"objective {a.objective}, format {a.format}{', aux at key' if a.aux_at_key else ''}; {a.pairs} "
               f"pairs (chance {1 / a.pairs:.3f}); {a.layers} layers, {a.heads} heads; positions start at std "
               f"{a.pos_std:g}")
    print(f"\n{setting}; {machine()}")
    print_table(curve, [("epoch", "epoch", "d"), ("step", "step", "d"), ("train_loss", "train loss", ".3f"),
                        ("accuracy", "held-out acc", ".3f"), ("first_query", "first query", ".3f"),
                        ("seconds", "seconds", ".0f")])
    emit_json({"bench": "mqar_replica", "objective": a.objective, "format": a.format, "aux_at_key": a.aux_at_key,
               "pairs": a.pairs, "layers": a.layers, "heads": a.heads, "lr": a.lr, "pos_std": a.pos_std,
               "chance": 1 / a.pairs, "final_accuracy": curve[-1]["accuracy"], "curve": curve, "machine": machine()})


if __name__ == "__main__":
    sys.exit(main())
