"""Task families: each turns a TaskConfig into prompt/answer examples and says how it is scored.

A task module registers a ``generate(n, seed, split) -> list[Example]`` function; scoring is
data on the example (``choices`` for log-likelihood scoring, none for generation + exact match),
so the evaluator needs no per-task code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Example:
    """One prompt/answer pair. ``answer`` is the training target; ``label`` the gold value."""

    id: str
    task: str
    split: str
    prompt: str
    answer: str
    label: str
    choices: Optional[list[str]] = None  # scored by log-likelihood over these continuations
    meta: dict = field(default_factory=dict)

    @property
    def scoring(self) -> str:
        return "choice" if self.choices else "generate"


_GENERATORS: dict[str, Callable[[int, int, str], list[Example]]] = {}


def register(name: str):
    def deco(fn):
        _GENERATORS[name] = fn
        return fn
    return deco


from wbvb.tasks import quickstart as _quickstart  # noqa: E402,F401  (registers generators)

TASK_NAMES = tuple(_GENERATORS)


def load_examples(task_cfg, split: str) -> list[Example]:
    """Examples of one task and split ('train' or 'eval'), deterministic in the task's seed."""
    if task_cfg.source != "quickstart":
        from wbvb.tasks.real import load_real

        return load_real(task_cfg, split)
    if task_cfg.name not in _GENERATORS:
        raise ValueError(f"unknown task '{task_cfg.name}'; known: {', '.join(TASK_NAMES)}")
    n = task_cfg.n_train if split == "train" else task_cfg.n_eval
    return _GENERATORS[task_cfg.name](n, task_cfg.seed, split)


def task_identity(task_cfg) -> dict:
    """Everything that determines a task's examples (goes into teacher-data fingerprints)."""
    from wbvb.config import QUICKSTART_TASK_KEYS
    from wbvb.tasks.quickstart import GENERATOR_VERSION

    if task_cfg.source != "quickstart":
        from wbvb.tasks.real import identity

        return identity(task_cfg)
    # only the keys a generated task uses, so quickstart fingerprints stay what they were
    return {**{k: getattr(task_cfg, k) for k in QUICKSTART_TASK_KEYS}, "generator_version": GENERATOR_VERSION}


def load_all(task_cfgs, split: str) -> list[Example]:
    out: list[Example] = []
    for t in task_cfgs:
        out.extend(load_examples(t, split))
    return out
