"""A Triton kernel compiled ahead of time for a real GPU, without one: registers, spills, shared memory, the inner
loop's SASS by instruction class, and a static cost estimate.

Triton ships ``ptxas`` (and ``ptxas-blackwell``) and ``cuobjdump``, so ``triton.compile`` builds a cubin for sm_80,
sm_90 or sm_100 on a CPU-only machine. :func:`compile_for` compiles a ``@triton.jit`` kernel for the arguments it
would be launched with (given as meta tensors and numbers: the argument types, divisibility hints and the
``== 1`` specialisations are Triton's own, :func:`specialise`), then reads ``cuobjdump -res-usage`` and
``-sass``. Used by ``bench/triton_static.py`` (tables for every configuration) and by a test that compiles the
shipped configurations for each target.

The cost estimate (:func:`estimate_cycles`) is a throughput bound, not a measurement: the inner loop's
instructions, per class, divided by that class's published per-SM throughput, the slowest pipe (or the issue rate)
bounding one iteration. Throughputs: CUDA C++ Programming Guide, "Arithmetic Instructions" (results per clock per
SM, compute capabilities 8.0, 9.0, 10.0); tensor cores: NVIDIA A100 whitepaper (312 dense BF16 TFLOPS, 108 SMs,
1410 MHz: 1024 FMA/clk/SM; TF32 half that), H100 whitepaper (989 dense BF16 TFLOPS SXM5, 132 SMs, 1830 MHz: 2048
FMA/clk/SM), B200 (2.25 dense BF16 PFLOPS, 148 SMs, ~1.85 GHz: ~4096 FMA/clk/SM); shared memory 128 bytes/clk/SM.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# results per clock per SM, by instruction class (see the module docstring for the sources)
THROUGHPUT = {
    80: {"fp32": 64, "alu": 64, "mufu": 16, "cvt": 16, "shfl": 32, "mma_16bit": 1024, "mma_tf32": 512},
    90: {"fp32": 128, "alu": 64, "mufu": 16, "cvt": 16, "shfl": 32, "mma_16bit": 2048, "mma_tf32": 1024},
    100: {"fp32": 128, "alu": 64, "mufu": 16, "cvt": 16, "shfl": 32, "mma_16bit": 4096, "mma_tf32": 2048},
}
SHARED_BYTES_PER_CLOCK = 128
ISSUE_PER_CLOCK = 4  # four warp schedulers per SM, one instruction each per clock

_FP32 = ("FADD", "FMUL", "FFMA", "FMUL2", "FFMA2", "FADD2")
_ALU = ("FMNMX", "FSETP", "FSEL", "FCHK", "ISETP", "IADD", "IADD3", "IMAD", "LEA", "LOP3", "SEL", "SHF", "MOV",
        "IMNMX", "VIMNMX", "VIADD", "PLOP3", "PRMT", "CS2R", "P2R", "R2P", "IABS", "FRND", "HADD2", "HMUL2",
        "HFMA2", "HMNMX2", "HSETP2", "POPC", "FLO", "BMSK", "SGXT", "I2IP")
_CVT = ("F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP")
_MEM_GLOBAL = ("LDG", "STG", "LDGSTS", "UTMALDG", "UBLKCP", "LDGDEPBAR", "ATOMG", "RED")
_MEM_SHARED = ("LDS", "STS", "LDSM", "STSM", "ATOMS")


@dataclass
class Compiled:
    """What one ahead-of-time compilation gave."""

    arch: int
    registers: int
    spill_bytes: int  # per-thread bytes the register allocator spilled to local memory (ptxas -v: spill stores)
    stack_bytes: int  # per-thread stack frame (cuobjdump STACK): spills, plus a few bytes of frame without any
    shared_bytes: int  # Triton's shared memory (metadata), plus the cubin's static shared memory
    num_warps: int
    sass: str = field(repr=False)

    def loop_counts(self) -> dict[str, float]:
        return loop_classes(self.sass, self.num_warps)


class TargetUnavailable(RuntimeError):
    """Triton's bundled ptxas cannot build for that target (an older Triton): the caller skips it."""


def specialise(values: list, constexpr: list[bool]):
    """Triton's own launch-time specialisation of ``values`` (tensors may be on the meta device): the signature
    (``*bf16``, ``i32``, ``constexpr``, ...), the constexpr values (ints equal to 1 become constants, as at a
    launch) and the divisibility attributes. Returns ``(signature_types, constexprs_by_index, attrs)``."""
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import native_specialize_impl

    types, constants, attrs = [], {}, {}
    for i, (value, is_constexpr) in enumerate(zip(values, constexpr)):
        if is_constexpr:
            types.append("constexpr")
            constants[(i,)] = value
            continue
        kind, attr = native_specialize_impl(CUDABackend, value, False, True, True)[:2]
        types.append(kind)
        if kind == "constexpr":
            constants[(i,)] = value
        elif isinstance(attr, str) and attr:
            attrs[(i,)] = CUDABackend.parse_attr(attr)
    return types, constants, attrs


def gpu_kernel(bind, fn):
    """``fn`` as a ``JITFunction`` for a GPU target, even where ``TRITON_INTERPRET=1`` makes ``triton.jit`` return
    the interpreter's wrapper (the tests run both in one process). ``bind()`` binds the module's ``tl`` first."""
    from triton.runtime.jit import JITFunction

    bind()
    return JITFunction(fn)


def compile_for(jit_fn, args: tuple, kwargs: dict, arch: int) -> Compiled:
    """Compile ``jit_fn`` (a ``triton.jit`` kernel) for ``sm_<arch>`` with the launch's ``args`` and ``kwargs``
    (constexprs, plus ``num_warps`` / ``num_stages``), as :func:`launch_spec`-style callers build them."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    names = jit_fn.arg_names
    values = list(args) + [kwargs[n] for n in names[len(args):]]
    constexpr = [p.is_constexpr for p in jit_fn.params]
    types, constants, attrs = specialise(values, constexpr)
    signature = dict(zip(names, types))
    try:
        compiled = triton.compile(ASTSource(jit_fn, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                                  options=options)
    except Exception as err:  # noqa: BLE001  (ptxas's own refusal of a target: reported, the target skipped)
        if "ptxas" in str(err) or "sm_" in str(err) or "arch" in str(err).lower():
            raise TargetUnavailable(f"sm_{arch}: {str(err).splitlines()[0][:200]}") from None
        raise
    usage, sass = _cuobjdump(compiled.asm["cubin"])
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", usage)
    if match is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line:\n{usage}")
    registers, stack, static_shared = (int(x) for x in match.groups())
    return Compiled(arch, registers, _spill_stores(compiled.asm["ptx"], arch), stack,
                    int(compiled.metadata.shared) + static_shared, options.get("num_warps", 4), sass)


def _spill_stores(ptx: str, arch: int) -> int:
    """Bytes of spill stores per thread, from ``ptxas -v`` on the kernel's PTX (the ptxas Triton picks for the
    target): the stack frame alone also counts a few bytes that are not spills."""
    from triton.backends.nvidia.compiler import get_ptxas

    target = re.search(r"^\s*\.target\s+(sm_\w+)", ptx, re.MULTILINE)
    gpu = target.group(1) if target else f"sm_{arch}"  # sm_90a / sm_100a: the PTX names its own target
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kernel.ptx").write_text(ptx)
        log = subprocess.run([get_ptxas(arch).path, f"--gpu-name={gpu}", "-v", "kernel.ptx", "-o",
                              "kernel.o"], cwd=tmp, capture_output=True, text=True).stderr
    match = re.search(r"(\d+) bytes spill stores", log)
    if match is None:
        raise RuntimeError(f"ptxas -v gave no spill line:\n{log[-2000:]}")
    return int(match.group(1))


def _cuobjdump(cubin: bytes) -> tuple[str, str]:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        Path(path).write_bytes(cubin)
        usage = subprocess.run([str(tool), "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([str(tool), "-sass", path], capture_output=True, text=True, check=True).stdout
    return usage, sass


_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)")
_MMA_SHAPE = re.compile(r"^(HMMA|HGMMA|IMMA)\.(?:(\d+)x(\d+)x(\d+)|(\d{2})(\d)(\d+))")


def sass_instructions(sass: str) -> list[tuple[int, str]]:
    """``(address, instruction)`` of every SASS line (predicates kept)."""
    out = []
    for line in sass.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def inner_loop(sass: str) -> list[str]:
    """The instructions of the kernel's main loop: the longest range closed by a backward branch (the key/value
    tile loop; loops of the polynomial inside it are part of it)."""
    code = sass_instructions(sass)
    loops = []
    for address, text in code:
        m = _BRANCH.search(text)
        if m and int(m.group(1), 16) < address:
            loops.append((int(m.group(1), 16), address))
    if not loops:
        return []
    start, end = max(loops, key=lambda r: r[1] - r[0])
    return [text for address, text in code if start <= address <= end]


def opcode(instruction: str) -> str:
    """The opcode with its modifiers (``FFMA``, ``HGMMA.64x64x16.F32.BF16``), without a predicate."""
    return re.sub(r"^@!?U?P[T0-9]+\s+", "", instruction).split()[0]


def loop_classes(sass: str, num_warps: int) -> dict[str, float]:
    """Per inner-loop iteration of one program: the instruction counts by class (per warp), the tensor-core
    FMAs of the whole program (``mma_16bit`` / ``mma_tf32``), shared-memory bytes, and ``total`` instructions."""
    counts: dict[str, float] = collections.defaultdict(float)
    for instruction in inner_loop(sass):
        op = opcode(instruction)
        base = op.split(".")[0]
        counts["total"] += 1
        mma = _MMA_SHAPE.match(op)
        if mma:
            if mma.group(2):  # HGMMA.MxNxK: one per warpgroup of four warps
                fmas = int(mma.group(2)) * int(mma.group(3)) * int(mma.group(4)) * max(1, num_warps // 4)
            else:  # HMMA.16816: per warp
                fmas = int(mma.group(5)) * int(mma.group(6)) * int(mma.group(7)) * num_warps
            kind = "mma_tf32" if "TF32" in op else "mma_16bit"
            counts[kind] += fmas
            counts["mma"] += 1
        elif base.startswith("UTC") and "MMA" in base:  # Blackwell's tcgen05: the shape lives in a descriptor
            counts["mma_unknown"] += 1
        elif base.startswith("MUFU"):
            counts["mufu"] += 1
        elif base in _FP32:
            counts["fp32"] += 1
        elif base in _CVT:
            counts["cvt"] += 1
        elif base in _ALU:
            counts["alu"] += 1
        elif base.startswith("SHFL"):
            counts["shfl"] += 1
        elif base in _MEM_SHARED:
            counts["shared"] += 1
            counts["shared_bytes"] += _access_bytes(op) * 32 * num_warps
        elif base in _MEM_GLOBAL:
            counts["global"] += 1
        else:
            counts["other"] += 1  # uniform datapath, barriers, branches, moves of predicates
    return dict(counts)


def _access_bytes(op: str) -> int:
    """Bytes per thread of a shared-memory access (``LDS.128``: 16; ``LDSM.16.M88.4``: 16; default 4)."""
    if "LDSM" in op or "STSM" in op:
        m = re.search(r"\.(\d)$", op)
        return 4 * int(m.group(1)) if m else 4
    m = re.search(r"\.(32|64|128)\b", op)
    return int(m.group(1)) // 8 if m else 4


def estimate_cycles(counts: dict[str, float], arch: int, num_warps: int) -> dict[str, float]:
    """An ESTIMATE of the SM cycles one inner-loop iteration of one program takes: each pipe's cycles (instruction
    count x 32 threads x warps / its published per-SM throughput; tensor cores by FMAs; shared memory by bytes),
    the issue bound (instructions x warps / 4 schedulers), and ``cycles``, the largest of them; ``None`` for every
    entry where the loop holds tensor-core instructions whose shape SASS does not spell (sm_100's tcgen05)."""
    if counts.get("mma_unknown"):
        return dict.fromkeys(("fp32", "alu", "mufu", "cvt", "shfl", "mma", "shared", "issue", "cycles"))
    rates = THROUGHPUT[min(THROUGHPUT, key=lambda a: abs(a - arch))]
    threads = 32 * num_warps
    pipes = {name: counts.get(name, 0.0) * threads / rates[name] for name in ("fp32", "alu", "mufu", "cvt", "shfl")}
    pipes["mma"] = counts.get("mma_16bit", 0.0) / rates["mma_16bit"] + counts.get("mma_tf32", 0.0) / rates["mma_tf32"]
    pipes["shared"] = counts.get("shared_bytes", 0.0) / SHARED_BYTES_PER_CLOCK
    pipes["issue"] = counts.get("total", 0.0) * num_warps / ISSUE_PER_CLOCK
    pipes["cycles"] = max(pipes.values())
    return pipes
