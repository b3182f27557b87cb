#!/usr/bin/env python
"""Can a model of the shipped tiny LLaDA's shape learn a key lookup at all? Two minimal tasks, two models.

    python bench/lookup_probe.py                           # 2,000 steps per (model, task), about 7 minutes
    python bench/lookup_probe.py --steps 10000 --pairs 2 --models llada --tasks recall
    python bench/lookup_probe.py --steps 1000 --models llada --tasks recall --prev-aux 1 --embedding-std 1
    python bench/lookup_probe.py --steps 3000 --models llada --tasks recall --pairs 4 --prev-aux 1 \
        --embedding-std 1 --sep 1 --gap 6 --asked 1 --prev-offsets 1,2      # the SFT prompt's layout

The tiny LLaDA (``checkpoints/llada-tiny``) answers comparisons above chance and key-value recall at chance. This
separates the lookup from everything else the SFT recipe involves (chat template, EOS filling, the 1/t weight,
the answer format) by training fresh models on bare token sequences, with no tokenizer and no template:

- ``copy2``: 24 random tokens; every position predicts the token two to its left (a purely *positional* head:
  attend to offset -2, copy).
- ``recall``: minimal masked associative recall (MQAR): ``k1 v1 ... kn vn  q1 [M] ... qn [M]``: n distinct keys
  (26 ids), values (90 ids), the same keys asked again in a random order, every answer value masked, predicted
  at its own position as LLaDA does. Answering needs a *content* lookup: bind each value to its key (a
  previous-token head), then match the asked key. Chance is 1/n; a model that has only learned "one of the
  list's values" scores exactly that, with its guesses in the list (the ``in list`` column).

Two levers on the recall task (both off by default), measured together and apart:

- ``--embedding-std S``: the token embeddings start as N(0, S^2) instead of the model's own init (this project's
  LLaDA code: std 1/sqrt(d_model), 0.088 at d_model 128; PyTorch's encoder: 1);
- ``--prev-aux W``: add W x a previous-token read-out loss (``support_basis.training.aux.PreviousTokenProbe``,
  offset 1, from the first block's output), so the hop that the lookup needs before its match is supervised
  directly. The ``prev`` column is that read-out's held-out accuracy (``--prev-offsets`` picks the offsets,
  ``--prev-positions N`` trains them on N random positions per sequence instead of all).

The recall layout can be moved toward the SFT prompt's ("In the list c=41, q=73, ... what is the value of q?" in
the chat template): ``--sep 1`` puts a separator between each key and its value ("q=73"), ``--gap 6`` six fixed
filler tokens between the asked key and its masked answer ("?", end of turn, the assistant header, a blank line),
``--asked 1`` asks one key per sequence instead of all of them.

Models, both fresh random inits of the same shape (d_model, layers, heads, MLP from the checkpoint's config):
``llada`` is this project's model code (RoPE, RMSNorm, SwiGLU, exact attention); ``stock`` is PyTorch's own
``nn.TransformerEncoder`` with learned absolute positions, a control for a bug in ours. AdamW, lr ``--lr`` with
100 warm-up steps, ``--batch-size`` sequences a step, held-out accuracy on 512 fixed sequences every
``--eval-every`` steps. Prints the curves, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import REPO, emit_json, machine, print_table, stock_encoder

from support_basis.errors import MAX_OFFSET, ArgumentParser, parse_offsets  # one-line errors, exit 2

TASKS = ("copy2", "recall")
MODELS = ("llada", "stock")
N_KEYS, N_VALUES = 26, 90
COPY_IDS = (100, 16)  # copy2 draws token ids from [100, vocab - 16)
SEP_ID, FILL_ID = 90, 60  # recall's separator and filler ids
KEY0, VALUE0 = 100, 200  # recall's keys are ids KEY0 .. KEY0 + 25, its values VALUE0 .. VALUE0 + 89


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "checkpoints" / "llada-tiny"),
                   help="model directory whose config gives the shape (default: the shipped tiny LLaDA)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of: " + ", ".join(TASKS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--pairs", type=int, default=2, help="recall: key-value pairs per sequence (default 2)")
    p.add_argument("--sep", type=int, default=0, help="recall: separator tokens between a key and its value (default 0)")
    p.add_argument("--gap", type=int, default=0,
                   help="recall: filler tokens between an asked key and its masked answer (default 0)")
    p.add_argument("--asked", type=int, default=0, help="recall: keys asked per sequence (default 0 = all of them)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--prev-aux", type=float, default=0.0,
                   help="weight of a previous-token read-out loss on the first block's output (default 0 = off)")
    p.add_argument("--prev-offsets", default="1",
                   help="with --prev-aux: comma-separated offsets the read-outs look left (default 1)")
    p.add_argument("--prev-positions", type=int, default=0,
                   help="with --prev-aux: positions per sequence the read-outs train on, drawn each step "
                   "(default 0 = every position)")
    p.add_argument("--embedding-std", type=float, default=0.0,
                   help="re-draw the token embeddings with this standard deviation (default 0 = the model's init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (the bench is fp32 throughout)")
    a = p.parse_args(argv)
    for name, allowed in (("models", MODELS), ("tasks", TASKS)):
        picked = [x for x in getattr(a, name).split(",") if x]
        bad = [x for x in picked if x not in allowed]
        if bad or not picked:
            p.error(f"--{name} {getattr(a, name)!r}: choose from {', '.join(allowed)}")
        setattr(a, name, picked)
    if min(a.steps, a.eval_every, a.batch_size) < 1:
        p.error(f"--steps, --eval-every and --batch-size must be >= 1; got {a.steps}, {a.eval_every}, "
                f"{a.batch_size}")
    if not 2 <= a.pairs <= N_KEYS:
        p.error(f"--pairs must be in [2, {N_KEYS}]; got {a.pairs}")
    for name, value, top in (("sep", a.sep, 8), ("gap", a.gap, 32), ("asked", a.asked, a.pairs)):
        if not 0 <= value <= top:
            p.error(f"--{name} must be in [0, {top}]; got {value}")
    raw, a.prev_offsets = a.prev_offsets, parse_offsets(a.prev_offsets)
    if not a.prev_offsets:
        p.error(f"--prev-offsets {raw!r}: give comma-separated offsets in [1, {MAX_OFFSET}], e.g. 1,2")
    if a.prev_positions < 0:
        p.error(f"--prev-positions must be >= 0 (0 = every position); got {a.prev_positions}")
    if not 0 < a.lr <= 1:
        p.error(f"--lr must be in (0, 1]; got {a.lr}")
    for name in ("prev_aux", "embedding_std"):
        if not 0 <= getattr(a, name) <= 100:
            p.error(f"--{name.replace('_', '-')} must be in [0, 100] (0 = off); got {getattr(a, name)}")
    if not (Path(a.config) / "config.json").is_file():
        p.error(f"--config {a.config}: no config.json there; give a LLaDA-BS model directory")
    return a


def make_batch(task: str, size: int, pairs: int, vocab: int, mask_id: int, generator, device="cpu",
               sep: int = 0, gap: int = 0, asked: int | None = None):
    """``(inputs, targets)``, both ``(size, L)`` long on ``device`` (drawn on the CPU ``generator``); targets are
    -100 where there is no loss.

    Recall layout: ``k1 [=]*sep v1 ... kn [=]*sep vn`` then, for each of ``asked`` keys (default all ``pairs``, in a
    random order), ``q [f1 .. f_gap] [M]``: ``sep`` copies of one separator token between a key and its value (the
    SFT prompt's "q=73" has one), ``gap`` fixed filler tokens between an asked key and its masked answer (the
    free-form SFT prompt has six: "?", end of turn, the assistant header, a blank line)."""
    import torch

    if task == "copy2":
        x = torch.randint(COPY_IDS[0], vocab - COPY_IDS[1], (size, 24), generator=generator)
        target = torch.full_like(x, -100)
        target[:, 2:] = x[:, :-2]
        return x.to(device), target.to(device)
    asked = pairs if asked is None else asked
    keys = torch.argsort(torch.rand(size, N_KEYS, generator=generator), dim=1)[:, :pairs] + KEY0
    values = torch.randint(0, N_VALUES, (size, pairs), generator=generator) + VALUE0
    order = torch.argsort(torch.rand(size, pairs, generator=generator), dim=1)[:, :asked]
    seps = torch.full((size, pairs, sep), SEP_ID)
    context = torch.cat([keys[..., None], seps, values[..., None]], -1).flatten(1)
    fill = torch.arange(FILL_ID, FILL_ID + gap).expand(size, asked, gap)
    question = torch.cat([keys.gather(1, order)[..., None], fill, values.gather(1, order)[..., None]], -1)
    x = torch.cat([context, question.flatten(1)], 1)
    answer = torch.zeros_like(x, dtype=torch.bool)
    answer[:, context.shape[1] + gap + 1 :: gap + 2] = True
    return x.masked_fill(answer, mask_id).to(device), torch.where(answer, x, -100).to(device)


def list_values(x, vocab: int):
    """Recall inputs ``x (B, L)`` -> ``(B, vocab)`` bool: which ids are values of each sequence's list (read from
    the list itself, so every value counts whether or not its key is asked; masked answers are never values)."""
    import torch

    is_value = (x >= VALUE0) & (x < VALUE0 + N_VALUES)
    out = torch.zeros(x.shape[0], vocab, dtype=torch.bool, device=x.device)
    out.scatter_(1, torch.where(is_value, x, 0), True)
    out[:, 0] = False  # id 0 (never a value) stood in for every other token
    return out


def build(name: str, config):
    """``(forward, module)``: ``forward(x)`` -> ``(logits (B, L, V), hidden states)``, the latter a tuple whose
    entry 1 is the first block's output (as the model's own ``output_hidden_states``)."""
    from transformers import AutoModel

    if name == "llada":
        model = AutoModel.from_config(config, trust_remote_code=True)
        model.config.hybrid_exact_ratio = 1.0  # exact attention: this probes learning, not the approximation

        def forward(x):
            out = model(x, output_hidden_states=True)
            return out.logits, out.hidden_states

        return forward, model
    stock = stock_encoder(config.vocab_size, config.d_model, config.n_heads, config.effective_mlp_hidden_size,
                          config.n_layers, dropout=0.0)

    def forward(x):
        hidden = [stock["emb"](x) + stock.pos[: x.shape[1]]]
        for layer in stock["enc"].layers:
            hidden.append(layer(hidden[-1]))
        return stock["out"](hidden[-1]), tuple(hidden)

    return forward, stock


def train(name: str, task: str, a, config) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from support_basis.training.aux import PreviousTokenProbe

    torch.manual_seed(a.seed)
    forward, module = build(name, config)
    if a.embedding_std:
        with torch.no_grad():
            (module["emb"] if name == "stock" else module.get_input_embeddings()).weight.normal_(0, a.embedding_std)
    readout = (PreviousTokenProbe(config.d_model, config.vocab_size, a.prev_offsets, 1, a.prev_positions)
               .to(a.device) if a.prev_aux else None)
    positions = torch.Generator(device=a.device).manual_seed(a.seed + 2)  # the read-outs' sampled positions
    module.to(a.device)
    params = list(module.parameters()) + (list(readout.parameters()) if readout is not None else [])
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.Generator().manual_seed(a.seed + 1)
    layout = {"sep": a.sep, "gap": a.gap, "asked": a.asked or None}
    held_x, held_y = make_batch(task, 512, a.pairs, config.vocab_size, config.mask_token_id,
                                torch.Generator().manual_seed(10_000 + a.seed), a.device, **layout)
    in_list = list_values(held_x, config.vocab_size)
    curve, t0 = [], time.perf_counter()
    for step in range(1, a.steps + 1):
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, step / 100)
        x, y = make_batch(task, a.batch_size, a.pairs, config.vocab_size, config.mask_token_id, data, a.device,
                          **layout)
        logits, hidden = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        total = loss if readout is None else loss + a.prev_aux * readout(hidden, x, positions)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            module.eval()
            with torch.no_grad():
                logits, hidden = forward(held_x)
                guess = logits.argmax(-1)
                prev = None if readout is None else readout.accuracy(hidden, held_x)
            module.train()
            scored = held_y >= 0
            listed = float(in_list.gather(1, guess)[scored].float().mean()) if task == "recall" else None
            curve.append({"model": name, "task": task, "step": step, "train_loss": round(float(loss.detach()), 4),
                          "accuracy": round(float((guess == held_y)[scored].float().mean()), 4),
                          "in_list": None if listed is None else round(listed, 4),
                          "prev": None if prev is None else round(prev, 4),
                          "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {name} {task} step {step}: held-out accuracy {curve[-1]['accuracy']:.3f}", flush=True)
    return curve


def main(argv=None) -> int | None:
    a = parse_args(argv)
    import torch
    from transformers import AutoConfig

    try:
        device = torch.device(a.device)
    except RuntimeError:
        device = None
    if device is None or (device.type == "cuda" and not torch.cuda.is_available()):
        print(f"lookup_probe.py: error: --device {a.device}: not a usable device here (cuda available: "
              f"{torch.cuda.is_available()}); use --device cpu", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    config = AutoConfig.from_pretrained(a.config, trust_remote_code=True)
    rows = []
    for task in a.tasks:
        for name in a.models:
            rows += train(name, task, a, config)
    chance = {"copy2": 1 / (config.vocab_size - sum(COPY_IDS)), "recall": 1 / a.pairs}
    print(f"\nfresh models of shape d_model {config.d_model}, {config.n_layers} layers, {config.n_heads} heads; "
          f"recall with {a.pairs} pairs (chance {chance['recall']:.3f}), {a.asked or a.pairs} asked, sep {a.sep}, "
          f"gap {a.gap}; previous-token read-out weight {a.prev_aux:g} at offsets {a.prev_offsets}"
          f"{'' if not a.prev_positions else f' on {a.prev_positions} positions a sequence'}; "
          f"embeddings {'as initialised' if not a.embedding_std else f'std {a.embedding_std:g}'}; "
          f"{machine()}")
    print_table(rows,
                [("model", "model", "s"), ("task", "task", "s"), ("step", "step", "d"),
                 ("train_loss", "train loss", ".3f"), ("accuracy", "held-out acc", ".3f"),
                 ("in_list", "in list", ".3f"), ("prev", "prev", ".3f"), ("seconds", "seconds", ".0f")])
    final = {f"{r['model']}/{r['task']}": r["accuracy"] for r in rows if r["step"] == a.steps}
    emit_json({"bench": "lookup_probe", "steps": a.steps, "pairs": a.pairs, "lr": a.lr, "batch_size": a.batch_size,
               "prev_aux": a.prev_aux, "prev_offsets": a.prev_offsets,
               "prev_positions": a.prev_positions, "embedding_std": a.embedding_std,
               "sep": a.sep, "gap": a.gap, "asked": a.asked or a.pairs,
               "chance": chance, "final_accuracy": final, "curves": rows, "machine": machine()})


if __name__ == "__main__":
    sys.exit(main())
