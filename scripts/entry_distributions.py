#!/usr/bin/env python
"""Entry distributions of the pre-RoPE queries and keys, per layer, against +-sqrt(ln n) (arXiv 2510.01643).

    python scripts/entry_distributions.py --model PATH_OR_ID [--texts FILE | --images DIR] [--max-tokens N]
        [--layers all | 0 5 11] [--n N] [--dtype float32] [--device cpu] [--trust-remote-code] --out DIR

Hooks the q / k projections of every selected layer (families: llada, llama (TinyLlama, Mistral-like), phi,
phi-fused (Wqkv / qkv_proj, split by head counts), opt, vit, bert), runs the inputs, keeps the entries of the
real tokens only (padding excluded through the attention mask) and writes into --out:

    stats.csv / stats.json   per (layer, q|k): count, n, sqrt(ln n), mean, std, skewness, excess kurtosis,
                             fraction beyond sqrt(ln n) / 3 std / 4 std with the Gaussian expectation for the same
                             mean and std, max |x|, 99.9 % quantile of |x|, empirical sub-Gaussian variance proxy
    hist_q.png / hist_k.png  per-layer histograms (log density) + Gaussian of the same variance + +-sqrt(ln n)
    summary.png              std, max|x|, tail fractions, kurtosis, proxy/variance vs layer
    kde_overlay.png          all layers' densities on one axis (the paper's figure style)

Text models read --texts (one text per line; default: ten built-in English passages), truncated to --max-tokens
(capped at the model's position limit). ViT reads --images DIR, else deterministic synthetic images. n is the
longest input sequence (tokens; CLS + patches for ViT) unless --n is given. Prints a table, then one JSON line.
Offline use: set HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from support_basis import entries as es
from support_basis.errors import ArgumentParser, UserError, check_output_dir, cli, positive_int, read_text
from support_basis.model_dir import check_device, check_model_dir



def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local model directory or hub id")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--texts", default=None, help="text file, one text per line (default: built-in passages)")
    p.add_argument("--images", default=None, help="ViT only: directory of images (default: synthetic images)")
    p.add_argument("--num-images", type=positive_int, default=8, help="ViT synthetic images (default 8)")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per text after truncation (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--layers", nargs="+", default=["all"], help="'all' (default) or layer indices, e.g. 0 5 11 or -1")
    p.add_argument("--n", type=int, default=None, help="n of sqrt(ln n) (default: the longest input sequence)")
    p.add_argument("--family", choices=sorted(es.FAMILIES), default=None, help="override family detection")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="needed for remote-code checkpoints (LLaDA)")
    p.add_argument("--plot-samples", type=positive_int, default=200_000,
                   help="entries per layer and q/k kept for plots")
    p.add_argument("--seed", type=int, default=0, help="plot subsampling and synthetic images")
    p.add_argument("--no-plots", action="store_true", help="write stats only")
    return p


@cli
def main(argv=None) -> int:
    """Every input is checked before the model loads; an expected failure is one line on stderr, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_tokens < 2:
        parser.error(f"argument --max-tokens: must be at least 2; got {args.max_tokens}")
    if args.n is not None and args.n < 2:
        parser.error(f"argument --n: must be at least 2 (sqrt(ln n) is 0 at n = 1); got {args.n}")
    if args.texts and args.images:
        parser.error("--texts is for text models and --images for ViT models: give one of them")
    if args.texts:
        read_text(args.texts, "--texts")  # exists, is UTF-8
        try:
            es.load_texts(args.texts)
        except ValueError as err:
            raise UserError(f"--texts {err}; give a file with one text per line") from None
    if args.images and not Path(args.images).is_dir():
        raise UserError(f"--images {args.images} is not a directory; pass a directory of image files")
    out = check_output_dir(args.out, "--out")  # created only when the results are written
    check_model_dir(args.model, "--model", llada=False, tokenizer=False)
    device = check_device(args.device)
    t0 = time.time()
    try:
        model = es.load_model(args.model, dtype=args.dtype, device=device, trust_remote_code=args.trust_remote_code)
    except ValueError as err:  # every loader refused it; the message lists why (and hints at --trust-remote-code)
        raise UserError(str(err)) from None
    try:
        family = args.family or es.detect_family(model)
        projections = es.find_projections(model, family)
    except es.UnsupportedModelError as err:  # a model of no supported family, or a wrong --family
        raise UserError(str(err)) from None
    available = [p.layer for p in projections]
    try:
        positions = es.parse_layers(args.layers, len(available))
    except ValueError as e:
        raise UserError(str(e)) from None
    layers = [available[i] for i in positions]
    model_dtype = next(model.parameters()).dtype

    if family == "vit":
        if args.texts:
            raise UserError("--texts is for text models; a ViT reads --images DIR (or synthetic images)")
        processor = None
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(args.model)
        except Exception:  # noqa: BLE001 - no processor config: normalise by hand (documented)
            processor = None
        try:
            batches, inputs_desc = es.image_batches(
                model, images_dir=args.images, num_images=args.num_images, batch_size=args.batch_size, seed=args.seed,
                device=device, dtype=model_dtype, processor=processor,
            )
        except ValueError as err:  # --images holds no image file
            raise UserError(f"--images: {err}") from None
        inputs_desc += "; " + ("image processor of the checkpoint" if processor else "pixels scaled to [-1, 1]")
    else:
        if args.images:
            raise UserError("--images is for ViT models; text models read --texts FILE")
        from transformers import AutoTokenizer

        from support_basis.llada import register_auto_classes

        register_auto_classes()  # a LLaDA directory's config resolves to the package's class, no remote code
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        texts = es.load_texts(args.texts)
        max_tokens = args.max_tokens
        limit = es.max_positions(model, tokenizer)
        if limit is not None and max_tokens > limit:
            print(f"note: --max-tokens {max_tokens} exceeds the model's limit {limit}; using {limit}")
            max_tokens = limit
        batches = es.text_batches(model, tokenizer, texts, max_tokens=max_tokens, batch_size=args.batch_size,
                                  device=device)
        src = args.texts or "built-in passages"
        inputs_desc = f"{len(texts)} texts ({src}), truncated to {max_tokens} tokens"

    result = es.analyse(model, batches, family=family, layers=layers, n=args.n, plot_samples=args.plot_samples,
                        seed=args.seed, model_name=args.model)
    result.meta.update(inputs=inputs_desc, dtype=str(model_dtype).replace("torch.", ""), device=str(device))

    out.mkdir(parents=True, exist_ok=True)
    files = [es.write_csv(result.rows, out / "stats.csv"), es.write_json(result, out / "stats.json")]
    if not args.no_plots:
        files += [es.plot_layer_histograms(result, kind, out / f"hist_{kind}.png") for kind in es.KINDS]
        files += [es.plot_summary(result, out / "summary.png"), es.plot_kde_overlay(result, out / "kde_overlay.png")]

    m = result.meta
    print(f"model: {args.model}  family: {family} ({m['family_description']})")
    print(f"entries: {m['entries']}")
    print(f"inputs: {inputs_desc}; {m['sequences']} sequences, {m['tokens']} real tokens "
          f"(lengths {m['seq_len_min']}..{m['seq_len_max']}; padding excluded)")
    print(f"n = {m['n']} ({m['n_definition']}): sqrt(ln n) = {m['sqrt_ln_n']:.4f}")
    print("columns: fractions of entries with |x| > sqrt(ln n) and |x - mean| > 3 std, each next to the value "
          "for a Gaussian with the same mean/std; max/thr = max|x| / sqrt(ln n); proxy = empirical sub-Gaussian "
          "variance proxy of the centred entries, prx/var = proxy / variance (Gaussian: 1)")
    print(es.format_table(result.rows))
    print(f"wrote {len(files)} files to {out} in {time.time() - t0:.1f} s")
    print(es.summary_line(result, {"inputs": inputs_desc, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
