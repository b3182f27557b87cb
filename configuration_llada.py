"""LLaDA-BS's config class, importable from the checkout's root (``from configuration_llada import LLaDAConfig``).

A thin name for ``support_basis.llada.configuration_llada``, the one copy of the code; not installed by the wheel.
"""

from support_basis.llada.configuration_llada import *  # noqa: F401,F403
from support_basis.llada.configuration_llada import LLaDAConfig  # noqa: F401
