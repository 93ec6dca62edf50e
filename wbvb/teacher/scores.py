"""The teacher's eval scores, kept beside its store and keyed on the eval rows, not on the shards.

The shards hold train rows only, so their fingerprint covers the train side of each task; the
scores depend on the eval side too (``n_eval``, ``eval_shots``, the eval split). They live in
``<store>/teacher_eval/<eval fingerprint>.json`` (the store's folder already keys teacher,
tokenizer and max length), computed when missing: changing only ``n_eval`` re-scores the
teacher and reuses every shard.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from wbvb import storage
from wbvb.models.load import load_model, pick_device
from wbvb.storage import write_json_atomic
from wbvb.tasks import load_all, task_identity
from wbvb.train.evaluate import evaluate

EVAL_DIR = "teacher_eval"
SCORES_VERSION = 1  # bump when what the file holds changes


def eval_inputs(cfg) -> dict:
    """What the scores depend on beyond the store's own fingerprint: every task in full (eval rows
    and prompts), and the generation and length settings of the evaluation."""
    tr = cfg.training
    return {"version": SCORES_VERSION, "tasks": [task_identity(t) for t in cfg.tasks],
            "max_new_tokens": tr.max_new_tokens, "max_length": tr.max_length}


def eval_path(cfg, data_dir: Path | str) -> tuple[Path | str, dict]:
    inputs = eval_inputs(cfg)
    fp = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return storage.join(data_dir, EVAL_DIR, f"{fp}.json"), inputs


def teacher_scores(cfg, teacher_path: str, tokenizer, data_dir: Path | str, force: bool = False) -> dict:
    """{'teacher_accuracy', 'teacher_accuracy_norm', 'teacher_accuracy_flexible', 'teacher_val_acc',
    'n', 'inputs'} for this config's eval rows: read when present, else computed and written."""
    path, inputs = eval_path(cfg, data_dir)
    if storage.is_file(path) and not force:
        scores = json.loads(storage.read_bytes(path))
        if scores.get("inputs") == inputs:
            print(f"teacher eval: reusing {path}", flush=True)
            return scores
    tr, device = cfg.training, pick_device(cfg.training.device)
    model = load_model(teacher_path).to(device).eval()
    ev = evaluate(model, tokenizer, load_all(cfg.tasks, "eval"), tr.eval_batch_size, tr.max_new_tokens,
                  tr.max_length, device)
    scores = {"teacher_accuracy": ev["accuracy"],
              "teacher_accuracy_norm": ev["accuracy_norm"],  # choice tasks, length-normalised
              "teacher_accuracy_flexible": ev["accuracy_flexible"],  # generation tasks, last number
              "teacher_val_acc": ev["val_acc"], "n": ev["n"], "inputs": inputs}
    storage.mkdir(storage.join(data_dir, EVAL_DIR))
    write_json_atomic(path, scores)
    print(f"teacher eval: accuracy {ev['accuracy']} -> {path}", flush=True)
    return scores
