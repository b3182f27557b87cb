"""The official protocol's items: LLaDA-8B-Instruct's OpenCompass prompts, shots and splits, for each task.

Read from LLaDA's OpenCompass tree (github.com/ML-GSAI/LLaDA, ``opencompass/opencompass/configs/datasets/``; see
:mod:`support_basis.evaluation.protocols` for the config of each task). How OpenCompass turns a config into the
model's input, and so what is built here: the config's rounds become chat turns (HUMAN -> user, BOT -> assistant;
few-shot examples retrieved with an ``ice_template`` are whole turns before the question), and LLaDA's wrapper
(``opencompass/models/dllm.py``) renders them with the tokenizer's chat template (which trims every turn) and
``add_generation_prompt``. An item's ``prompt`` is the last user turn, its ``history`` the turns before it, each
exactly as the config formats it (untrimmed).

- MMLU (``mmlu_gen_a484b3``): per subject, the subject's first five ``dev`` rows as five question/answer turns
  ("Question: ... Answer: " / "B\\n"), then the test question as "Q: ... A: ", each after a hint naming the subject.
- HellaSwag (``hellaswag_gen_6faab5``, ``HellaswagDataset_V2``): zero-shot; the context is OpenCompass's
  ``query`` without its activity label, i.e. lm-eval's legacy preprocessing of ``activity_label: ctx_a
  Ctx_b`` (``opencompass.hellaswag_text``), the endings preprocessed the same way.
- ARC-C (``ARC_c_gen_1e0de5``, ``ARCDataset``): zero-shot, the ``ARC-Challenge-Dev`` file, i.e. the hub's
  ``validation`` split; items without exactly four choices are left out, as ``ARCDataset`` leaves them out.
- GPQA (``gpqa_fewshot_gen``, ``GPQADataset_``): the ``diamond`` subset; five fixed example questions written into
  the prompt; each item's four answers shuffled by one ``random.Random(0)`` drawn through the rows in file order
  (so an item's letters depend on the rows before it, as there).
- GSM8K (``gsm8k_gen_1d7fe4``): four fixed worked examples as turns, then "Question: ...\\nLet's think step by
  step\\nAnswer:".

The example texts below (GSM8K's four worked examples, GPQA's five questions) are the configs' own, character for
character: the published figures were measured with them. They come from OpenCompass (Apache-2.0, OpenCompass
Contributors) and hold data of GSM8K (MIT, OpenAI) and GPQA (CC BY 4.0, Rein et al.).
"""

from __future__ import annotations

import random

from .answers import LETTERS
from .gsm8k import gold_number
from .items import Item, RowError, arc_options, gold_index, lettered, per_row, text, texts
from .opencompass import hellaswag_text


# ---- MMLU -------------------------------------------------------------------------------------------------------

MMLU_SHOTS = 5


def _mmlu_hint(subject: str) -> str:
    return (f"There is a single choice question about {subject.replace('_', ' ')}. Answer the question by replying "
            "A, B, C or D.")


def _mmlu_row(row: dict, what: str) -> tuple[str, list[str], int, str]:
    question = text(row["question"], f"{what}question")
    options = texts(row["choices"], f"{what}choices", 4)
    if not isinstance(row.get("subject"), str) or not row["subject"].strip():
        raise ValueError(f"{what}subject is {row.get('subject')!r}: it must be text (e.g. 'abstract_algebra')")
    return question, options, gold_index(row["answer"], 4, f"MMLU {what or 'item'}".strip(), "answer"), row["subject"]


def build_mmlu(rows: list[dict], shots: list[dict]) -> list[Item]:
    """Test rows -> items, each with its subject's first five dev rows (``shots``, in file order) as turns."""
    by_subject: dict[str, list] = {}
    for j, row in enumerate(shots):
        try:
            q, opts, gold, subject = _mmlu_row(row, f"few-shot row {j}: ")
        except (KeyError, TypeError, ValueError) as err:
            raise RowError(j, f"(few-shot split) {err}") from None
        by_subject.setdefault(subject, []).append((q, opts, gold))
    items = []
    for idx, row in enumerate(rows):
        try:
            question, options, gold, subject = _mmlu_row(row, "")
            examples = by_subject.get(subject, [])[:MMLU_SHOTS]
            if len(examples) < MMLU_SHOTS:
                raise ValueError(f"subject {subject!r} has {len(examples)} few-shot rows in the dev split; the "
                                 f"official prompt needs {MMLU_SHOTS} (pass the dev split of cais/mmlu)")
            if any(q == question and o == options for q, o, _ in examples):
                raise ValueError("the question is one of its own few-shot examples: the few-shot file must be the "
                                 "dev split, not the test split")
            hint = _mmlu_hint(subject)
            history = tuple((f"{hint}\nQuestion: {q}\n{lettered(o)}\nAnswer: ", f"{LETTERS[g]}\n")
                            for q, o, g in examples)
            prompt = f"{hint}\nQ: {question}\n{lettered(options)}\nA: "
        except (KeyError, TypeError, ValueError) as err:
            raise RowError(idx, str(err)) from None
        items.append(Item(idx, f"{subject}/{idx}", prompt, tuple(options), LETTERS[gold], subject, history))
    return items


# ---- HellaSwag ----------------------------------------------------------------------------------------------------

def _hellaswag(idx: int, row: dict) -> Item:
    label = text(row["activity_label"], "activity_label")
    ctx_a, ctx_b = row["ctx_a"], row["ctx_b"]
    if not isinstance(ctx_a, str) or not isinstance(ctx_b, str) or not (ctx_a + ctx_b).strip():
        raise ValueError(f"ctx_a/ctx_b are {ctx_a!r}/{ctx_b!r}: they must be text, not both empty")
    endings = [hellaswag_text(e) for e in texts(row["endings"], "endings", 4)]
    gold = gold_index(row["label"], 4, f"HellaSwag item {row.get('ind', idx)}", "label")
    query = hellaswag_text(f"{label}: {ctx_a} {ctx_b.capitalize()}")
    ctx = query.split(": ", 1)[-1]
    prompt = (f"{ctx}\nQuestion: Which ending makes the most sense?\n{lettered(endings)}\n"
              "You may choose from 'A', 'B', 'C', 'D'.\nAnswer:")
    return Item(idx, str(row.get("ind", idx)), prompt, tuple(endings), LETTERS[gold], row.get("subject"))


build_hellaswag = per_row(_hellaswag)


# ---- ARC-Challenge ------------------------------------------------------------------------------------------------

def build_arc(rows: list[dict], shots=None) -> list[Item]:
    """Items of the rows with exactly four choices (the others are left out, as OpenCompass's ARCDataset does),
    numbered in order."""
    items = []
    for idx, row in enumerate(rows):
        try:
            options, labels, key = arc_options(row, idx)
        except (KeyError, TypeError, ValueError) as err:
            raise RowError(idx, str(err)) from None
        if len(options) != 4:
            continue
        prompt = f"Question: {row['question']}\n{lettered(options)}\nAnswer:"
        n = len(items)
        items.append(Item(n, str(row.get("id", idx)), prompt, tuple(options), LETTERS[labels.index(key)],
                          row.get("subject")))
    return items


# ---- GPQA ---------------------------------------------------------------------------------------------------------

GPQA_SEED = 0


def build_gpqa(rows: list[dict], shots=None) -> list[Item]:
    """Items with the five-shot prompt; answers shuffled by one ``random.Random(0)`` over the rows in order."""
    rng = random.Random(GPQA_SEED)
    fields = ["Correct Answer"] + [f"Incorrect Answer {i}" for i in (1, 2, 3)]
    items = []
    for idx, row in enumerate(rows):
        try:
            question = text(row["Question"], "Question")
            answers = [text(row[f], f) for f in fields]
            if answers[0].strip() in [a.strip() for a in answers[1:]]:
                raise ValueError(f"Correct Answer {answers[0]!r:.60} is also an Incorrect Answer")
        except (KeyError, TypeError, ValueError) as err:
            raise RowError(idx, str(err)) from None
        correct = answers[0]
        rng.shuffle(answers)
        prompt = (f"{GPQA_SHOTS}\nQuestion:\n{question}\nChoices:\n{lettered(answers)}\nWhen you're ready to "
                  "answer, please use the format 'The correct answer is (X)' where X is the correct letter choice "
                  "from 'ABCD'.")
        key = str(row.get("Record ID") or idx)
        items.append(Item(idx, key, prompt, tuple(answers), LETTERS[answers.index(correct)],
                          row.get("High-level domain")))
    return items


# ---- GSM8K --------------------------------------------------------------------------------------------------------

def _gsm8k(idx: int, row: dict) -> Item:
    question = text(row["question"], "question")
    gold = gold_number(row["answer"])
    prompt = f"Question: {question}\nLet's think step by step\nAnswer:"
    return Item(idx, str(row.get("id", idx)), prompt, (), gold, row.get("subject"), GSM8K_SHOTS)


build_gsm8k = per_row(_gsm8k)


# ---- the configs' example texts (see the module docstring) ---------------------------------------------------------

GSM8K_SHOTS = (
    (
        (
            'Question: Angelo and Melanie want to plan how many hours over the next week they should study '
            'together for their test next week. They have 2 chapters of their textbook to study and 4 '
            'worksheets to memorize. They figure out that they should dedicate 3 hours to each chapter of '
            'their textbook and 1.5 hours for each worksheet. If they plan to study no more than 4 hours each '
            'day, how many days should they plan to study total over the next week if they take a 10-minute '
            'break every hour, include 3 10-minute snack breaks each day, and 30 minutes for lunch each day?\n'
            "Let's think step by step\n"
            'Answer:'
        ),
        (
            'Angelo and Melanie think they should dedicate 3 hours to each of the 2 chapters, 3 hours x 2 '
            'chapters = 6 hours total.\n'
            'For the worksheets they plan to dedicate 1.5 hours for each worksheet, 1.5 hours x 4 worksheets = '
            '6 hours total.\n'
            'Angelo and Melanie need to start with planning 12 hours to study, at 4 hours a day, 12 / 4 = 3 days.\n'
            'However, they need to include time for breaks and lunch. Every hour they want to include a '
            '10-minute break, so 12 total hours x 10 minutes = 120 extra minutes for breaks.\n'
            'They also want to include 3 10-minute snack breaks, 3 x 10 minutes = 30 minutes.\n'
            'And they want to include 30 minutes for lunch each day, so 120 minutes for breaks + 30 minutes '
            'for snack breaks + 30 minutes for lunch = 180 minutes, or 180 / 60 minutes per hour = 3 extra hours.\n'
            'So Angelo and Melanie want to plan 12 hours to study + 3 hours of breaks = 15 hours total.\n'
            'They want to study no more than 4 hours each day, 15 hours / 4 hours each day = 3.75\n'
            'They will need to plan to study 4 days to allow for all the time they need.\n'
            'The answer is 4\n'
        ),
    ),
    (
        (
            "Question: Mark's basketball team scores 25 2 pointers, 8 3 pointers and 10 free throws.  Their "
            "opponents score double the 2 pointers but half the 3 pointers and free throws.  What's the total "
            'number of points scored by both teams added together?\n'
            "Let's think step by step\n"
            'Answer:'
        ),
        (
            "Mark's team scores 25 2 pointers, meaning they scored 25*2= 50 points in 2 pointers.\n"
            'His team also scores 6 3 pointers, meaning they scored 8*3= 24 points in 3 pointers\n'
            'They scored 10 free throws, and free throws count as one point so they scored 10*1=10 points in '
            'free throws.\n'
            'All together his team scored 50+24+10= 84 points\n'
            "Mark's opponents scored double his team's number of 2 pointers, meaning they scored 50*2=100 "
            'points in 2 pointers.\n'
            "His opponents scored half his team's number of 3 pointers, meaning they scored 24/2= 12 points in "
            '3 pointers.\n'
            "They also scored half Mark's team's points in free throws, meaning they scored 10/2=5 points in "
            'free throws.\n'
            "All together Mark's opponents scored 100+12+5=117 points\n"
            "The total score for the game is both team's scores added together, so it is 84+117=201 points\n"
            'The answer is 201\n'
        ),
    ),
    (
        (
            'Question: Bella has two times as many marbles as frisbees. She also has 20 more frisbees than '
            'deck cards. If she buys 2/5 times more of each item, what would be the total number of the items '
            'she will have if she currently has 60 marbles?\n'
            "Let's think step by step\n"
            'Answer:'
        ),
        (
            "When Bella buys 2/5 times more marbles, she'll have increased the number of marbles by 2/5*60 = 24\n"
            "The total number of marbles she'll have is 60+24 = 84\n"
            'If Bella currently has 60 marbles, and she has two times as many marbles as frisbees, she has '
            '60/2 = 30 frisbees.\n'
            "If Bella buys 2/5 times more frisbees, she'll have 2/5*30 = 12 more frisbees.\n"
            "The total number of frisbees she'll have will increase to 30+12 = 42\n"
            'Bella also has 20 more frisbees than deck cards, meaning she has 30-20 = 10 deck cards\n'
            "If she buys 2/5 times more deck cards, she'll have 2/5*10 = 4 more deck cards.\n"
            "The total number of deck cards she'll have is 10+4 = 14\n"
            'Together, Bella will have a total of 14+42+84 = 140 items\n'
            'The answer is 140\n'
        ),
    ),
    (
        (
            'Question: A group of 4 fruit baskets contains 9 apples, 15 oranges, and 14 bananas in the first '
            'three baskets and 2 less of each fruit in the fourth basket. How many fruits are there?\n'
            "Let's think step by step\n"
            'Answer:'
        ),
        (
            'For the first three baskets, the number of apples and oranges in one basket is 9+15=24\n'
            'In total, together with bananas, the number of fruits in one basket is 24+14=38 for the first '
            'three baskets.\n'
            'Since there are three baskets each having 38 fruits, there are 3*38=114 fruits in the first three '
            'baskets.\n'
            'The number of apples in the fourth basket is 9-2=7\n'
            'There are also 15-2=13 oranges in the fourth basket\n'
            'The combined number of oranges and apples in the fourth basket is 13+7=20\n'
            'The fourth basket also contains 14-2=12 bananas.\n'
            'In total, the fourth basket has 20+12=32 fruits.\n'
            'The four baskets together have 32+114=146 fruits.\n'
            'The answer is 146\n'
        ),
    ),
)
GPQA_SHOTS = (
    '\n'
    'Here are some example questions from experts. Answer the final question yourself, following the '
    'format of the previous questions exactly.\n'
    'Question: In a given population, 1 out of every 400 people has a cancer caused by a completely '
    'recessive allele, b. Assuming the population is in Hardy-Weinberg equilibrium, which of the '
    'following is the expected proportion of individuals who carry the b allele but are not expected '
    'to develop the cancer?\n'
    'Choices:\n'
    '(A) 1/400\n'
    '(B) 19/400\n'
    '(C) 20/400\n'
    '(D) 38/400\n'
    'The correct answer is (D)\n'
    '\n'
    'Question: A Fe pellet of 0.056 g is first dissolved in 10 mL of hydrobromic acid HBr (0.1 M). The '
    'resulting solution is then titrated by KMnO4 (0.02 M). How many equivalence points are there?\n'
    'choices:\n'
    '(A) Two points, 25 ml and 35 ml\n'
    '(B) One point, 25 mL\n'
    '(C) One point, 10 ml\n'
    '(D) Two points, 25 ml and 30 ml\n'
    'The correct answer is (A)\n'
    '\n'
    'Question: Consider a quantum mechanical system containing a particle of mass $m$ moving in an '
    'istropic three dimensional potential of the form $V(r) = 1/2 m \\omega^2 r^2$ corresponding to the '
    'acted force obeying Hooke’s law. Here, $\\omega$ is the angular frequency of oscillation and $r$ '
    'is the radial distance of the particle from the origin in spherical polar coordinate. What is the '
    'value of energy of the third excited state, and how many linearly independent eigenfunctions are '
    'possible for the same energy eigenvalue?\n'
    'Choices:\n'
    '(A) 11 \\pi^2 \\hbar^2 / (2m r^2), 3\n'
    '(B) (9/2) \\hbar \\omega , 10\n'
    '(C) 11 \\pi^2 \\hbar^2 / (2m r^2), 10\n'
    '(D) (9/2) \\hbar \\omega, 3\n'
    'The correct answer is (B)\n'
    '\n'
    'Question: Your overhear two chemists talking to each other as they leave a synthetic organic '
    'chemistry lab. One asks the other "So, how did it go?" The second chemist replies, "Not well - my '
    'compounds are on top of each other." What is the second chemist most likely referring to?\n'
    'Choices:\n'
    '(A) The compounds they are working with have similar polarities.\n'
    '(B) The compounds they are working with have similar boiling points.\n'
    '(C) The compounds they are working with are bonding to each other through non-covalent/van der '
    'Waals interactions.\n'
    '(D) The compounds they are working with have similar optical rotations.\n'
    'The correct answer is (A)\n'
    '\n'
    'Question: Mitochondria are semi-autonomous cellular organelles in charge of energy production. '
    'They encode for a part of their own translational machinery and respiratory complexes. '
    'Mitochondrial function is governed by over a thousand proteins imported from the cell, '
    'contributing to processes like the transport of proteins, ribosome biogenesis and translation '
    'regulation, respiratory oxidation, metabolism, and apoptotic signaling cascade. Mutations in the '
    'code for mitochondrial protein networks can cause numerous diseases in humans that are inherited '
    'through generations. Mutations of which of the mitochondrial proteins listed below are least '
    'likely to be genetically transmitted from a father to his children?\n'
    'Choices:\n'
    '(A) Translocase of inner mitochondrial membrane 17B\n'
    '(B) ATP binding cassette subfamily B member 8\n'
    '(C) NADH dehydrogenase 2\n'
    '(D) Tu translation elongation factor, mitochondrial\n'
    'The correct answer is (C)\n'
)
