#!/usr/bin/env python
"""ARC-Easy by generation with a LLaDA-BS model (the paper's protocol by default). --help lists the flags.

    python scripts/run_arc_easy.py --model_name models/LLaDA-8B-Instruct-BS --exact_ratio 0.2 --chebyshev_degree 6
"""


from support_basis.evaluation.cli import main

if __name__ == "__main__":
    main("arc_easy")
