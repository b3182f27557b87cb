#!/usr/bin/env python
"""Tabulate every finished run under an output directory: summary.md, summary.csv and accuracy.png.

    python scripts/summarize_results.py results/
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support_basis.evaluation.report import write_report  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="the --out_dir of the runs")
    a = p.parse_args()
    try:
        paths = write_report(a.out_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(paths[0].read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
