"""Library code of the support-basis project.

``support_basis.llada`` is the model code (config, model, the op): the one copy that runs, copied into model
directories only for ``trust_remote_code`` users elsewhere (``code_identity``); ``sampling`` and ``loading`` are
LLaDA's sampler and model loading; ``evaluation``, ``lm_eval_llada``, ``efficiency``, ``entries``, ``demo``,
``training`` and ``synthetic`` serve the command lines in ``scripts/``, ``generate.py`` and ``app.py``, which are
thin over them. Nothing here imports a script.
"""

__version__ = "0.3.0"
