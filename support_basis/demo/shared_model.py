"""One model shared by every decode of the web demo.

The hybrid knobs live on ``model.config`` and are read at every forward, so two decodes with different knobs (two
users, or exact vs hybrid in compare mode) can share one loaded model as long as each forward runs with its own
decode's knobs. ``SharedModel`` does that with a forward pre-hook and a forward hook on the model:

    pre-hook   (thread bound to a ``Decode``) take a FIFO ticket lock, set config.hybrid_* to the decode's knobs
    hook       record the forward's logits, count it (NFE), add its time, release the lock (also on an exception)

so forwards of concurrent decodes interleave one at a time, fairly: each decode advances, none blocks the others
until it ends. A thread not bound to a decode passes through untouched. ``generate()`` is called unchanged on the
real model; nothing here copies its logic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch


class DecodeCancelled(Exception):
    """Raised inside a forward of a decode whose consumer has gone (page closed, Stop pressed)."""


class FairLock:
    """A FIFO ticket lock: threads get the lock in the order they asked for it (``threading.Lock`` may hand it
    straight back to the thread that released it, which would let one decode starve another)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self):
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def release(self):
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass
class Decode:
    """What one decode runs with and what its forwards recorded.

    ``exact_ratio`` / ``chebyshev_degree`` are set on the config before each of its forwards. ``nfe`` counts
    function evaluations as generate()'s ``return_nfe`` does for one prompt: the rows of each forward (a CFG
    forward carries the conditional and the unconditional row: 2),
    ``forward_seconds`` is the time inside them (lock held), ``logits`` is the last forward's output logits
    ``(rows, positions, vocab)`` as the model returned them (not copied), ``input_rows`` that forward's batch rows.
    """

    exact_ratio: float
    chebyshev_degree: int
    nfe: int = 0
    forward_seconds: float = 0.0
    logits: torch.Tensor | None = None
    input_rows: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    _started: float = 0.0


class SharedModel:
    """``model`` + ``tokenizer`` with the hooks above installed once; ``bind(decode)`` binds the calling thread."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self._lock = FairLock()
        self._local = threading.local()
        self._handles = [
            model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True, always_call=True),
        ]

    def bind(self, decode: Decode | None):
        """Run the calling thread's forwards as ``decode`` (None: pass through)."""
        self._local.decode = decode

    def close(self):
        """Remove the hooks (the model is then as loaded)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before_forward(self, module, args, kwargs):
        decode = getattr(self._local, "decode", None)
        if decode is None:
            return None
        if decode.cancelled.is_set():
            raise DecodeCancelled()
        self._lock.acquire()
        self._local.holding = True  # released by _after_forward, which runs even when this hook or forward raises
        module.config.hybrid_exact_ratio = decode.exact_ratio
        module.config.hybrid_chebyshev_degree = decode.chebyshev_degree
        ids = kwargs.get("input_ids", args[0] if args else None)
        decode.input_rows = int(ids.shape[0]) if ids is not None else 1
        decode._started = time.perf_counter()
        return None

    def _after_forward(self, module, args, kwargs, output):
        decode = getattr(self._local, "decode", None)
        if decode is None or not getattr(self._local, "holding", False):
            return None
        try:
            if output is not None:  # None: the forward raised (this hook runs anyway, to release the lock)
                decode.logits = output.logits if hasattr(output, "logits") else output[0]
                decode.nfe += decode.input_rows
                decode.forward_seconds += time.perf_counter() - decode._started
        finally:
            self._local.holding = False
            self._lock.release()
        return None
