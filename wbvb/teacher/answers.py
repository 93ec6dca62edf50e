"""The teacher's own answers to the train prompts, for ``seq_kd`` (text-only black-box KD).

Generated once beside the teacher shards (``seq_kd_answers.parquet`` in the store folder, so
the store's fingerprint covers teacher, tokenizer and tasks) and reused while the generation
settings match. Choice tasks take the teacher's highest-likelihood choice; generation tasks its
greedy continuation, cut at the next ``Question:``. The student then trains on prompt + this
answer with the task loss only (Kim & Rush, 2016).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wbvb import storage
from wbvb.teacher.schema import TeacherDataError, write_json_atomic

ANSWERS_FILE = "seq_kd_answers.parquet"
ANSWERS_META = "seq_kd_answers.json"
ANSWERS_SCHEMA = pa.schema([pa.field("example_id", pa.string()), pa.field("task", pa.string()),
                            pa.field("answer", pa.string())])


def _settings(cfg) -> dict:
    return {"max_new_tokens": cfg.training.max_new_tokens, "version": 1}


def teacher_answers(cfg, teacher_path: str, tokenizer, data_dir: Path | str, force: bool = False) -> Path | str:
    """Make sure ``data_dir`` holds the teacher's answer to every train example; return the file."""
    from wbvb.evaluate import choice_loglikelihoods, generate_answers
    from wbvb.models import load_model
    from wbvb.tasks import load_all
    from wbvb.trainer import pick_device

    out, meta_path = storage.join(data_dir, ANSWERS_FILE), storage.join(data_dir, ANSWERS_META)
    if storage.is_file(out) and storage.is_file(meta_path) and not force:
        if json.loads(storage.read_bytes(meta_path)).get("settings") == _settings(cfg):
            print(f"teacher answers: reusing {out}", flush=True)
            return out
    tr, device = cfg.training, pick_device(cfg.training.device)
    model = load_model(teacher_path).to(device).eval()
    examples = load_all(cfg.tasks, "train")
    t0 = time.perf_counter()
    rows = []
    for task in dict.fromkeys(ex.task for ex in examples):
        exs = [ex for ex in examples if ex.task == task]
        if exs[0].scoring == "choice":
            scores = choice_loglikelihoods(model, tokenizer, exs, tr.eval_batch_size, device)
            answers = [ex.choices[s.index(max(s))] for ex, s in zip(exs, scores)]
        else:
            answers = [t.rstrip() for t in generate_answers(model, tokenizer, exs, tr.eval_batch_size,
                                                            tr.max_new_tokens, device)]
        rows += [{"example_id": ex.id, "task": task, "answer": a} for ex, a in zip(exs, answers)]
    with storage.atomic_output(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA), tmp)
    seconds = round(time.perf_counter() - t0, 2)
    write_json_atomic(meta_path, {"settings": _settings(cfg), "rows": len(rows), "seconds": seconds})
    print(f"teacher answers: generated {len(rows)} answers for seq_kd in {seconds} s -> {out}", flush=True)
    return out


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
