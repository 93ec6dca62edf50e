"""The Tune function trainable: one student run (distill type x seed), reporting every epoch."""
from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile
import warnings
from pathlib import Path

import ray
import torch
from ray import tune

from wbvb.config import config_from_dict, keeps_final_model
from wbvb.distill_types import DISTILL
from wbvb.feed.batches import ExampleSource
from wbvb.feed.stream import ShardStream
from wbvb.models.load import load_tokenizer
from wbvb.storage import is_uri, location
from wbvb.sweep.checkpoints import TrialCheckpoints
from wbvb.store.answers import seq_kd_examples
from wbvb.store.schema import TeacherDims, read_manifest
from wbvb.tasks import load_all
from wbvb.train.setup import cap_gpu_memory, micro_batch_size
from wbvb.train.trainer import LossScaleWarning, Trainer


def trial_name(distill_type: str, seed: int) -> str:
    return f"{distill_type}-seed{seed}"


def run_trial(config: dict, cfg_dict: dict, data_dir: str, student_path: str) -> None:
    """Tune function trainable: one student run; reports metrics + a checkpoint every epoch."""
    _quiet_libraries()
    cfg = config_from_dict(cfg_dict)
    distill_type, seed = config["distill_type"], int(config["seed"])
    resources = trial_resources(cfg, distill_type)
    torch.set_num_threads(max(1, int(resources["CPU"])))
    cap_gpu_memory(resources["GPU"])  # packed trials: each within its share of the card
    data_dir = location(data_dir)  # a local folder or a URI (s3://, gs://): trials read one shared copy
    manifest = read_manifest(data_dir)
    micro_batch = micro_batch_size(cfg.training, distill_type)
    ckpt = tune.get_checkpoint()  # a restarted trial's last checkpoint, or None
    kind = DISTILL[distill_type]
    if not kind.reads_answers:  # the shards' rows (and the teacher signals the type reads)
        source = ShardStream(data_dir, manifest, kind.signals, micro_batch,
                             cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
        if ckpt is None:  # a fresh trial knows its epochs: their first batches are made while it loads the models
            source.start(0, cfg.training.epochs, seed)
    tok = load_tokenizer(student_path)
    dims = TeacherDims.from_manifest(manifest)
    name = trial_name(distill_type, seed)
    # Object-store runs: TensorBoard goes in the trial's working dir, which Tune uploads beside its results.
    tb_dir = Path.cwd() / "tensorboard" if is_uri(cfg.output.dir) else cfg.run_dir / "tensorboard" / name
    if kind.reads_answers:  # prompt + the teacher's generated answer, in memory
        source = ExampleSource(seq_kd_examples(load_all(cfg.tasks, "train"), data_dir), tok,
                               cfg.training.max_length, micro_batch, cfg.models.add_bos)
    trainer = Trainer(cfg, distill_type, seed, student_path, tok, dims, tb_dir=str(tb_dir))
    eval_examples = load_all(cfg.tasks, "eval")
    select_examples = load_all(cfg.tasks, "select")  # tasks[i].n_select held out of train: epoch selection

    # The console table shows the first metrics reported: put epoch and accuracies first.
    first = ["epoch", "val_acc"] + [f"validation_accuracy_{t.name}" for t in cfg.tasks]

    node_id = ray.get_runtime_context().get_node_id()

    keep = TrialCheckpoints(cfg.checkpoint_dir / name, cfg.training.keep_checkpoints,
                            final_model=keeps_final_model(cfg.training, seed, cfg.sweep.seeds))

    def report(metrics: dict, epoch=None) -> None:
        with tempfile.TemporaryDirectory(prefix="wbvb-ckpt-") as d:
            latest = keep.save(trainer, Path(d), epoch)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        keep.prune(latest)  # Tune holds the checkpoint pointing to it: the older states go

    def on_epoch_end(metrics: dict, epoch: int) -> None:
        report({k: metrics[k] for k in first if k in metrics} | metrics | {
            "node_id": node_id, "peak_memory_bytes": peak_memory_bytes(trainer.device)}, epoch)

    def on_checkpoint(progress: dict) -> None:
        """training.checkpoint_every_steps: a mid-epoch checkpoint. Its report has no `epoch` (nothing
        was evaluated): the analysis keeps epoch reports only; `epoch_progress` says how far it got."""
        report(progress | {"node_id": node_id})

    resume_from = None
    if ckpt is not None:  # a restarted trial continues where its last checkpoint was taken
        with ckpt.as_directory() as d:
            resume_from = TrialCheckpoints.resume_state(Path(d))
        if resume_from is None:
            print(f"trial {name}: its last checkpoint's resume state is not on this machine's "
                  f"{cfg.checkpoint_dir} (training.checkpoint_dir); the trial starts anew (seeded: same result)",
                  flush=True)
    trainer.fit(source, eval_examples, on_epoch_end=on_epoch_end, resume_from=resume_from, on_checkpoint=on_checkpoint,
                select_examples=select_examples)
    keep.clear()


def peak_memory_bytes(device: torch.device) -> int:
    """The trial's peak so far, beside the plan's estimate: CUDA memory allocated, or the process's
    peak RSS on the CPU (VmHWM: ``ru_maxrss`` would start from the parent's RSS at fork; a reused
    actor's process counts every trial it ran)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.is_file() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no procfs: kB, bytes on macOS
    return rss if sys.platform == "darwin" else rss * 1024


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # Ray's workers run with PYTHONWARNINGS=ignore (RUNTIME_ENV, for the libraries' noise); a trial whose
    # loss terms are out of scale must still say so in the sweep's log
    warnings.simplefilter("always", LossScaleWarning)


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
