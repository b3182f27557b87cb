#!/usr/bin/env python
"""Turn an official LLaDA-8B-Instruct snapshot into a ready LLaDA-8B-Instruct-BS model directory.

    python scripts/prepare_model.py --source GSAI-ML/LLaDA-8B-Instruct --out models/LLaDA-8B-Instruct-BS
    python scripts/prepare_model.py --source /data/LLaDA-8B-Instruct --out models/bs --exact-ratio 0.2 --chebyshev-degree 4

The output directory holds: links to the source's weights (``*.safetensors`` + index) and tokenizer files (or
copies with ``--copy``), a ``config.json`` that is the source's plus the hybrid-attention fields and an
``auto_map`` pointing at this project's code, and that code (``configuration_llada.py``, ``modeling_llada.py``,
``hybrid_attention.py``). Nothing is half-written: the source is checked first (config, parameter names, every
shard's header, size and tensor names against the index, the tokenizer), the directory is assembled beside
``--out`` and moved into place at the end (``--force`` replaces the old contents entirely, so no stale weight
file survives). Errors are one line on stderr with exit status 2. Load it with
``AutoModel.from_pretrained(OUT, trust_remote_code=True, dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import argparse

from support_basis.errors import ArgumentParser, UserError, cli
from support_basis.prepare import PrepareError, prepare  # noqa: F401  (re-exported)


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="official checkpoint: a local directory or a hub id")
    p.add_argument("--out", required=True, help="the BS model directory to write")
    p.add_argument("--exact-ratio", type=float, default=0.2, help="hybrid_exact_ratio in [0, 1] (default 0.2)")
    p.add_argument("--chebyshev-degree", type=int, default=6, help="hybrid_chebyshev_degree >= 1 (default 6)")
    p.add_argument("--copy", action="store_true", help="copy weights and tokenizer instead of linking them")
    p.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --source")
    a = p.parse_args(argv)
    try:
        out = prepare(a.source, a.out, exact_ratio=a.exact_ratio, chebyshev_degree=a.chebyshev_degree,
                      copy=a.copy, force=a.force, revision=a.revision)
    except ValueError as err:  # the hybrid knobs' validators
        raise UserError(str(err)) from None
    print(f"wrote {out}\nload it with: AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True, "
          "dtype=torch.bfloat16)")


if __name__ == "__main__":
    main()
