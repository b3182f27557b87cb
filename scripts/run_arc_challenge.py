#!/usr/bin/env python
"""ARC-Challenge by generation with a LLaDA-BS model (the paper's protocol by default). --help lists the flags.

    python scripts/run_arc_challenge.py --model_name models/LLaDA-8B-Instruct-BS --exact_ratio 0.2 --chebyshev_degree 6
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support_basis.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    main("arc_challenge")
