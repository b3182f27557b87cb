"""The fused kernel for real GPUs, checked without one: the shipped tile configurations compile for sm_80 and sm_90
with Triton's bundled ptxas and spill nothing; key-padding masks reach the kernel as one value per key (held to the
4-D path and the float64 reference under the interpreter); the static tool's SASS reading and the flash baseline."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from conftest import REPO
from support_basis import triton_static as ts
from support_basis.llada import hybrid_attention as ha
from support_basis.llada import hybrid_triton
from support_basis.reference import hybrid_attention_reference
from test_hybrid_attention import qkv, rel_err

pytestmark = pytest.mark.skipif(bool(hybrid_triton.triton_error()), reason=hybrid_triton.triton_error())


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_key_padding_mask_is_one_value_per_key():
    b, h, lq, lk = 3, 4, 5, 7
    keep = torch.rand(b, 1, 1, lk) > 0.5
    kind, m, strides = hybrid_triton.mask_operand(keep, (b, h, lq, lk))
    assert kind == 3 and m.dtype == torch.uint8 and m.shape == (b, 1, 1, lk) and strides == (lk, 0, 0, 1)
    bias = torch.zeros(b, 1, 1, lk).masked_fill(~keep, -math.inf)
    assert hybrid_triton.mask_operand(bias, (b, h, lq, lk))[0] == 4
    assert hybrid_triton.mask_operand(keep.expand(b, 1, lq, lk), (b, h, lq, lk))[0] == 1  # a general mask: per pair
    assert hybrid_triton.mask_operand(None, (b, h, lq, lk))[0] == 0


@pytest.mark.skipif(not hybrid_triton.interpreted(), reason="the interpreter check (a GPU runs test_hybrid_triton)")
@pytest.mark.parametrize("as_bias", [False, True], ids=["bool", "bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_key_padding_vector_equals_the_per_pair_mask_and_the_reference(rng, as_bias, dtype):
    """Partly padded, fully padded (every row of that sequence masked: output 0) and unpadded sequences."""
    b, h, l, d = 3, 2, 21, 32
    q, k, v = qkv(rng, b, h, h, l, l, d, dtype=dtype)
    keep = torch.ones(b, 1, 1, l, dtype=torch.bool)
    keep[0, ..., :8] = False
    keep[1] = False
    mask = keep if not as_bias else torch.zeros(b, 1, 1, l).masked_fill(~keep, torch.finfo(torch.float32).min)
    kw = dict(exact_ratio=0.2, chebyshev_degree=6, kernel="triton")
    vector = ha.hybrid_attention(q, k, v, mask, **kw)
    per_pair = ha.hybrid_attention(q, k, v, mask.expand(b, 1, l, l).contiguous(), **kw)
    torch.testing.assert_close(vector, per_pair, rtol=0, atol=0)
    assert torch.all(vector[1] == 0)
    ref = hybrid_attention_reference(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6)
    eager = ha.hybrid_attention(q, k, v, mask, exact_ratio=0.2, chebyshev_degree=6, kernel="eager")
    assert rel_err(vector, ref) <= 3 * rel_err(eager, ref) + (1e-6 if dtype == torch.float32 else 1e-3)


@pytest.mark.skipif(not hybrid_triton.interpreted(), reason="the baseline runs under the interpreter here")
@pytest.mark.parametrize("mask", ["none", "key_padding", "general"])
def test_the_flash_baseline_is_softmax_attention(rng, mask):
    flash = _bench("flash_baseline")
    b, h, l, d = 2, 2, 19, 32
    q, k, v = qkv(rng, b, h, h, l, l, d)
    m = {"none": None, "key_padding": torch.rand(b, 1, 1, l, generator=rng) > 0.3,
         "general": torch.rand(b, 1, l, l, generator=rng) > 0.3}[mask]
    if m is not None:
        m[..., 0] = True  # every row keeps a key (SDPA gives NaN for a fully masked row)
    out = torch.empty_like(q)
    plan = torch.zeros(b * h)
    grid, args, kwargs = hybrid_triton.launch_spec(q, k, v, m, plan, plan, plan, plan[:, None], 2, d ** -0.5, out,
                                                   hybrid_triton.INTERPRETER_TILE)
    fargs, fkwargs = flash.launch_spec(args, kwargs)
    flash.kernel()[grid](*fargs, **fkwargs)
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), m)
    assert rel_err(out, expected) < 1e-5


def test_tile_configs_cover_the_shapes_llada_launches():
    for arch in (8, 9, 10, 12):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for head_dim in (32, 64, 96, 128, 256):
                for degree in (None, 2, 8, 9, 40):
                    config = hybrid_triton.tile_config((arch, 0), dtype, head_dim, degree)
                    assert config.block_m >= 16 and config.block_n >= 16 and config.num_warps in (4, 8)
    horner = hybrid_triton.tile_config((9, 0), torch.bfloat16, 128, 6)
    clenshaw = hybrid_triton.tile_config((9, 0), torch.bfloat16, 128, 12)
    assert horner == hybrid_triton.HORNER_TILE_CONFIGS[(9, "bf16", 128)] != clenshaw
    assert hybrid_triton.tile_config(None, torch.float32, 64) == hybrid_triton.INTERPRETER_TILE


SASS = """
        /*0100*/                   FFMA R1, R2, R3, R4 ;
        /*0110*/                   MUFU.EX2 R5, R6 ;
        /*0120*/              @!P0 FMNMX R7, R8, R9, !PT ;
        /*0130*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0140*/                   HMMA.16816.F32.BF16 R10, R12, R14, R10 ;
        /*0150*/                   LDS.128 R16, [R2] ;
        /*0160*/                   F2FP.BF16.F32.PACK_AB R3, R4, R5 ;
        /*0170*/              @!P1 BRA 0x100 ;
        /*0180*/                   EXIT ;
"""


def test_the_inner_loop_is_read_by_class_and_weighed_by_throughput():
    counts = ts.loop_classes(SASS, num_warps=8)
    assert counts["fp32"] == 1 and counts["mufu"] == 1 and counts["alu"] == 1 and counts["cvt"] == 1
    assert counts["mma"] == 2 and counts["total"] == 8  # EXIT lies after the loop
    assert counts["mma_16bit"] == 64 * 64 * 16 * 2 + 16 * 8 * 16 * 8  # HGMMA per warpgroup, HMMA per warp
    assert counts["shared_bytes"] == 16 * 32 * 8
    est = ts.estimate_cycles(counts, 90, num_warps=8)
    assert est["mufu"] == 1 * 256 / 16 and est["issue"] == 8 * 8 / 4
    assert est["cycles"] == max(v for k, v in est.items() if k != "cycles")
    assert ts.estimate_cycles(counts, 80, 8)["fp32"] == 2 * ts.estimate_cycles(counts, 90, 8)["fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
def test_the_shipped_configurations_compile_for_the_target_without_spilling(arch):
    """What the interpreter cannot see: the kernel builds for a real GPU, and the shipped tiles fit its registers
    (bf16 and fp16 at head dim 128, the heaviest variants: a per-pair mask with Horner's degree 8 and with
    Clenshaw's degree 12). The tool runs as a command line, in a process without TRITON_INTERPRET (this one's
    triton.language is the interpreter's)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(REPO / "bench" / "triton_static.py"), "--arch", str(arch), "--dtype",
                          "bf16", "fp16", "--head-dim", "128", "--mask", "general", "--degree", "8", "12"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])["configs"]
    assert len(rows) == 4 and all("skipped" not in r for r in rows), rows
    for row in rows:
        assert row["spill_bytes"] == 0, row
        assert row["registers"] <= 255 and row["loop"]["mma"] > 0 and row["est_ratio"] > 1, row
