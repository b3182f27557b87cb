"""The table of a whole grid of runs: ``summary.md``, ``summary.csv`` and ``accuracy.png`` under an output dir.

Reads every ``<out>/<task>/<config>/summary.json``; a configuration's delta is its accuracy minus the ``exact``
configuration's on the same task (with the standard error of that difference, the two runs being independent
samples of the same items, which makes it conservative).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import UserError, read_json_object
from .answers import PARSERS
from .tasks import TASKS

_PARSER_HEADINGS = {
    "reader": "Answers read as a person would (`--answer_parser reader`, the default)",
    "paper": "The paper's parser, the first standalone A-E (`--answer_parser paper`), comparable with the paper",
}


def collect(out_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(out_dir).glob("*/*/summary.json")):
        s = read_json_object(path, fix="re-run that configuration to rewrite it, or delete its directory")
        try:
            rows.append({"task": s["task"], "title": s.get("title", s["task"]), "config": s["config"],
                         "accuracy": s["accuracy"], "stderr": s["stderr"], "n": s["n"], "unparsed": s["unparsed"],
                         "items_per_s": s.get("items_per_s"), "mean_nfe": s.get("mean_nfe"),
                         "answer_parser": s.get("answer_parser", "reader"),
                         # summaries written before both parsers were scored hold the reader's only
                         "by_parser": s.get("by_parser") or {"reader": {k: s[k] for k in ("accuracy", "stderr",
                                                                                           "unparsed")}}})
        except (KeyError, TypeError) as err:
            raise UserError(f"{path} is not a run summary (no field {err}); re-run that configuration to rewrite "
                            "it, or delete its directory") from None
    exact = {r["task"]: r for r in rows if r["config"] == "exact"}
    for r in rows:
        base = exact.get(r["task"])
        if base is not None and r["config"] != "exact":
            r["delta"] = r["accuracy"] - base["accuracy"]
            r["delta_stderr"] = math.hypot(r["stderr"], base["stderr"])
            for parser, acc in r["by_parser"].items():
                if parser in base["by_parser"]:
                    acc["delta"] = acc["accuracy"] - base["by_parser"][parser]["accuracy"]
    order = {name: i for i, name in enumerate(TASKS)}
    rows.sort(key=lambda r: (order.get(r["task"], 99), _config_order(r["config"])))
    return rows


def _config_order(config: str):
    return (config != "exact", config)


def write_report(out_dir: str | Path) -> list[Path]:
    """Write the three files; return their paths. Raises :class:`UserError` if ``out_dir`` is not a directory,
    holds no finished run, or a summary.json there is corrupt (naming it)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a directory; pass the --out_dir of the runs (results by default)")
    rows = collect(out)
    if not rows:
        raise UserError(f"no finished runs under {out} (looked for {out}/<task>/<config>/summary.json); run a "
                        f"benchmark runner (or run_all.sh) with --out_dir {out} first")
    configs = sorted({r["config"] for r in rows}, key=_config_order)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cell = {(r["task"], r["config"]): r for r in rows}

    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "config", "accuracy", "stderr", "n", "unparsed", "delta_vs_exact", "delta_stderr",
                    "items_per_s", "mean_nfe", "answer_parser"]
                   + [f"{k}_{parser}" for parser in PARSERS for k in ("accuracy", "stderr", "unparsed")])
        for r in rows:
            w.writerow([r["task"], r["config"], f"{r['accuracy']:.6f}", f"{r['stderr']:.6f}", r["n"], r["unparsed"],
                        _fmt(r.get("delta"), ".6f"), _fmt(r.get("delta_stderr"), ".6f"),
                        _fmt(r.get("items_per_s"), ".4f"), _fmt(r.get("mean_nfe"), ".2f"), r["answer_parser"]]
                       + [_fmt(r["by_parser"].get(parser, {}).get(k), spec) for parser in PARSERS
                          for k, spec in (("accuracy", ".6f"), ("stderr", ".6f"), ("unparsed", "d"))])

    tables = [f"{_PARSER_HEADINGS[parser]}:\n\n{_markdown_table(tasks, configs, cell, parser)}" for parser in PARSERS
              if any(parser in r["by_parser"] for r in rows)]
    md_path = out / "summary.md"
    md_path.write_text(
        "Accuracy (%) ± standard error; in parentheses the difference to exact attention (percentage points).\n\n"
        + "\n\n".join(tables) + "\n"
    )
    png_path = _plot(out / "accuracy.png", tasks, configs, cell)
    return [md_path, csv_path, png_path]


def _markdown_table(tasks, configs, cell, parser: str) -> str:
    """One table, task x configuration, of the accuracies under ``parser`` ("-" where a run lacks it)."""
    md = ["| task | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    for t in tasks:
        cells = []
        for c in configs:
            r = cell.get((t, c))
            acc = None if r is None else r["by_parser"].get(parser)
            if acc is None:
                cells.append("-")
                continue
            text = f"{100 * acc['accuracy']:.2f} ± {100 * acc['stderr']:.2f}"
            if "delta" in acc:
                text += f" ({100 * acc['delta']:+.2f})"
            cells.append(text)
        title = TASKS[t].title if t in TASKS else t
        n = max(cell[(t, c)]["n"] for c in configs if (t, c) in cell)
        md.append(f"| {title} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(md)


def _plot(path: Path, tasks, configs, cell) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 3.6))
    width = 0.8 / len(configs)
    for j, c in enumerate(configs):
        xs, ys, es = [], [], []
        for i, t in enumerate(tasks):
            r = cell.get((t, c))
            if r is not None:
                xs.append(i + (j - (len(configs) - 1) / 2) * width)
                ys.append(100 * r["accuracy"])
                es.append(100 * r["stderr"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=c)
    ax.set_xticks(range(len(tasks)), [TASKS[t].title if t in TASKS else t for t in tasks], rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncols=min(4, len(configs)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt(v, spec):
    return "" if v is None else format(v, spec)
