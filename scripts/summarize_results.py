#!/usr/bin/env python
"""Tabulate every finished run under an output directory: summary.md, summary.csv and accuracy.png.

    python scripts/summarize_results.py results/

summary.md has one table per answer parser (reader, the default; paper, the paper's first standalone A-E).
"""

import argparse

from support_basis.errors import ArgumentParser, cli


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="the --out_dir of the runs")
    a = p.parse_args(argv)
    from support_basis.evaluation.report import write_report

    paths = write_report(a.out_dir)
    print(paths[0].read_text())
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
