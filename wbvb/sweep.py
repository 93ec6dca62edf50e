"""python -m wbvb.sweep: the whole study, end to end.

config -> presets/teacher fine-tune -> teacher data (reused when inputs match) -> verify ->
Ray Tune grid of (distill type x seed) trials, each streaming shards through Ray Data ->
results_summary.csv + aggregate table. With no arguments it runs ``sweeps/quickstart.yaml``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from wbvb.config import SIGNALS_BY_TYPE, ConfigError, ExperimentConfig, config_from_dict, is_uri, load_config
from wbvb.run_storage import RunStorage
from wbvb.teacher_stage import RUNTIME_ENV, connect, prepare_on_cluster
from wbvb.teacher.schema import TeacherDataError, write_json_atomic


def trial_name(distill_type: str, seed: int) -> str:
    return f"{distill_type}-seed{seed}"


def run_trial(config: dict, cfg_dict: dict, data_dir: str, student_path: str) -> None:
    """Tune function trainable: one student run; reports metrics + a checkpoint every epoch."""
    import torch
    from ray import tune

    from wbvb.models import load_tokenizer
    from wbvb.storage import location
    from wbvb.stream import ShardStream
    from wbvb.tasks import load_all
    from wbvb.teacher.schema import read_manifest
    from wbvb.trainer import TeacherDims, Trainer, micro_batch_size

    _quiet_libraries()
    cfg = config_from_dict(cfg_dict)
    distill_type, seed = config["distill_type"], int(config["seed"])
    torch.set_num_threads(max(1, int(trial_resources(cfg, distill_type)["CPU"])))
    data_dir = location(data_dir)  # a local folder or a URI (s3://, gs://): trials read one shared copy
    manifest = read_manifest(data_dir)
    micro_batch = micro_batch_size(cfg.training, distill_type)
    ckpt = tune.get_checkpoint()  # a restarted trial's last checkpoint, or None
    if distill_type != "seq_kd":  # teacher signals from the shards
        source = ShardStream(data_dir, manifest, SIGNALS_BY_TYPE[distill_type], micro_batch,
                             cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
        if ckpt is None:  # a fresh trial knows its epochs: their first batches are made while it loads the models
            source.start(0, cfg.training.epochs, seed)
    tok = load_tokenizer(student_path)
    dims = TeacherDims.from_manifest(manifest)
    name = trial_name(distill_type, seed)
    # Object-store runs: TensorBoard goes in the trial's working dir, which Tune uploads beside its results.
    tb_dir = Path.cwd() / "tensorboard" if is_uri(cfg.output.dir) else cfg.run_dir / "tensorboard" / name
    if distill_type == "seq_kd":  # prompt + the teacher's generated answer, in memory
        from wbvb.batches import ExampleSource
        from wbvb.teacher.answers import seq_kd_examples

        source = ExampleSource(seq_kd_examples(load_all(cfg.tasks, "train"), data_dir), tok,
                               cfg.training.max_length, micro_batch)
    trainer = Trainer(cfg, distill_type, seed, student_path, tok, dims, tb_dir=str(tb_dir))
    eval_examples = load_all(cfg.tasks, "eval")

    # The console table shows the first metrics reported: put epoch and accuracies first.
    first = ["epoch", "val_acc"] + [f"validation_accuracy_{t.name}" for t in cfg.tasks]

    import ray

    node_id = ray.get_runtime_context().get_node_id()

    def on_epoch_end(metrics: dict, epoch: int) -> None:
        ordered = {k: metrics[k] for k in first if k in metrics} | metrics | {"node_id": node_id}
        with tempfile.TemporaryDirectory(prefix="wbvb-ckpt-") as d:
            trainer.save_checkpoint(Path(d), epoch)
            if epoch + 1 == trainer.epochs:
                trainer.save_pretrained(Path(d) / "final_model")
            tune.report(ordered, checkpoint=tune.Checkpoint.from_directory(d))

    def on_checkpoint(progress: dict) -> None:
        """training.checkpoint_every_steps: a mid-epoch checkpoint. Its report has no `epoch` (nothing
        was evaluated): the analysis keeps epoch reports only; `epoch_progress` says how far it got."""
        with tempfile.TemporaryDirectory(prefix="wbvb-ckpt-") as d:
            trainer.save_checkpoint(Path(d))
            tune.report(progress | {"node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(d))

    if ckpt is None:
        trainer.fit(source, eval_examples, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint)
        return
    with ckpt.as_directory() as d:  # a restarted trial continues where its last checkpoint was taken
        trainer.fit(source, eval_examples, on_epoch_end=on_epoch_end, resume_from=Path(d), on_checkpoint=on_checkpoint)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def trial_resources(cfg, distill_type: str) -> dict[str, float]:
    """What one trial of ``distill_type`` reserves: the sweep's defaults, then the type's override."""
    sw = cfg.sweep
    o = sw.resources_by_type.get(distill_type)
    res = {"CPU": sw.cpus_per_trial, "GPU": sw.gpus_per_trial}
    memory = sw.memory_gb_per_trial
    custom = dict(sw.custom_resources)
    if o is not None:
        res["CPU"] = o.cpus if o.cpus is not None else res["CPU"]
        res["GPU"] = o.gpus if o.gpus is not None else res["GPU"]
        memory = o.memory_gb if o.memory_gb is not None else memory
        custom.update(o.custom)
    if memory > 0:
        res["memory"] = memory * 2**30
    return {**res, **custom}


def concurrency(cfg, cluster_cpus: float) -> int:
    """How many trials run at once so Ray Data's reads always find CPUs (DESIGN: deadlock).

    Each running trial holds its CPUs and its Ray Data reads may take ``data_cpus`` outside the
    trial's reservation; ``headroom_cpus`` stay free for the driver and Ray itself:
    concurrent * (trial CPUs + data_cpus) + headroom_cpus <= cluster CPUs (largest trial counts).
    """
    sw = cfg.sweep
    per_trial = max(trial_resources(cfg, t)["CPU"] for t in sw.distill_types) + sw.data_cpus
    if sw.address and sw.max_concurrent_trials > 0:
        return sw.max_concurrent_trials  # a (possibly autoscaling) cluster: its size now says little
    if per_trial + sw.headroom_cpus > cluster_cpus + 1e-9:
        raise ConfigError(f"a trial's CPUs ({per_trial - sw.data_cpus:g}) + sweep.data_cpus ({sw.data_cpus:g}) + "
                          f"sweep.headroom_cpus ({sw.headroom_cpus:g}) exceed the cluster's {cluster_cpus:g} CPUs, "
                          "so a trial's data reads could never be scheduled; lower them (on an autoscaling "
                          "cluster, set sweep.max_concurrent_trials instead)")
    fit = max(1, math.floor((cluster_cpus - sw.headroom_cpus) / per_trial + 1e-9))
    return min(fit, sw.max_concurrent_trials) if sw.max_concurrent_trials > 0 else fit


# Settings that change how a sweep runs, not what it computes: they may differ when resuming.
EXECUTION_KEYS = {("sweep", "address"), ("sweep", "num_cpus"), ("sweep", "max_concurrent_trials"),
                  ("sweep", "reuse_actors"), ("sweep", "max_failures"), ("sweep", "stall_timeout_s"),
                  ("sweep", "headroom_cpus"), ("output", "dir"), ("models", "cache_dir"), ("teacher_data", "path"),
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
    from ray import tune

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


def init_ray(cfg) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.sweep.address:
        connect(cfg.sweep.address)
    else:
        # address="local": always a fresh local Ray, never a stray `ray start` cluster on this machine
        ray.init(address="local", num_cpus=cfg.sweep.num_cpus or None, include_dashboard=False,
                 runtime_env=RUNTIME_ENV, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


def run_sweep(cfg, resume: bool = False) -> dict:
    """Run the whole chain for ``cfg`` (finishing an earlier run of it); return the analysis result."""
    import ray
    from ray import tune

    from wbvb import analysis
    from wbvb.teacher import prepare

    _quiet_libraries()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    run_dir = cfg.run_dir  # for an object-store run, the driver's local mirror of it
    store = RunStorage.of(cfg)
    restore = should_restore(cfg, resume, store)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    analysis.write_run_meta(run_dir, cfg.to_dict())  # run.json: the run id that keys its summary rows
    if cfg.sweep.address:  # on a cluster: the teacher stage runs on a node with teacher_data's resources
        init_ray(cfg)
        prep, _ = prepare_on_cluster(cfg)
    else:
        prep = prepare(cfg)
    write_json_atomic(run_dir / "teacher.json", {
        "teacher_path": prep.teacher_path, "data_dir": str(prep.data_dir),
        "fingerprint": prep.manifest["fingerprint"], "teacher_accuracy": prep.manifest.get("teacher_accuracy", {})})
    store.push_driver_files()  # the config is on the run URI before any trial result is

    init_ray(cfg)
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
    failed = [{"trial": trial_name(r.config["distill_type"], r.config["seed"]), "error": str(r.error)}
              for r in results if r.error]
    write_json_atomic(run_dir / "failed_trials.json", {"failed": failed})
    unfinished = n_trials - sum(1 for r in results if (r.metrics or {}).get("epoch") == cfg.training.epochs)
    store.pull_results()
    result = analysis.analyze(run_dir, expected_trials=n_trials)
    store.push_driver_files()
    for f in failed:
        print(f"\ntrial {f['trial']} failed (after {cfg.sweep.max_failures} retries): {f['error'][:2000]}",
              file=sys.stderr)
    if unfinished > 0:
        print(f"\n{unfinished} trial(s) did not finish; finish them with: {hint}", file=sys.stderr)
    result["errors"] = [f["error"] for f in failed]
    result["failed"] = failed
    result["tune_wall_s"] = tune_wall_s  # the trials' phase alone (benchmarks/sweep_efficiency.py)
    print(f"\nTensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    if store.remote:
        print(f"results, checkpoints and TensorBoard logs (tune/<trial>/tensorboard) are in {store.describe()}; "
              f"the summary and analysis above were uploaded there from {run_dir}")
    return result


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wbvb.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML under sweeps/ (default: sweeps/quickstart.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    ap.add_argument("--distill-types", help="comma list, e.g. black_box,hidden_state,attention,combined")
    ap.add_argument("--seeds", help="comma list of ints, e.g. 0,1,2")
    ap.add_argument("--use-deepspeed", action="store_true", help="train each trial through DeepSpeed")
    ap.add_argument("--deepspeed-config", help="DeepSpeed JSON, e.g. sweeps/ds_config_zero3.json")
    ap.add_argument("--address", help="join a running Ray cluster: auto | HOST:PORT | ray://...")
    ap.add_argument("--output", help="results folder (default $WBVB_OUTPUT_PATH or ./results)")
    ap.add_argument("--resume", action="store_true",
                    help="finish the sweep in the run folder (also automatic when its config matches)")
    return ap


def config_from_args(args) -> ExperimentConfig:
    overrides = list(args.set)
    if args.distill_types:
        overrides.append(f"sweep.distill_types=[{args.distill_types}]")
    if args.seeds:
        overrides.append(f"sweep.seeds=[{args.seeds}]")
    if args.use_deepspeed:
        overrides.append("training.use_deepspeed=true")
    if args.deepspeed_config:
        overrides.append(f"training.deepspeed_config={args.deepspeed_config}")
    if args.address:
        overrides.append(f"sweep.address={args.address}")
    if args.output:
        overrides.append(f"output.dir={args.output}")
    return load_config(args.config, overrides)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        result = run_sweep(cfg, resume=args.resume)
    except (ConfigError, TeacherDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
