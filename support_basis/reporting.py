"""Where a figure was measured: one line naming the CPU, threads, torch and the GPU, for every report."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def machine() -> str:
    """A one-line description of this machine, e.g. ``AMD EPYC, 2 threads, torch 2.13.0+cpu``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc
