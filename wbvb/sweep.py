"""python -m wbvb.sweep: the whole study, end to end.

config -> presets/teacher fine-tune -> teacher data (reused when inputs match) -> verify ->
Ray Tune grid of (distill type x seed) trials, each streaming shards through Ray Data ->
results_summary.csv + aggregate table. With no arguments it runs ``sweeps/quickstart.yaml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from wbvb.config import SIGNALS_BY_TYPE, ConfigError, config_from_dict, load_config
from wbvb.teacher.schema import TeacherDataError, write_json_atomic


def trial_name(distill_type: str, seed: int) -> str:
    return f"{distill_type}-seed{seed}"


def run_trial(config: dict, cfg_dict: dict, data_dir: str, student_path: str) -> None:
    """Tune function trainable: one student run; reports metrics + a checkpoint every epoch."""
    import torch
    from ray import tune

    from wbvb.models import load_tokenizer
    from wbvb.stream import ShardStream
    from wbvb.tasks import load_all
    from wbvb.teacher.schema import read_manifest
    from wbvb.trainer import TeacherDims, Trainer

    _quiet_libraries()
    cfg = config_from_dict(cfg_dict)
    distill_type, seed = config["distill_type"], int(config["seed"])
    torch.set_num_threads(max(1, int(cfg.sweep.cpus_per_trial)))
    manifest = read_manifest(Path(data_dir))
    tok = load_tokenizer(student_path)
    dims = TeacherDims(hidden_size=manifest["columns"]["hidden"]["dim"],
                       hidden_stride=manifest["strides"]["hidden"], attention_stride=manifest["strides"]["attention"])
    name = trial_name(distill_type, seed)
    trainer = Trainer(cfg, distill_type, seed, student_path, tok, dims,
                      tb_dir=str(cfg.run_dir / "tensorboard" / name))
    source = ShardStream(Path(data_dir), manifest, SIGNALS_BY_TYPE[distill_type], cfg.training.batch_size,
                         cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
    eval_examples = load_all(cfg.tasks, "eval")

    resume_dir = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        resume_dir = Path(tempfile.mkdtemp(prefix="wbvb-resume-"))
        with ckpt.as_directory() as d:
            shutil.copytree(d, resume_dir, dirs_exist_ok=True)

    def on_epoch_end(metrics: dict, epoch: int) -> None:
        with tempfile.TemporaryDirectory(prefix="wbvb-ckpt-") as d:
            trainer.save_checkpoint(Path(d), epoch)
            if epoch + 1 == trainer.epochs:
                trainer.save_pretrained(Path(d) / "final_model")
            tune.report(metrics,
                        checkpoint=tune.Checkpoint.from_directory(d))

    trainer.fit(source, eval_examples, on_epoch_end=on_epoch_end, resume_from=resume_dir)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def concurrency(cfg, cluster_cpus: float) -> int:
    """How many trials run at once so Ray Data's reads always find CPUs (DESIGN: deadlock).

    Each running trial holds ``cpus_per_trial`` and its Ray Data reads may take ``data_cpus``
    outside the trial's reservation; ``headroom_cpus`` stay free for the driver and Ray itself:
    concurrent * (cpus_per_trial + data_cpus) + headroom_cpus <= cluster CPUs.
    """
    sw = cfg.sweep
    per_trial = sw.cpus_per_trial + sw.data_cpus
    if per_trial + sw.headroom_cpus > cluster_cpus + 1e-9:
        raise ConfigError(f"sweep.cpus_per_trial ({sw.cpus_per_trial:g}) + sweep.data_cpus ({sw.data_cpus:g}) + "
                          f"sweep.headroom_cpus ({sw.headroom_cpus:g}) exceed the cluster's {cluster_cpus:g} CPUs, "
                          "so a trial's data reads could never be scheduled; lower them")
    fit = max(1, math.floor((cluster_cpus - sw.headroom_cpus) / per_trial + 1e-9))
    return min(fit, sw.max_concurrent_trials) if sw.max_concurrent_trials > 0 else fit


def init_ray(cfg) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}}
    if cfg.sweep.address:
        ray.init(address=cfg.sweep.address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.sweep.num_cpus or None, include_dashboard=False, runtime_env=env,
                 log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


def run_sweep(cfg) -> dict:
    """Run the whole chain for ``cfg``; return the analysis result."""
    import ray
    from ray import tune

    from wbvb import analysis
    from wbvb.teacher import prepare

    _quiet_libraries()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    analysis.write_run_meta(run_dir, cfg.to_dict())  # run.json: the run id that keys its summary rows
    prep = prepare(cfg)
    write_json_atomic(run_dir / "teacher.json", {
        "teacher_path": prep.teacher_path, "data_dir": str(prep.data_dir),
        "fingerprint": prep.manifest["fingerprint"], "teacher_accuracy": prep.manifest.get("teacher_accuracy", {})})

    init_ray(cfg)
    max_concurrent = concurrency(cfg, ray.cluster_resources().get("CPU", 1))
    resources = {"cpu": cfg.sweep.cpus_per_trial, "gpu": cfg.sweep.gpus_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, cfg_dict=cfg.to_dict(), data_dir=str(prep.data_dir),
                             student_path=prep.student_path),
        resources)
    n_trials = len(cfg.sweep.distill_types) * len(cfg.sweep.seeds)
    print(f"sweep: {n_trials} trials ({', '.join(cfg.sweep.distill_types)} x seeds {cfg.sweep.seeds}), "
          f"{max_concurrent} at a time, {resources} each; results in {run_dir}", flush=True)
    reporter = tune.CLIReporter(
        metric_columns=["epoch", "val_acc"] + [f"validation_accuracy_{t.name}" for t in cfg.tasks],
        parameter_columns=["distill_type", "seed"], max_report_frequency=30)
    tuner = tune.Tuner(
        trainable,
        param_space={"distill_type": tune.grid_search(cfg.sweep.distill_types),
                     "seed": tune.grid_search(cfg.sweep.seeds)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            reuse_actors=cfg.sweep.reuse_actors and not cfg.training.use_deepspeed,
            trial_name_creator=lambda t: trial_name(t.config["distill_type"], t.config["seed"]),
            trial_dirname_creator=lambda t: trial_name(t.config["distill_type"], t.config["seed"])),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(run_dir), progress_reporter=reporter, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures)),
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    result = analysis.analyze(run_dir, expected_trials=n_trials)
    if errors:
        print(f"\n{len(errors)} trial(s) failed; first error: {errors[0]}", file=sys.stderr)
    result["errors"] = errors
    print(f"\nTensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
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
    return ap


def config_from_args(args) -> "ExperimentConfig":  # noqa: F821
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
        result = run_sweep(cfg)
    except (ConfigError, TeacherDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
