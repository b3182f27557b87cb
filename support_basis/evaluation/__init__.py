"""The evaluation core behind the five benchmark runners (ARC-Challenge, ARC-Easy, GPQA, HellaSwag, MMLU).

One loop (``runner.evaluate``), one record store (``records``), one answer parser (``answers``); a task is only
its dataset, its prompt and its answer key (``tasks``). The runners in ``scripts/`` are thin command lines over
``cli.main``.
"""
