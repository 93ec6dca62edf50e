"""What a trial keeps where: the resume state on local disk, a small checkpoint for Tune.

A TinyLlama resume state (weights, AdamW moments, RNG) is about 13 GB; Tune copies every
reported checkpoint to the run's storage (Google Drive on Colab). So the full state is written
to ``training.checkpoint_dir`` on local disk, the latest one only, and the checkpoint Tune copies
holds a pointer to it (``resume.json``), plus the weights in bf16 ``save_pretrained`` form
(``training.keep_checkpoints: weights``) or nothing more (``none``); the last epoch's holds the
final model, for every trial or, to keep a grid's storage small, for each type's first seed only or
none (``training.keep_final_model``): the metrics are reported either way. A restarted trial whose
local state is gone (another node, a fresh VM) starts anew, which, seeded, ends where an
uninterrupted run does.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

POINTER = "resume.json"


class TrialCheckpoints:
    def __init__(self, local_dir: Path, keep: str, final_model: bool = True):
        self.local_dir, self.keep, self.final_model = Path(local_dir), keep, final_model

    def save(self, trainer, tune_dir: Path, epoch: Optional[int] = None) -> str:
        """Write the resume state (``epoch``: its end; None: mid-epoch) to local disk and the
        pointer (with weights or the final model when due) to ``tune_dir``; returns the state's name."""
        name = f"step{trainer.global_step:08d}-" + (f"epoch{epoch + 1}" if epoch is not None else "mid")
        state = self.local_dir / name
        shutil.rmtree(state, ignore_errors=True)  # a retry writing the same position again
        trainer.save_checkpoint(state, epoch)
        tune_dir.mkdir(parents=True, exist_ok=True)
        (tune_dir / POINTER).write_text(json.dumps({"state": str(state), "global_step": trainer.global_step}))
        if epoch is not None and epoch + 1 == trainer.epochs:
            if self.final_model:
                trainer.save_pretrained(tune_dir / "final_model")
        elif epoch is not None and self.keep == "weights":
            trainer.save_pretrained(tune_dir / "weights")
        return name

    def prune(self, latest: str) -> None:
        """Drop every local state but ``latest`` (call once Tune holds the checkpoint pointing to it)."""
        for old in self.local_dir.glob("step*"):
            if old.name != latest:
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        """The trial finished: its resume state is no longer needed."""
        shutil.rmtree(self.local_dir, ignore_errors=True)

    @staticmethod
    def resume_state(tune_dir: Path) -> Optional[Path]:
        """The local resume state a Tune checkpoint points to, or None when it is not on this disk."""
        pointer = Path(tune_dir) / POINTER
        if not pointer.is_file():
            return None
        state = Path(json.loads(pointer.read_text())["state"])
        return state if (state / "trainer_state.pt").is_file() else None
