"""Synthetic tasks with exact answers for training and judging the shipped tiny LLaDA (``support_basis/checkpoints/llada-tiny``).

``problems``: the task family (key-value recall, largest/smallest, addition/subtraction), seeded, with a fixed
held-out split. ``schemas``: one problem as a row of each benchmark's hub schema, so the unchanged runners
evaluate the tiny model exactly as they evaluate LLaDA-8B. ``heldout``: the held-out files the runners read.
"""

from .heldout import write_heldout
from .problems import KINDS, Problem, heldout_problems, is_heldout, make_problem, training_problem
from .schemas import SCHEMA_WRITERS, to_row

__all__ = ["KINDS", "Problem", "heldout_problems", "is_heldout", "make_problem", "training_problem",
           "SCHEMA_WRITERS", "to_row", "write_heldout"]
