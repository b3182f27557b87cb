"""Shared helpers of the benchmark scripts: timing, peak memory, the machine, the closing JSON line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from support_basis.llada.configuration_llada import KERNELS
from support_basis.llada.hybrid_attention import select_kernel
from support_basis.reporting import machine  # noqa: F401  (re-exported for the benchmarks)

REPO = Path(__file__).resolve().parents[1]


def add_kernel_flag(parser) -> None:
    """``--kernel``: the hybrid_kernel the benchmark runs (default auto, what users get)."""
    parser.add_argument("--kernel", default="auto", choices=KERNELS,
                        help="hybrid_kernel to time (default auto: what users get; each row says what ran)")


def kernel_ran(kernel: str, device, dtype=torch.float32) -> str:
    """What ``kernel`` runs for inference on ``device`` with ``dtype`` inputs: ``"auto->native"`` or ``"eager"``."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    ran = select_kernel(kernel, torch.device(device), compute, False)
    return f"auto->{ran}" if kernel == "auto" else ran


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_ms(fn, device="cpu", repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls in milliseconds, after ``warmup`` calls (compilation, caches)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def interleaved_ms(fns: dict, device="cpu", rounds: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (ms) of each function, one call each per round, rounds interleaved: a slow spell of a shared
    machine hits every function alike, so per-round ratios are steadier than ratios of separate best-ofs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


class PeakMemory:
    """Peak extra memory of a block, in MB: CUDA allocator peak, or the process's resident high-water mark.

    On CPU the kernel's peak RSS (VmHWM) is reset through /proc/self/clear_refs, so the figure covers the block
    alone; where that is unavailable the result is None.
    """

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.mb = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                _release_free_memory()  # freed heap pages still count as resident; give them back first
                Path("/proc/self/clear_refs").write_text("5")
                self.base = _status_kb("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.base is not None:
            self.mb = (_status_kb("VmHWM") - self.base) / 1024
        return False


def _release_free_memory() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, header, format). Missing values print as '-'."""
    widths = [max(len(h), 10) for _, h, _ in columns]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for r in rows:
        cells = []
        for (key, _, fmt), w in zip(columns, widths):
            v = r.get(key)
            cells.append(("-" if v is None else format(v, fmt)).rjust(w))
        print("  ".join(cells))


def emit_json(payload: dict) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(payload, default=lambda o: round(o, 6) if isinstance(o, float) else str(o)))


SIZES = {  # random LLaDA shapes of the benchmarks; "full" is LLaDA-8B's own config
    "small": dict(d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=704),
    "mid": dict(d_model=1024, n_heads=8, n_layers=8, mlp_hidden_size=2816),
}


def random_llada(size: str = "mid", device="cpu", dtype=torch.float32, **overrides):
    """A LLaDA-BS model with random weights: ``"full"`` (the LLaDA-8B shape), ``"mid"`` (8 layers, d_model 1024,
    8 heads of 128, SwiGLU 2816) or ``"small"`` (4 layers, d_model 256); vocabulary 32768 except for "full".
    ``overrides`` set config fields (token ids)."""
    import json

    from support_basis.llada.configuration_llada import LLaDAConfig
    from support_basis.llada.modeling_llada import LLaDAModelLM

    if size == "full":
        fields = json.loads((REPO / "LLaDA-8B-Instruct-BS" / "config.json").read_text())
        fields.pop("auto_map", None)
    else:
        fields = dict(SIZES[size], vocab_size=32768, embedding_size=32768, max_sequence_length=4096,
                      mask_token_id=32000, eos_token_id=32001, pad_token_id=32001, bos_token_id=32002)
    torch.manual_seed(0)
    with torch.device(device):
        return LLaDAModelLM(LLaDAConfig(**{**fields, **overrides})).to(dtype).eval()
