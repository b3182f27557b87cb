"""The fused GPU kernel of the support-basis hybrid attention, in Triton: the scores are never materialised.

Per (batch, head, block of query rows) the kernel streams the key/value tiles once: scores (``q.k`` in fp32),
classification against the head's interval (``|alpha s + beta| > 1``: exact), the exact weight or the polynomial's,
an online row shift and row sum, and ``weights @ V`` accumulated in fp32. Extra memory is O(B H Lq) beyond the
output: one running shift and one running sum per row. The per-head constants (``alpha, beta, top`` and the
polynomial's coefficients) come from the op's plan, computed with torch on the device (``hybrid_attention``).

The weights are the torch kernel's (``hybrid_attention._block_attention``), streamed with one accumulator. The
row's shift is ``c = max(m, top)`` (``m`` its running maximum over valid scores, ``top`` the head's interval top):
exact weights ``exp(s - c)``, approximated weights ``max(p(t) exp(top - c), FLOOR)``, both rescaled by
``exp(c_old - c_new)`` when ``m`` passes ``c``. Any shift cancels in the normalisation, so this is the torch
kernel's definition up to rounding, with two details by construction: a floored weight is rescaled only in a row
that holds an exact weight of 1 (where ``FLOOR`` is 1e-30 of it), and no cap is needed (no weight exceeds 1),
where the torch kernel caps ``exp(top - m)`` at ``exp(CAP)`` for a row more than 60 below ``top``. That cap moves
only weights of relative size ``exp(-60)``, below the polynomial's own fp32 error (a test builds such a row; the
outputs agree to 1e-5). In fp32 a row about 87 below ``top`` underflows; its floored pairs then share it.

Triton is imported on first use (through ``importlib``, so this file loads, and the model directory with it,
where Triton is not installed). ``TRITON_INTERPRET=1`` runs the same kernel on CPU tensors (the tests do).
Part of the self-contained model directory: torch only, besides Triton.
"""

from __future__ import annotations

import importlib
import os

import torch

CAP = 60.0  # the torch kernel's _ROW_SCALE_CAP: exp(60) * |p| * n stays finite in fp32 for any n < 1e10
FLOOR = 1e-30  # the torch kernel's _WEIGHT_FLOOR
CLENSHAW_ABOVE = 8  # hybrid_fit.HORNER_MAX_DEGREE: coefficients are monomial up to this degree, Chebyshev above
_STATE: dict = {}
tl = None  # triton.language, bound on first use by _compiled(): the kernel's body and annotations name it


def triton_error() -> str:
    """Why the Triton kernel cannot run here (empty when it can): Triton not importable, or neither CUDA nor the
    interpreter (``TRITON_INTERPRET=1``) to run it on."""
    if "error" not in _STATE:
        try:
            importlib.import_module("triton.language")
            _STATE["error"] = ""
        except Exception as err:  # not installed, or a broken install: the op falls back (auto) or says why
            _STATE["error"] = f"Triton cannot be imported ({type(err).__name__}: {err})"
    return _STATE["error"]


def interpreted() -> bool:
    """Whether Triton runs kernels with its CPU interpreter in this process (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _hybrid_fwd(
    Q, K, V, Out, Mask, Alpha, Beta, Top, Coef,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    n_heads, group, lq, lk, d, dv, scale,
    DEGREE: tl.constexpr, CLENSHAW: tl.constexpr, MASK_KIND: tl.constexpr, FP32_DOT: tl.constexpr,
    PV_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program: ``BLOCK_M`` query rows of one (batch, head). ``MASK_KIND``: 0 none, 1 boolean (uint8, 1 =
    attend), 2 additive fp32 bias (``-inf`` at masked pairs). ``FP32_DOT``: both products in IEEE fp32;
    otherwise ``q.k`` in the inputs' dtype (exact products, fp32 sums) and ``w @ v`` with the weights rounded to
    the values' dtype (bf16), or in TF32 (``PV_TF32``, fp16: its range would flush small weights to 0)."""
    pair = tl.program_id(0)  # (batch, head) pairs on the grid's first axis: no 65535 limit on B * H
    pid_m = tl.program_id(1)
    b = (pair // n_heads).to(tl.int64)  # 64-bit offsets: B * H * L * D may exceed 2^31 elements
    h = (pair % n_heads).to(tl.int64)
    kvh = h // group
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dims_v = tl.arange(0, BLOCK_DV)
    row_ok = rows < lq
    q = tl.load(Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
                mask=row_ok[:, None] & (dims[None, :] < d), other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)
    alpha = tl.load(Alpha + pair)
    beta = tl.load(Beta + pair)
    top = tl.load(Top + pair)
    c_i = tl.zeros([BLOCK_M], tl.float32) + top  # the row's shift max(m, top): nothing here exceeds exp(0)
    l_i = tl.zeros([BLOCK_M], tl.float32)  # the row's sum of weights, relative to exp(c_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    bad = tl.zeros([BLOCK_M], tl.int32)  # a NaN or +inf score: the row's output is NaN, as SDPA gives it
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_base = Mask + b * stride_mb + h * stride_mh
    for start in range(0, lk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < lk
        k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        if FP32_DOT:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * scale
        else:
            s = tl.dot(q, tl.trans(k)) * scale
        valid = row_ok[:, None] & col_ok[None, :]
        if MASK_KIND == 1:
            keep = tl.load(m_base + rows[:, None] * stride_mm + cols[None, :] * stride_mn, mask=valid, other=0)
            valid = valid & (keep != 0)
        if MASK_KIND == 2:
            s = s + tl.load(m_base + rows[:, None] * stride_mm + cols[None, :] * stride_mn, mask=valid, other=0.0)
        s = tl.where(valid, s, float("-inf"))
        bad = bad | tl.max(((s != s) | (s == float("inf"))).to(tl.int32), 1)
        c_new = tl.maximum(c_i, tl.max(s, 1))
        rescale = tl.exp(c_i - c_new)
        # the polynomial at t clamped to [-1, 1]; exact where |t| > 1 (masked pairs: t = -inf, weight 0)
        t = s * alpha + beta
        tc = tl.minimum(tl.maximum(t, -1.0), 1.0)
        if CLENSHAW:
            t2 = tc + tc
            b1 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32) + tl.load(Coef + pair * (DEGREE + 1) + DEGREE)
            b2 = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for i in range(1, DEGREE):
                b1, b2 = t2 * b1 - b2 + tl.load(Coef + pair * (DEGREE + 1) + DEGREE - i), b1
            p = tc * b1 - b2 + tl.load(Coef + pair * (DEGREE + 1))
        else:
            p = tl.zeros([BLOCK_M, BLOCK_N], tl.float32) + tl.load(Coef + pair * (DEGREE + 1) + DEGREE)
            for i in range(1, DEGREE + 1):
                p = p * tc + tl.load(Coef + pair * (DEGREE + 1) + DEGREE - i)
        approx = tl.maximum(p * tl.exp(top - c_new)[:, None], 1e-30)  # FLOOR
        w = tl.where(t != tc, tl.exp(s - c_new[:, None]), approx)
        l_i = l_i * rescale + tl.sum(w, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + dims_v[None, :] * stride_vd,
                    mask=col_ok[:, None] & (dims_v[None, :] < dv), other=0.0)
        if FP32_DOT:
            acc = acc * rescale[:, None] + tl.dot(w, v.to(tl.float32), input_precision="ieee")
        elif PV_TF32:
            acc = acc * rescale[:, None] + tl.dot(w, v.to(tl.float32), input_precision="tf32")
        else:
            acc = acc * rescale[:, None] + tl.dot(w.to(v.dtype), v)
        c_i = c_new
    out = acc / tl.maximum(l_i, 1.1754943508222875e-38)[:, None]  # a fully masked row: 0 / tiny
    out = tl.where(bad[:, None] != 0, float("nan"), out)
    tl.store(Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_om + dims_v[None, :] * stride_od,
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (dims_v[None, :] < dv))


def _compiled():
    """``_hybrid_fwd`` as a Triton kernel (built once per process)."""
    if "kernel" not in _STATE:
        triton = importlib.import_module("triton")
        globals()["tl"] = importlib.import_module("triton.language")  # the kernel's annotations and body name it
        _STATE["triton"] = triton
        _STATE["kernel"] = triton.jit(_hybrid_fwd)
    return _STATE["kernel"]


def triton_attention(query, key, value, mask, alpha, beta, top, coef, degree: int, scale: float,
                     out: torch.Tensor) -> None:
    """The fused hybrid attention: writes ``out (B, H, Lq, Dv)``.

    ``query (B, H, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` (fp32, bf16 or fp16, any strides),
    ``mask`` the op's prepared mask (None, boolean or an fp32 bias with ``-inf`` at masked pairs; 4-D,
    broadcastable to ``(B, H, Lq, Lk)``), ``alpha, beta, top (B*H,)`` fp32 and ``coef (B*H, degree + 1)`` fp32 in
    the basis ``hybrid_fit.evaluation_coefficients`` gives (monomial up to degree 8, Chebyshev above). Scores are
    ``scale * q.k`` in fp32 (IEEE products for fp32 inputs; bf16/fp16 products are exact in fp32). For bf16
    inputs the weights are rounded to bf16 for the product with V, as flash attention does; for fp16 that product
    is TF32 (fp16's range would flush weights below 6e-8 to 0). Under the interpreter bf16 goes through the fp32
    path: Triton 3.9's interpreter computes bf16 dots wrongly (measured: errors of 1e10 on a 16x16 product).
    """
    kernel = _compiled()
    b, h, lq, d = query.shape
    lk, dv = key.shape[2], value.shape[-1]
    triton = _STATE["triton"]
    if mask is None:
        kind, mask_t, mstrides = 0, alpha, (0, 0, 0, 0)
    else:
        mask_t = mask.expand(b, h, lq, lk) if mask.dtype == torch.bool else mask.to(torch.float32).expand(
            b, h, lq, lk)
        if mask_t.dtype == torch.bool:
            mask_t, kind = mask_t.view(torch.uint8), 1
        else:
            kind = 2
        mstrides = mask_t.stride()
    fp32 = query.dtype == torch.float32 or (query.dtype == torch.bfloat16 and interpreted())
    block_m, block_n = (16, 16) if interpreted() else (64, 64)
    block_d = max(16, triton.next_power_of_2(d))
    block_dv = max(16, triton.next_power_of_2(dv))
    grid = (b * h, triton.cdiv(lq, block_m))
    kernel[grid](
        query, key, value, out, mask_t, alpha, beta, top, coef,
        *query.stride(), *key.stride(), *value.stride(), *out.stride(), *mstrides,
        h, h // key.shape[1], lq, lk, d, dv, float(scale),
        DEGREE=degree, CLENSHAW=degree > CLENSHAW_ABOVE, MASK_KIND=kind, FP32_DOT=fp32,
        PV_TF32=query.dtype == torch.float16,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
    )
