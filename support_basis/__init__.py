"""Library code of the support-basis project: everything but the model directory's own files.

``support_basis.llada`` is the model directory ``LLaDA-8B-Instruct-BS/`` as a package (symlinks: one source of
truth); ``sampling`` and ``loading`` are LLaDA's sampler and model loading; ``evaluation``, ``lm_eval_llada``,
``efficiency``, ``entries``, ``demo``, ``training`` and ``synthetic`` serve the command lines in ``scripts/``,
``generate.py`` and ``app.py``, which are thin over them. Nothing here imports a script.
"""
