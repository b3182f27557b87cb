#!/usr/bin/env python
"""Computational-efficiency experiment: exact vs polynomial (AS23) vs support-basis attention.

    python scripts/efficiency_experiment.py [--quick] [--out DIR] [--n 4096] [--thresholds 0.15,0.2,...]
                                            [--n-sweep 1024,2048,...] [--dtype float64] [--device cpu] ...

Three parts, all on ``Q, K ~ 0.1 N(0, 1)``, ``V ~ 0.05 N(0, 1)``, ``scale = 1 / d`` (the paper's runtime setting)
unless noted:

1. threshold sweep at ``n = --n``: every method at every ``T`` of ``--thresholds``;
2. n sweep at ``T = --sweep-threshold``: every method for each ``n`` of ``--n-sweep`` and the fitted log-log slope
   of time against ``n``;
3. heavy-tail table at ``n = --heavy-n``: rows with log-normal magnitudes (outlier tokens), where the AS23 interval
   explodes; ``T1`` is chosen so that ``--heavy-top-fraction`` of the rows are handled exactly.

Methods: ``exact`` (chunked softmax), ``as23`` (Alman-Song polynomial), ``sb1`` (single-threshold support basis),
``sb1_oblivious`` (the same fitted on the data-oblivious interval ``d T^2 scale``), ``sbm`` (multi-threshold,
ladder ``T, T/ratio, ...``), ``sbm_sketch`` (``sbm`` with TensorSketch features).  Errors are relative Frobenius
errors against float64 exact attention.  The default working dtype is float64: in float32 the rounding of every
method, exact included (~2e-7 on the output), is larger than the AS23 approximation error of the paper's
setting (~4e-8), so float32 errors cannot show which approximation is better.

Writes ``results.csv``, ``results.json``, ``error_vs_T.png``, ``time_vs_T.png`` and ``time_vs_n.png`` into ``--out``;
prints readable tables; the last line printed is one JSON object summarising the measured goals.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

from support_basis import efficiency as eff
from support_basis.errors import ArgumentParser, check_output_dir, cli, number
from support_basis.reporting import machine

REPO = Path(__file__).resolve().parents[1]

FULL = {
    "n": 4096,
    "d": 64,
    "degree": 2,
    "thresholds": [round(0.15 + 0.05 * i, 3) for i in range(8)],
    "n_sweep": [1024, 2048, 4096, 8192, 16384, 32768],
    "sweep_threshold": 0.4,
    "repeats": 5,
    "matrix_max_n": 4096,
    "heavy_n": 4096,
}
QUICK = {
    "n": 1024,
    "d": 64,
    "degree": 2,
    "thresholds": [0.2, 0.3, 0.4, 0.5],
    "n_sweep": [512, 1024, 2048],
    "sweep_threshold": 0.4,
    "repeats": 1,
    "matrix_max_n": 1024,
    "heavy_n": 1024,
}
SPEEDUP_N = 16384
SLOPE_LIMIT = 1.2
# One look per method in every plot; markers and dash styles differ so that coinciding curves stay visible.
STYLE = {
    "exact": {"color": "black", "marker": "s", "linestyle": "--"},
    "as23": {"color": "tab:blue", "marker": "o", "linestyle": "-"},
    "sb1": {"color": "tab:orange", "marker": "^", "linestyle": "-", "markersize": 8},
    "sb1_oblivious": {"color": "tab:green", "marker": "v", "linestyle": ":"},
    "sbm": {"color": "tab:red", "marker": "x", "linestyle": "-.", "markersize": 8},
    "sbm_sketch": {"color": "tab:purple", "marker": "d", "linestyle": "--"},
}


# ----------------------------------------------------------------------------------------------------------------
# Argument parsing (errors name the flag, the value and what is allowed)
# ----------------------------------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _list_of(item, what: str):
    def parse(text: str) -> list:
        parts = [p for p in text.replace(" ", ",").split(",") if p]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}; item {p!r}: {exc}")
        return out
    return parse


def _device(text: str) -> torch.device:
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected 'cpu' or 'cuda[:index]', got {text!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected 'cpu' or 'cuda[:index]', got {text!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} requested but torch.cuda.is_available() is False; use 'cpu'")
    return dev


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "efficiency", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help=f"small settings for tests (under a minute): {QUICK}; explicit flags still win")
    p.add_argument("--n", type=number(2, integer=True), default=None, help=f"n of the threshold sweep [{FULL['n']}]")
    p.add_argument("--d", type=number(1, integer=True), default=None, help=f"head dimension [{FULL['d']}]")
    p.add_argument("--degree", type=number(1, integer=True), default=None, help=f"polynomial degree g [{FULL['degree']}]")
    p.add_argument("--thresholds", type=_list_of(_positive_float, "positive numbers"), default=None,
                   help="comma-separated thresholds T of the threshold sweep [0.15,0.2,...,0.5]")
    p.add_argument("--n-sweep", type=_list_of(number(2, integer=True), "integers >= 2"), default=None,
                   help=f"comma-separated n of the scaling sweep [{','.join(map(str, FULL['n_sweep']))}]")
    p.add_argument("--sweep-threshold", type=_positive_float, default=None,
                   help=f"T (T1 for sbm) of the n sweep [{FULL['sweep_threshold']}]")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and of the sketch")
    p.add_argument("--device", type=_device, default=torch.device("cpu"), help="cpu or cuda[:index]")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="working dtype of all methods")
    p.add_argument("--repeats", type=number(1, integer=True), default=None,
                   help=f"timed rounds per measurement, methods interleaved, best kept; after one warm-up "
                        f"[{FULL['repeats']}]")
    p.add_argument("--levels", type=number(1, integer=True), default=3, help="number of thresholds of sbm")
    p.add_argument("--ratio", type=_positive_float, default=2.0, help="ratio between consecutive sbm thresholds (>1)")
    p.add_argument("--sketch-dim", type=number(1, integer=True), default=1024, help="TensorSketch size per degree >= 2")
    p.add_argument("--matrix-max-n", type=number(0, integer=True), default=None,
                   help=f"largest n whose attention-matrix error is measured [{FULL['matrix_max_n']}]")
    p.add_argument("--heavy-n", type=number(0, integer=True), default=None,
                   help=f"n of the heavy-tail table, 0 to skip [{FULL['heavy_n']}]")
    p.add_argument("--heavy-sigma", type=_positive_float, default=1.0, help="log-normal sigma of the row magnitudes")
    p.add_argument("--heavy-top-fraction", type=_fraction, default=0.02,
                   help="fraction of heavy-tail rows above T1 (handled exactly)")
    return p


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill unset flags from the quick or full defaults and check the combinations argparse cannot."""
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.ratio <= 1:
        parser.error(f"argument --ratio: expected a number > 1, got {args.ratio}")
    if args.degree > 4 or eff.num_monomials(args.d, args.degree) > 200_000:
        parser.error(f"argument --degree: {args.degree} with --d {args.d} needs "
                     f"{eff.num_monomials(args.d, args.degree)} features; allowed: degree <= 4 and "
                     f"C(d + degree, degree) <= 200000")
    args.thresholds = sorted(set(args.thresholds))
    largest = max([args.n, *args.n_sweep])
    need, have = eff.memory_estimate(largest, args.d, args.dtype), eff.physical_memory()
    if have and need > 0.8 * have:  # said now, not after the table of the smaller n (then killed for memory)
        parser.error(f"n = {largest} (--n / --n-sweep) needs about {need / 2**30:.0f} GiB ({args.dtype} inputs and "
                     f"outputs of every method at d = {args.d}); this machine has {have / 2**30:.0f} GiB: use a "
                     "smaller n, or --dtype float32")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def print_table(title: str, records: list[eff.Record], key: str) -> None:
    """Print one sweep as a fixed-width table, grouped by ``key`` ("threshold" or "n")."""
    print(f"\n== {title} ==")
    header = f"{key:>9} {'method':<14} {'time [s]':>9} {'x exact':>8} {'output err':>11} {'matrix err':>11} " \
             f"{'features':>8} {'large q/k':>11} {'fit B':>9}"
    print(header)
    print("-" * len(header))
    exact_time = {getattr(r, key): r.time_s for r in records if r.method == "exact"}
    last = None
    for r in records:
        group = getattr(r, key)
        if last is not None and group != last:
            print()
        last = group
        speed = exact_time.get(group)
        speed = None if speed is None or r.method == "exact" else speed / r.time_s
        group_txt = _fmt(group, ".3f") if key == "threshold" else str(group)
        print(f"{group_txt:>9} {r.method:<14} {r.time_s:>9.4f} {_fmt(speed, '8.2f'):>8} "
              f"{_fmt(r.output_error, '11.3e'):>11} {_fmt(r.matrix_error, '11.3e'):>11} {r.features:>8} "
              f"{f'{r.large_q}/{r.large_k}':>11} {_fmt(r.bound, '9.4f'):>9}")


def _json_safe(value):
    """Replace non-finite floats by None so that results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_csv(path: Path, records: list[eff.Record]) -> None:
    rows = [r.as_dict() for r in records]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_all(out: Path, records: list[eff.Record], slopes: dict) -> None:
    """``error_vs_T.png``, ``time_vs_T.png`` and ``time_vs_n.png`` (log-log with the fitted slope per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sweep = [r for r in records if r.sweep == "threshold"]
    methods = list(dict.fromkeys(r.method for r in sweep))

    def series(rows, method, attr):
        pts = [(r.threshold if attr != "n" else r.n, getattr(r, attr)) for r in rows if r.method == method]
        return np.array([p[0] for p in pts], dtype=float), np.array([np.nan if p[1] is None else p[1] for p in pts],
                                                                     dtype=float)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, attr, label in ((axes[0], "matrix_error", "attention matrix A"), (axes[1], "output_error", "output D^-1 A V")):
        for m in methods:
            x, y = series(sweep, m, attr)
            keep = np.isfinite(y) & (y > 0)  # float64 exact attention is the reference: error 0, not drawable
            if keep.any():
                ax.semilogy(x[keep], y[keep], label=m, **STYLE.get(m, {}))
        ax.set_xlabel("threshold T")
        ax.set_ylabel("relative Frobenius error")
        ax.set_title(f"Error of {label}" + (" (exact: float64 reference, 0)" if sweep[0].dtype == "float64" else ""),
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "error_vs_T.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m in methods:
        x, y = series(sweep, m, "time_s")
        ax.plot(x, y, label=m, **STYLE.get(m, {}))
    ax.set_xlabel("threshold T")
    ax.set_ylabel("wall time [s] (best of repeats)")
    ax.set_title("Run time vs threshold")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "time_vs_T.png", dpi=120)
    plt.close(fig)

    scaling = [r for r in records if r.sweep == "n"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m in dict.fromkeys(r.method for r in scaling):
        pts = sorted((r.n, r.time_s) for r in scaling if r.method == m)
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], label=f"{m} (slope {slopes.get(m, math.nan):.2f})",
                  **STYLE.get(m, {}))
    ax.set_xlabel("n")
    ax.set_ylabel("wall time [s] (best of repeats)")
    ax.set_title("Run time vs n (log-log, least-squares slope)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "time_vs_n.png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


@cli
def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = resolve(parser.parse_args(argv), parser)
    check_output_dir(args.out, "--out")  # created only when the results are written
    cfg = eff.ExperimentConfig(d=args.d, degree=args.degree, seed=args.seed, repeats=args.repeats,
                               levels=args.levels, ratio=args.ratio, sketch_dim=args.sketch_dim,
                               matrix_max_n=args.matrix_max_n, dtype=getattr(torch, args.dtype), device=args.device)
    started = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", file=sys.stderr, flush=True)

    setting = f"d={cfg.d}, degree {cfg.degree}, scale 1/d, {args.dtype}, {cfg.device}, best of {cfg.repeats}"
    records = eff.threshold_sweep(args.n, args.thresholds, cfg, progress=progress)
    print_table(f"Threshold sweep: n={args.n}, {setting}", records, "threshold")
    scaling = eff.n_sweep(args.n_sweep, args.sweep_threshold, cfg, progress=progress)
    print_table(f"n sweep: T={args.sweep_threshold}, {setting}", scaling, "n")
    records += scaling
    if args.heavy_n > 0:
        heavy = eff.heavy_tail_table(args.heavy_n, cfg, sigma=args.heavy_sigma, top_fraction=args.heavy_top_fraction)
        progress("heavy-tail table done")
        print_table(f"Heavy tails: n={args.heavy_n}, row magnitudes 0.1 exp({args.heavy_sigma} N(0,1)), "
                    f"T1 = {heavy[0].threshold:.3f} ({args.heavy_top_fraction:.0%} rows exact), {setting}",
                    heavy, "n")
        records += heavy

    goals = eff.summarize_goals(records, speedup_n=SPEEDUP_N, slope_limit=SLOPE_LIMIT)
    print("\nfitted log-log slopes of time vs n: " + ", ".join(f"{m} {s:.3f}" for m, s in goals["slopes"].items()))
    args.out.mkdir(parents=True, exist_ok=True)
    plot_all(args.out, records, goals["slopes"])
    write_csv(args.out / "results.csv", records)
    config = {k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()}
    payload = {"config": config, "machine": machine(), "goals": goals, "seconds": time.perf_counter() - started,
               "records": [r.as_dict() for r in records]}
    (args.out / "results.json").write_text(json.dumps(_json_safe(payload), indent=1))
    progress(f"wrote {args.out}/results.csv, results.json, error_vs_T.png, time_vs_T.png, time_vs_n.png")
    print(json.dumps(_json_safe(goals)))
    return goals


if __name__ == "__main__":
    main()
