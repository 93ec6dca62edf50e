"""Task families: each turns a TaskConfig into prompt/answer examples and says how it is scored.

Generated stand-ins (``quickstart``) and the original files or hub splits (``real``: SST-2, MMLU,
GSM8K) give the same ``Example``; scoring is data on the example (``choices`` for log-likelihood
scoring, none for generation + exact match), so the evaluator needs no per-task code.
"""
from __future__ import annotations

import random

from wbvb.tasks import quickstart
from wbvb.tasks.example import Example
from wbvb.tasks.quickstart import GENERATOR_VERSION, QUICKSTART_TASK_KEYS, TASK_NAMES
from wbvb.tasks.real import identity, load_real, train_identity

__all__ = ["Example", "TASK_NAMES", "load_examples", "load_all", "task_identity", "task_train_identity"]


def load_examples(task_cfg, split: str) -> list[Example]:
    """Examples of one task and split: 'train', 'eval', or 'select' (``n_select`` seeded examples held
    out of train, never trained on: what ``--epoch best`` selects on), deterministic in the task's seed."""
    if split == "eval":
        return _load(task_cfg, "eval")
    train = _load(task_cfg, "train")
    n = min(getattr(task_cfg, "n_select", 0), len(train))
    held = set(random.Random(f"select:{task_cfg.name}:{task_cfg.seed}").sample(range(len(train)), n))
    return [ex for i, ex in enumerate(train) if (i in held) == (split == "select")]


def _load(task_cfg, split: str) -> list[Example]:
    if task_cfg.source != "quickstart":
        return load_real(task_cfg, split)
    return quickstart.generate(task_cfg, split)


def task_identity(task_cfg) -> dict:
    """Everything that determines a task's examples, train and eval (keys presets, the fine-tuned
    teacher and the teacher's eval scores)."""
    held = {"n_select": task_cfg.n_select} if task_cfg.n_select else {}  # stores without one keep their fingerprints
    if task_cfg.source != "quickstart":
        return {**{k: v for k, v in identity(task_cfg).items() if k != "n_select"}, **held}
    # only the keys a generated task uses, so quickstart fingerprints stay what they were
    return {**{k: getattr(task_cfg, k) for k in QUICKSTART_TASK_KEYS if k != "n_select"},
            "generator_version": GENERATOR_VERSION, **held}


def task_train_identity(task_cfg) -> dict:
    """What determines a task's train examples only (the teacher shards hold train rows): changing
    the eval side (``n_eval``, ``eval_shots`` where the exemplars are not drawn from train) keeps it."""
    if task_cfg.source != "quickstart":
        return train_identity(task_cfg)
    # generated train examples do not depend on n_eval (each split is drawn on its own)
    return {k: v for k, v in task_identity(task_cfg).items() if k != "n_eval"}


def load_all(task_cfgs, split: str) -> list[Example]:
    out: list[Example] = []
    for t in task_cfgs:
        out.extend(load_examples(t, split))
    return out
