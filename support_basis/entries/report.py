"""Output: CSV, JSON, the printed table and the plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .analysis import CSV_COLUMNS, AnalysisResult
from .families import KINDS


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """One line per (layer, kind) with ``CSV_COLUMNS``; floats with 8 significant digits."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def write_json(result: AnalysisResult, path: str | Path, extra: dict | None = None) -> Path:
    """``{"meta": ..., "rows": [...]}`` (non-finite floats as null)."""
    path = Path(path)
    payload = {"meta": {**result.meta, **(extra or {})}, "rows": result.rows}
    path.write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
    return path


def _pct(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "nan"
    if v == 0:
        return "0"
    return f"{100 * v:.3g}%"


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of the headline columns, one line per (layer, kind)."""
    head = (f"{'layer':>5} {'qk':>2} {'std':>8} {'kurt':>7} {'>sqrt(ln n)':>11} {'gauss':>8} {'>3std':>8} "
            f"{'gauss':>7} {'max|x|':>8} {'max/thr':>7} {'proxy':>9} {'prx/var':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['layer']:>5} {r['kind']:>2} {r['std']:>8.4g} {r['excess_kurtosis']:>7.3g} "
            f"{_pct(r['frac_gt_sqrt_ln_n']):>11} {_pct(r['gauss_frac_gt_sqrt_ln_n']):>8} "
            f"{_pct(r['frac_gt_3std']):>8} {_pct(r['gauss_frac_gt_3std']):>7} {r['max_abs']:>8.4g} "
            f"{r['max_abs_over_sqrt_ln_n']:>7.3g} {r['var_proxy']:>9.4g} {r['var_proxy_ratio']:>7.3g}"
        )
    return "\n".join(lines)


def summary_line(result: AnalysisResult, extra: dict | None = None) -> str:
    """One JSON line: run facts plus, per kind, the range over layers of the headline numbers."""
    s = {k: result.meta[k] for k in ("model", "family", "n", "sqrt_ln_n", "sequences", "tokens", "layers")}
    for kind in KINDS:
        rs = [r for r in result.rows if r["kind"] == kind]
        if not rs:
            continue
        s[kind] = {
            "std_min": min(r["std"] for r in rs),
            "std_max": max(r["std"] for r in rs),
            "max_abs": max(r["max_abs"] for r in rs),
            "excess_kurtosis_max": max(r["excess_kurtosis"] for r in rs),
            "frac_gt_sqrt_ln_n_min": min(r["frac_gt_sqrt_ln_n"] for r in rs),
            "frac_gt_sqrt_ln_n_max": max(r["frac_gt_sqrt_ln_n"] for r in rs),
            "gauss_frac_gt_sqrt_ln_n_max": max(r["gauss_frac_gt_sqrt_ln_n"] for r in rs),
            "frac_gt_3std_max": max(r["frac_gt_3std"] for r in rs),
            "var_proxy_ratio_max": max(r["var_proxy_ratio"] for r in rs),
        }
    s.update(extra or {})

    def rnd(v):
        return float(f"{v:.5g}") if isinstance(v, float) and math.isfinite(v) else v

    return json.dumps(_jsonable({k: ({a: rnd(b) for a, b in v.items()} if isinstance(v, dict) else rnd(v))
                                 for k, v in s.items()}), allow_nan=False)


def _short(name: str, limit: int = 40) -> str:
    """A model name short enough for a figure title: the last two path components of a long local path."""
    if len(name) <= limit:
        return name
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else name[-limit:]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _gauss_pdf(xs: np.ndarray, mean: float, std: float) -> np.ndarray:
    if not std > 0:
        return np.zeros_like(xs)
    return np.exp(-0.5 * ((xs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def plot_layer_histograms(result: AnalysisResult, kind: str, path: str | Path, *, bins: int = 121) -> Path:
    """A grid of per-layer histograms (density, log y) of ``kind`` entries, the Gaussian with the same mean and
    std overlaid, and red dashed lines at +-sqrt(ln n). Statistics in the titles use ALL entries; the histogram
    uses the plotting subsample."""
    plt = _plt()
    rows = [r for r in result.rows if r["kind"] == kind]
    k = len(rows)
    ncols = min(4, max(1, k))
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    thr = result.meta["sqrt_ln_n"]
    for ax, r in zip(axes.flat, rows):
        x = result.samples[(kind, r["layer"])]
        lim = max(1.05 * float(np.max(np.abs(x))) if x.size else 1.0, 1.3 * thr)
        counts, edges = np.histogram(x, bins=bins, range=(-lim, lim), density=True)
        width = edges[1] - edges[0]
        floor = 0.5 / (max(x.size, 1) * width)
        ax.stairs(np.maximum(counts, floor / 10), edges, fill=True, color="tab:blue" if kind == "q" else "tab:orange",
                  alpha=0.75, label="entries (histogram)")
        xs = np.linspace(-lim, lim, 600)
        ax.plot(xs, _gauss_pdf(xs, r["mean"], r["std"]), "k-", lw=1, label="Gaussian, same mean/std")
        for s in (-1, 1):
            ax.axvline(s * thr, color="red", ls="--", lw=1)
        ax.set_yscale("log")
        top = max(counts.max() if counts.size else 1.0, _gauss_pdf(np.array([r["mean"]]), r["mean"], r["std"])[0])
        ax.set_ylim(floor, 3 * top)
        ax.set_xlim(-lim, lim)
        ax.set_title(
            f"layer {r['layer']} {kind}: std {r['std']:.3g}, kurt {r['excess_kurtosis']:.2g}\n"
            f">sqrt(ln n) {_pct(r['frac_gt_sqrt_ln_n'])} (Gauss {_pct(r['gauss_frac_gt_sqrt_ln_n'])}), "
            f"max {r['max_abs']:.3g}",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    if rows:
        axes.flat[0].legend(fontsize=6, loc="upper left")
    m = result.meta
    fig.suptitle(f"{_short(m['model'])} ({m['family']}): {kind} entries per layer; n={m['n']}, "
                 f"red: +-sqrt(ln n)={thr:.3f}", fontsize=10)
    # fixed margins (tight_layout costs a full extra draw); inches -> figure fractions
    h, w = fig.get_size_inches()[1], fig.get_size_inches()[0]
    fig.subplots_adjust(left=0.55 / w, right=1 - 0.15 / w, bottom=0.35 / h, top=1 - 0.75 / h, hspace=0.4,
                        wspace=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_summary(result: AnalysisResult, path: str | Path) -> Path:
    """Per-layer curves for q and k: std, max|x| (with sqrt(ln n)), fraction beyond sqrt(ln n) (with the Gaussian
    expectation), fraction beyond 3 std (with 0.27 %), excess kurtosis, variance proxy / variance."""
    plt = _plt()
    thr = result.meta["sqrt_ln_n"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    colors = {"q": "tab:blue", "k": "tab:orange"}
    panels = [
        ("std", "std", None, False),
        ("max_abs", "max |x|", thr, True),
        ("frac_gt_sqrt_ln_n", "fraction |x| > sqrt(ln n)", "gauss_frac_gt_sqrt_ln_n", True),
        ("frac_gt_3std", "fraction |x - mean| > 3 std", "gauss_frac_gt_3std", True),
        ("excess_kurtosis", "excess kurtosis (Gaussian: 0)", 0.0, False),
        ("var_proxy_ratio", "variance proxy / variance (Gaussian: 1)", 1.0, False),
    ]
    for ax, (key, title, ref, logy) in zip(axes.flat, panels):
        for kind in KINDS:
            rs = [r for r in result.rows if r["kind"] == kind]
            ls = [r["layer"] for r in rs]
            ys = np.array([r[key] for r in rs], dtype=float)
            if logy:
                ys = np.where(ys > 0, ys, np.nan)
            ax.plot(ls, ys, "o-", color=colors[kind], label=kind, ms=4)
            if isinstance(ref, str):
                ax.plot(ls, [r[ref] for r in rs], "--", color=colors[kind], lw=1, label=f"{kind}: Gaussian")
        if key == "std":
            ax.axhline(thr, color="red", ls="--", lw=1, label="sqrt(ln n)")
        elif isinstance(ref, float) and key == "max_abs":
            ax.axhline(ref, color="red", ls="--", lw=1, label="sqrt(ln n)")
        elif isinstance(ref, float):
            ax.axhline(ref, color="gray", ls=":", lw=1)
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    m = result.meta
    fig.suptitle(f"{_short(m['model'])} ({m['family']}): q/k entry statistics vs layer; n={m['n']}, "
                 f"sqrt(ln n)={thr:.3f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _binned_kde(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Silverman bandwidth) of ``x`` on the uniform ``grid``, by binning and convolution."""
    if x.size < 2 or not np.std(x) > 0:
        return np.zeros_like(grid)
    h = 1.06 * np.std(x) * x.size ** (-0.2)
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, [grid[-1] + step / 2]])
    counts, _ = np.histogram(x, bins=edges)
    half = int(math.ceil(5 * h / step))
    ker = np.exp(-0.5 * (np.arange(-half, half + 1) * step / h) ** 2)
    dens = np.convolve(counts, ker, mode="full")[half : half + len(grid)]
    return dens / (x.size * h * math.sqrt(2 * math.pi))


def plot_kde_overlay(result: AnalysisResult, path: str | Path, *, points: int = 1200) -> Path:
    """The paper's style of figure: every layer's KDE on one axis (q solid, k dashed, one colour per layer) and
    red dashed lines at +-sqrt(ln n); linear density axis. KDE = binned Gaussian kernel (no scipy)."""
    plt = _plt()
    thr = result.meta["sqrt_ln_n"]
    allx = np.concatenate([s for s in result.samples.values() if s.size] or [np.zeros(1)])
    lo, hi = np.quantile(allx, [0.001, 0.999])
    span = max(abs(lo), abs(hi), 1.5 * thr)
    grid = np.linspace(-1.1 * span, 1.1 * span, points)
    layers = result.meta["layers"]
    cmap = plt.get_cmap("viridis" if len(layers) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(10, 6))
    for i, layer in enumerate(layers):
        color = cmap(i / max(1, len(layers) - 1)) if len(layers) > 10 else cmap(i % 10)
        for kind, ls in (("q", "-"), ("k", "--")):
            x = result.samples.get((kind, layer))
            if x is not None:
                ax.plot(grid, _binned_kde(x, grid), ls, color=color, lw=1.2, label=f"layer {layer} {kind}")
    for s in (-1, 1):
        ax.axvline(s * thr, color="red", ls="--", lw=1.2)
    ax.text(thr, ax.get_ylim()[1] * 0.95, " sqrt(ln n)", color="red", fontsize=8, va="top")
    m = result.meta
    ax.set_title(f"{_short(m['model'])} ({m['family']}): q (solid) / k (dashed) densities, all layers\n"
                 f"n={m['n']}, red: +-sqrt(ln n)={thr:.3f}", fontsize=10)
    ax.set_xlabel("entry value")
    ax.set_ylabel("density")
    ax.legend(fontsize=6, ncol=2 if len(layers) <= 16 else 4, loc="upper right")
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
