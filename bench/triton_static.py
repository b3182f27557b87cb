"""The fused GPU kernel compiled ahead of time for sm_80 / sm_90 / sm_100 on this machine (no GPU needed): registers,
spills, shared memory, the inner loop's SASS by class, and a static cost ESTIMATE beside a plain flash forward.

    python bench/triton_static.py                       # every shipped configuration, LLaDA-8B's shapes
    python bench/triton_static.py --arch 90 --search    # candidate tiles per (dtype, head dim): how the table was picked
    python bench/triton_static.py --tile 64x64:4:3      # one tile everywhere (64x64:4:3: the launch before the table)

For each configuration ``hybrid_triton.launch_spec`` would launch for LLaDA-8B-shaped inputs (32 heads, L = 1024,
fp32 / bf16 / fp16, head dim 64 and 128, no mask / a key-padding mask / a general mask, degree 6 (Horner) and 12
(Clenshaw)) it compiles the hybrid kernel and ``bench/flash_baseline.py`` with the same tiles, reads
``cuobjdump``, and estimates the cycles of one inner-loop iteration (``support_basis.triton_static``). Prints a
table, then one JSON line whose ``configs`` hold one object per configuration. ``est_ratio`` is hybrid / flash
estimated cycles: an estimate from published throughputs, not a timing (``bench/gpu_check.sh`` times both).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor

ARCHS = (80, 90, 100)
DTYPES = ("fp32", "bf16", "fp16")
HEAD_DIMS = (64, 128)
MASKS = ("none", "key_padding", "general")
DEGREES = (6, 12)
HEADS, LENGTH = 32, 1024
# 3 stages gave the same registers, spills and estimate as 2 for every sm_90 head-dim-128 candidate: 2 only
SEARCH_TILES = [(bm, bn, w, 2) for bm in (32, 64, 128) for bn in (32, 64) for w in (4, 8)]


def _inputs(dtype_name: str, head_dim: int, mask: str, degree: int):
    """Meta tensors shaped and laid out as LLaDA-8B hands them to the op: ``(B, L, H, D)`` projections viewed as
    ``(B, H, L, D)``, an fp32 plan per head, the prepared mask."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    meta = dict(device="meta")
    q, k, v = (torch.empty(1, LENGTH, HEADS, head_dim, dtype=dtype, **meta).transpose(1, 2) for _ in range(3))
    out = torch.empty(1, HEADS, LENGTH, head_dim, dtype=dtype, **meta)
    alpha, beta, top = (torch.empty(HEADS, dtype=torch.float32, **meta) for _ in range(3))
    coef = torch.empty(HEADS, degree + 1, dtype=torch.float32, **meta)
    masks = {"none": None, "key_padding": torch.empty(1, 1, 1, LENGTH, dtype=torch.bool, **meta),
             "general": torch.empty(1, 1, LENGTH, LENGTH, dtype=torch.bool, **meta)}
    return q, k, v, masks[mask], alpha, beta, top, coef, degree, 1.0 / head_dim**0.5, out


def measure(job: tuple) -> dict:
    """Compile the hybrid kernel and the flash baseline for one configuration; their resources and estimates."""
    from support_basis import triton_static as ts
    from support_basis.llada import hybrid_triton as ht

    flash_baseline = _beside("flash_baseline")

    arch, dtype, head_dim, mask, degree, tile = job
    inputs = _inputs(dtype, head_dim, mask, degree)
    config = ht.TileConfig(*tile) if tile else ht.tile_config((arch // 10, arch % 10), inputs[0].dtype, head_dim,
                                                             degree)
    _, args, kwargs = ht.launch_spec(*inputs, config)
    row = dict(arch=f"sm_{arch}", dtype=dtype, head_dim=head_dim, mask=mask, degree=degree,
               block_m=config.block_m, block_n=config.block_n, num_warps=config.num_warps,
               num_stages=config.num_stages)
    try:
        hybrid = ts.compile_for(ts.gpu_kernel(ht._compiled, ht._hybrid_fwd), args, kwargs, arch)
        fargs, fkwargs = flash_baseline.launch_spec(args, kwargs)
        flash = ts.compile_for(ts.gpu_kernel(flash_baseline.kernel, flash_baseline._flash_fwd), fargs, fkwargs, arch)
    except ts.TargetUnavailable as err:
        return dict(row, skipped=str(err))
    h_counts, f_counts = hybrid.loop_counts(), flash.loop_counts()
    h_est = ts.estimate_cycles(h_counts, arch, config.num_warps)
    f_est = ts.estimate_cycles(f_counts, arch, config.num_warps)
    scores = config.block_m * config.block_n
    known = h_est["cycles"] is not None and f_est["cycles"] is not None  # sm_100: tcgen05 shapes are not in SASS
    return dict(row, registers=hybrid.registers, spill_bytes=hybrid.spill_bytes, stack_bytes=hybrid.stack_bytes,
                shared_bytes=hybrid.shared_bytes,
                est_ratio=round(h_est["cycles"] / f_est["cycles"], 3) if known else None,
                est_cycles_per_kscore=round(1000 * h_est["cycles"] / scores, 1) if known else None,
                bound=max((k for k in h_est if k != "cycles"), key=h_est.get) if known else "n/a",
                loop={k: int(v) for k, v in sorted(h_counts.items())},
                flash=dict(registers=flash.registers, spill_bytes=flash.spill_bytes, shared_bytes=flash.shared_bytes,
                           est_cycles_per_kscore=round(1000 * f_est["cycles"] / scores, 1) if known else None,
                           loop={k: int(v) for k, v in sorted(f_counts.items())}))


def _tile(text: str) -> tuple[int, int, int, int]:
    """``64x64:4:3`` -> (BLOCK_M, BLOCK_N, num_warps, num_stages); argparse reports anything else in one line."""
    parts = text.replace("x", ":").split(":")
    if len(parts) != 4 or not all(x.isdigit() and int(x) > 0 for x in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not MxN:WARPS:STAGES (e.g. 64x64:4:3)")
    return tuple(int(x) for x in parts)


def _beside(name: str):
    """``bench/<name>.py`` as a module (this file's neighbour; no sys.path edit)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jobs(a) -> list[tuple]:
    if a.search:
        return [(arch, dtype, hd, "general", 12, tile) for arch in a.arch for dtype in a.dtype for hd in a.head_dim
                for tile in SEARCH_TILES]
    tile = a.tile
    return [(arch, dtype, hd, mask, degree, tile) for arch in a.arch for dtype in a.dtype for hd in a.head_dim
            for mask in a.mask for degree in a.degree]


def _table(rows: list[dict]) -> str:
    head = (f"{'arch':6} {'dtype':5} {'hd':>3} {'mask':11} {'deg':>3} {'tile':>14} {'regs':>4} {'spill':>5} "
            f"{'smem':>6} {'mma':>4} {'mufu':>4} {'fp32':>4} {'alu':>4} {'cvt':>4} {'mem':>4} {'flash r/s':>9} "
            f"{'est ratio':>9}  bound")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['arch']:6} {r['dtype']:5} {r['head_dim']:>3} {r['mask']:11} skipped: {r['skipped']}")
            continue
        loop = r["loop"]
        tile = f"{r['block_m']}x{r['block_n']} w{r['num_warps']} s{r['num_stages']}"
        mem = int(loop.get("shared", 0) + loop.get("global", 0))
        mma = loop.get("mma", 0) + loop.get("mma_unknown", 0)
        lines.append(
            f"{r['arch']:6} {r['dtype']:5} {r['head_dim']:>3} {r['mask']:11} {r['degree']:>3} {tile:>14} "
            f"{r['registers']:>4} {r['spill_bytes']:>5} {r['shared_bytes']:>6} {mma:>4} "
            f"{loop.get('mufu', 0):>4} {loop.get('fp32', 0):>4} {loop.get('alu', 0):>4} {loop.get('cvt', 0):>4} "
            f"{mem:>4} {str(r['flash']['registers']) + '/' + str(r['flash']['spill_bytes']):>9} "
            f"{'n/a' if r['est_ratio'] is None else format(r['est_ratio'], '.2f'):>9}  {r['bound']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--head-dim", type=int, nargs="+", default=list(HEAD_DIMS), choices=HEAD_DIMS)
    p.add_argument("--mask", nargs="+", default=list(MASKS), choices=MASKS)
    p.add_argument("--degree", type=int, nargs="+", default=list(DEGREES))
    p.add_argument("--search", action="store_true",
                   help="compile candidate tiles (general mask, degree 12: the heaviest) instead of the shipped ones")
    p.add_argument("--tile", default=None, metavar="MxN:W:S", type=_tile,
                   help="compile this tile for every configuration instead of the shipped table's (e.g. 64x64:4:3, "
                   "the launch before the table: Triton's default 3 stages)")
    p.add_argument("--jobs", type=int, default=2, help="parallel compilations (default 2)")
    a = p.parse_args(argv)
    try:
        import triton  # noqa: F401
        import triton.backends.nvidia.compiler  # noqa: F401
    except ImportError as err:
        print(f"triton_static.py: error: Triton is not importable ({err}); pip install triton (or the project's dev "
              "extra: pip install -e '.[dev]')", file=sys.stderr)
        return 2
    jobs = _jobs(a)
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        rows = list(pool.map(measure, jobs))
    for r in rows:
        if "skipped" in r:
            print(f"# {r['arch']}: Triton's ptxas cannot build it here, skipped ({r['skipped']})", file=sys.stderr)
    print(_table(rows))
    print("# est ratio: hybrid / flash estimated cycles per inner-loop iteration, same tiles (an ESTIMATE from "
          "published per-SM throughputs, not a timing; n/a on sm_100, whose tcgen05 MMA shapes SASS does not "
          "spell); regs and spill (ptxas spill stores) per thread; smem bytes per program")
    import triton

    print(json.dumps({"bench": "triton_static", "triton": triton.__version__, "length": LENGTH, "heads": HEADS,
                      "search": a.search, "configs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
