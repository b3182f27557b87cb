#!/usr/bin/env python
"""Prepare a LLaDA-8B-Instruct-BS model directory from an official checkpoint, or refresh a directory's code
copies: ``support_basis.prepare_cli`` (installed as ``llada-prepare``), whose docstring describes the result."""

from support_basis.prepare import PrepareError, prepare  # noqa: F401  (re-exported)
from support_basis.prepare_cli import main

if __name__ == "__main__":
    main()
