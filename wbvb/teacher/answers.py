"""Generating the teacher's own answers to the train prompts, for ``seq_kd`` (text-only black-box KD).

Generated once beside the teacher shards (``seq_kd_answers.parquet`` in the store folder, so
the store's fingerprint covers teacher, tokenizer and tasks) and reused while the generation
settings match. Choice tasks take the teacher's highest-likelihood choice; generation tasks its
greedy continuation, cut at the evaluation's stop strings. The student then trains on prompt + this
answer with the task loss only (Kim & Rush, 2016).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wbvb import storage
from wbvb.feed.batches import batched
from wbvb.models.load import load_teacher, pick_device
from wbvb.storage import write_json_atomic
from wbvb.store.answers import ANSWERS_FILE, ANSWERS_META, ANSWERS_SCHEMA
from wbvb.tasks import load_all
from wbvb.teacher.progress import Progress, by_task, part_size
from wbvb.train.evaluate import choice_loglikelihoods, generate_answers


def _settings(cfg) -> dict:
    return {"max_new_tokens": cfg.training.max_new_tokens, "add_bos": cfg.models.add_bos,
            "max_length": cfg.training.max_length, "version": 2}


def teacher_answers(cfg, teacher_path: str, tokenizer, data_dir: Path | str, force: bool = False,
                    progress: bool = False) -> Path | str:
    """Make sure ``data_dir`` holds the teacher's answer to every train example; return the file."""
    out, meta_path = storage.join(data_dir, ANSWERS_FILE), storage.join(data_dir, ANSWERS_META)
    if storage.is_file(out) and storage.is_file(meta_path) and not force:
        if json.loads(storage.read_bytes(meta_path)).get("settings") == _settings(cfg):
            print(f"teacher answers: reusing {out}", flush=True)
            return out
    tr, device = cfg.training, pick_device(cfg.training.device)
    model = load_teacher(teacher_path, device)
    examples = load_all(cfg.tasks, "train")
    t0 = time.perf_counter()
    rows = []
    part = part_size(len(examples), tr.eval_batch_size)
    with Progress(len(examples), "teacher answers", "examples", bar=progress) as bar:
        for task, exs in by_task(examples).items():
            for chunk in batched(exs, part):
                if chunk[0].scoring == "choice":
                    scores = choice_loglikelihoods(model, tokenizer, chunk, tr.eval_batch_size, device, tr.max_length,
                                                   cfg.models.add_bos)
                    answers = [ex.choices[s.index(max(s))] for ex, s in zip(chunk, scores)]
                else:
                    answers = [t.rstrip() for t in generate_answers(model, tokenizer, chunk, tr.eval_batch_size,
                                                                    tr.max_new_tokens, device, cfg.models.add_bos)]
                rows += [{"example_id": ex.id, "task": task, "answer": a} for ex, a in zip(chunk, answers)]
                bar.update(len(chunk))
    with storage.atomic_output(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA), tmp)
    seconds = round(time.perf_counter() - t0, 2)
    write_json_atomic(meta_path, {"settings": _settings(cfg), "rows": len(rows), "seconds": seconds})
    print(f"teacher answers: generated {len(rows)} answers for seq_kd in {seconds} s -> {out}", flush=True)
    return out
