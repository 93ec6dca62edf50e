"""Interrupt a training run right after a mid-epoch checkpoint and restart it (resume tests)."""
from __future__ import annotations


class Stop(Exception):
    """The trial dies right after a checkpoint."""


def comparable(history):
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "data_wait_s")} for m in history]


def checkpointing(trainer, path, stop_at=None):
    """An on_checkpoint callback that records progress, saves to ``path`` and stops at checkpoint ``stop_at``."""
    seen = []

    def on_checkpoint(progress):
        seen.append(round(progress["epoch_progress"], 4))
        trainer.save_checkpoint(path)
        if len(seen) == stop_at:
            raise Stop

    return on_checkpoint, seen


def uninterrupted(make_trainer, make_source, ev, path):
    trainer = make_trainer()
    cb, seen = checkpointing(trainer, path)
    return trainer.fit(make_source(trainer), ev, on_checkpoint=cb), seen


def interrupt(make_trainer, make_source, ev, path, stop_at):
    first = make_trainer()
    cb, _ = checkpointing(first, path, stop_at)
    try:
        first.fit(make_source(first), ev, on_checkpoint=cb)
    except Stop:
        return
    raise AssertionError(f"the run ended before checkpoint {stop_at}")


def resume(make_trainer, make_source, ev, path):
    second = make_trainer()
    cb, seen = checkpointing(second, path)
    return second, second.fit(make_source(second), ev, resume_from=path, on_checkpoint=cb), seen
