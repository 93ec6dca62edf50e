"""Finishing a sweep in its run folder: which config changes a resume tolerates, and when to restore."""
from __future__ import annotations

import json

from ray import tune

from wbvb.config import ConfigError
from wbvb.sweep.run_storage import RunStorage


# Settings that change how a sweep runs, not what it computes: they may differ when resuming.
EXECUTION_KEYS = {("sweep", "address"), ("sweep", "num_cpus"), ("sweep", "max_concurrent_trials"),
                  ("sweep", "reuse_actors"), ("sweep", "max_failures"), ("sweep", "stall_timeout_s"),
                  ("sweep", "headroom_cpus"), ("sweep", "gpu_memory_gb"), ("output", "dir"), ("models", "cache_dir"), ("teacher_data", "path"),
                  ("teacher_data", "cpus"), ("teacher_data", "gpus"), ("teacher_data", "custom_resources")}


def _result_defining(cfg_dict: dict) -> dict:
    return {sec: {k: v for k, v in val.items() if (sec, k) not in EXECUTION_KEYS} if isinstance(val, dict) else val
            for sec, val in cfg_dict.items()}


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _result_defining(saved), _result_defining(current)
    keys = []
    for sec in sorted(set(a) | set(b)):
        x, y = a.get(sec), b.get(sec)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += [f"{sec}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            keys.append(sec)
    return keys


def should_restore(cfg, resume: bool, store: RunStorage | None = None) -> bool:
    """Decide between a fresh sweep and finishing the one in the run folder; refuse a foreign one."""
    store = store or RunStorage.of(cfg)
    store.pull_driver_files()  # an object-store run: its config.json, run.json, summary
    saved = cfg.run_dir / "config.json"
    where = store.describe()
    if not store.has_tune_dir():
        if resume:
            print(f"sweep: nothing to resume in {where}; starting a new sweep", flush=True)
        return False
    if saved.is_file():
        diff = config_differences(json.loads(saved.read_text()), cfg.to_dict())
        if diff:
            raise ConfigError(
                f"{where} holds the results of another config (differs in {', '.join(diff[:6])}). "
                "Resume it with the config it was started with, or choose another folder: "
                "--set sweep.name=NEW_NAME or --output DIR")
    if not tune.Tuner.can_restore(store.tune_dir(), storage_filesystem=store.fs):
        print(f"sweep: {store.describe('tune')} has no restorable state; starting the sweep there anew", flush=True)
        return False
    print(f"sweep: {where} already holds this sweep; finishing only what is missing "
          "(finished trials are not re-run, interrupted ones continue from their last checkpoint)", flush=True)
    return True
