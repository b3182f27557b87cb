"""Masked-diffusion supervised fine-tuning of a LLaDA(-BS) model: the loss, the data, atomic checkpoints.

``scripts/train_llada.py`` is the command line; it trains the shipped tiny model (``support_basis/checkpoints/llada-tiny``) on
the synthetic tasks and is written to fine-tune LLaDA-8B on a GPU in bf16 from a JSONL file the same way.
"""
