"""Library code of the support-basis project (everything that is not the model directory itself).

The model directory ``LLaDA-8B-Instruct-BS/`` is self-contained remote code; its files are also importable at
the repository root (``hybrid_attention``, ``modeling_llada``, ``configuration_llada``) through symlinks.
"""
