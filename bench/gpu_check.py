#!/usr/bin/env python
"""The GPU check's measurements (run by ``bench/gpu_check.sh`` after the kernel tests): the op, the model, the sampler.

    python bench/gpu_check.py              # one CUDA GPU: the LLaDA-8B shape in bf16 (about 5 minutes on an H100)
    python bench/gpu_check.py --smoke      # the same code at toy sizes on a CPU (the fused kernel interpreted)

1. The op at the LLaDA-8B attention shape (B=1, H=32, D=128, bf16), L = 1024, 4096, 16384, 32768: SDPA (flash)
   and the hybrid (ratio 0.2, degree 6) with the fused Triton kernel, the compiled and the eager kernel: ms, ratio
   to SDPA, peak extra memory, error against float64 on 256 query rows (``bench/attention.py``'s row).
2. One forward of a random LLaDA-8B-shaped model (32 layers, d_model 4096, bf16) at L = 1024 and 4096, exact vs
   hybrid (``hybrid_kernel="auto"``: the Triton kernel), interleaved rounds.
3. ``generate()`` on it with the dual cache and threshold 0.9 (prompt 128 tokens, gen_length 256, block 32),
   exact vs hybrid: seconds, NFE, tokens/s. A random model is never confident, so one token per step: the
   cache's share of the speed-up alone.

Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import emit_json, kernel_ran, machine, print_table, random_llada, sync
from attention import attention_row, forward_row

from support_basis.sampling import generate


def generate_rows(model, device, prompt_length, gen_length, block_length) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size - 1000, (1, prompt_length), generator=g).to(device)
    rows = []
    for attention, ratio in (("exact", 1.0), ("hybrid 0.2/6", 0.2)):
        model.config.hybrid_exact_ratio = ratio
        generate(model, prompt, steps=2, gen_length=block_length, block_length=block_length, cache="dual")  # warm
        sync(device)
        t0 = time.perf_counter()
        _, nfe = generate(model, prompt, steps=gen_length, gen_length=gen_length, block_length=block_length,
                          cache="dual", threshold=0.9, return_nfe=True)
        sync(device)
        seconds = time.perf_counter() - t0
        rows.append(dict(attention=attention, seconds=seconds, nfe=int(nfe[0]), tokens_per_s=gen_length / seconds))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="toy sizes on a CPU: checks that this script runs")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="op lengths (default 1024 ... 32768)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the op table (default 5)")
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.smoke and device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel is first built (triton.language imported)
    if device != "cuda" and not a.smoke:
        p.error("no CUDA device: this check is for a GPU machine (--smoke runs it at toy sizes on a CPU)")
    dtype = torch.float32 if a.smoke else torch.bfloat16
    heads, dim = (4, 32) if a.smoke else (32, 128)
    lengths = a.lengths or ([64, 96] if a.smoke else [1024, 4096, 16384, 32768])
    kernels = ["triton", "eager"] if a.smoke else ["auto", "compiled", "eager"]
    ran = {k: kernel_ran(k, device, dtype) for k in kernels}
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke)"
    print(f"# gpu check: {name}; torch {torch.__version__}; kernels {', '.join(ran.values())}; {machine()}")

    print(f"\n## the op: B=1 H={heads} D={dim} {str(dtype)[6:]}, ratio 0.2, degree 6")
    op_rows = []
    for length in lengths:
        op_rows.append(attention_row(length, heads, dim, device, dtype, 1.0, 0, a.repeats, kernels))
        print(f"  L={length} done", flush=True)
    columns = [("L", "L", "d"), ("sdpa_ms", "SDPA ms", ".2f")]
    for k in kernels:
        columns += [(f"{k}_ms", f"{ran[k]} ms", ".2f"), (f"{k}_ratio", "/SDPA", ".2f"), (f"{k}_mb", "MB", ".0f"),
                    (f"{k}_err", "err", ".1e")]
    print_table(op_rows, columns)

    size = "small" if a.smoke else "full"
    model = random_llada(size, device, dtype)
    shape = f"{model.config.n_layers} layers, d_model {model.config.d_model}"
    fwd_lengths = [64, 128] if a.smoke else [1024, 4096]
    print(f"\n## one forward, random LLaDA ({shape}), {str(dtype)[6:]}, hybrid kernel "
          f"{kernel_ran('auto', device, dtype)}")
    fwd = [forward_row(model, length, device, 2 if a.smoke else 3) for length in fwd_lengths]
    print_table(fwd, [("L", "L", "d"), ("exact_ms", "exact ms", ".1f"), ("hybrid_ms", "hybrid ms", ".1f"),
                      ("ratio", "hybrid/exact", ".2f")])

    prompt_length, gen_length, block = (16, 32, 16) if a.smoke else (128, 256, 32)
    print(f"\n## generate(): prompt {prompt_length}, gen_length {gen_length}, block {block}, dual cache, "
          "threshold 0.9")
    gen = generate_rows(model, device, prompt_length, gen_length, block)
    print_table(gen, [("attention", "attention", "s"), ("seconds", "seconds", ".2f"), ("nfe", "NFE", "d"),
                      ("tokens_per_s", "tokens/s", ".1f")])
    at = {r["L"]: r for r in op_rows}
    fused = next((k for k in kernels if ran[k].endswith("triton")), None)
    static = static_rows(op_rows, fused, device) if fused is not None and not a.smoke else []
    targets = None if fused is None or a.smoke else {
        "triton_le_1p5x_sdpa_at_L_ge_4096": all(at[l][f"{fused}_ratio"] <= 1.5 for l in at if l >= 4096),
        "triton_lt_64mb_at_L_32768": (at[32768][f"{fused}_mb"] or 0) < 64 if 32768 in at else None,
        "triton_err_le_torch_kernels": all(at[l][f"{fused}_err"] <= 1.5 * at[l]["eager_err"] + 1e-3 for l in at)
        if "eager" in kernels else None,
    }
    emit_json(dict(bench="gpu_check", device=name, machine=machine(), dtype=str(dtype), kernels=ran, op=op_rows,
                   forward=fwd, generate=gen, static=static, targets=targets))


def static_rows(op_rows, fused: str, device) -> list[dict]:
    """The static tool's ESTIMATE (hybrid / flash cycles per inner-loop iteration, compiled here for this device's
    own architecture) beside the measured fused-kernel / SDPA time at each length: how far the estimate goes."""
    from triton_static import measure

    major, minor = torch.cuda.get_device_capability(device)
    est = measure((major * 10 + minor, "bf16", 128, "none", 6, None))
    rows = [dict(L=r["L"], measured=r[f"{fused}_ratio"], estimate=est.get("est_ratio"),
                 registers=est.get("registers"), spill_bytes=est.get("spill_bytes")) for r in op_rows]
    print(f"\n## the static estimate (sm_{major}{minor}, bf16, head dim 128, no mask, degree 6; "
          f"tile {est.get('block_m')}x{est.get('block_n')} w{est.get('num_warps')} s{est.get('num_stages')}) beside "
          "the measured fused kernel / SDPA")
    print_table(rows, [("L", "L", "d"), ("measured", "measured /SDPA", ".2f"), ("estimate", "estimate /flash", ".2f"),
                       ("registers", "regs", "d"), ("spill_bytes", "spill", "d")])
    return rows


if __name__ == "__main__":
    main()
