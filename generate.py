#!/usr/bin/env python
"""Answer prompts with a LLaDA-BS model: LLaDA's diffusion sampler from the command line.

    python generate.py --prompt "What is 7 * 8?"                       # the shipped tiny LLaDA, on a CPU
    python generate.py --model models/LLaDA-8B-Instruct-BS --prompt "What is 7 * 8?" --prompt "Name a colour."

``--steps`` is the TOTAL number of denoising steps, spread over the blocks of ``--block-length`` (the first
``steps % n_blocks`` blocks get one more where they do not divide); ``--cache``, ``--threshold`` and ``--factor``
select the fast sampler (Fast-dLLM style); ``--exact-ratio``, ``--chebyshev-degree``, ``--exact-split``, ``--fit`` and
``--kernel`` override the model's hybrid-attention knobs. As a module it re-exports the sampler, so LLaDA's own
spelling keeps working::

    from generate import generate
    out = generate(model, input_ids, attention_mask, steps=128, gen_length=128, block_length=32)

The sampler itself lives in ``support_basis.sampling``, loading and padding in ``support_basis.loading``.
"""

from support_basis.generate_cli import main
from support_basis.loading import (  # noqa: F401  (re-exported: the names generate.py has always offered)
    DEFAULT_MODEL,
    encode_prompts,
    left_pad,
    load_model_and_tokenizer,
    load_tokenizer,
    pad_id_of,
    tokenize_prompts,
)
from support_basis.sampling import (  # noqa: F401  (re-exported)
    CACHE_MODES,
    MAX_CFG_SCALE,
    MAX_TEMPERATURE,
    REMASKING,
    add_gumbel_noise,
    check_fast_sampling,
    check_schedule,
    generate,
    model_device,
    returned_cache,
    steps_per_block,
    transfer_schedule,
)

if __name__ == "__main__":
    main()
