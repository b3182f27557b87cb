"""bench/mqar_replica.py: its sequences are the benchmark's (and LLaDA's answer shape) exactly as documented.

The replica is the README's evidence that a lookup is learned in seconds when the answer sits at the asked key
and not when a token stands between them; these tests keep its data honest.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from conftest import REPO


@pytest.fixture(scope="module")
def replica(bench_import):
    return bench_import("mqar_replica")


@pytest.mark.parametrize("objective", ["next", "masked"])
@pytest.mark.parametrize("fmt", ["plain", "sep"])
@pytest.mark.parametrize("pairs", [2, 4, 8])
def test_answers_are_the_asked_keys_values_at_the_documented_positions(replica, objective, fmt, pairs):
    seed = random.randrange(2**31)
    x, target, at_key = replica.make_data(32, pairs, fmt, objective, torch.Generator().manual_seed(seed))
    assert x.shape == target.shape == at_key.shape == (32, replica.LENGTH)
    lo_k, hi_k = replica.KEYS
    width = 3 if fmt == "sep" else 2
    for row, tgt, aux in zip(x.tolist(), target.tolist(), at_key.tolist()):
        keys, values = row[0 : 2 * pairs : 2], row[1 : 2 * pairs : 2]
        assert len(set(keys)) == pairs and all(lo_k <= k < hi_k for k in keys), seed
        assert len(set(values)) == pairs and all(replica.VALUES[0] <= v < replica.VALUES[1] for v in values), seed
        key_pos = [i for i in range(2 * pairs, replica.LENGTH) if lo_k <= row[i] < hi_k]
        assert sorted(row[i] for i in key_pos) == sorted(keys), seed  # each key asked once
        scored = [i for i, t in enumerate(tgt) if t != -100]
        assert len(scored) == pairs, seed
        for i in key_pos:
            want = values[keys.index(row[i])]
            answer = i + width - 1  # where the value stands in the sequence
            if fmt == "sep":
                assert row[i + 1] == replica.SEP_ID, seed
            if objective == "next":  # predicted one position before the value: the key, or the separator
                assert row[answer] == want and tgt[answer - 1] == want, seed
                assert all(t == -100 for t in aux), seed
            else:  # masked in place, and predicted there; the auxiliary target sits on the key
                assert row[answer] == replica.MASK_ID and tgt[answer] == want and aux[i] == want, seed
    assert (x[:, 2 * pairs :] != 0).sum() == 32 * pairs * width  # nothing else in the query part


def test_flags_are_checked_before_any_training():
    script = str(REPO / "bench" / "mqar_replica.py")
    for flags, name in ((["--aux-at-key"], "--aux-at-key"), (["--pairs", "40"], "--pairs"),
                        (["--heads", "3"], "--heads"), (["--pos-std", "-1"], "--pos-std")):
        r = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and name in r.stderr, (flags, r.stderr)
