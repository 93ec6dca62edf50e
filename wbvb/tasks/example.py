"""One prompt/answer example, the unit every task family produces and every stage reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


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
