#!/usr/bin/env python
"""Write a tiny random LLaDA-BS model directory: same code, small config, a small tokenizer.

    python scripts/make_tiny_model.py OUT_DIR [--d-model 64 --n-layers 2 --n-heads 4 ...]

The directory loads offline in about a second with ``AutoModel.from_pretrained(OUT_DIR, trust_remote_code=True)``
and ``AutoTokenizer.from_pretrained(OUT_DIR)``. Its tokenizer is a byte-level BPE trained here on a built-in
paragraph; it carries LLaDA's special tokens (``<|mdm_mask|>``, ``<|eot_id|>``, the header tokens, BOS/EOS) and
LLaDA's chat template, and the config's ``mask_token_id`` / ``eos_token_id`` / ``pad_token_id`` point at them.
The weights are random: whatever the model generates is noise. For tests, demos and smoke runs.
"""

import argparse

from support_basis.errors import ArgumentParser, UserError, check_output_dir, cli, positive_int
from support_basis.tiny_model import build_tokenizer, make_tiny_model  # noqa: F401  (re-exported)


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="directory to write (created if missing)")
    p.add_argument("--d-model", type=positive_int, default=64)
    p.add_argument("--n-layers", type=positive_int, default=2)
    p.add_argument("--n-heads", type=positive_int, default=4)
    p.add_argument("--n-kv-heads", type=positive_int, default=None)
    p.add_argument("--mlp-hidden-size", type=positive_int, default=None, help="default: 2 * d_model")
    p.add_argument("--vocab-size", type=int, default=512, help="tokenizer size, special tokens included")
    p.add_argument("--max-sequence-length", type=positive_int, default=1024)
    p.add_argument("--exact-ratio", type=float, default=0.2)
    p.add_argument("--chebyshev-degree", type=int, default=6)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rope-theta", type=float, default=500000.0,
                   help="RoPE base (LLaDA-8B: 500000; 10000 gives a 32-dim head more usable short-range frequencies)")
    p.add_argument("--weight-tying", action="store_true",
                   help="output layer = input embedding (LLaDA-8B: untied; tied, a tiny model copies a token from "
                   "its prompt to its answer without learning one output row per token)")
    p.add_argument("--tokenizer-corpus", default="builtin", choices=["builtin", "synthetic"],
                   help="what the BPE merges are learned from: a built-in paragraph, or the synthetic tasks' prompts")
    p.add_argument("--embedding-std", type=float, default=None,
                   help="initial std of the token embeddings (default: the model's init, 1/sqrt(d_model)); 1 lets a "
                   "tiny model learn key lookups (docs/llada-tiny.md)")
    a = p.parse_args(argv)
    if a.embedding_std is not None and not 0 < a.embedding_std <= 100:
        p.error(f"--embedding-std must be in (0, 100]; got {a.embedding_std}")
    if not 300 <= a.vocab_size <= 1_000_000:  # the BPE trainer aborts the process far above that
        p.error(f"--vocab-size must be in [300, 1000000] (256 bytes + special tokens + merges); got {a.vocab_size}")
    check_output_dir(a.out_dir, "out_dir")
    try:
        out = make_tiny_model(
            a.out_dir,
            d_model=a.d_model,
            n_layers=a.n_layers,
            n_heads=a.n_heads,
            n_kv_heads=a.n_kv_heads,
            mlp_hidden_size=a.mlp_hidden_size,
            vocab_size=a.vocab_size,
            max_sequence_length=a.max_sequence_length,
            seed=a.seed,
            exact_ratio=a.exact_ratio,
            chebyshev_degree=a.chebyshev_degree,
            dtype=a.dtype,
            tokenizer_corpus=a.tokenizer_corpus,
            rope_theta=a.rope_theta,
            weight_tying=a.weight_tying,
            embedding_std=a.embedding_std,
        )
    except ValueError as err:  # the config's checks (head counts, hybrid knobs): nothing was written
        raise UserError(str(err)) from None
    print(f"wrote a tiny random LLaDA-BS model to {out} (random weights: its text is noise)")


if __name__ == "__main__":
    main()
