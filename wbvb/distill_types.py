"""What each distill type means, in one place: which teacher signals it reads, and what follows.

Every stage asks this record instead of testing a type's name: the store's column projection
(``signals``), whether teacher and student must share a tokenizer (``text_only``), whether the
teacher's generated answers are made for it (``reads_answers``), and whether its trial carries
hidden/attention tensors (``white_box``, which may give it a smaller micro-batch).
"""
from __future__ import annotations

from dataclasses import dataclass

SIGNALS = ("topk", "hidden", "attention")  # the teacher tensors a store can hold
WHITE_BOX_SIGNALS = ("hidden", "attention")


@dataclass(frozen=True)
class DistillType:
    name: str
    signals: tuple[str, ...] = ()  # teacher tensors read from the shards (column projection follows)
    reads_answers: bool = False  # trains on the teacher's generated answers (text), never on its tensors
    loss: str = ""  # the loss, as the README's table writes it

    @property
    def text_only(self) -> bool:
        """Reads no teacher tensor, so teacher and student need not share a tokenizer."""
        return not self.signals

    @property
    def white_box(self) -> bool:
        return any(s in WHITE_BOX_SIGNALS for s in self.signals)

    @property
    def reads_teacher(self) -> bool:
        return bool(self.signals) or self.reads_answers


TYPES = (
    DistillType("sft", loss="α·task (the control: the teacher is never read)"),
    DistillType("seq_kd", reads_answers=True, loss="α·task on prompt + the teacher's generated answer"),
    DistillType("black_box", ("topk",), loss="α·task + β·KD on the teacher's top-k distribution"),
    DistillType("hidden_state", ("topk", "hidden"), loss="black_box + γ₁·hidden-state alignment"),
    DistillType("attention", ("topk", "attention"), loss="black_box + γ₂·attention-map alignment"),
    DistillType("combined", ("topk", "hidden", "attention"), loss="all of the above"),
)
DISTILL = {t.name: t for t in TYPES}
DISTILL_TYPES = tuple(DISTILL)  # the order tables and plots use
TEXT_ONLY_TYPES = tuple(t.name for t in TYPES if t.text_only)


def signals_of(distill_types) -> set[str]:
    """Every teacher signal some type of ``distill_types`` reads."""
    return {s for t in distill_types for s in DISTILL[t].signals}
