"""The model code: LLaDA-BS's config, model and the support-basis op. The one copy that runs.

Every entry point of this project imports these modules (``support_basis.loading`` loads a model directory's
weights into ``LLaDAModelLM`` from here), so an edit here takes effect in the next run, whatever directory the
weights come from. A model directory carries byte-identical copies of ``CODE_FILES`` only for people who load
it with ``trust_remote_code`` elsewhere; ``support_basis.code_identity`` writes and checks them. The files use
relative imports only, so the same bytes work as this package and as remote code.

    from support_basis.llada.hybrid_attention import hybrid_attention
    from support_basis.llada.modeling_llada import LLaDAModelLM
"""

from pathlib import Path

CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "hybrid_attention.py", "hybrid_constants.py",
              "hybrid_fit.py", "hybrid_sample.py", "hybrid_native.py", "hybrid_triton.py")
"""The Python files every LLaDA-BS model directory carries (``auto_map`` names the first two; the rest are their
relative imports)."""

PACKAGE_DIR = Path(__file__).resolve().parent
"""Where the code that runs lives."""

MODEL_CARD = PACKAGE_DIR / "MODEL_CARD.md"
"""The model card a prepared directory gets as its README.md."""


def register_auto_classes() -> None:
    """Register ``LLaDAConfig`` / ``LLaDAModelLM`` for ``model_type`` "llada" with transformers' Auto classes
    (their documented ``register`` API), so ``AutoModel.from_pretrained(dir)`` without ``trust_remote_code`` runs
    this package's code too. Idempotent."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_llada import LLaDAConfig
    from .modeling_llada import LLaDAModelLM

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForCausalLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
