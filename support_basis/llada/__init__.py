"""The model directory's code as a package: ``LLaDA-8B-Instruct-BS/*.py`` through symlinks, one source of truth.

The same files load as ``trust_remote_code`` from a model directory (transformers copies them) and from the
repository root (the top-level symlinks); here their relative imports resolve inside the package, so the library
imports the model, its config and the op without a top-level module:

    from support_basis.llada.hybrid_attention import hybrid_attention
    from support_basis.llada.modeling_llada import LLaDAModelLM
"""

from pathlib import Path

CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "hybrid_attention.py", "hybrid_fit.py",
              "hybrid_sample.py", "hybrid_native.py", "hybrid_triton.py")
"""The Python files every LLaDA-BS model directory carries (``auto_map`` names the first two; the rest are their
relative imports)."""

MODEL_DIR = (Path(__file__).parent / "configuration_llada.py").resolve().parent
"""The model directory these files live in (``LLaDA-8B-Instruct-BS/``: also its config.json and model card)."""
