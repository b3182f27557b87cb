"""The fused Triton kernel (``hybrid_kernel="triton"``), run on CPU tensors by Triton's interpreter
(``TRITON_INTERPRET=1``), held to the torch kernel on identical plans, to the float64 reference with
flash-attention's kind of tolerance (at most a small multiple of the torch kernel's own error, plus a floor), and to
SDPA in float64 where every weight is exact. Small shapes: the interpreter runs the kernel with NumPy."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from support_basis.llada import hybrid_attention as ha
from support_basis.llada import hybrid_triton
from support_basis.reference import hybrid_attention_reference
from test_hybrid_attention import make_mask, qkv, rel_err

pytestmark = pytest.mark.skipif(bool(hybrid_triton.triton_error()), reason=hybrid_triton.triton_error())

# the torch kernel's own error against float64 times this, plus a floor for the dtype's rounding of the output
ERROR_MULTIPLE = 3.0
FLOOR = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


if not hybrid_triton.interpreted() and not torch.cuda.is_available():
    pytestmark = [pytestmark, pytest.mark.skip(reason="no CUDA, and TRITON_INTERPRET=1 was not set before Triton "
                                                      "was imported (tests/conftest.py sets it)")]


# the interpreter runs the kernel on CPU tensors; with CUDA (bench/gpu_check.sh) the same tests run it on the GPU
DEVICE = torch.device("cpu" if hybrid_triton.interpreted() or not torch.cuda.is_available() else "cuda")


def on(device, *tensors):
    return [None if t is None else t.to(device) for t in tensors]


def op(q, k, v, mask, kernel, **kw):
    """The op on ``DEVICE`` for the fused kernel (the result back on the CPU), on the CPU for the others."""
    device = DEVICE if kernel == "triton" else torch.device("cpu")
    return ha.hybrid_attention(*on(device, q, k, v, mask), kernel=kernel, **kw).cpu()


SHAPES = {  # (B, H, Hkv, Lq, Lk, D): GQA, Lq != Lk, lengths that are not tile multiples, L = 1, D 32-128
    "none": (2, 4, 2, 37, 45, 32),
    "key_padding": (1, 2, 2, 1, 1, 64),
    "random_bool": (2, 2, 1, 17, 70, 128),
    "float_bias": (1, 4, 4, 33, 33, 64),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mask_kind", list(SHAPES))
@pytest.mark.parametrize("ratio,degree", [(0.2, 6), (0.0, 2), (0.2, 9), (1.0, 6)])
def test_matches_the_reference_as_closely_as_the_torch_kernel(rng, dtype, mask_kind, ratio, degree):
    b, h, hkv, lq, lk, d = SHAPES[mask_kind]
    if mask_kind == "key_padding":  # L = 1 keeps its one key: a head with no valid score is tested below
        lq = lk = 1 if dtype == torch.float32 else 9
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d, dtype=dtype)
    mask = make_mask(mask_kind, rng, b, lq, lk) if lk > 1 else None
    kw = dict(exact_ratio=ratio, chebyshev_degree=degree)
    ref = hybrid_attention_reference(q, k, v, mask, **kw)
    fused, torch_kernel = op(q, k, v, mask, "triton", **kw), op(q, k, v, mask, "eager", **kw)
    assert fused.dtype == dtype and fused.shape == ref.shape
    assert torch.isfinite(fused).all()
    bound = ERROR_MULTIPLE * rel_err(torch_kernel, ref) + FLOOR[dtype]
    assert rel_err(fused, ref) <= bound, (rel_err(fused, ref), rel_err(torch_kernel, ref))
    if mask_kind == "random_bool":
        assert torch.all(fused[:, :, 1] == 0)  # a fully masked row outputs 0


@pytest.mark.parametrize("split,fit", [(0.75, "empirical"), (0.0, "chebyshev"), (1.0, "empirical")])
def test_split_and_fit_knobs(rng, split, fit):
    q, k, v = qkv(rng, 2, 2, 2, 30, 41, 32)
    mask = make_mask("random_bool", rng, 2, 30, 41)
    kw = dict(exact_ratio=0.2, chebyshev_degree=4, exact_split=split, fit=fit)
    ref = hybrid_attention_reference(q, k, v, mask, **kw)
    bound = ERROR_MULTIPLE * rel_err(op(q, k, v, mask, "eager", **kw), ref) + FLOOR[torch.float32]
    assert rel_err(op(q, k, v, mask, "triton", **kw), ref) <= bound


def plan_of(q, k, mask, ratio, degree, fit="chebyshev"):
    """The op's own plan for these inputs (per-head alpha, beta, top, coefficients) and the full scores."""
    b, h, lq, d = q.shape
    prepared, plan = ha._setup(q, k, mask, ha.DEFAULT_NUM_SAMPLES)
    ((pairs, scores, _, batch_ids, head_ids),) = list(ha._score_chunks(q, k, prepared, 1 / math.sqrt(d)))
    lo, hi, sample, taken = ha._chunk_thresholds(scores, *plan.for_pairs(batch_ids, head_ids), ratio, 0.5,
                                                 fit == "empirical")
    return prepared, scores, ha._polynomial(lo, hi, degree, torch.float32, fit, sample, taken)


@pytest.mark.parametrize("degree", [1, 6, 9, 40])
@pytest.mark.parametrize("mask_kind", ["none", "float_bias"])
def test_identical_plans_give_the_torch_kernels_output(rng, degree, mask_kind):
    """Same thresholds and coefficients, fp32: the fused kernel computes what the torch kernel does on the full
    scores (Horner up to degree 8, Clenshaw above)."""
    b, h, lq, lk, d = 2, 3, 29, 40, 32
    q, k, v = qkv(rng, b, h, h, lq, lk, d)
    mask = make_mask(mask_kind, rng, b, lq, lk)
    prepared, scores, (alpha, beta, top, coef) = plan_of(q, k, mask, 0.2, degree)
    want = ha._block_attention(scores, v.flatten(0, 1), alpha, beta, top, coef, degree).view(b, h, lq, d)
    out = torch.empty_like(q, device=DEVICE)
    hybrid_triton.triton_attention(*on(DEVICE, q, k, v, prepared, alpha.flatten(), beta.flatten(), top.flatten(),
                                       coef.flatten(0, 1).contiguous()), degree, 1 / math.sqrt(d), out)
    assert rel_err(out.cpu(), want) < 1e-5


def test_every_weight_exact_is_softmax_attention(rng):
    """An interval no score reaches (every pair exact): the online maximum and sums alone, against SDPA in
    float64, with a key-padding mask and GQA."""
    b, h, hkv, lq, lk, d = 2, 4, 2, 45, 70, 64
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d, q_scale=3.0)
    mask = make_mask("key_padding", rng, b, lq, lk)
    n = b * h
    alpha, beta, top = torch.ones(n), torch.full((n,), 1e6), torch.zeros(n)
    coef = torch.randn(n, 7, generator=rng)  # never used: |t| > 1 everywhere
    out = torch.empty_like(q, device=DEVICE)
    hybrid_triton.triton_attention(*on(DEVICE, q, k, v, mask, alpha, beta, top, coef), 6, 1 / math.sqrt(d), out)
    out = out.cpu()
    want = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(2, 1),
                                          v.double().repeat_interleave(2, 1), attn_mask=mask)
    assert rel_err(out, want) < 2e-6


def test_a_head_with_no_valid_score_and_padded_batches(rng):
    """A fully masked head outputs 0; a sequence left-padded inside a batch gets its output alone."""
    q, k, v = qkv(rng, 2, 2, 2, 24, 24, 32)
    mask = torch.ones(2, 1, 24, 24, dtype=torch.bool)
    mask[0] = False
    mask[1, ..., :7] = False
    out = op(q, k, v, mask, "triton", exact_ratio=0.2, chebyshev_degree=6)
    assert torch.all(out[0] == 0)
    alone = op(q[1:, :, 7:], k[1:, :, 7:], v[1:, :, 7:], None, "triton", exact_ratio=0.2, chebyshev_degree=6)
    padded_rows = op(q[1:], k[1:], v[1:], (mask[1:] & mask[1:].transpose(-1, -2)), "triton", exact_ratio=0.2,
                     chebyshev_degree=6)[:, :, 7:]
    assert rel_err(padded_rows, alone) < 1e-6


def test_the_online_definition_and_where_it_leaves_the_torch_kernels(rng):
    """The fused kernel's weights, written out in float64 from a plan: shift ``c = max(m, top)``, exact weights
    ``exp(s - c)``, approximated ``max(p(t) exp(top - c), 1e-30)``. Every row matches it, and so does the torch
    kernel's output, including a row more than 60 below the interval's top that holds both exact and approximated
    scores, where the torch kernel caps ``exp(top - m)`` at ``exp(60)``: the cap moves weights of relative size
    ``exp(-60)``, below the polynomial's own fp32 error. Row 3 is built to be one: the interval is [lo, lo + 90],
    ``lo`` its median score."""
    b, h, lq, lk, d = 1, 2, 12, 40, 16
    q, k, v = qkv(rng, b, h, h, lq, lk, d, q_scale=8.0)
    scale = 1 / math.sqrt(d)
    scores = (q @ k.transpose(-1, -2)).flatten(0, 1) * scale
    lo = scores[:, 3].median(-1).values
    hi = lo + 90.0
    alpha, beta, top, coef = ha._polynomial(lo, hi, 6, torch.float32)
    want_torch = ha._block_attention(scores, v.flatten(0, 1), alpha, beta, top, coef, 6).view(b, h, lq, d)
    out = torch.empty_like(q, device=DEVICE)
    hybrid_triton.triton_attention(*on(DEVICE, q, k, v, None, alpha.flatten(), beta.flatten(), top.flatten(),
                                       coef.flatten(0, 1).contiguous()), 6, scale, out)
    out = out.cpu()[0]
    s = scores.double()
    top64 = top.double()
    t = s * alpha.double() + beta.double()
    tc = t.clamp(-1, 1)
    poly = sum(coef.double()[:, :, j : j + 1] * tc**j for j in range(7))
    m = s.amax(-1, keepdim=True)
    c = torch.maximum(m, top64)
    w = torch.where(t.abs() > 1, torch.exp(s - c), (poly * torch.exp(top64 - c)).clamp_min(1e-30))
    definition = (w @ v.double()[0]) / w.sum(-1, keepdim=True)
    assert rel_err(out, definition) < 1e-5
    far = (m[..., 0] < top64[:, 0] - 60) & (t.abs() > 1).any(-1) & (t.abs() <= 1).any(-1)  # (H, Lq)
    assert bool(far[:, 3].all())
    assert rel_err(want_torch[0], definition) < 1e-4  # fp32 Horner on a 90-wide interval: its own rounding


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the tiny model runs on the CPU: needs the interpreter")
def test_the_model_runs_the_fused_kernel_after_load(tiny_model, rng, monkeypatch):
    ids = torch.randint(0, 200, (2, 19), generator=rng)
    mask = torch.ones(2, 19, dtype=torch.long)
    mask[1, :5] = 0
    module = importlib.import_module(type(tiny_model).__module__).hybrid_attention.__globals__
    ran = []
    select = module["select_kernel"]
    monkeypatch.setitem(module, "select_kernel", lambda *a: ran.append(select(*a)) or ran[-1])
    try:
        tiny_model.config.hybrid_kernel = "triton"
        fused = tiny_model(ids, attention_mask=mask).logits
        tiny_model.config.hybrid_kernel = "eager"
        eager = tiny_model(ids, attention_mask=mask).logits
    finally:
        tiny_model.config.hybrid_kernel = "auto"
    assert ran[: tiny_model.config.n_layers] == ["triton"] * tiny_model.config.n_layers
    assert rel_err(fused[1, 5:], eager[1, 5:]) < 1e-5 and rel_err(fused[0], eager[0]) < 1e-5


def test_the_kernel_is_chosen_where_it_can_run(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ha.select_kernel("auto", cuda, torch.float32, False) == "triton"
    assert ha.select_kernel("auto", cuda, torch.float32, True) == "compiled"  # autograd: the compiled torch kernel
    assert ha.select_kernel("auto", cuda, torch.float64, False) == "compiled"
    assert ha.select_kernel("auto", cpu, torch.float32, False) == "native"  # never the interpreter by default
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ha.select_kernel("triton", cpu, torch.float32, False) == "triton"  # the interpreter
    for device, dtype, grad, why in ((cpu, torch.float64, False, "float64 scores"), (cuda, torch.float32, True,
                                                                                      "autograd")):
        with pytest.raises(ValueError, match=f"kernel 'triton' runs on CUDA.*{why}"):
            ha.select_kernel("triton", device, dtype, grad)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="got a cpu device"):
        ha.select_kernel("triton", cpu, torch.float32, False)
    monkeypatch.setitem(hybrid_triton._STATE, "error", "Triton cannot be imported (ModuleNotFoundError: triton)")
    assert ha.select_kernel("auto", cuda, torch.float32, False) == "compiled"
    with pytest.raises(RuntimeError, match="kernel 'triton': Triton cannot be imported.*pip install triton"):
        ha.select_kernel("triton", cuda, torch.float32, False)
