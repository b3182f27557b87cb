"""A quick held-out check during training: free-form recall and multiple choice per kind, by real sampling.

Uses the sampler, the runners' ARC prompt and their reader parser, at the runners' setting (gen_length 32, 8
steps, greedy), on the first ``n`` held-out problems of each kind. The published figures come from the runners
themselves (``run_all.sh``); this is the learning curve.
"""

from __future__ import annotations

import torch

from ..evaluation.answers import parse_choice
from ..evaluation.tasks import TASKS
from ..synthetic import KINDS, heldout_problems, to_row


@torch.no_grad()
def quick_eval(model, tokenizer, n: int = 32, kinds: tuple[str, ...] = KINDS, batch_size: int = 64) -> dict:
    """``{"recall_free": em, "<kind>": mc accuracy, ...}`` in [0, 1]."""
    from ..loading import encode_prompts
    from ..sampling import generate

    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")

    def answers(prompts):
        out = []
        for i in range(0, len(prompts), batch_size):
            ids, mask = encode_prompts(tokenizer, prompts[i : i + batch_size], True, next(model.parameters()).device)
            x = generate(model, ids, mask, steps=8, gen_length=32, block_length=32, eot_token_id=eot,
                         confidence_eos_eot_inf=True)
            out += [t.strip() for t in tokenizer.batch_decode(x[:, ids.shape[1]:], skip_special_tokens=True)]
        return out

    was_training = model.training
    model.eval()
    result = {}
    if "recall" in kinds:
        problems = heldout_problems("recall", n)
        got = answers([p.question for p in problems])
        result["recall_free"] = sum(g == p.answer for g, p in zip(got, problems)) / n
    for kind in kinds:
        problems = heldout_problems(kind, n)
        items = [TASKS["arc_challenge"].make_item(i, to_row(p, "arc_challenge", i)) for i, p in enumerate(problems)]
        got = answers([it.prompt for it in items])
        result[kind] = sum(parse_choice(g, 4, list(it.choices)) == it.gold for g, it in zip(got, items)) / n
    model.train(was_training)
    return result
