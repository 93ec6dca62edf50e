"""Sweep efficiency: how much of the machine the trials themselves use, and what each trial costs around them.

8 small black_box trials (quickstart-sized student, one torch thread each), 2 at a time on this
machine. efficiency = (sum of the trials' own busy time) / (concurrency x wall time of the trials
phase); a trial's busy time is Tune's ``time_total_s`` (its function, from start in its worker
to its last report). The per-trial scheduling overhead is what is left: (concurrency x wall - busy)
/ trials. The sweep runs twice, with warm workers reused between trials (the default) and with a
fresh worker per trial, and the parts of a trial's fixed cost are timed one by one.

python benchmarks/sweep_efficiency.py [--trials 8] [--epochs 2] [--n-train 300]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def config(tmp: str, trials: int, epochs: int, n_train: int, name: str, reuse: bool):
    from wbvb.config import load_config

    return load_config(None, [
        f"models.cache_dir={tmp}/cache", f"teacher_data.path={tmp}/teacher", f"output.dir={tmp}/out",
        "models.teacher_finetune_epochs=0", f"training.epochs={epochs}", "sweep.distill_types=[black_box]",
        f"sweep.seeds=[{','.join(str(s) for s in range(trials))}]", f"sweep.name={name}",
        f"sweep.reuse_actors={str(reuse).lower()}", "sweep.num_cpus=2", "sweep.max_concurrent_trials=2",
        *(f"tasks.{i}.n_train={n_train}" for i in range(3)), *(f"tasks.{i}.n_eval=50" for i in range(3))])


def trial_rows(run_dir: Path) -> list[list[dict]]:
    """Each trial's reported rows (one per epoch)."""
    return [[json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            for f in sorted((run_dir / "tune").glob("*/result.json"))]


def sweep(cfg, concurrency: int) -> dict:
    import ray

    from wbvb.sweep.run import run_sweep

    result = run_sweep(cfg)
    ray.shutdown()  # each sweep starts its own local Ray, as a user's run does
    if result["errors"]:
        sys.exit(f"sweep failed: {result['errors']}")
    rows = trial_rows(cfg.run_dir)
    busy = [r[-1]["time_total_s"] for r in rows]  # each trial's own busy time
    wall = result["tune_wall_s"]
    # inside the busy time: what the first epoch costs beyond a later one (imports, model load, Ray Data start)
    first_extra = [r[0]["time_this_iter_s"] - r[1]["time_this_iter_s"] for r in rows if len(r) > 1]
    return {"wall_s": wall, "busy_s": sum(busy), "trials": len(busy),
            "efficiency": sum(busy) / (concurrency * wall),
            "overhead_per_trial_s": (concurrency * wall - sum(busy)) / len(busy),
            "first_epoch_extra_s": sum(first_extra) / max(1, len(first_extra)),
            "epoch_s": sum(r[-1]["time_this_iter_s"] for r in rows) / len(rows)}


def import_seconds() -> float:
    """What a fresh trial worker pays to import the trial's code (beyond a bare interpreter)."""
    code = ("import time; t = time.perf_counter(); import torch, transformers, ray.data, ray.tune; "
            "import wbvb.train.trainer, wbvb.feed.stream, wbvb.tasks, wbvb.models.load; print(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())


def actor_start_seconds() -> float:
    """A new Ray worker process, from request to first answer (Ray's own cost, no wbvb imports)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=0.5)
    class Probe:
        def ping(self):
            return os.getpid()

    ray.get(Probe.remote().ping.remote())  # the first one also warms Ray up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        a = Probe.remote()
        ray.get(a.ping.remote())
        times.append(time.perf_counter() - t)
        ray.kill(a)
    ray.shutdown()
    return sorted(times)[1]


def trial_parts(cfg) -> dict:
    """The fixed costs inside a trial, timed one by one in this process (warm imports)."""
    import ray
    import torch

    from wbvb.distill_types import DISTILL
    from wbvb.models.load import load_tokenizer
    from wbvb.feed.stream import ShardStream
    from wbvb.tasks import load_all
    from wbvb.teacher.prepare import prepare
    from wbvb.store.schema import TeacherDims
    from wbvb.train.trainer import Trainer

    torch.set_num_threads(1)
    prep = prepare(cfg)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    parts = {}
    t = time.perf_counter()
    tok = load_tokenizer(prep.student_path)
    trainer = Trainer(cfg, "black_box", 0, prep.student_path, tok, TeacherDims.from_manifest(prep.manifest),
                      tb_dir=f"{cfg.run_dir}/probe-tb")
    load_all(cfg.tasks, "train"), load_all(cfg.tasks, "eval")
    parts["model_tokenizer_tasks_tb_s"] = time.perf_counter() - t
    stream = ShardStream(prep.data_dir, prep.manifest, DISTILL["black_box"].signals, trainer.micro_batch,
                         cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
    t = time.perf_counter()
    next(iter(stream.epoch(0, 0)))
    parts["ray_data_first_batch_s"] = time.perf_counter() - t
    trainer._setup_optimisation(10)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        trainer.save_checkpoint(Path(d), 0)
        trainer.save_pretrained(Path(d) / "final_model")
    parts["checkpoint_save_s"] = time.perf_counter() - t
    ray.shutdown()
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=300, help="train examples per task")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="wbvb-bench-sweep-") as tmp:
        from wbvb.teacher.prepare import prepare

        warm = config(tmp, args.trials, args.epochs, args.n_train, "reuse", True)
        prepare(warm)  # the teacher data stage is not part of the trials' phase
        runs = {"reuse_actors": sweep(warm, 2),
                "fresh_actors": sweep(config(tmp, args.trials, args.epochs, args.n_train, "fresh", False), 2)}
        parts = trial_parts(warm)
    for label, r in runs.items():
        print(f"{label}_trials: {r['trials']}")
        print(f"{label}_wall_s: {r['wall_s']:.1f}")
        print(f"{label}_busy_s: {r['busy_s']:.1f}")
        print(f"{label}_efficiency: {r['efficiency']:.3f}")
        print(f"{label}_overhead_per_trial_s: {r['overhead_per_trial_s']:.2f}")
        print(f"{label}_trial_first_epoch_extra_s: {r['first_epoch_extra_s']:.2f}")
        print(f"{label}_trial_last_epoch_s: {r['epoch_s']:.2f}")
    print(f"actor_start_s: {actor_start_seconds():.2f}")
    print(f"trial_imports_s: {import_seconds():.2f}")
    for k, v in parts.items():
        print(f"{k}: {v:.2f}")
    print("concurrency: 2")
    print(f"cpu_cores: {os.cpu_count()}")
    print(f"load_avg_1min_at_end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
