"""The table of a whole grid of runs: ``summary.md``, ``summary.csv`` and ``accuracy.png`` under an output dir.

Reads every ``<out>/<task>/<config>/summary.json``; a configuration's delta is its accuracy minus the exact
configuration's of the same protocol on the same task (``exact``, ``official_exact``), with the standard error of
that difference (the two runs being independent samples of the same items, which makes it conservative).

An ``official`` run whose settings are a published run's is shown beside LLaDA-8B-Instruct's published figure
(:mod:`support_basis.evaluation.protocols`), read the way it was published (OpenCompass's answer extraction; MMLU
as the mean over its subjects), with the gap; a gap over 2 points is flagged with its likely causes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import UserError, read_json_object
from .answers import PARSERS
from .protocols import GAP_CAUSES, GAP_POINTS, REPO, published_for
from .tasks import TASKS

_PARSER_HEADINGS = {
    "reader": "Answers read as a person would (`--answer_parser reader`, the paper protocol's default)",
    "paper": "The paper's parser, the first standalone A-E (`--answer_parser paper`), comparable with the paper",
    "opencompass": "OpenCompass's answer extraction (`--answer_parser opencompass`, the official protocol's "
                   "default), what the published figures scored",
    "flexible": "GSM8K, lm-eval's flexible extraction, the last number (`--answer_parser flexible`)",
    "strict": "GSM8K, lm-eval's strict extraction, the number after `####` (`--answer_parser strict`)",
}


def collect(out_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(out_dir).glob("*/*/summary.json")):
        s = read_json_object(path, fix="re-run that configuration to rewrite it, or delete its directory")
        try:
            title = s.get("title") or (TASKS[s["task"]].title if s["task"] in TASKS else s["task"])
            rows.append({"task": s["task"], "title": title, "config": s["config"],
                         "protocol": s.get("protocol", "paper"), "settings": s.get("settings", {}),
                         "accuracy": s["accuracy"], "stderr": s["stderr"], "n": s["n"], "unparsed": s["unparsed"],
                         "items_per_s": s.get("items_per_s"), "mean_nfe": s.get("mean_nfe"),
                         "answer_parser": s.get("answer_parser", "reader"),
                         # summaries written before both parsers were scored hold the reader's only
                         "by_parser": s.get("by_parser") or {"reader": {k: s[k] for k in ("accuracy", "stderr",
                                                                                           "unparsed")}}})
        except (KeyError, TypeError) as err:
            raise UserError(f"{path} is not a run summary (no field {err}); re-run that configuration to rewrite "
                            "it, or delete its directory") from None
        _check_numbers(path, rows[-1])
    by_name = {(r["task"], r["config"]): r for r in rows}
    for r in rows:
        # the exact run of the same protocol and sampler settings, else the protocol's default exact run
        base = by_name.get((r["task"], _baseline_name(r["config"]))) \
            or by_name.get((r["task"], _exact_name(r["protocol"])))
        if base is not None and r is not base:
            r["delta"] = r["accuracy"] - base["accuracy"]
            r["delta_stderr"] = math.hypot(r["stderr"], base["stderr"])
            for parser, acc in r["by_parser"].items():
                if parser in base["by_parser"]:
                    acc["delta"] = acc["accuracy"] - base["by_parser"][parser]["accuracy"]
    order = {name: i for i, name in enumerate(TASKS)}
    rows.sort(key=lambda r: (r["protocol"] != "paper", order.get(r["task"], 99), _config_order(r["config"])))
    return rows


def _check_numbers(path: Path, row: dict) -> None:
    """The figures a table prints are what a run can write: shares in [0, 1], counts >= 0 (a hand-edited or damaged
    summary would print nan or a negative count in one table and a number in another)."""
    fix = "re-run that configuration to rewrite it, or delete its directory"

    def share(value, name):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise UserError(f"{path}: {name} is {value!r}, not a share in [0, 1]; {fix}")

    def count(value, name):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{path}: {name} is {value!r}, not a count >= 0; {fix}")

    share(row["accuracy"], "accuracy")
    share(row["stderr"], "stderr")
    count(row["n"], "n")
    count(row["unparsed"], "unparsed")
    for parser, reading in row["by_parser"].items():
        if not isinstance(reading, dict):
            raise UserError(f"{path}: by_parser.{parser} is not an object; {fix}")
        for key in ("accuracy", "stderr"):
            if key in reading:
                share(reading[key], f"by_parser.{parser}.{key}")


def _exact_name(protocol: str) -> str:
    return "exact" if protocol == "paper" else f"{protocol}_exact"


def _is_exact(config: str) -> bool:
    return config.split("__")[0] in ("exact", "official_exact")


def _baseline_name(config: str) -> str:
    """``official_ratio0.2_deg4__gen256`` -> ``official_exact__gen256``: exact attention, same sampler settings."""
    head, _, sampler = config.partition("__")
    prefix = "official_" if head.startswith("official_") else ""
    return f"{prefix}exact" + (f"__{sampler}" if sampler else "")


def _config_order(config: str):
    protocol = config.split("_", 1)[0] if config.startswith("official_") else "paper"
    return (protocol != "paper", not _is_exact(config), config)


def published_row(r: dict) -> dict | None:
    """For an exact-attention official run at a published setting: the published figures, the run's figure read
    as they were (OpenCompass's extraction; MMLU's mean over subjects), the gap and whether it is flagged."""
    if not _is_exact(r["config"]) or r["protocol"] != "official":
        return None
    published = published_for(r["task"], r["settings"])
    if published is None:
        return None
    reading = r["by_parser"].get("opencompass")
    if reading is None:
        return None
    ours = 100 * reading.get("macro_accuracy", reading["accuracy"]) if r["task"] == "mmlu" \
        else 100 * reading["accuracy"]
    gap = ours - published.opencompass
    return {"published": published, "ours": ours, "gap": gap, "flag": abs(gap) > GAP_POINTS,
            "limited": r["settings"].get("limit") is not None, "dtype": r["settings"].get("dtype")}


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
    # a row per task and protocol (their data may differ: GPQA's subset, ARC-C's split)
    tasks = list(dict.fromkeys((r["task"], r["protocol"]) for r in rows))
    cell = {((r["task"], r["protocol"]), r["config"]): r for r in rows}

    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "config", "protocol", "accuracy", "stderr", "n", "unparsed", "delta_vs_exact",
                    "delta_stderr", "items_per_s", "mean_nfe", "answer_parser"]
                   + [f"{k}_{parser}" for parser in PARSERS for k in ("accuracy", "stderr", "unparsed")]
                   + ["published_opencompass", "published_internal", "as_published", "gap_vs_published",
                      "gap_over_2_points"])
        for r in rows:
            pub = published_row(r)
            w.writerow([r["task"], r["config"], r["protocol"], f"{r['accuracy']:.6f}", f"{r['stderr']:.6f}", r["n"],
                        r["unparsed"], _fmt(r.get("delta"), ".6f"), _fmt(r.get("delta_stderr"), ".6f"),
                        _fmt(r.get("items_per_s"), ".4f"), _fmt(r.get("mean_nfe"), ".2f"), r["answer_parser"]]
                       + [_fmt(r["by_parser"].get(parser, {}).get(k), spec) for parser in PARSERS
                          for k, spec in (("accuracy", ".6f"), ("stderr", ".6f"), ("unparsed", "d"))]
                       + ([f"{pub['published'].opencompass:.1f}", f"{pub['published'].internal:.1f}",
                           f"{pub['ours']:.2f}", f"{pub['gap']:+.2f}", "yes" if pub["flag"] else "no"]
                          if pub else ["", "", "", "", ""]))

    tables = [f"{_PARSER_HEADINGS[parser]}:\n\n{_markdown_table(tasks, configs, cell, parser)}" for parser in PARSERS
              if any(parser in r["by_parser"] for r in rows)]
    md_path = out / "summary.md"
    md_path.write_text(
        _published_section(rows)
        + "Accuracy (%) ± standard error; in parentheses the difference to exact attention of the same protocol "
        "(percentage points).\n\n" + "\n\n".join(tables) + "\n"
    )
    png_path = _plot(out / "accuracy.png", tasks, configs, cell)
    return [md_path, csv_path, png_path]


def _published_section(rows: list[dict]) -> str:
    """The official exact baselines beside LLaDA-8B-Instruct's published figures ("" when there is none)."""
    lines, flagged = [], []
    for r in rows:
        pub = published_row(r)
        if pub is None:
            continue
        p, s = pub["published"], r["settings"]
        setting = (f"{s['gen_length']}/{s['block_length']}, {s['steps']} steps"
                   + (", confidence_eos_eot_inf" if s.get("confidence_eos_eot_inf") else ""))
        flag = "**off by more than 2 points**" if pub["flag"] else "within 2 points"
        title = r["title"]
        lines.append(f"| {title} (n={r['n']}) | {setting} | {p.opencompass:.1f} | {p.internal:.1f} | "
                     f"{pub['ours']:.2f} | {pub['gap']:+.2f} | {flag} |")
        if pub["flag"]:
            flagged.append(r)
    if not lines:
        return ""
    text = ("## Exact attention against LLaDA-8B-Instruct's published figures\n\n"
            f"Published: LLaDA's EVAL.md ({REPO}); OpenCompass is the row these settings reproduce there, internal "
            "its internal toolkit's (the LLaDA paper's). Ours is the exact baseline read as published (OpenCompass's "
            "answer extraction; MMLU as the mean over subjects); gap = ours - OpenCompass.\n\n"
            "| task | gen/block, steps | OpenCompass | internal | ours | gap | |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(lines) + "\n")
    for r in flagged:
        notes = [c for c in GAP_CAUSES if not (c.startswith("dtype") and r["settings"].get("dtype") == "bfloat16")
                 and not (c.startswith("a --limit") and r["settings"].get("limit") is None)]
        text += (f"\n{r['title']} is more than {GAP_POINTS:g} points from the published figure. Likely causes, "
                 f"most likely first: {'; '.join(notes)}.\n")
    return text + "\n"


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
        title = next(cell[(t, c)]["title"] for c in configs if (t, c) in cell)
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
    titles = [next(cell[(t, c)]["title"] for c in configs if (t, c) in cell) for t in tasks]
    ax.set_xticks(range(len(tasks)), titles, rotation=15)
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
