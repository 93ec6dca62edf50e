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
from wbvb.feed.batches import batched
from wbvb.tasks import load_all, task_identity
from wbvb.teacher.progress import Progress, by_task, part_size
from wbvb.train.evaluate import evaluate

EVAL_DIR = "teacher_eval"
SCORES_VERSION = 1  # bump when what the file holds changes


def eval_inputs(cfg) -> dict:
    """What the scores depend on beyond the store's own fingerprint: every task in full (eval rows
    and prompts), and the generation and length settings of the evaluation."""
    tr = cfg.training
    return {"version": SCORES_VERSION, "tasks": [task_identity(t) for t in cfg.tasks],
            "max_new_tokens": tr.max_new_tokens, "max_length": tr.max_length,
            "add_bos": cfg.models.add_bos}


def eval_path(cfg, data_dir: Path | str) -> tuple[Path | str, dict]:
    inputs = eval_inputs(cfg)
    fp = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return storage.join(data_dir, EVAL_DIR, f"{fp}.json"), inputs


def _evaluate_in_parts(model, tokenizer, examples, tr, device, progress: bool, add_bos: str) -> dict:
    """``evaluate`` over parts of about a tenth of the rows (whole batches), so progress can be
    shown; per-task means are merged weighted by each part's examples, exactly as over the whole."""
    part = part_size(len(examples), tr.eval_batch_size)
    sums: dict[str, dict[str, float]] = {"accuracy": {}, "accuracy_norm": {}, "accuracy_flexible": {}}
    n: dict[str, int] = {}
    with Progress(len(examples), "teacher eval", "examples", bar=progress) as bar:
        for task, exs in by_task(examples).items():
            for chunk in batched(exs, part):
                ev = evaluate(model, tokenizer, chunk, tr.eval_batch_size, tr.max_new_tokens, tr.max_length, device, add_bos)
                for key, per_task in sums.items():
                    if task in ev[key]:
                        per_task[task] = per_task.get(task, 0.0) + ev[key][task] * len(chunk)
                n[task] = n.get(task, 0) + len(chunk)
                bar.update(len(chunk))
    out = {key: {t: v / n[t] for t, v in per_task.items()} for key, per_task in sums.items()}
    out["n"] = n
    out["val_acc"] = sum(out["accuracy"][t] * n[t] for t in n) / max(sum(n.values()), 1)
    return out


def teacher_scores(cfg, teacher_path: str, tokenizer, data_dir: Path | str, force: bool = False,
                   progress: bool = False) -> dict:
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
    ev = _evaluate_in_parts(model, tokenizer, load_all(cfg.tasks, "eval"), tr, device, progress, cfg.models.add_bos)
    scores = {"teacher_accuracy": ev["accuracy"],
              "teacher_accuracy_norm": ev["accuracy_norm"],  # choice tasks, length-normalised
              "teacher_accuracy_flexible": ev["accuracy_flexible"],  # generation tasks, last number
              "teacher_val_acc": ev["val_acc"], "n": ev["n"], "inputs": inputs}
    storage.mkdir(storage.join(data_dir, EVAL_DIR))
    write_json_atomic(path, scores)
    print(f"teacher eval: accuracy {ev['accuracy']} -> {path}", flush=True)
    return scores
