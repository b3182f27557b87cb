"""bench/lookup_probe.py: its task generators are right, and the model learns a positional head through it.

The probe is the evidence behind the README's account of why the tiny LLaDA does not learn key lookup; these
tests keep its data honest and guard the property it relies on (attention trains through position).
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from conftest import REPO

TINY = REPO / "checkpoints" / "llada-tiny"


@pytest.fixture(scope="module")
def probe(bench_import):
    return bench_import("lookup_probe")


@pytest.mark.parametrize("pairs,sep,gap,asked", [(2, 0, 0, None), (5, 0, 0, None), (8, 0, 0, None),
                                                  (4, 1, 6, 1), (6, 2, 3, 4), (3, 0, 6, None)])
def test_recall_batch_answers_are_the_asked_keys_values(probe, pairs, sep, gap, asked):
    """Read each row back token by token: the list, its separators, then per asked key the fillers and a masked
    answer whose target is that key's value."""
    seed = random.randrange(2**31)
    x, y = probe.make_batch("recall", 64, pairs, 2474, 2464, torch.Generator().manual_seed(seed),
                            sep=sep, gap=gap, asked=asked)
    n_asked = pairs if asked is None else asked
    ctx, block = pairs * (2 + sep), 2 + gap
    assert x.shape == y.shape == (64, ctx + n_asked * block)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0:ctx:2 + sep], row_x[1 + sep:ctx:2 + sep]
        assert all(row_x[i + 1 + j] == probe.SEP_ID for i in range(0, ctx, 2 + sep) for j in range(sep)), seed
        assert len(set(keys)) == pairs and all(probe.KEY0 <= k < probe.KEY0 + probe.N_KEYS for k in keys), seed
        assert all(probe.VALUE0 <= v < probe.VALUE0 + probe.N_VALUES for v in values), seed
        asked_keys = row_x[ctx::block]
        assert len(set(asked_keys)) == n_asked and set(asked_keys) <= set(keys), seed
        for b in range(ctx, len(row_x), block):
            assert row_x[b + 1 : b + 1 + gap] == list(range(probe.FILL_ID, probe.FILL_ID + gap)), seed
            assert row_x[b + 1 + gap] == 2464, seed  # the answer is masked
            assert row_y[b + 1 + gap] == values[keys.index(row_x[b])], seed
        assert sum(t != -100 for t in row_y) == n_asked, seed


def test_copy2_batch_targets_are_two_to_the_left(probe):
    x, y = probe.make_batch("copy2", 16, 2, 2474, 2464, torch.Generator().manual_seed(random.randrange(2**31)))
    assert (y[:, :2] == -100).all() and torch.equal(y[:, 2:], x[:, :-2])


def test_the_tiny_llada_shape_learns_a_positional_head(probe):
    """500 steps (about 45 s): copy-two-to-the-left goes from chance (1/2358) to > 90 % held-out (it is learned
    near step 400 on this seed). A broken RoPE or attention gradient would leave it at chance."""
    from transformers import AutoConfig

    args = probe.parse_args(["--config", str(TINY), "--steps", "500", "--eval-every", "500", "--threads", "2"])
    config = AutoConfig.from_pretrained(TINY, trust_remote_code=True)
    with torch.enable_grad():  # conftest runs every test under no_grad
        curve = probe.train("llada", "copy2", args, config)
    assert curve[-1]["accuracy"] > 0.9, curve


@pytest.mark.parametrize("asked", [None, 1])
def test_in_list_marks_every_value_of_the_list_asked_or_not(probe, asked):
    """The ``in list`` column's mask: exactly the values the list shows, also those whose key is not asked."""
    seed = random.randrange(2**31)
    pairs, sep = 5, 1
    x, _ = probe.make_batch("recall", 32, pairs, 2474, 2464, torch.Generator().manual_seed(seed), sep=sep,
                            asked=asked)
    mask = probe.list_values(x, 2474)
    for row, marked in zip(x.tolist(), mask):
        values = set(row[1 + sep:pairs * (2 + sep):2 + sep])
        assert set(torch.nonzero(marked).flatten().tolist()) == values, seed


@pytest.mark.parametrize("argv,flag", [(["--pairs", "1"], "--pairs"), (["--gap", "40"], "--gap"),
                                       (["--asked", "5", "--pairs", "4"], "--asked"),
                                       (["--prev-offsets", "0,1"], "--prev-offsets"),
                                       (["--prev-offsets", "one"], "--prev-offsets"),
                                       (["--prev-positions", "-1"], "--prev-positions must be >= 0")])
def test_bad_flag_is_one_line_exit_2(argv, flag):
    r = subprocess.run([sys.executable, str(REPO / "bench" / "lookup_probe.py"), *argv], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and flag in r.stderr, r.stderr
