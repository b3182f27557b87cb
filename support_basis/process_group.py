"""Joining and leaving a torch.distributed process group cleanly in a multi-process command.

The hazard both functions guard against: torch modules that take the world group as a *default argument*
(``torch.distributed.nn.functional``: ``broadcast(..., group=group.WORLD)``; ``torch.distributed.fsdp``'s
``ShardedGradScaler(process_group=dist.group.WORLD)``) bind whatever group exists when they are first imported.
transformers imports both when it loads a model, i.e. after accelerate has created the group. The module then holds
the group for the life of the interpreter: ``destroy_process_group()`` cannot free it, gloo's threads run on into
interpreter finalisation, and a rank that has already written its results dies there, at random, with SIGABRT
("terminate called without an active exception"), which torchrun reports as a failed run. Imported before the
group exists, the defaults are ``None`` and nothing holds the group.
"""

from __future__ import annotations

import os
import sys


def import_before_joining() -> None:
    """Import the torch modules that bind the world group at import time; call before creating the group
    (``Accelerator(...)``, ``PartialState(...)``, ``init_process_group``)."""
    import torch.distributed as dist

    if not dist.is_available():  # a torch built without distributed support: no group will be created
        return
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.nn  # noqa: F401


def group_threads() -> list[str]:
    """Names of this process's live gloo threads (Linux; ``[]`` where ``/proc`` has no thread names)."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended while we looked
            continue
        if "gloo" in name:
            names.append(name)
    return sorted(names)


def leave_process_group() -> None:
    """Destroy the default process group, if one was started (gloo on CPU, NCCL on GPUs, under torchrun or
    accelerate launch), while the interpreter is still whole. Local to the calling rank: no collective, so it
    cannot hang after a failure.

    If gloo's threads outlive the group (something still holds it; see the module docstring), says so on stderr:
    that rank may abort at exit.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    gloo = "gloo" in str(dist.get_backend()).lower()
    dist.destroy_process_group()
    left = group_threads() if gloo else []
    if left:
        print(f"warning: the process group's threads outlived destroy_process_group() ({', '.join(left)}); a "
              "module imported after the group was created still holds it (call "
              "support_basis.process_group.import_before_joining() before creating the group), so this process "
              "may abort at exit", file=sys.stderr, flush=True)
