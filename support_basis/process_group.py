"""Leaving a torch.distributed process group cleanly at the end of a multi-process command."""

from __future__ import annotations


def leave_process_group() -> None:
    """Destroy the default process group, if one was started (gloo on CPU, NCCL on GPUs, under torchrun or
    accelerate launch), while the interpreter is still whole.

    Left to interpreter shutdown, gloo's worker threads can still hold tensors and a rank then dies with SIGABRT
    ("terminate called without an active exception") after its results were written: a finished run that
    torchrun reports as failed. Local to the calling rank: no collective, so it cannot hang after a failure.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
