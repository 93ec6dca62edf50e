"""The teacher stage in one call: presets, tokenizer check, teacher fine-tune, teacher data,
verification and (for ``seq_kd``) the teacher's answers: everything a sweep reads."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wbvb.distill_types import DISTILL
from wbvb.models.load import check_tokenizers, load_tokenizer, resolve_model_paths
from wbvb.store.schema import read_manifest
from wbvb.store.verify import verify
from wbvb.teacher.answers import teacher_answers
from wbvb.teacher.finetune import finetuned_teacher
from wbvb.teacher.generate import generate
from wbvb.teacher.scores import teacher_scores
from wbvb.teacher.threads import stage_threads, torch_threads
from wbvb.train.alignment import check_alignment_layers


@dataclass
class PreparedTeacher:
    teacher_path: str
    student_path: str
    data_dir: Path | str  # a local folder or a URI (wbvb.storage)
    manifest: dict
    scores: dict  # the teacher's eval scores (teacher.scores): teacher_accuracy per task, ...
    stage_seconds: dict = field(default_factory=dict)  # wall seconds per step of this call (a reused step: ~0)


@contextmanager
def _timed(seconds: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(time.perf_counter() - t0, 1)


def prepare(cfg, force: bool = False, verify_rows: int | None = None, progress: bool = False,
            in_ray_task: bool = False) -> PreparedTeacher:
    """Presets, teacher fine-tune, teacher data, verification: everything a sweep reads; torch runs
    on ``teacher_data.threads`` threads meanwhile (every available core by default)."""
    with torch_threads(stage_threads(cfg.teacher_data, in_ray_task)):
        return _prepare(cfg, force, verify_rows, progress)


def _prepare(cfg, force: bool, verify_rows: int | None, progress: bool) -> PreparedTeacher:
    seconds: dict = {}
    with _timed(seconds, "models"):
        paths = resolve_model_paths(cfg)
        tok = load_tokenizer(paths["teacher"])
        check_tokenizers(tok, load_tokenizer(paths["student"]), cfg.models.teacher, cfg.models.student,
                         cfg.sweep.distill_types)
        check_alignment_layers(cfg, paths["teacher"], paths["student"])
    with _timed(seconds, "teacher_finetune"):
        teacher_path = finetuned_teacher(cfg, paths["teacher"], tok, progress)
    with _timed(seconds, "teacher_data"):
        data_dir = generate(cfg, teacher_path, tok, force=force, progress=progress)
    with _timed(seconds, "verify"):
        verify(data_dir, cfg.teacher_data.verify_rows if verify_rows is None else verify_rows)
    with _timed(seconds, "teacher_eval"):
        scores = teacher_scores(cfg, teacher_path, tok, data_dir, force=force, progress=progress)
    if any(DISTILL[t].reads_answers for t in cfg.sweep.distill_types):
        with _timed(seconds, "teacher_answers"):
            teacher_answers(cfg, teacher_path, tok, data_dir, force=force, progress=progress)
    return PreparedTeacher(teacher_path, paths["student"], data_dir, read_manifest(data_dir), scores, seconds)
