"""Offline teacher data: fine-tune (optional), generate, verify, inspect (``python -m wbvb.teacher``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PreparedTeacher:
    teacher_path: str
    student_path: str
    data_dir: Path | str  # a local folder or a URI (wbvb.storage)
    manifest: dict


def prepare(cfg, force: bool = False, verify_rows: int | None = None, progress: bool = False) -> PreparedTeacher:
    """Presets, teacher fine-tune, teacher data, verification: everything a sweep reads."""
    from wbvb.models import check_alignment_layers, check_tokenizers, load_tokenizer, resolve_model_paths
    from wbvb.teacher.finetune import finetuned_teacher
    from wbvb.teacher.generate import generate
    from wbvb.teacher.schema import read_manifest
    from wbvb.teacher.verify import verify

    paths = resolve_model_paths(cfg)
    tok = load_tokenizer(paths["teacher"])
    check_tokenizers(tok, load_tokenizer(paths["student"]), cfg.models.teacher, cfg.models.student,
                     cfg.sweep.distill_types)
    check_alignment_layers(cfg, paths["teacher"], paths["student"])
    teacher_path = finetuned_teacher(cfg, paths["teacher"], tok)
    data_dir = generate(cfg, teacher_path, tok, force=force, progress=progress)
    verify(data_dir, cfg.teacher_data.verify_rows if verify_rows is None else verify_rows)
    if "seq_kd" in cfg.sweep.distill_types:
        from wbvb.teacher.answers import teacher_answers

        teacher_answers(cfg, teacher_path, tok, data_dir, force=force)
    return PreparedTeacher(teacher_path, paths["student"], data_dir, read_manifest(data_dir))
