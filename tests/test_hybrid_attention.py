"""The op against its float64 reference, and every clause of its contract."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import support_basis.llada.hybrid_attention as ha
from support_basis.llada import hybrid_fit, hybrid_native
from support_basis.llada.hybrid_attention import hybrid_attention, hybrid_thresholds
from support_basis.llada.hybrid_native import native_error, native_library
from support_basis.reference import chebval, hybrid_attention_reference, reference_chebfit_exp, reference_empirical_fit


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def qkv(rng, b, h, hkv, lq, lk, d, dtype=torch.float32, q_scale=1.5, dv=None):
    q = (torch.randn(b, h, lq, d, generator=rng) * q_scale).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=rng).to(dtype)
    v = torch.randn(b, hkv, lk, dv or d, generator=rng).to(dtype)
    return q, k, v


def make_mask(kind: str, rng, b, lq, lk):
    if kind == "none":
        return None
    if kind == "key_padding":  # (B, 1, 1, Lk) bool, as many HF models pass it
        keep = torch.ones(b, 1, 1, lk, dtype=torch.bool)
        keep[0, ..., : lk // 3] = False
        return keep
    if kind == "random_bool":
        m = torch.rand(b, 1, lq, lk, generator=rng) > 0.3
        m[:, :, 1] = False  # a fully masked row
        return m
    if kind == "causal":
        return torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    if kind == "float_bias":  # real-valued bias plus HF-style finfo.min masking
        bias = torch.randn(b, 1, lq, lk, generator=rng)
        bias[..., -2:] = torch.finfo(torch.float32).min
        return bias
    raise ValueError(kind)


@pytest.fixture(params=["auto", "eager"])
def kernel(request):
    """The kernel a test names: ``auto``, what users get (on this CPU the native C kernel for fp32/bf16/fp16 without
    autograd, built here with the system C compiler; eager torch for float64 and autograd), and eager torch. The
    compiled kernel is held to eager below (it compiles for 20-40 s)."""
    if request.param == "auto":
        assert native_library() is not None, native_error()
        assert ha.select_kernel("auto", torch.device("cpu"), torch.float32, False) == "native"
    return request.param


def run(kernel: str, *args, **kwargs) -> torch.Tensor:
    """``hybrid_attention`` with the named kernel."""
    return hybrid_attention(*args, kernel=kernel, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# fast op == reference (grids small enough that the thresholds are the exact k-th values)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 4, 4, 37, 37, 16), (1, 8, 2, 20, 45, 32), (3, 2, 1, 64, 64, 8)])
@pytest.mark.parametrize("mask_kind", ["none", "key_padding", "random_bool", "causal", "float_bias"])
@pytest.mark.parametrize("ratio,degree", [(0.2, 6), (0.2, 4), (0.0, 6), (0.5, 2), (0.1, 1), (0.3, 10)])
def test_matches_float64_reference(rng, kernel, shape, mask_kind, ratio, degree):
    b, h, hkv, lq, lk, d = shape
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d)
    mask = make_mask(mask_kind, rng, b, lq, lk)
    ref = hybrid_attention_reference(q, k, v, mask, exact_ratio=ratio, chebyshev_degree=degree)
    # float64 inputs isolate the logic from rounding; fp32 is the production precision
    out64 = run(kernel, q.double(), k.double(), v.double(), mask, exact_ratio=ratio, chebyshev_degree=degree)
    out32 = run(kernel, q, k, v, mask, exact_ratio=ratio, chebyshev_degree=degree)
    assert out32.dtype == torch.float32 and out32.shape == (b, h, lq, d)
    assert rel_err(out64, ref) < 1e-9
    assert rel_err(out32, ref) < 5e-6


@pytest.mark.parametrize("shape", [(2, 4, 4, 37, 37, 16), (1, 8, 2, 20, 45, 32)])
@pytest.mark.parametrize("mask_kind", ["none", "random_bool", "float_bias"])
@pytest.mark.parametrize("split,fit", [(0.75, "chebyshev"), (0.5, "empirical"), (0.75, "empirical"), (1.0, "empirical"),
                                       (0.0, "chebyshev"), (0.9, "empirical")])
@pytest.mark.parametrize("ratio,degree", [(0.2, 6), (0.2, 2), (0.0, 4), (0.3, 12)])
def test_knobs_beyond_the_paper_match_the_reference(rng, kernel, shape, mask_kind, split, fit, ratio, degree):
    """exact_split and fit="empirical" (both opt-in) follow the reference's definition, on every kernel."""
    b, h, hkv, lq, lk, d = shape
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d)
    mask = make_mask(mask_kind, rng, b, lq, lk)
    kw = dict(exact_ratio=ratio, chebyshev_degree=degree, exact_split=split, fit=fit)
    ref = hybrid_attention_reference(q, k, v, mask, **kw)
    out64 = run(kernel, q.double(), k.double(), v.double(), mask, **kw)
    out32 = run(kernel, q, k, v, mask, **kw)
    assert rel_err(out64, ref) < 1e-9
    assert rel_err(out32, ref) < 5e-6


def test_exact_split_moves_the_budget_between_the_ends(rng):
    """Small grid: floor((1 - split) * ratio * n) scores below the interval and floor(split * ratio * n) above."""
    q, k, _ = qkv(rng, 1, 3, 3, 30, 33, 16)
    mask = make_mask("random_bool", rng, 1, 30, 33)
    s = q.double() @ k.double().transpose(-1, -2) / 4.0
    for ratio, split in [(0.2, 0.5), (0.2, 0.75), (0.3, 1.0), (0.1, 0.0), (0.2, 0.9)]:
        lo, hi = hybrid_thresholds(q.double(), k.double(), mask, exact_ratio=ratio, exact_split=split)
        for h in range(3):
            vals = s[0, h][mask[0, 0]]
            n = vals.numel()
            assert int((vals < lo[0, h]).sum()) == math.floor((1 - split) * ratio * n)
            assert int((vals > hi[0, h]).sum()) == math.floor(split * ratio * n)


def test_empirical_fit_beats_the_uniform_fit_where_the_scores_lie(rng):
    """The empirical fit minimises the error over the head's own scores: its weights there are closer to exp."""
    q, k, v = qkv(rng, 1, 4, 4, 48, 48, 16)
    exact = hybrid_attention_reference(q, k, v, exact_ratio=1.0, chebyshev_degree=1)
    for degree in (2, 4, 6):
        errs = {fit: rel_err(hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=degree, fit=fit), exact)
                for fit in ha.FITS}
        assert errs["empirical"] < errs["chebyshev"], (degree, errs)


def test_empirical_fit_is_the_least_squares_solution_on_the_points(rng):
    """The moment-based normal equations equal a plain least-squares solve on the points' Chebyshev basis."""
    t = torch.rand(3, 500, generator=rng, dtype=torch.float64) ** 2 * 2 - 1  # clustered near -1
    weight = torch.rand(3, 500, generator=rng) > 0.2
    half = torch.tensor([0.5, 3.0, 9.0], dtype=torch.float64)
    for degree in (1, 4, 9):
        fast = hybrid_fit.fit_empirical(half, t, weight, degree)
        for i in range(3):
            uniform = reference_chebfit_exp(-half[i].item(), half[i].item(), degree)
            ref = reference_empirical_fit(t[i][weight[i]], half[i].item(), uniform)
            assert (fast[i] - ref).abs().max() < 1e-8 * ref.abs().max(), (degree, i)
    # no points at all: the paper's fit
    none = hybrid_fit.fit_empirical(half, t, torch.zeros_like(weight), 6)
    assert torch.allclose(none, hybrid_fit.fit_chebyshev(half, 6), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_half_precision_inputs(rng, dtype, tol):
    q, k, v = qkv(rng, 2, 4, 2, 40, 40, 32, dtype=dtype)
    mask = make_mask("key_padding", rng, 2, 40, 40)
    out = hybrid_attention(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6)
    assert out.dtype == dtype
    ref = hybrid_attention_reference(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6)
    assert rel_err(out, ref) < tol


@pytest.mark.parametrize("mask_kind", ["none", "random_bool", "float_bias", "causal"])
def test_ratio_one_is_exact_softmax(rng, mask_kind):
    q, k, v = qkv(rng, 2, 4, 2, 30, 30, 16)
    mask = make_mask(mask_kind, rng, 2, 30, 30)
    out = hybrid_attention(q, k, v, mask, exact_ratio=1.0, chebyshev_degree=6)
    ref = hybrid_attention_reference(q, k, v, mask, exact_ratio=1.0, chebyshev_degree=6)
    assert rel_err(out, ref) < 2e-6
    if mask_kind == "random_bool":
        assert torch.all(out[:, :, 1] == 0)  # fully masked row


def test_high_degree_approaches_exact(rng):
    """With every score approximated, raising the degree drives the output to exact attention."""
    q, k, v = qkv(rng, 1, 2, 2, 48, 48, 16, q_scale=1.0)
    exact = hybrid_attention_reference(q, k, v, exact_ratio=1.0, chebyshev_degree=1)
    errs = [rel_err(hybrid_attention(q, k, v, exact_ratio=0.0, chebyshev_degree=g), exact) for g in (2, 4, 8, 12)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-5, errs


def test_chebyshev_fit_matches_least_squares_on_4096_nodes():
    t = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    for half in (0.3, 2.0, 7.5):
        for degree in (1, 3, 6, 12):
            a = hybrid_fit.exp_monomial_coefficients(torch.tensor([half], dtype=torch.float64), degree)[0]
            fast = sum(a[j] * t**j for j in range(degree + 1))
            ref = chebval(t, reference_chebfit_exp(-half, half, degree))
            assert (fast - ref).abs().max() < 1e-11 * math.exp(0)  # exp(s - hi) <= 1 on the interval


# ---------------------------------------------------------------------------------------------------------------
# the contract's clauses
# ---------------------------------------------------------------------------------------------------------------


def attention_weights(q, k, mask, **kw):
    """The op's weight matrix, read out by attending to one-hot values (V = identity)."""
    b, _, _, _ = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    eye = torch.eye(lk, dtype=q.dtype).expand(b, hkv, lk, lk)
    return hybrid_attention(q, k, eye, mask, **kw)


@pytest.mark.parametrize("ratio,degree", [(0.2, 6), (0.0, 2), (0.4, 1)])
def test_weights_nonnegative_rows_sum_to_one_masked_pairs_zero(rng, ratio, degree):
    q, k, _ = qkv(rng, 2, 3, 3, 25, 25, 8, q_scale=3.0)
    mask = make_mask("random_bool", rng, 2, 25, 25)
    w = attention_weights(q, k, mask, exact_ratio=ratio, chebyshev_degree=degree)
    assert torch.all(w >= 0)
    valid_rows = mask.any(-1).expand(2, 3, 25)
    sums = w.sum(-1)
    assert torch.allclose(sums[valid_rows], torch.ones(()), atol=1e-5)
    assert torch.all(sums[~valid_rows] == 0)
    assert torch.all(w[~mask.expand_as(w)] == 0)


def test_realised_exact_fraction_follows_the_contract(rng):
    """Small grid: exactly floor(ratio/2 * n) scores at each end fall outside the interval."""
    q, k, _ = qkv(rng, 1, 3, 3, 30, 33, 16)
    mask = make_mask("random_bool", rng, 1, 30, 33)
    for ratio in (0.1, 0.2, 0.5):
        lo, hi = hybrid_thresholds(q.double(), k.double(), mask, exact_ratio=ratio)
        s = q.double() @ k.double().transpose(-1, -2) / 4.0
        for h in range(3):
            vals = s[0, h][mask[0, 0]]
            kk = math.floor(ratio / 2 * vals.numel())
            assert int((vals < lo[0, h]).sum()) == kk and int((vals > hi[0, h]).sum()) == kk


@pytest.mark.parametrize("dist", ["gaussian", "heavy_tailed", "low_rank"])
@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5])
def test_sampled_thresholds_keep_the_exact_fraction_within_four_standard_deviations(rng, dist, ratio):
    """Large grid (G > num_samples): the realised exact fraction stays within 4 sqrt(r (1 - r) / M) of r."""
    lq = lk = 256  # 65536 scores per head > 8192 samples
    h, d = 4, 32
    if dist == "gaussian":
        q, k = torch.randn(1, h, lq, d, generator=rng), torch.randn(1, h, lk, d, generator=rng)
    elif dist == "heavy_tailed":  # Student-t entries, a few huge rows: the regime support basis targets
        t = torch.distributions.StudentT(2.5)
        q, k = t.sample((1, h, lq, d)), t.sample((1, h, lk, d))
    else:  # strongly structured scores (a few directions dominate)
        base = torch.randn(1, h, 3, d, generator=rng)
        q = torch.randn(1, h, lq, 3, generator=rng) @ base + 0.1 * torch.randn(1, h, lq, d, generator=rng)
        k = torch.randn(1, h, lk, 3, generator=rng) @ base
    lo, hi = hybrid_thresholds(q, k, exact_ratio=ratio)
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    frac = ((s < lo[..., None, None]) | (s > hi[..., None, None])).double().mean((-2, -1))
    assert torch.all((frac - ratio).abs() <= 4 * math.sqrt(ratio * (1 - ratio) / ha.DEFAULT_NUM_SAMPLES)), frac


def test_fast_op_matches_reference_given_its_sampled_thresholds(rng):
    q, k, v = qkv(rng, 1, 2, 1, 200, 210, 16)
    mask = make_mask("key_padding", rng, 1, 200, 210)
    th = hybrid_thresholds(q.double(), k.double(), mask, exact_ratio=0.2)
    ref = hybrid_attention_reference(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6, thresholds=th)
    out = hybrid_attention(q.double(), k.double(), v.double(), mask, exact_ratio=0.2, chebyshev_degree=6)
    assert rel_err(out, ref) < 1e-9


@pytest.mark.parametrize("lengths", [(7, 19, 30), (40, 181, 230)])  # 181^2 > 8192: the sampled regime too
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("split,fit", [(0.5, "chebyshev"), (0.8, "empirical")])
def test_padded_batch_equals_each_sequence_alone(rng, kernel, lengths, side, split, fit):
    h, d, l = 4, 16, max(lengths)
    q, k, v = qkv(rng, len(lengths), h, 2, l, l, d)
    keep = torch.zeros(len(lengths), l, dtype=torch.bool)
    for i, n in enumerate(lengths):
        keep[i, l - n :] = True if side == "left" else False
        keep[i, :n] = True if side == "right" else keep[i, :n]
    mask = (keep[:, :, None] & keep[:, None, :])[:, None]  # padded keys AND queries, as the model passes it
    kw = dict(exact_ratio=0.2, chebyshev_degree=6, exact_split=split, fit=fit)
    batch = run(kernel, q, k, v, mask, **kw)
    for i in range(len(lengths)):
        idx = keep[i].nonzero()[:, 0]
        alone = run(kernel, q[i : i + 1, :, idx], k[i : i + 1, :, idx], v[i : i + 1, :, idx], **kw)
        assert (batch[i : i + 1, :, idx] - alone).abs().max() <= 1e-5
        assert torch.all(batch[i, :, ~keep[i]] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_no_nan_or_inf_for_extreme_inputs(rng, kernel, dtype):
    q, k, v = qkv(rng, 2, 2, 2, 24, 24, 8)
    q = q * 1e3  # scores around +-1e4
    if dtype == torch.float16:
        q = q.clamp(-6e4, 6e4)
    mask = make_mask("random_bool", rng, 2, 24, 24)
    mask[1] = False  # a fully masked batch element
    for ratio, degree, fit in [(0.2, 6, "chebyshev"), (0.0, 3, "chebyshev"), (0.02, 12, "chebyshev"),
                               (0.2, 300, "chebyshev"), (0.2, 6, "empirical"), (0.1, 200, "empirical")]:
        out = run(kernel, q.to(dtype), k.to(dtype), v.to(dtype), mask, exact_ratio=ratio, chebyshev_degree=degree,
                               fit=fit)
        assert torch.isfinite(out).all()
        assert torch.all(out[1] == 0) and torch.all(out[:, :, 1] == 0)


@pytest.mark.parametrize("degree", [9, 40, 143, 400, ha.MAX_CHEBYSHEV_DEGREE])
def test_any_accepted_degree_is_stable(rng, kernel, degree):
    """Every accepted degree gives finite outputs that match the float64 reference (Clenshaw above degree 8; the
    monomial form this replaced was all NaN in fp32 from degree ~143). fp32 is as accurate at degree 1024 as at 9.
    With every score approximated on a wide interval (ratio 0), the rows whose scores lie far below the interval's
    top carry weights ~exp(-20) that fp32 resolves only to ~1e-7 of the top: about 2e-4 of output error, the same
    for every degree from 20 up."""
    q, k, v = qkv(rng, 1, 2, 2, 40, 40, 16, q_scale=3.0)  # wide intervals: the series converges only from ~40
    for ratio, tol32 in ((0.2, 5e-6), (0.0, 1e-3)):
        ref = hybrid_attention_reference(q, k, v, exact_ratio=ratio, chebyshev_degree=degree)
        out64 = run(kernel, q.double(), k.double(), v.double(), exact_ratio=ratio, chebyshev_degree=degree)
        assert rel_err(out64, ref) < 1e-9
        for dtype, tol in ((torch.float32, tol32), (torch.bfloat16, 2e-2)):
            out = run(kernel, q.to(dtype), k.to(dtype), v.to(dtype), exact_ratio=ratio, chebyshev_degree=degree)
            assert torch.isfinite(out).all() and rel_err(out, ref) < tol, (ratio, dtype, rel_err(out, ref))


def test_horner_and_clenshaw_evaluate_the_same_polynomial(rng):
    """The two evaluation schemes agree where both are accurate (degree <= 8), in fp32."""
    t = torch.rand(4, 1, 1000, generator=rng) * 2 - 1
    half = torch.tensor([0.5, 2.0, 6.0, 12.0], dtype=torch.float64)
    for degree in range(1, hybrid_fit.HORNER_MAX_DEGREE + 1):
        c = hybrid_fit.fit_chebyshev(half, degree)
        horner = ha._evaluate(hybrid_fit.evaluation_coefficients(c, degree).float()[:, None], t, degree)
        padded = F.pad(c, (0, hybrid_fit.HORNER_MAX_DEGREE + 1 - degree))  # the same series, of a degree Clenshaw takes
        clenshaw = ha._evaluate(padded.float()[:, None], t, hybrid_fit.HORNER_MAX_DEGREE + 1)
        exact = torch.stack([chebval(t[i].double(), c[i]) for i in range(4)])
        assert (horner.double() - exact).abs().max() < 2e-6
        assert (clenshaw.double() - exact).abs().max() < 2e-6


@pytest.mark.parametrize("mask_kind", ["none", "random_bool"])
@pytest.mark.parametrize("shape", [(0, 2, 2, 5, 5), (2, 2, 2, 0, 5), (2, 2, 2, 5, 0), (2, 4, 2, 0, 0)])
def test_empty_inputs_give_what_sdpa_gives(rng, kernel, shape, mask_kind):
    """An empty batch, Lq = 0 or Lk = 0: SDPA's result (empty, or zeros for Lk = 0), never an exception."""
    b, h, hkv, lq, lk = shape
    q, k, v = qkv(rng, b, h, hkv, lq, lk, 8)
    mask = None if mask_kind == "none" else torch.ones(b, 1, lq, lk, dtype=torch.bool)
    sdpa = F.scaled_dot_product_attention(q, k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1),
                                          attn_mask=mask)
    for ratio in (0.2, 1.0):
        out = run(kernel, q, k, v, mask, exact_ratio=ratio, chebyshev_degree=6)
        assert out.shape == sdpa.shape == (b, h, lq, 8) and torch.equal(out, torch.zeros_like(out))
        assert torch.equal(out, sdpa)
    lo, hi = hybrid_thresholds(q, k, mask, exact_ratio=0.2)
    assert lo.shape == hi.shape == (b, h)


def test_degenerate_scores_all_equal(rng):
    q = torch.zeros(1, 2, 10, 8)
    k, v = torch.randn(1, 2, 10, 8, generator=rng), torch.randn(1, 2, 10, 8, generator=rng)
    out = hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6)  # every score is 0: uniform weights
    assert torch.allclose(out, v.mean(-2, keepdim=True).expand_as(out), atol=1e-6)


def test_deterministic(rng, kernel):
    q, k, v = qkv(rng, 1, 4, 4, 300, 300, 16)
    a = run(kernel, q, k, v, exact_ratio=0.2, chebyshev_degree=6)
    b = run(kernel, q, k, v, exact_ratio=0.2, chebyshev_degree=6)
    assert torch.equal(a, b)


def test_kth_smallest_taken_is_the_rank_among_the_taken(rng):
    """The fixed-rank kthvalue trick of the masked path equals sorting each row's taken entries."""
    x = torch.randn(6, 300, generator=rng)
    take = torch.rand(6, 300, generator=rng) > torch.linspace(0.0, 1.0, 6)[:, None]  # 300 ... 0 taken
    for q in (0.0, 0.05, 0.1, 0.37):
        got = ha._kth_smallest_taken(x, take, q)
        for i in range(6):
            vals = torch.sort(x[i][take[i]]).values
            want = vals[math.floor(vals.numel() * q)] if vals.numel() else torch.tensor(math.inf)
            assert got[i] == want, (q, i)


def test_native_thresholds_are_the_order_statistics(rng):
    """The native selection (histogram of the top bits, then a select within one bin) against sorting: ties,
    -inf entries, per-row and shared take masks, rows with nothing taken, tiny and large rows."""
    assert native_library() is not None, native_error()
    for trial in range(60):
        m = [1, 2, 7, 300, 5000][trial % 5]
        x = torch.randn(4, m, generator=rng) * (10.0 ** (trial % 4 - 1))
        if trial % 3 == 0:
            x = torch.randint(-3, 4, (4, m), generator=rng).float()  # many ties
        if trial % 7 == 0:
            x[:, ::3] = -math.inf
        take = None if trial % 2 else torch.rand(4 if trial % 4 else 1, m, generator=rng) > 0.4
        q_lo, q_hi = [(0.1, 0.1), (0.0, 0.2), (0.25, 0.0), (0.03, 0.37)][trial % 4]
        # the sample: positions into each head's (Lq=3, Lk=m) scores, shared or per head, with repeats
        scores = torch.randn(4, 3, m, generator=rng)
        flat = torch.randint(0, 3 * m, (4 if trial % 3 else 1, m), generator=rng)
        scores.view(4, -1).scatter_(1, flat.expand(4, -1), x)  # so that the sampled values are x
        x = scores.view(4, -1).gather(1, flat.expand(4, -1))  # (repeated positions keep the last write)
        lo, hi = hybrid_native.native_thresholds(scores, flat, take, q_lo, q_hi)
        for r in range(4):
            keep = x[r] > -math.inf
            if take is not None:
                keep &= take[r if take.shape[0] > 1 else 0]
            vals = torch.sort(x[r][keep]).values
            n = vals.numel()
            if n == 0:
                assert lo[r] == hi[r] == math.inf
                continue
            assert lo[r] == vals[math.floor(n * q_lo)] and hi[r] == vals[n - 1 - math.floor(n * q_hi)], (trial, r)


def test_native_kernel_build_failure_falls_back_to_eager(rng, monkeypatch, tmp_path):
    """No C compiler: ``auto`` warns once, naming the cause and the way out, then runs the eager kernel (same
    results); naming ``native`` is an error that says why."""
    q, k, v = qkv(rng, 1, 2, 2, 30, 30, 16)
    eager = hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6, kernel="eager")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hybrid_native, "_STATE", {})
    with pytest.warns(RuntimeWarning, match='could not build the native CPU kernel.*hybrid_kernel="eager"'):
        out = hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6)
    assert ha.select_kernel("auto", torch.device("cpu"), torch.float32, False) == "eager"
    assert torch.equal(out, eager)
    with pytest.raises(RuntimeError, match="kernel 'native': the native CPU kernel could not be built.*no-such"):
        hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6, kernel="native")


def test_a_named_kernel_runs_or_says_why_not(rng):
    """``kernel=`` picks what computes the weights; ``native`` refuses what it cannot compute, naming the cause."""
    cpu = torch.device("cpu")
    assert ha.select_kernel("auto", cpu, torch.float32, False) == "native"
    assert ha.select_kernel("auto", cpu, torch.float32, True) == "eager"  # autograd
    assert ha.select_kernel("auto", cpu, torch.float64, False) == "eager"
    assert ha.select_kernel("auto", torch.device("cuda"), torch.float32, True) == "compiled"  # autograd
    assert ha.select_kernel("compiled", cpu, torch.float32, False) == "compiled"
    for device, dtype, grad, why in ((torch.device("cuda"), torch.float32, False, "cuda device"),
                                     (cpu, torch.float64, False, "float64 scores"), (cpu, torch.float32, True, "autograd")):
        with pytest.raises(ValueError, match=f"kernel 'native' runs on the CPU.*{why}.*use kernel 'auto' or 'eager'"):
            ha.select_kernel("native", device, dtype, grad)
    q, k, v = qkv(rng, 1, 2, 2, 20, 20, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6, kernel="native")
    with pytest.raises(ValueError, match="kernel must be one of auto, triton, native, compiled, eager.*'fused'"):
        hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6, kernel="fused")


def test_a_damaged_cached_kernel_is_rebuilt(monkeypatch, tmp_path):
    """A cache file cut short (a full disk) is built again, not loaded forever; a cache path that is a file is
    passed over with a message naming it."""
    good, damaged = tmp_path / "good", tmp_path / "damaged"
    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(good))
    hybrid_native._load()
    (built,) = good.glob("hybrid_weights_*.so")
    damaged.mkdir()
    (damaged / built.name).write_bytes(built.read_bytes()[:100])  # never the loaded file itself: it is mapped
    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(damaged))
    assert hybrid_native._load() is not None and (damaged / built.name).stat().st_size > 100
    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(built))  # a file, not a directory
    with pytest.raises(RuntimeError, match="no writable cache directory"):
        hybrid_native._load()


def test_native_kernel_is_built_once_and_cached(monkeypatch, tmp_path):
    """A fresh cache directory: built (in about a second) to one file, then loaded from it without a compiler."""
    import time

    monkeypatch.setenv("HYBRID_ATTENTION_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    hybrid_native._load()
    assert time.perf_counter() - t0 < 30  # generous: a shared CI machine; ~0.2 s on an idle one
    built = list(tmp_path.glob("hybrid_weights_*.so"))
    assert len(built) == 1 and not [p for p in tmp_path.iterdir() if p.is_dir()]  # no temporary left behind
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # a compiler-specific name: rebuilds...
    monkeypatch.delenv("CC")
    mtime = built[0].stat().st_mtime_ns
    hybrid_native._load()
    assert built[0].stat().st_mtime_ns == mtime  # ... but the same compiler reuses the file


def test_no_host_synchronisation(rng, kernel, monkeypatch):
    """No .item(), .tolist(), .cpu(), .numpy() or tensor truth tests inside the forward (masked and unmasked)."""
    q, k, v = qkv(rng, 2, 4, 2, 200, 200, 16)
    mask = make_mask("random_bool", rng, 2, 200, 200)
    run(kernel, q, k, v, exact_ratio=0.2, chebyshev_degree=6)  # warm the shape caches (built once, on CPU)

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name} called in the forward")

        return fail

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    for m in (None, mask):
        for ratio in (0.0, 0.2, 1.0):
            for degree, fit in ((6, "chebyshev"), (12, "empirical")):
                run(kernel, q, k, v, m, exact_ratio=ratio, chebyshev_degree=degree, fit=fit, exact_split=0.7)


def test_runs_on_the_meta_device():
    """Data-free execution: nothing in the forward may depend on tensor values on the host."""
    q = torch.empty(2, 4, 64, 16, device="meta")
    k = torch.empty(2, 2, 64, 16, device="meta")
    mask = torch.empty(2, 1, 64, 64, dtype=torch.bool, device="meta")
    out = hybrid_attention(q, k, k, mask, exact_ratio=0.2, chebyshev_degree=6)
    assert out.shape == (2, 4, 64, 16) and out.device.type == "meta"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(exact_ratio=-0.1, chebyshev_degree=6), "exact_ratio"),
        (dict(exact_ratio="abc", chebyshev_degree=6), "exact_ratio"),
        (dict(exact_ratio=0.2, chebyshev_degree=0), "chebyshev_degree"),
        (dict(exact_ratio=0.2, chebyshev_degree=2.5), "chebyshev_degree"),
        (dict(exact_ratio=0.2, chebyshev_degree=ha.MAX_CHEBYSHEV_DEGREE + 1), r"chebyshev_degree must be .*\[1, "),
        (dict(exact_ratio=0.2, chebyshev_degree=6, exact_split=1.5), "exact_split"),
        (dict(exact_ratio=0.2, chebyshev_degree=6, exact_split=float("nan")), "exact_split"),
        (dict(exact_ratio=0.2, chebyshev_degree=6, fit="weighted"), "fit must be one of chebyshev, empirical"),
        (dict(exact_ratio=0.2, chebyshev_degree=6, num_samples=0), "num_samples"),
    ],
)
def test_bad_arguments_name_the_argument(rng, kwargs, message):
    q, k, v = qkv(rng, 1, 2, 2, 4, 4, 8)
    with pytest.raises(ValueError, match=message):
        hybrid_attention(q, k, v, **kwargs)


def test_bad_shapes_are_explained(rng):
    q, k, v = qkv(rng, 1, 3, 2, 4, 4, 8)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6)
    q, k, v = qkv(rng, 1, 2, 2, 4, 4, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        hybrid_attention(q, k, v, torch.ones(1, 1, 5, 4, dtype=torch.bool), exact_ratio=0.2, chebyshev_degree=6)


@pytest.mark.parametrize("mask_kind", ["none", "random_bool", "float_bias"])
def test_autograd_matches_the_reference(rng, mask_kind):
    """Called with autograd on (a model used without torch.no_grad), the op differentiates like its reference."""
    q, k, v = (t.double() for t in qkv(rng, 2, 4, 2, 30, 30, 16))
    mask = make_mask(mask_kind, rng, 2, 30, 30)
    with torch.enable_grad():
        grads = []
        for fn in (hybrid_attention, hybrid_attention_reference):
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            fn(*leaves, mask, exact_ratio=0.2, chebyshev_degree=6).square().sum().backward()
            grads.append([t.grad for t in leaves])
    for fast, ref in zip(*grads):
        assert torch.isfinite(fast).all() and rel_err(fast, ref) < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["eager", "native"])
def test_memory_is_bounded_by_chunks_not_by_the_score_matrix(kernel):
    """Peak extra memory (fresh process) stays far below one (B, H, L, L) fp32 score tensor (512 MB here): eager
    torch works in 16 MB chunks of scores, the native kernel in 64 MB ones (kept for the next call), next to the
    32 MB output."""
    code = r"""
import resource, sys, torch
from support_basis.llada.hybrid_attention import hybrid_attention
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kernel = sys.argv[1]
g = torch.Generator().manual_seed(0)
x = torch.randn(1, 2, 64, 16, generator=g); hybrid_attention(x, x, x, exact_ratio=0.2, chebyshev_degree=6, kernel=kernel)
q, k, v = (torch.randn(4, 32, 1024, 64, generator=g) for _ in range(3))
m = torch.ones(4, 1, 1024, 1024, dtype=torch.bool); m[0, ..., :100] = False
base = peak()
hybrid_attention(q, k, v, exact_ratio=0.2, chebyshev_degree=6, kernel=kernel)
hybrid_attention(q, k, v, m, exact_ratio=0.2, chebyshev_degree=6, kernel=kernel)
print(peak() - base)
"""
    res = subprocess.run([sys.executable, "-c", code, kernel], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip()) < (128 if kernel == "eager" else 192)  # MB; the full score tensor: 512 MB


@pytest.mark.slow
def test_compiled_kernel_matches_eager_and_fuses_the_weights(tmp_path):
    """The torch.compile-d block kernel computes what the eager definition computes (run in a fresh process), and
    Inductor fuses it as intended: one kernel for the row max and every weight (exp, polynomial, selection), the
    product with V as one matmul, one kernel for the row sums and the division. (The generated C++ is checked here;
    on a GPU the same graph goes to Triton, which no CPU-only machine can run.)"""
    code = r"""
import re, torch
import support_basis.llada.hybrid_attention as ha
from torch._inductor.utils import run_and_get_code
g = torch.Generator().manual_seed(0)
q = torch.randn(2, 4, 96, 32, generator=g) * 2; k = torch.randn(2, 2, 96, 32, generator=g)
v = torch.randn(2, 2, 96, 32, generator=g); m = torch.rand(2, 1, 96, 96, generator=g) > 0.2
out, (source,) = run_and_get_code(lambda: ha.hybrid_attention(q, k, v, m, exact_ratio=0.2, chebyshev_degree=6,
                                                              kernel="compiled"))
assert "fn" in ha._COMPILED and "failed" not in ha._COMPILED, ha._COMPILED.get("failed")
kernels = re.findall(r"^(cpp_fused_\w+) = async_compile", source, re.M)
assert len(kernels) == 2, kernels
assert all(op in kernels[0] for op in ("amax", "exp", "where", "clamp")), kernels
assert "sum" in kernels[1] and "div" in kernels[1], kernels
assert source.count("extern_kernels.bmm(") == 1, source.count("extern_kernels.bmm(")
ref = ha.hybrid_attention(q, k, v, m, exact_ratio=0.2, chebyshev_degree=6, kernel="eager")
err = float((out - ref).abs().max())
assert err < 1e-5, err
print("ok", err)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout


def test_sdpa_dispatch_matches_torch(rng, kernel):
    q, k, v = qkv(rng, 2, 4, 4, 33, 33, 16)
    out = run(kernel, q, k, v, exact_ratio=1.0, chebyshev_degree=6)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
