"""The op never hides corruption: a NaN or +inf score makes its row NaN on every kernel, exactly where SDPA's row
is NaN; inputs it cannot compute (integer or mixed dtypes, split devices, head dim 0, a bad ``scaling``) are one
``ValueError`` naming them, checked on metadata only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from support_basis.llada import hybrid_triton
from support_basis.llada.hybrid_attention import hybrid_attention

# NumPy (under Triton's interpreter) warns as the NaN goes through its matmul: that is the point here
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")]
KERNELS = ["auto", "eager"] + ([] if hybrid_triton.triton_error() or not hybrid_triton.interpreted() else ["triton"])


def corrupted(case: str, rng):
    q, k, v = (torch.randn(2, 2, 37, 16, generator=rng) for _ in range(3))
    bias = None
    if case == "nan q":
        q[0, 1, 5, 3] = float("nan")
    elif case == "inf q":
        q[1, 0, 9, 0] = float("inf")
    elif case == "nan k":
        k[0, 0, 20, 7] = float("nan")
    elif case == "nan v":
        v[1, 1, 3, 2] = float("nan")
    elif case == "nan bias":
        bias = torch.zeros(2, 1, 37, 37)
        bias[0, 0, 4, 30] = float("nan")
    elif case == "+inf bias":
        bias = torch.zeros(2, 1, 37, 37)
        bias[1, 0, 11, 2] = float("inf")
    return q, k, v, bias


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", ["nan q", "inf q", "nan k", "nan v", "nan bias", "+inf bias"])
@pytest.mark.parametrize("ratio", [0.2, 0.0])
def test_a_corrupt_input_reaches_exactly_the_rows_sdpa_spoils(rng, kernel, case, ratio):
    q, k, v, bias = corrupted(case, rng)
    out = hybrid_attention(q, k, v, bias, exact_ratio=ratio, chebyshev_degree=6, kernel=kernel)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    spoiled, expected = ~torch.isfinite(out).all(-1), ~torch.isfinite(want).all(-1)
    assert expected.any()
    assert torch.equal(spoiled, expected), (spoiled.nonzero().tolist(), expected.nonzero().tolist())


@pytest.mark.parametrize("args,message", [
    (dict(dtype=torch.int64), "must share one floating dtype.*got int64, int64, int64"),
    (dict(key_dtype=torch.float64), "must share one floating dtype.*got float32, float64, float32"),
    (dict(mask_device="meta"), "must be on one device.*cpu, cpu, cpu, meta"),
    (dict(dim=0), "head dimension must be at least 1"),
    (dict(scaling=float("nan")), "scaling must be a finite number > 0.*nan"),
    (dict(scaling=0.0), "scaling must be a finite number > 0.*0.0"),
    (dict(scaling=-1.0), "scaling must be a finite number > 0"),
    (dict(scaling=float("inf")), "scaling must be a finite number > 0.*inf"),
])
def test_inputs_it_cannot_compute_are_one_error_naming_them(rng, args, message):
    dim = args.get("dim", 8)
    q, k, v = (torch.randn(1, 2, 5, dim, generator=rng).to(args.get("dtype", torch.float32)) for _ in range(3))
    if "key_dtype" in args:
        k = k.to(args["key_dtype"])
    mask = torch.ones(5, 5, dtype=torch.bool, device=args["mask_device"]) if "mask_device" in args else None
    with pytest.raises(ValueError, match=message):
        hybrid_attention(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6, scaling=args.get("scaling"))
