"""Hand-built sweep output folders (config.json, teacher.json, tune/<trial>/result.json) for analysis tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TASKS = ["sentiment", "multiple_choice", "arithmetic"]
TYPES = ["sft", "black_box", "hidden_state", "attention", "combined"]
BASE = {"sentiment": 0.80, "multiple_choice": 0.55, "arithmetic": 0.40}
TEACHER = {"sentiment": 0.92, "multiple_choice": 0.70, "arithmetic": 0.61}


def write_trial(run: Path, dt: str, seed: int, accs_by_epoch: list[dict], wall_per_epoch: float = 10.0) -> Path:
    """One trial folder; ``accs_by_epoch``: per epoch, {task: accuracy}."""
    d = run / "tune" / f"{dt}-seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch, accs in enumerate(accs_by_epoch, 1):
        lines.append(json.dumps({
            "trial_id": f"t{dt[:3]}{seed}", "epoch": epoch, "val_acc": float(np.mean(list(accs.values()))),
            **{f"validation_accuracy_{t}": a for t, a in accs.items()},
            "train_loss": 2.0 / epoch, "task_loss": 1.5 / epoch, "kd_loss": 0.0 if dt == "sft" else 0.4 / epoch,
            "align_hidden_loss": 0.0, "align_attn_loss": 0.0, "validation_loss": 1.0 / epoch, "tokens_per_s": 1000.0,
            "time_total_s": wall_per_epoch * epoch, "config": {"distill_type": dt, "seed": seed}}))
    (d / "result.json").write_text("\n".join(lines) + "\n")
    return d


def write_meta(run: Path, types=TYPES, seeds=range(7), name="study", epochs=3, n_eval=100, extra=None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    cfg = {"models": {"teacher": "preset:tiny", "student": "preset:tiny"},
           "tasks": [{"name": t, "source": "quickstart", "n_train": 600, "n_eval": n_eval} for t in TASKS],
           "teacher_data": {"top_k": 8, "hidden_stride": 1, "attention_stride": 2, "dtype": "float16"},
           "training": {"epochs": epochs, "batch_size": 32, "lr": 0.005},
           "loss": {"alpha": 1.0, "beta": 0.5, "gamma_hidden": 0.1, "gamma_attention": 0.1, "temperature": 1.0},
           "sweep": {"name": name, "distill_types": list(types), "seeds": list(seeds)}, **(extra or {})}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "teacher.json").write_text(json.dumps({"teacher_path": "/x", "fingerprint": "abc123",
                                                  "teacher_accuracy": TEACHER}))


def known_effect_run(run: Path, effect=("hidden_state", "arithmetic", 0.03), seeds=range(7), epochs=3,
                     types=TYPES, rng_seed=1) -> Path:
    """Accuracy = task base + a seed effect shared by all types + small noise (+ ``effect`` for one cell).

    Pairing by seed removes the shared seed effect (sd 0.02), leaving noise sd ~0.004 per arm: the
    +0.03 cell is found, the null cells are not.
    """
    rng = np.random.default_rng(rng_seed)
    write_meta(run, types, seeds, epochs=epochs)
    seed_effect = {(s, t): rng.normal(0, 0.02) for s in seeds for t in TASKS}
    for dt in types:
        for s in seeds:
            final = {t: BASE[t] + seed_effect[s, t] + rng.normal(0, 0.004)
                     + (effect[2] if (dt, t) == effect[:2] else 0.0) for t in TASKS}
            write_trial(run, dt, s, [{t: a - 0.05 * (epochs - e) for t, a in final.items()} for e in range(1, epochs + 1)])
    return run


def write_events(run: Path, trial: str, parts: list[str], steps: int = 20) -> None:
    """TensorBoard scalars as the trainer logs them: train/loss and train/<part>_loss per step."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(run / "tensorboard" / trial))
    for step in range(steps):
        w.add_scalar("train/loss", 3.0 / (1 + step), step)
        w.add_scalar("train/lr", 0.005, step)
        for i, p in enumerate(parts):
            w.add_scalar(f"train/{p}_loss", (2.0 - 0.3 * i) / (1 + step), step)
    w.close()
