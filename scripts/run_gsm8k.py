#!/usr/bin/env python
"""GSM8K by generation with a LLaDA-BS model, under the official LLaDA-8B-Instruct protocol (its only one: 4-shot
chat prompt, gen_length 512 in one block, 512 steps, EOS/EoT revealed last; answers read by OpenCompass's rule and
lm-eval's strict and flexible ones). --help lists the flags.

    python scripts/run_gsm8k.py --model_name models/LLaDA-8B-Instruct-BS --configs exact 0.2:6 --dtype bfloat16
    python scripts/run_gsm8k.py ... --gen_length 256 --block_length 8 --confidence_eos_eot_inf 0   # the 78.6 run
"""


from support_basis.evaluation.cli import main

if __name__ == "__main__":
    main("gsm8k")
