"""LLaDA-BS's model classes, importable from the checkout's root (``from modeling_llada import LLaDAModelLM``).

A thin name for ``support_basis.llada.modeling_llada``, the one copy of the code; not installed by the wheel.
"""

from support_basis.llada.modeling_llada import *  # noqa: F401,F403
from support_basis.llada.modeling_llada import LLaDAModelLM  # noqa: F401
