#!/usr/bin/env python
"""Time per denoising step of the web demo (app.py), as its page reports it: hybrid, exact, and compare mode.

    python bench/demo.py                                   # the shipped trained tiny model, the page's defaults
    python bench/demo.py --model /tmp/tiny --rounds 5

One chat question answered with the page's default settings (gen length 64, 32 steps, block 32, greedy), through
the demo's own machinery (support_basis/demo: the shared model's hooks, the worker thread, the per-step
confidences, the HTML), display delay 0. Per configuration, the median over rounds of: wall seconds per step of the
decode (what the canvas shows), model seconds per step (time inside the forwards), and the whole chat turn per
step (decode + rendering + the answer). In compare mode the two decodes share the model forward by forward, so
each one's wall time per step is about the sum of both models' times. The attention op runs the model's
``hybrid_kernel`` (``--kernel``, default auto: as in the app). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import time
from pathlib import Path

from _common import REPO, add_kernel_flag, emit_json, kernel_ran, machine, print_table

QUESTION = "Which of these is a source of light? A. the Moon B. the Sun C. a mirror D. a window"


def decode_times(shared, ids, settings, compare: bool):
    """Run one decode (or exact + hybrid at once); return {tag: (wall s/step, model s/step, steps)}."""
    from support_basis.demo.stepping import DecodeRun, Finished

    events: queue.Queue = queue.Queue()
    sides = {"hybrid": settings}
    if compare:
        sides = {"exact": settings.with_knobs(1.0, settings.chebyshev_degree), **sides}
    runs = [DecodeRun(shared, ids, s, tag=t, events=events).start() for t, s in sides.items()]
    for run in runs:
        run.thread.join()
    out = {}
    while not events.empty():
        tag, event = events.get()
        if isinstance(event, Finished):
            out[tag] = (event.seconds / event.steps, event.model_seconds / event.steps, event.steps)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="support_basis/checkpoints/llada-tiny", help="model directory (default: the shipped one)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per configuration (default 3; median reported)")
    add_kernel_flag(p)
    a = p.parse_args(argv)
    model_dir = a.model if Path(a.model).exists() else str(REPO / a.model)

    from support_basis.demo.session import Demo
    from support_basis.demo.shared_model import SharedModel
    from support_basis.demo.stepping import Settings
    from support_basis.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir, "auto", "auto", hybrid_kernel=a.kernel)
    shared = SharedModel(model.requires_grad_(False), tokenizer)
    demo = Demo(shared)
    base = Settings(exact_ratio=model.config.hybrid_exact_ratio, chebyshev_degree=model.config.hybrid_chebyshev_degree)
    ids = demo.prompt_ids([], QUESTION)
    configs = {
        f"hybrid {base.exact_ratio:g}/{base.chebyshev_degree}": (base, False),
        "exact": (base.with_knobs(1.0, base.chebyshev_degree), False),
        "compare (exact + hybrid at once)": (base, True),
    }
    print(f"# demo time per step: {a.model} (d_model {model.config.d_model}, {model.config.n_layers} layers), "
          f"prompt {len(ids)} tokens, gen_length {base.gen_length}, steps {base.steps}, block {base.block_length}; "
          f"hybrid kernel {kernel_ran(a.kernel, model.device)}; {machine()}")
    decode_times(shared, ids, base, False)  # warm-up
    rows, record = [], {}
    for name, (settings, compare) in configs.items():
        walls, models, turns = [], [], []
        for _ in range(a.rounds):
            times = decode_times(shared, ids, settings, compare)
            walls.append(max(t[0] for t in times.values()))
            models.append(sum(t[1] for t in times.values()))
            t0 = time.perf_counter()
            for _view in demo.turn([], [], QUESTION, settings, compare=compare, delay_seconds=0.0):
                pass
            turns.append((time.perf_counter() - t0) / settings.steps)
        wall, model_s, turn = (statistics.median(v) * 1e3 for v in (walls, models, turns))
        rows.append({"name": name, "wall": wall, "model": model_s, "turn": turn})
        record[name] = {"wall_ms_per_step": round(wall, 2), "model_ms_per_step": round(model_s, 2),
                        "turn_ms_per_step": round(turn, 2)}
    print_table(rows, [("name", "configuration", "<34"), ("wall", "wall ms/step", ".1f"),
                       ("model", "model ms/step", ".1f"), ("turn", "chat turn ms/step", ".1f")])
    emit_json({"bench": "demo", "model": a.model, "kernel": kernel_ran(a.kernel, model.device), "prompt_tokens": len(ids), "gen_length": base.gen_length,
               "steps": base.steps, "block_length": base.block_length, "machine": machine(), "results": record})


if __name__ == "__main__":
    main()
