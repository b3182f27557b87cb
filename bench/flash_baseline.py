"""A plain flash-attention forward in Triton: the static baseline of ``bench/triton_static.py``, not a product kernel.

Exact softmax with an online row maximum and sum (the FlashAttention-2 forward: scores in fp32, ``exp2`` with the
scale folded into ``log2 e``, one accumulator), with exactly the hybrid kernel's tiles, argument layout, mask kinds
and dot precisions (``support_basis.llada.hybrid_triton._hybrid_fwd``), so that the two compile to comparable code
and the difference is the support basis's own work: classification, the polynomial, the second exponential.
``tests/test_triton_static.py`` holds it to softmax attention under Triton's interpreter.
"""

from __future__ import annotations

import importlib

tl = None  # triton.language, bound by kernel() (the annotations and the body name it)
_STATE: dict = {}


def _flash_fwd(
    Q, K, V, Out, Mask,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    n_heads, group, lq, lk, d, dv, scale,
    MASK_KIND: tl.constexpr, FP32_DOT: tl.constexpr, PV_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program: ``BLOCK_M`` query rows of one (batch, head); ``MASK_KIND`` as the hybrid kernel's."""
    pair = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = (pair // n_heads).to(tl.int64)
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
    qk_scale = scale * 1.4426950408889634  # log2(e): exp(x) = exp2(x log2 e)
    m_i = tl.zeros([BLOCK_M], tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_base = Mask + b * stride_mb + h * stride_mh
    for start in range(0, lk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < lk
        k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
                    mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        if FP32_DOT:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            s = tl.dot(q, tl.trans(k)) * qk_scale
        valid = row_ok[:, None] & col_ok[None, :]
        if MASK_KIND == 1:
            keep = tl.load(m_base + rows[:, None] * stride_mm + cols[None, :] * stride_mn, mask=valid, other=0)
            valid = valid & (keep != 0)
        if MASK_KIND == 2:
            s = s + 1.4426950408889634 * tl.load(m_base + rows[:, None] * stride_mm + cols[None, :] * stride_mn,
                                                 mask=valid, other=0.0)
        if MASK_KIND == 3:
            keep_k = tl.load(m_base + cols * stride_mn, mask=col_ok, other=0)
            valid = valid & (keep_k != 0)[None, :]
        if MASK_KIND == 4:
            s = s + 1.4426950408889634 * tl.load(m_base + cols * stride_mn, mask=col_ok, other=0.0)[None, :]
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing valid yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + dims_v[None, :] * stride_vd,
                    mask=col_ok[:, None] & (dims_v[None, :] < dv), other=0.0)
        if FP32_DOT:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        elif PV_TF32:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="tf32")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / tl.maximum(l_i, 1.1754943508222875e-38)[:, None]
    tl.store(Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_om + dims_v[None, :] * stride_od,
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (dims_v[None, :] < dv))


def kernel():
    """``_flash_fwd`` as a Triton kernel (built once per process)."""
    if "kernel" not in _STATE:
        triton = importlib.import_module("triton")
        globals()["tl"] = importlib.import_module("triton.language")
        _STATE["kernel"] = triton.jit(_flash_fwd)
    return _STATE["kernel"]


def launch_spec(hybrid_args: tuple, hybrid_kwargs: dict):
    """The flash launch matching one hybrid launch (``hybrid_triton.launch_spec``'s ``args``/``kwargs``): the same
    tensors, strides, mask and tiles, without the hybrid's per-head constants and polynomial."""
    q, k, v, out, mask = hybrid_args[:5]
    rest = hybrid_args[9:]  # strides ... scale
    keep = ("MASK_KIND", "FP32_DOT", "PV_TF32", "BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_DV", "num_warps",
            "num_stages")
    return (q, k, v, out, mask, *rest), {k_: hybrid_kwargs[k_] for k_ in keep}
