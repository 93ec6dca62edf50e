"""The teacher's answers to the train prompts for ``seq_kd``: their file beside the shards, and reading them.

``teacher/answers.py`` writes the file once per store (the store's fingerprint covers teacher,
tokenizer and tasks); a ``seq_kd`` trial reads it here and trains on prompt + the teacher's answer.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa

from wbvb import storage
from wbvb.store.schema import TeacherDataError

ANSWERS_FILE = "seq_kd_answers.parquet"
ANSWERS_META = "seq_kd_answers.json"
ANSWERS_SCHEMA = pa.schema([pa.field("example_id", pa.string()), pa.field("task", pa.string()),
                            pa.field("answer", pa.string())])


def seq_kd_examples(train_examples, data_dir: Path | str) -> list:
    """The train examples with the teacher's answer in place of the gold one."""
    path = storage.join(storage.location(data_dir), ANSWERS_FILE)
    if not storage.is_file(path):
        raise TeacherDataError(f"{path}: no teacher answers for seq_kd; run python -m wbvb.teacher generate "
                               "with seq_kd in sweep.distill_types")
    answers = dict(zip(*storage.open_parquet(path).read(columns=["example_id", "answer"]).to_pydict().values()))
    missing = [ex.id for ex in train_examples if ex.id not in answers]
    if missing:
        raise TeacherDataError(f"{path}: no teacher answer for {len(missing)} train examples (e.g. {missing[0]}); "
                               "regenerate with python -m wbvb.teacher generate --force")
    return [dataclasses.replace(ex, answer=answers[ex.id]) for ex in train_examples]
