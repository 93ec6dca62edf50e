"""The sweep driver: teacher stage, then the Ray Tune grid of trials, then the analysis."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import ray
from ray import tune

from wbvb import analysis
from wbvb.config import resolve_paths
from wbvb.models.cost import DEFAULT_MFU
from wbvb.storage import write_json_atomic
from wbvb.sweep.resume import should_restore
from wbvb.sweep.run_storage import RunStorage
from wbvb.sweep.packing import concurrency
from wbvb.sweep.plan import check_fits, record_measured, sweep_plan, write_plan
from wbvb.sweep.trial import _quiet_libraries, run_trial, trial_name, trial_resources
from wbvb.teacher.cluster import RUNTIME_ENV, connect, prepare_locally, prepare_on_cluster


def init_ray(cfg) -> None:
    if ray.is_initialized():
        return
    if cfg.sweep.address:
        connect(cfg.sweep.address)
    else:
        # address="local": always a fresh local Ray, never a stray `ray start` cluster on this machine
        ray.init(address="local", num_cpus=cfg.sweep.num_cpus or None, include_dashboard=False,
                 runtime_env=RUNTIME_ENV, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


def trial_outcomes(results, n_trials: int, epochs: int) -> tuple[list[dict], int]:
    """The failed trials (name, error) and how many of the ``n_trials`` did not report their last epoch.

    A trial Tune never started (the sweep was interrupted first) has no result at all: it counts as unfinished.
    """
    failed = [{"trial": trial_name(r.config["distill_type"], r.config["seed"]), "error": str(r.error)}
              for r in results if r.error]
    finished = sum(1 for r in results if not r.error and (r.metrics or {}).get("epoch") == epochs)
    return failed, n_trials - finished


def run_sweep(cfg, resume: bool = False, force: bool = False, mfu: float = DEFAULT_MFU) -> dict:
    """Run the whole chain for ``cfg`` (finishing an earlier run of it); return the analysis result.

    Relative paths in ``cfg`` are relative to this process's working directory: they are made absolute
    here, once, so trials (run in Tune's working directories) and Ray tasks read and write the same folders.
    """
    cfg = resolve_paths(cfg, cluster=bool(cfg.sweep.address))
    _quiet_libraries()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    run_dir = cfg.run_dir  # for an object-store run, the driver's local mirror of it
    store = RunStorage.of(cfg)
    restore = should_restore(cfg, resume, store)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.sweep.address:
        init_ray(cfg)  # the plan counts the cluster's CPUs
    plan = sweep_plan(cfg, mfu)  # before any weight is loaded: a sweep that cannot fit stops here
    print(f"sweep: plan written to {write_plan(run_dir, plan)} ({'fits' if not plan['problems'] else 'does NOT fit'}; "
          "python -m wbvb.sweep --plan prints it)", flush=True)
    check_fits(plan, force)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    analysis.write_run_meta(run_dir, cfg.to_dict())  # run.json: the run id that keys its summary rows
    init_ray(cfg)  # the teacher stage is a Ray task: on a cluster, on a node with teacher_data's resources;
    # locally, a process that exits when the stage ends, handing its (GPU) memory back before the trials
    t_stage = time.perf_counter()
    prep, _ = prepare_on_cluster(cfg) if cfg.sweep.address else prepare_locally(cfg)
    stage_seconds = {**prep.stage_seconds, "teacher_stage_total": round(time.perf_counter() - t_stage, 1)}
    write_json_atomic(run_dir / "teacher.json", {
        "teacher_path": prep.teacher_path, "data_dir": str(prep.data_dir),
        "fingerprint": prep.manifest["fingerprint"], "teacher_accuracy": prep.scores["teacher_accuracy"],
        "stage_seconds": stage_seconds})
    store.push_driver_files()  # the config is on the run URI before any trial result is

    max_concurrent = concurrency(cfg, ray.cluster_resources().get("CPU", 0))
    per_type = {t: trial_resources(cfg, t) for t in cfg.sweep.distill_types}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, cfg_dict=cfg.to_dict(), data_dir=str(prep.data_dir),
                             student_path=prep.student_path),
        lambda config: tune.PlacementGroupFactory([per_type[config["distill_type"]]]))
    n_trials = len(cfg.sweep.distill_types) * len(cfg.sweep.seeds)
    print(f"sweep: {n_trials} trials ({', '.join(cfg.sweep.distill_types)} x seeds {cfg.sweep.seeds}), "
          f"{max_concurrent} at a time, {per_type[cfg.sweep.distill_types[0]]} each; results in {store.describe()}",
          flush=True)
    if restore:
        tuner = tune.Tuner.restore(store.tune_dir(), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False, storage_filesystem=store.fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"distill_type": tune.grid_search(cfg.sweep.distill_types),
                         "seed": tune.grid_search(cfg.sweep.seeds),
                         "loss_balancing": cfg.loss.balancing},  # recorded per trial (config/loss_balancing)
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                # reuse needs equal resources for every trial, and DeepSpeed wants a fresh process
                reuse_actors=(cfg.sweep.reuse_actors and not cfg.training.use_deepspeed
                              and len({json.dumps(r, sort_keys=True) for r in per_type.values()}) == 1),
                trial_name_creator=lambda t: trial_name(t.config["distill_type"], t.config["seed"]),
                trial_dirname_creator=lambda t: trial_name(t.config["distill_type"], t.config["seed"])),
            run_config=tune.RunConfig(
                name="tune", **store.tune_storage(), verbose=1,
                sync_config=tune.SyncConfig(sync_artifacts=store.remote),  # the trials' TensorBoard logs
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures)),
        )
    hint = f"python -m wbvb.sweep {' '.join(sys.argv[1:]) if sys.argv[1:] else ''}".rstrip()
    t0 = time.perf_counter()
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        print(f"\nsweep interrupted; finish it later with the same command (it resumes): {hint}", file=sys.stderr)
        raise
    tune_wall_s = time.perf_counter() - t0
    record_measured(run_dir, {"tune_wall_s": tune_wall_s, "trials": {
        trial_name(r.config["distill_type"], r.config["seed"]): {
            "peak_memory_bytes": (r.metrics or {}).get("peak_memory_bytes")} for r in results}})
    failed, unfinished = trial_outcomes(results, n_trials, cfg.training.epochs)
    write_json_atomic(run_dir / "failed_trials.json", {"failed": failed})
    store.pull_results()
    timings = {**stage_seconds, "trials": round(tune_wall_s, 1)}
    analysis.write_timings(run_dir, timings)  # before the analysis, so its report shows them
    t_analysis = time.perf_counter()
    result = analysis.analyze(run_dir, expected_trials=n_trials)
    analysis.write_timings(run_dir, {**timings, "analysis": round(time.perf_counter() - t_analysis, 1)})
    store.push_driver_files()
    for f in failed:
        print(f"\ntrial {f['trial']} failed (after {cfg.sweep.max_failures} retries): {f['error'][:2000]}",
              file=sys.stderr)
    if unfinished > 0:
        print(f"\nsweep: {unfinished} of {n_trials} trials unfinished ({len(failed)} failed, "
              f"{unfinished - len(failed)} interrupted or not started); finish them with: {hint}", file=sys.stderr)
    result["errors"] = [f["error"] for f in failed]
    result["failed"] = failed
    result["unfinished"] = unfinished
    result["n_trials"] = n_trials
    result["tune_wall_s"] = tune_wall_s  # the trials' phase alone (benchmarks/sweep_efficiency.py)
    print(f"\nTensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    if store.remote:
        print(f"results, checkpoints and TensorBoard logs (tune/<trial>/tensorboard) are in {store.describe()}; "
              f"the summary and analysis above were uploaded there from {run_dir}")
    return result
