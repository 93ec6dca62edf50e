"""The teacher-data stage where it belongs: a Ray task of its own, on this machine or a cluster node.

On a cluster the head node has no GPU and no copy of the teacher data should pass through it:
``prepare`` (presets, teacher fine-tune, generation, verify) runs as one Ray task that asks for
``teacher_data.cpus/gpus/custom_resources``, and writes the store to ``teacher_data.path``, which
must be storage every node sees (NFS/EFS path). A store already there with the same fingerprint is
found and reused by that task, so a sweep never waits for a local copy.
"""
from __future__ import annotations

import os
from pathlib import Path

import ray

from wbvb.config import CLUSTER_PATH_ERROR, ConfigError, config_from_dict
from wbvb.storage import is_uri
from wbvb.teacher.prepare import PreparedTeacher, prepare

RUNTIME_ENV = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}}


def connect(address: str) -> None:
    """Join the cluster at ``address`` (auto | HOST:PORT | ray://...), unless this process already has."""
    if not ray.is_initialized():
        ray.init(address=address, runtime_env=RUNTIME_ENV, log_to_driver=True)


def stage_resources(cfg) -> dict:
    td = cfg.teacher_data
    return {"num_cpus": td.cpus, "num_gpus": td.gpus, "resources": dict(td.custom_resources)}


def _prepare(cfg_dict: dict, force: bool, cwd: str | None) -> dict:
    if cwd is not None:  # a local worker: relative paths mean what they mean to the driver
        os.chdir(cwd)
    prep = prepare(config_from_dict(cfg_dict), force=force, in_ray_task=True)
    return {"teacher_path": prep.teacher_path, "student_path": prep.student_path, "data_dir": str(prep.data_dir),
            "manifest": prep.manifest, "scores": prep.scores, "stage_seconds": prep.stage_seconds,
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


# max_calls=1: the worker process exits after the stage, so the teacher's memory (a GPU's included)
# goes back before the first trial. Ray recycles a GPU worker only when num_gpus is in the decorator
# (.options(num_gpus=...) alone keeps the worker, and its CUDA context, alive): one variant per case.
_prepare_gpu = ray.remote(num_gpus=1, max_calls=1)(_prepare)
_prepare_cpu = ray.remote(num_gpus=0, max_calls=1)(_prepare)


def _run_stage(cfg, res: dict, force: bool, cwd: str | None) -> tuple[PreparedTeacher, dict]:
    print(f"teacher data: running the teacher stage as a Ray task ({res['num_cpus']:g} CPU, "
          f"{res['num_gpus']:g} GPU{', ' + str(res['resources']) if res['resources'] else ''}); "
          "it waits for a node with these resources", flush=True)
    task = (_prepare_gpu if res["num_gpus"] > 0 else _prepare_cpu).options(**res, max_retries=1)
    out = ray.get(task.remote(cfg.to_dict(), force, cwd))
    where = {"node_id": out.pop("node_id"), "pid": out.pop("pid")}
    prep = PreparedTeacher(out["teacher_path"], out["student_path"], Path(out["data_dir"]), out["manifest"],
                           out["scores"], out.get("stage_seconds", {}))
    print(f"teacher data: {prep.data_dir} ready ({prep.manifest['num_rows']} rows, fingerprint "
          f"{prep.manifest['fingerprint']}), made or found on node {where['node_id'][:12]}", flush=True)
    return prep, where


def prepare_on_cluster(cfg, force: bool = False) -> tuple[PreparedTeacher, dict]:
    """Run the teacher stage as a Ray task (Ray must be connected); return its result and where it ran."""
    path = cfg.teacher_data.path
    if not is_uri(path) and not Path(path).expanduser().is_absolute():
        raise ConfigError(CLUSTER_PATH_ERROR.format(path=path))
    return _run_stage(cfg, stage_resources(cfg), force, cwd=None)


def prepare_locally(cfg, force: bool = False) -> tuple[PreparedTeacher, dict]:
    """The teacher stage in a process of its own on this machine's Ray (started by the caller), which
    exits when the stage ends: the driver never holds the teacher, nor its GPU memory, during the
    sweep. It takes this machine's GPU unless ``teacher_data.gpus`` says how much."""
    res = stage_resources(cfg)
    if res["num_gpus"] == 0:
        res["num_gpus"] = min(1.0, ray.cluster_resources().get("GPU", 0.0))
    return _run_stage(cfg, res, force, cwd=os.getcwd())
