"""Fine-tune the teacher on the tasks first (quickstart: a random-init teacher knows nothing).

Uses the very trainer the students use (distill type ``sft``); the result is saved with
``save_pretrained`` under ``<cache_dir>/teachers/<hash>/`` and reused while its inputs match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from wbvb.feed.batches import ExampleSource
from wbvb.tasks import load_all, task_identity
from wbvb.teacher.generate import weights_identity
from wbvb.teacher.progress import CountingSource, Progress
from wbvb.train.trainer import Trainer


# The training settings the fine-tune's weights depend on. The students' own epochs, lr, evaluation and
# checkpoint settings are left out, so changing them does not fine-tune the teacher again.
FINETUNE_TRAINING_KEYS = ("batch_size", "effective_batch_size", "precision", "max_length", "weight_decay",
                          "warmup_ratio", "grad_clip", "device")


def finetuned_dir(cfg, teacher_path: str) -> Path:
    """Where the fine-tuned teacher of these inputs lives (built or not)."""
    training = dataclasses.asdict(cfg.training)
    key = json.dumps({"teacher": weights_identity(teacher_path), "tasks": [task_identity(t) for t in cfg.tasks],
                      "epochs": cfg.models.teacher_finetune_epochs, "lr": cfg.models.teacher_finetune_lr,
                      "add_bos": cfg.models.add_bos,
                      "training": {k: training[k] for k in FINETUNE_TRAINING_KEYS}}, sort_keys=True)
    return cfg.cache_dir / "teachers" / hashlib.sha256(key.encode()).hexdigest()[:16]


def finetuned_teacher(cfg, teacher_path: str, tokenizer, progress: bool = False) -> str:
    """Path of the fine-tuned teacher (built once), or ``teacher_path`` if fine-tuning is off."""
    epochs = cfg.models.teacher_finetune_epochs
    if epochs <= 0:
        return teacher_path
    out = finetuned_dir(cfg, teacher_path)
    if (out / "config.json").is_file():
        print(f"teacher: reusing fine-tuned teacher {out}", flush=True)
        return str(out)
    print(f"teacher: fine-tuning {teacher_path} for {epochs} epochs on the train split", flush=True)
    train = load_all(cfg.tasks, "train")
    source = ExampleSource(train, tokenizer, cfg.training.max_length, cfg.training.batch_size, cfg.models.add_bos)
    tcfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, use_deepspeed=False))
    trainer = Trainer(tcfg, "sft", seed=0, model_path=teacher_path, tokenizer=tokenizer,
                      lr=cfg.models.teacher_finetune_lr, epochs=epochs)
    # a progress check only (n_eval 0 means the whole split, which the teacher data's evaluation uses)
    eval_small = load_all([dataclasses.replace(t, n_eval=min(t.n_eval or 50, 50)) for t in cfg.tasks], "eval")
    tokens = epochs * sum(len(r["input_ids"]) for r in source.rows)
    with Progress(tokens, "teacher fine-tune", "tokens", bar=progress) as bar:
        trainer.fit(CountingSource(source, bar), eval_small, on_epoch_end=lambda m, e: print(
            f"teacher: epoch {m['epoch']} loss {m['train_loss']:.3f} val_acc {m['val_acc']:.3f}", flush=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ft-", dir=out.parent))
    trainer.save_pretrained(tmp)
    try:
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
