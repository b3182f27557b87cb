"""The two protocols a runner can follow, and the published LLaDA-8B-Instruct figures of the official one.

``paper``     the support-basis paper's runners: their prompts, letter answers, answers of 32 tokens (64 for GPQA),
              8 steps per 32-token block. No accuracy table was published for it.
``official``  the run behind LLaDA-8B-Instruct's published figures: LLaDA's OpenCompass configs
              (``opencompass/examples/llada_instruct_gen_*.py`` in github.com/ML-GSAI/LLaDA, each naming a dataset
              config under ``opencompass/opencompass/configs/datasets/``), their prompts, shots, splits, sampler
              settings (steps = gen_length, temperature 0, low-confidence remasking, chat template) and
              OpenCompass's post-processing of the answer (:mod:`support_basis.evaluation.opencompass`).

The figures are LLaDA's ``EVAL.md`` (LLaDA-8B-Instruct tables): "internal" is its internal toolkit's row, the
numbers the LLaDA paper reports; "opencompass" is its OpenCompass row, the numbers these configs reproduced there.
A run is compared with a published figure only when its settings are that figure's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("paper", "official")
REPO = "github.com/ML-GSAI/LLaDA"


@dataclass(frozen=True)
class Sampler:
    """What a protocol runs by default: the answer length, block length, total steps and EOS/EoT ranking."""

    gen_length: int
    block_length: int
    steps: int
    confidence_eos_eot_inf: bool = False


@dataclass(frozen=True)
class Published:
    """One published figure (accuracy, %) of LLaDA-8B-Instruct and the sampler settings it was measured with."""

    sampler: Sampler
    internal: float
    opencompass: float
    source: str  # the OpenCompass example config of the run, in LLaDA's repository


def paper_sampler(gen_length: int) -> Sampler:
    """The paper's runners: 8 steps per 32-token block."""
    return Sampler(gen_length, 32, 8 * (gen_length // 32))


# per task: the official sampler, the example config the settings were read from, its dataset config
OFFICIAL = {
    "mmlu": (Sampler(3, 3, 3), "llada_instruct_gen_mmlu_length3_block3.py", "mmlu/mmlu_gen_a484b3.py"),
    "hellaswag": (Sampler(3, 3, 3), "llada_instruct_gen_hellaswag_length3_block3.py",
                  "hellaswag/hellaswag_gen_6faab5.py"),
    "arc_challenge": (Sampler(512, 512, 512), "llada_instruct_gen_arcc_length512_block512.py",
                      "ARC_c/ARC_c_gen.py -> ARC_c_gen_1e0de5.py"),
    "gpqa": (Sampler(64, 64, 64, True), "llada_instruct_gen_gpqa_length64_block64_confidence.py",
             "gpqa/gpqa_fewshot_gen.py"),
    "gsm8k": (Sampler(512, 512, 512, True), "llada_instruct_gen_gsm8k_length512_block512_confidence.py",
              "gsm8k/gsm8k_gen.py -> gsm8k_gen_1d7fe4.py"),
}

PUBLISHED = {
    "mmlu": (Published(OFFICIAL["mmlu"][0], 65.5, 65.4, OFFICIAL["mmlu"][1]),),
    "hellaswag": (Published(OFFICIAL["hellaswag"][0], 74.6, 75.3, OFFICIAL["hellaswag"][1]),),
    "arc_challenge": (Published(OFFICIAL["arc_challenge"][0], 88.5, 89.2, OFFICIAL["arc_challenge"][1]),),
    "gpqa": (Published(OFFICIAL["gpqa"][0], 33.3, 32.3, OFFICIAL["gpqa"][1]),),
    "gsm8k": (
        Published(OFFICIAL["gsm8k"][0], 69.4, 68.8, OFFICIAL["gsm8k"][1]),
        # semi-autoregressive: EVAL.md's second table (block diffusion against excessive EOS)
        Published(Sampler(256, 8, 256), 78.6, 78.9, "llada_instruct_gen_gsm8k_length256_block8.py"),
    ),
}

# where a baseline more than 2 points off most likely comes from, said where the user reads the report
GAP_CAUSES = ("dtype (the published runs loaded bfloat16: --dtype bfloat16)", "data split or subset (see README)",
              "prompt template or chat template (the model's tokenizer_config.json)", "a --limit subset",
              "sampler settings other than the published ones")
GAP_POINTS = 2.0


def published_for(task: str, settings: dict) -> Published | None:
    """The published figure whose settings ``settings`` (a run's) are: same protocol, task, sampler, temperature 0,
    low-confidence remasking, no CFG, no fast-sampler cache or threshold; else ``None``."""
    if settings.get("protocol") != "official":
        return None
    if settings.get("temperature") or settings.get("cfg_scale") or settings.get("remasking") != "low_confidence":
        return None
    if settings.get("cache", "none") != "none" or settings.get("threshold") is not None \
            or settings.get("factor") is not None:
        return None
    run = Sampler(settings["gen_length"], settings["block_length"], settings["steps"],
                  bool(settings.get("confidence_eos_eot_inf")))
    return next((p for p in PUBLISHED.get(task, ()) if p.sampler == run), None)


def default_sampler(task: str, protocol: str, paper_gen_length: int) -> Sampler:
    """The sampler a protocol runs ``task`` with unless flags say otherwise; ``ValueError`` for a task the
    protocol does not define."""
    if protocol == "official":
        if task not in OFFICIAL:
            have = ", ".join(OFFICIAL)
            raise ValueError(f"--protocol official: {task} has no official LLaDA-8B-Instruct setting (LLaDA's "
                             f"OpenCompass configs define {have}); run it with --protocol paper")
        return OFFICIAL[task][0]
    if protocol == "paper":
        return paper_sampler(paper_gen_length)
    raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
