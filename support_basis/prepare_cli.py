"""The command line that prepares a LLaDA-8B-Instruct-BS model directory (``llada-prepare``, and
``python scripts/prepare_model.py`` in a checkout).

    llada-prepare --source GSAI-ML/LLaDA-8B-Instruct --out models/LLaDA-8B-Instruct-BS
    llada-prepare --source /data/LLaDA-8B-Instruct --out models/bs --exact-ratio 0.2 --chebyshev-degree 4
    llada-prepare --refresh-code models/LLaDA-8B-Instruct-BS      # rewrite its code copies from this package

The output directory holds: links to the source's weights (``*.safetensors`` + index) and tokenizer files (or
copies with ``--copy``), a ``config.json`` that is the source's plus the hybrid-attention fields and an
``auto_map`` pointing at copies of this package's model code (written with their digest, ``bs_code.json``), and
the model card. This project's own commands always run the installed package's code and say when a directory's
copies differ; ``--refresh-code`` rewrites them (for ``trust_remote_code`` users elsewhere). Nothing is
half-written: the source is checked first (config, parameter names, every shard's header, size and tensor names
against the index, the tokenizer), the directory is assembled beside ``--out`` and moved into place at the end
(``--force`` replaces the old contents entirely, so no stale weight file survives). Errors are one line on stderr
with exit status 2.
"""

from __future__ import annotations

import argparse

from .code_identity import refresh_code
from .errors import ArgumentParser, UserError, cli
from .llada.configuration_llada import ConfigValueError
from .prepare import prepare


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="official checkpoint: a local directory or a hub id")
    p.add_argument("--out", help="the BS model directory to write")
    p.add_argument("--refresh-code", metavar="DIR", default=None,
                   help="rewrite the model code copies of an existing BS directory from this package (nothing else)")
    p.add_argument("--exact-ratio", type=float, default=0.2, help="hybrid_exact_ratio in [0, 1] (default 0.2)")
    p.add_argument("--chebyshev-degree", type=int, default=6, help="hybrid_chebyshev_degree >= 1 (default 6)")
    p.add_argument("--copy", action="store_true", help="copy weights and tokenizer instead of linking them")
    p.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --source")
    a = p.parse_args(argv)
    if a.refresh_code is not None:
        if a.source is not None or a.out is not None:
            p.error("--refresh-code DIR works on its own; drop --source/--out")
        out = refresh_code(a.refresh_code)
        print(f"refreshed the model code of {out}")
        return
    if a.source is None or a.out is None:
        p.error("give --source and --out (or --refresh-code DIR)")
    try:
        out = prepare(a.source, a.out, exact_ratio=a.exact_ratio, chebyshev_degree=a.chebyshev_degree,
                      copy=a.copy, force=a.force, revision=a.revision)
    except ConfigValueError as err:  # the hybrid knobs' validators
        raise UserError(str(err)) from None
    print(f"wrote {out}\nrun it with: llada-generate --model {out} --prompt ...  (or load it elsewhere with "
          f"AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True, dtype=torch.bfloat16))")


if __name__ == "__main__":
    main()
