"""The fused GPU kernel of the support-basis hybrid attention, in Triton: the scores are never materialised.

Per (batch, head, block of query rows) the kernel streams the key/value tiles once: scores (``q.k`` in fp32),
classification against the head's interval (``|alpha s + beta| > 1``: exact), the exact weight or the polynomial's,
an online row shift and row sum, and ``weights @ V`` accumulated in fp32. Extra memory is O(B H Lq) beyond the
output: one running shift and one running sum per row. The per-head constants (``alpha, beta, top`` and the
polynomial's coefficients) come from the op's plan, computed with torch on the device (``hybrid_attention``).

The weights are the torch kernel's (``hybrid_attention._block_attention``), streamed with one accumulator. The
row's shift is ``c = max(m, top)`` (``m`` its running maximum over valid scores, ``top`` the head's interval top):
exact weights ``exp(s - c)``, approximated weights ``max(p(t) exp(top - c), WEIGHT_FLOOR)``, both rescaled by
``exp(c_old - c_new)`` when ``m`` passes ``c``. Any shift cancels in the normalisation, so this is the torch
kernel's definition up to rounding, with two details by construction: a floored weight is rescaled only in a row
that holds an exact weight of 1 (where ``WEIGHT_FLOOR`` is 1e-30 of it), and no cap is needed (no weight exceeds 1),
where the torch kernel caps ``exp(top - m)`` at ``exp(ROW_SCALE_CAP)`` for a row more than 60 below ``top``. That cap moves
only weights of relative size ``exp(-60)``, below the polynomial's own fp32 error (a test builds such a row; the
outputs agree to 1e-5). In fp32 a row about 87 below ``top`` underflows; its floored pairs then share it.

Triton is imported on first use (through ``importlib``, so this file loads, and the model directory with it,
where Triton is not installed). ``TRITON_INTERPRET=1`` runs the same kernel on CPU tensors (the tests do).
Part of the self-contained model directory: torch and the weight rule's constants, besides Triton.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch

from .hybrid_constants import FP32_TINY, HORNER_MAX_DEGREE, WEIGHT_FLOOR

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
    PV_TF32: tl.constexpr, FLOOR: tl.constexpr, TINY: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program: ``BLOCK_M`` query rows of one (batch, head). ``MASK_KIND``: 0 none, 1 boolean (uint8, 1 =
    attend), 2 additive fp32 bias (``-inf`` at masked pairs), both read per (row, key); 3 and 4 the same as one
    value per key (a key-padding mask ``(B, 1, 1, Lk)``: O(Lk) bytes per program instead of O(Lq Lk)). ``FP32_DOT``: both products in IEEE fp32;
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
        if MASK_KIND == 3:  # a key-padding vector: one byte per key, read once per tile
            keep_k = tl.load(m_base + cols * stride_mn, mask=col_ok, other=0)
            valid = valid & (keep_k != 0)[None, :]
        if MASK_KIND == 4:  # a key bias vector
            s = s + tl.load(m_base + cols * stride_mn, mask=col_ok, other=0.0)[None, :]
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
        approx = tl.maximum(p * tl.exp(top - c_new)[:, None], FLOOR)
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
    out = acc / tl.maximum(l_i, TINY)[:, None]  # a fully masked row: 0 / tiny
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


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration of ``_hybrid_fwd``: tile sizes and Triton's ``num_warps`` / ``num_stages``."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# Tile configurations per (GPU architecture major, dtype, head dim), picked with bench/triton_static.py --search:
# compiled ahead of time with Triton 3.9's ptxas for LLaDA-8B's shapes in the heaviest variant (a per-pair mask and
# Clenshaw's degree 12), then the lowest static cost estimate per score among those that neither spill (ptxas's
# spill stores) nor need more than 248 of the 255 registers (headroom, so a small edit of the kernel does not start
# spilling), checked again over every mask kind and degree 6 / 12; docs/results.md has the tables. Why each:
#  - bf16/fp16: BLOCK_M 128 x BLOCK_N 32 with 8 warps. The score tile is what costs registers: the polynomial keeps
#    several (BLOCK_M x BLOCK_N)-sized temporaries live, so a narrow key tile with more warps keeps each thread's
#    share small. 64x64 (the old default) spills 352 bytes on sm_90 (bf16) and 128x64 up to 1,976; 128x32 w8 uses
#    147-189 registers on sm_90 and has the lowest estimate there (476-536 cycles per 1k scores). On sm_80 at head
#    dim 128 it needs 246 (bf16) and 253 (fp16): fp16 takes 32x32 with 4 warps instead (156-168 registers; 32x64
#    spills 4-12 bytes in two of the six variants).
#  - fp32 (IEEE products on the FMA pipe, no tensor cores): q, k and the accumulator all live in registers; every
#    tile of 64 rows and 64 keys spills kilobytes. 64x32 with 8 warps fits at head dim 64; at 128 only 32x32 with 8
#    warps does (194-202 registers; 64x32 spills 248 bytes on sm_80).
#  - 2 pipeline stages: 3 gave the same registers, spills and estimate in every sm_90 candidate searched.
#  - sm_100 and newer take sm_90's tiles (ptxas-blackwell compiles them; bench/triton_static.py reports them).
_TILES = {
    (8, "bf16", 64): (128, 32, 8), (8, "fp16", 64): (128, 32, 8), (8, "fp32", 64): (64, 32, 8),
    (8, "bf16", 128): (128, 32, 8), (8, "fp16", 128): (32, 32, 4), (8, "fp32", 128): (32, 32, 8),
    (9, "bf16", 64): (128, 32, 8), (9, "fp16", 64): (128, 32, 8), (9, "fp32", 64): (64, 32, 8),
    (9, "bf16", 128): (128, 32, 8), (9, "fp16", 128): (128, 32, 8), (9, "fp32", 128): (32, 32, 8),
}
TILE_CONFIGS = {key: TileConfig(*tile, num_stages=2) for key, tile in _TILES.items()}
# Degrees up to HORNER_MAX_DEGREE (Horner's rule: fewer live temporaries than Clenshaw's recurrence), picked the same
# way on the heaviest Horner variant (a per-pair mask, degree 8): where a wider key tile fits, it has the lower
# estimate (sm_90 bf16 at head dim 128: 128x64 with 232 registers, 342 estimated cycles per 1k scores, against
# 378 for 128x32); elsewhere the table above is already the Horner pick too.
HORNER_TILE_CONFIGS = {
    key: TileConfig(128, 64, 8, 2) for key in ((8, "bf16", 64), (9, "bf16", 64), (9, "bf16", 128), (9, "fp16", 64))
}
INTERPRETER_TILE = TileConfig(16, 16, 4, 1)  # the CPU interpreter: small tiles keep the tests fast
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def tile_config(capability: tuple[int, int] | None, dtype: torch.dtype, head_dim: int,
                degree: int | None = None) -> TileConfig:
    """The shipped configuration for a device of compute ``capability`` (``None``: the interpreter), inputs of
    ``dtype`` and ``head_dim``: the table's entry for the listed head dim at or above it (64 or 128; a larger head
    dim takes the fp32 tiles of 128, the smallest); architectures outside the table take the nearest listed. A
    ``degree`` up to ``HORNER_MAX_DEGREE`` takes :data:`HORNER_TILE_CONFIGS`' entry where it has one (Horner's
    rule keeps fewer temporaries live than Clenshaw's recurrence, so larger tiles fit)."""
    if capability is None:
        return INTERPRETER_TILE
    arch = min(capability[0], max(a for a, _, _ in TILE_CONFIGS))
    arch = max(arch, min(a for a, _, _ in TILE_CONFIGS))
    name = _DTYPE_NAMES[dtype]
    if head_dim > 128:
        return TILE_CONFIGS[(arch, "fp32", 128)]
    key = (arch, name, 64 if head_dim <= 64 else 128)
    if degree is not None and degree <= HORNER_MAX_DEGREE and key in HORNER_TILE_CONFIGS:
        return HORNER_TILE_CONFIGS[key]
    return TILE_CONFIGS[key]


def mask_operand(mask, shape):
    """``(kind, tensor, strides)`` of the op's prepared mask for ``_hybrid_fwd``: kind 0 (no mask), 3 / 4 for a
    key-padding mask (broadcast over heads and query rows: one value per key), else 1 / 2 read per pair."""
    b, h, lq, lk = shape
    if mask is None:
        return 0, None, (0, 0, 0, 0)
    per_key = mask.shape[1] == 1 and mask.shape[2] == 1
    if per_key:
        m = mask.expand(b, 1, 1, lk)
        m = m.view(torch.uint8) if m.dtype == torch.bool else m.to(torch.float32)
        return (3 if mask.dtype == torch.bool else 4), m, (m.stride(0), 0, 0, m.stride(3))
    m = mask.expand(b, h, lq, lk)
    m = m.view(torch.uint8) if m.dtype == torch.bool else m.to(torch.float32)
    return (1 if mask.dtype == torch.bool else 2), m, m.stride()


def launch_spec(query, key, value, mask, alpha, beta, top, coef, degree: int, scale: float, out,
                config: TileConfig):
    """Grid, positional arguments and keyword arguments (constexprs and launch options) of one ``_hybrid_fwd``
    launch (see :func:`triton_attention`); also what ``bench/triton_static.py`` compiles ahead of time."""
    b, h, lq, d = query.shape
    lk, dv = key.shape[2], value.shape[-1]
    kind, mask_t, mstrides = mask_operand(mask, (b, h, lq, lk))
    fp32 = query.dtype == torch.float32 or (query.dtype == torch.bfloat16 and interpreted())
    block_d, block_dv = max(16, _next_power_of_2(d)), max(16, _next_power_of_2(dv))
    grid = (b * h, -(-lq // config.block_m))
    args = (query, key, value, out, alpha if mask_t is None else mask_t, alpha, beta, top, coef,
            *query.stride(), *key.stride(), *value.stride(), *out.stride(), *mstrides,
            h, h // key.shape[1], lq, lk, d, dv, float(scale))
    kwargs = dict(DEGREE=degree, CLENSHAW=degree > HORNER_MAX_DEGREE, MASK_KIND=kind, FP32_DOT=fp32,
                  PV_TF32=query.dtype == torch.float16, FLOOR=WEIGHT_FLOOR, TINY=FP32_TINY,
                  BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
                  num_warps=config.num_warps, num_stages=config.num_stages)
    return grid, args, kwargs


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def triton_attention(query, key, value, mask, alpha, beta, top, coef, degree: int, scale: float,
                     out: torch.Tensor) -> None:
    """The fused hybrid attention: writes ``out (B, H, Lq, Dv)``.

    ``query (B, H, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` (fp32, bf16 or fp16, any strides),
    ``mask`` the op's prepared mask (None, boolean or an fp32 bias with ``-inf`` at masked pairs; 4-D,
    broadcastable to ``(B, H, Lq, Lk)``; a key-padding mask ``(B, 1, 1, Lk)`` is read as one value per key),
    ``alpha, beta, top (B*H,)`` fp32 and ``coef (B*H, degree + 1)`` fp32 in the basis
    ``hybrid_fit.evaluation_coefficients`` gives (monomial up to degree 8, Chebyshev above). Scores are
    ``scale * q.k`` in fp32 (IEEE products for fp32 inputs; bf16/fp16 products are exact in fp32). For bf16
    inputs the weights are rounded to bf16 for the product with V, as flash attention does; for fp16 that product
    is TF32 (fp16's range would flush weights below 6e-8 to 0). Under the interpreter bf16 goes through the fp32
    path: Triton 3.9's interpreter computes bf16 dots wrongly (measured: errors of 1e10 on a 16x16 product).
    The tiles are :data:`TILE_CONFIGS`' entry for the device (:func:`tile_config`).
    """
    kernel = _compiled()
    capability = None if interpreted() else torch.cuda.get_device_capability(query.device)
    config = tile_config(capability, query.dtype, query.shape[-1], degree)
    grid, args, kwargs = launch_spec(query, key, value, mask, alpha, beta, top, coef, degree, scale, out, config)
    kernel[grid](*args, **kwargs)
