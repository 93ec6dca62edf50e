"""Experiment config: one YAML file -> validated dataclasses.

Config is data: every knob of a study lives in a YAML file under ``sweeps/``; the CLI only
overrides it (``--set a.b=v`` and a few familiar flags). Unknown or mistyped keys are errors
that name the key and list the valid ones, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from wbvb.distill_types import DISTILL_TYPES
from wbvb.storage import is_uri, location
from wbvb.tasks import TASK_NAMES
from wbvb.tasks.quickstart import QUICKSTART_TASK_KEYS
from wbvb.tasks.real import SOURCES, validate_task

QUICKSTART = Path(__file__).resolve().parent.parent / "sweeps" / "quickstart.yaml"


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the key and the fix."""


ADD_BOS_CHOICES = ("auto", "true", "false")
DEFAULT_ADD_BOS = "auto"  # lm-evaluation-harness's default: the tokenizer's own special tokens


@dataclass
class PresetConfig:
    """Sizes of the locally built tiny tokenizer and models (used for ``preset:`` models)."""

    vocab_size: int = 600
    teacher_layers: int = 4
    teacher_hidden: int = 128
    teacher_heads: int = 4
    student_layers: int = 2
    student_hidden: int = 64
    student_heads: int = 2
    max_position_embeddings: int = 256
    corpus: str = "quickstart"  # tokenizer training text: quickstart (generated tasks) | tasks (the config's train text)


@dataclass
class FromTeacher:
    """Which teacher blocks a cut student keeps: ``blocks`` (sorted, unique) or ``every: k`` (0, k, 2k, ...)."""

    blocks: list[int] = field(default_factory=list)
    every: int = 0


@dataclass
class StudentCut:
    """``models.student: {from_teacher: {...}}``: a student made of some of the teacher's blocks."""

    from_teacher: FromTeacher = field(default_factory=FromTeacher)


@dataclass
class ModelsConfig:
    """Teacher and student: an HF hub id, a local ``save_pretrained`` dir, ``preset:tiny``,
    ``preset:smollm2-135m-instruct`` or ``gguf:PATH``; the student also a cut of the teacher."""

    teacher: str = "preset:tiny"
    student: Union[str, StudentCut] = "preset:tiny"
    cache_dir: str = ""  # presets and fine-tuned teachers; default $WBVB_CACHE or ~/.cache/wbvb
    teacher_finetune_epochs: int = 0  # >0: fine-tune the teacher on the train split first (sft)
    teacher_finetune_lr: float = 3e-3
    # BOS before every prompt, alike in training, teacher store, seq_kd answers and eval: auto (as the
    # tokenizer encodes text, lm-eval's default) | true (always one BOS) | false (none); YAML booleans work
    add_bos: str = field(default=DEFAULT_ADD_BOS, metadata={"yaml_bool": True})
    preset: PresetConfig = field(default_factory=PresetConfig)


@dataclass
class TaskConfig:
    """One task family: where its examples come from and how many to use."""

    name: str = "sentiment"  # metric suffix: validation_accuracy_<name>
    source: str = "quickstart"  # quickstart (generated) | local (original files) | hub | jsonl | parquet
    family: str = ""  # real tasks: sst2 | mmlu | gsm8k (empty: the name)
    path: str = ""  # local/jsonl/parquet folder (relative: to the cwd); default <repo>/../shared/data/<family>
    n_train: int = 1000  # real tasks: 0 takes the whole split
    n_eval: int = 200  # real tasks: 0 takes the whole split (final evaluation)
    seed: int = 0  # sampling seed
    n_select: int = 0  # train examples held out (seeded, never trained on) to select epochs on: select_acc
    subjects: list[str] = field(default_factory=list)  # MMLU subject filter (empty: all 57)
    train_split: str = ""  # empty: sst2 train, mmlu test, gsm8k train
    eval_split: str = ""  # empty: sst2 dev, mmlu val, gsm8k test
    train_shots: int = 0  # k-shot exemplars in training/teacher prompts (MMLU: from dev; else from train)
    eval_shots: int = 0  # k-shot exemplars in evaluation prompts (MMLU 5-shot: 5)
    fields: dict[str, str] = field(default_factory=dict)  # jsonl/parquet: {canonical field: file column}
    hub_name: str = ""  # hub: dataset name override (default glue | cais/mmlu | openai/gsm8k)
    hub_config: str = ""  # hub: config override (default sst2 | all | main)


@dataclass
class TeacherDataConfig:
    """What the teacher stores per example, and where."""

    path: str = ""  # default $WBVB_OFFLINE_DATA_PATH or ./wbvb_data/teacher
    top_k: int = 8
    hidden_layers: list[int] = field(default_factory=lambda: [-1])  # teacher blocks to store (-1: last)
    attention_layers: list[int] = field(default_factory=lambda: [-1])
    hidden_stride: int = 1
    attention_stride: int = 1
    dtype: str = "float16"
    logprob_encoding: str = "dtype"  # dtype | gaps8: top log-prob exact, the rest as 8-bit companded gaps
    hidden_encoding: str = "dtype"  # dtype: stored in `dtype`; int8: per-vector absmax int8 (half the bytes)
    hidden_outliers: int = 4  # int8: largest-magnitude dims per vector kept as float32, out of the int8 scale
    attention_encoding: str = "dtype"  # dtype | cbrt: round(p^(1/3) * (2^attention_bits - 1))
    attention_bits: int = 10  # cbrt code width, 8..16 (8 is at the edge of the 1e-3 fidelity bound)
    attention_rows: str = "all"  # all | answer: store attention query rows only where a loss is computed
    shard_rows: int = 512
    batch_size: int = 32
    verify_rows: int = 20  # rows sampled across the store by the verify step
    threads: int = 0  # torch threads of the teacher stage; 0: every core this process may use (CPU affinity)
    # What the teacher stage asks of a cluster when it runs there as a Ray task (--address / sweep.address):
    cpus: float = 1.0
    gpus: float = 0.0  # e.g. 1: generate on a GPU node
    custom_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingConfig:
    """One student run: optimisation and evaluation settings."""

    epochs: int = 2
    batch_size: int = 16  # micro-batch of sft / black_box trials
    whitebox_batch_size: int = 0  # micro-batch of trials carrying hidden/attention tensors (0: batch_size)
    effective_batch_size: int = 0  # examples per optimizer step, reached by accumulation (0: batch_size)
    precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16 + GradScaler; CPU: fp32) | fp32 | bf16 | fp16
    max_bad_steps: int = 20  # non-finite losses in a row before a trial fails
    log_every_steps: int = 1  # optimizer steps per TensorBoard train/* point (the loss parts are read from the GPU then)
    checkpoint_every_steps: int = 0  # also checkpoint inside an epoch every N optimizer steps (0: epoch ends only)
    checkpoint_dir: str = ""  # local disk for the latest resume state (default: beside the run folder; /tmp on Colab)
    keep_checkpoints: str = "weights"  # what each epoch's Tune checkpoint keeps: weights (bf16) | none
    keep_final_model: str = "all"  # whose bf16 final model the run keeps: all | first_seed (each type's) | none
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    max_length: int = 128
    eval_batch_size: int = 64
    eval_subset: int = 0  # >0: epochs before the last score this many seeded examples per task (the last: all)
    max_new_tokens: int = 24  # generation budget for tasks scored by generation
    device: str = "auto"  # auto | cpu | cuda
    use_deepspeed: bool = False
    deepspeed_config: str = ""


@dataclass
class LossConfig:
    """L = alpha*task + beta*KD + gamma_hidden*hidden + gamma_attention*attention."""

    alpha: float = 1.0
    beta: float = 0.5
    gamma_hidden: float = 0.1
    gamma_attention: float = 0.1
    temperature: float = 1.0  # KD temperature; the KD term is multiplied by T^2
    kd_divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    jsd_beta: float = 0.5  # jsd: beta*KL(P||M) + (1-beta)*KL(Q||M), M = beta*P + (1-beta)*Q
    kd_tail_bucket: bool = True  # false: the earlier scripts' definition (teacher renormalised over top-k)
    kd_chunk_positions: int = 64  # answer positions per chunk of the vocabulary-wide softmax
    # cosine (through a learned projector; scale-free, = half the MSE of RMS-normalised states) |
    # mse (projector; raw, swamps the other terms on real LMs' massive activations) | cka (linear CKA)
    hidden_loss: str = "cosine"
    attention_loss: str = "mse"  # mse on probabilities | kl on attention rows
    balancing: str = "none"  # none | kd_magnitude: alignment terms rescaled to the KD term's size


@dataclass
class AlignmentConfig:
    """Which student block aligns to which teacher block, and student heads to teacher heads.

    ``*_map``: last (last <-> last), uniform (student i <-> teacher round((i+1)*L_t/L_s)-1 for
    every student block), explicit (``*_pairs``: [[student, teacher], ...], negatives count
    from the end) or from_teacher (student block i <-> the teacher block it was cut from; the
    default when ``models.student`` is cut from the teacher). ``head_map``: grouped (average heads in equal groups) or explicit
    (``head_groups[h]``: the teacher heads averaged for student head h).
    """

    hidden_map: str = "last"
    hidden_pairs: list[list[int]] = field(default_factory=list)
    attention_map: str = "last"
    attention_pairs: list[list[int]] = field(default_factory=list)
    head_map: str = "grouped"
    head_groups: list[list[int]] = field(default_factory=list)


@dataclass
class TrialResources:
    """A per-distill-type override of what a trial asks for (unset fields keep the sweep's values)."""

    cpus: Optional[float] = None
    gpus: Optional[float] = None
    memory_gb: Optional[float] = None
    custom: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepConfig:
    """The Tune grid and what each trial asks of the cluster."""

    name: str = "quickstart"
    distill_types: list[str] = field(default_factory=lambda: list(DISTILL_TYPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    memory_gb_per_trial: float = 0.0  # 0: no memory reservation
    custom_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"a100": 1}
    resources_by_type: dict[str, TrialResources] = field(default_factory=dict)  # e.g. white-box types: more
    data_cpus: float = 0.5  # CPUs kept free for Ray Data's read tasks (../shared/DESIGN.md: the Ray Data deadlock)
    headroom_cpus: float = 1.0  # CPUs no trial or Ray Data task may claim (driver, Ray's own processes)
    max_concurrent_trials: int = 0  # 0: as many as fit beside Ray Data's share and the headroom
    reuse_actors: bool = True  # keep trial processes warm between trials (never with DeepSpeed)
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint
    address: str = ""  # "" local Ray; auto | HOST:PORT | ray://... joins a cluster
    num_cpus: int = 0  # local Ray only: CPUs to start it with (0: all of this machine's)
    stall_timeout_s: float = 300.0  # Ray Data fails loudly after this long without progress
    gpu_memory_gb: float = 0.0  # the plan's GPU memory per device (0: read it from the visible GPU)


@dataclass
class OutputConfig:
    """Where results land: ``<dir>/<sweep.name>/`` holds Tune results, TensorBoard and CSVs."""

    dir: str = ""  # default $WBVB_OUTPUT_PATH or ./results


@dataclass
class ExperimentConfig:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    teacher_data: TeacherDataConfig = field(default_factory=TeacherDataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    # ---- derived paths -------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """The run folder on this machine; for an object-store ``output.dir`` the driver's local mirror of it."""
        if is_uri(self.output.dir):
            return self.cache_dir / "runs" / self.run_uri.replace("://", "/", 1)
        return Path(self.output.dir).expanduser().resolve() / self.sweep.name

    @property
    def run_uri(self) -> str:
        """Where the run's results live: ``s3://``/``gs://`` URI, or the local (e.g. NFS) run folder."""
        if is_uri(self.output.dir):
            return f"{self.output.dir.rstrip('/')}/{self.sweep.name}"
        return str(self.run_dir)

    @property
    def checkpoint_dir(self) -> Path:
        """Where trials keep their latest resume state: local disk, never copied by Tune."""
        if self.training.checkpoint_dir:
            return Path(self.training.checkpoint_dir).expanduser().resolve()
        if "COLAB_RELEASE_TAG" in os.environ:  # Colab: the run folder is on Drive
            return Path("/tmp/wbvb-checkpoints") / self.sweep.name
        if is_uri(self.output.dir):
            return self.cache_dir / "checkpoints" / self.sweep.name
        return self.run_dir.parent / f"{self.sweep.name}.checkpoints"

    @property
    def teacher_data_dir(self) -> Path | str:
        """A local folder, or a URI (s3://, gs://, ...) kept as written (``wbvb.storage``)."""
        return location(self.teacher_data.path)

    @property
    def cache_dir(self) -> Path:
        return Path(self.models.cache_dir).expanduser().resolve()

    def to_dict(self) -> dict:
        """The config as data; keys added after runs were stored are left out at their defaults, so a
        stored run's config, and the run id hashed from it, read the same and the run still resumes."""
        d = dataclasses.asdict(self)
        for section, keys in LATER_KEYS.items():
            defaults = dataclasses.asdict(type(getattr(self, section))())
            for k in keys:
                if d[section][k] == defaults[k]:
                    del d[section][k]
        for t in d["tasks"]:
            if t["n_select"] == 0:
                del t["n_select"]
        return d


FINAL_MODEL_POLICIES = ("all", "first_seed", "none")


def keeps_final_model(training: TrainingConfig, seed: int, seeds: list[int]) -> bool:
    """Whether the trial of ``seed`` keeps its bf16 final model under ``training.keep_final_model``
    (``first_seed``: the smallest of the sweep's seeds, one model per distill type)."""
    policy = training.keep_final_model
    return policy == "all" or (policy == "first_seed" and seed == min(seeds))


LATER_KEYS = {"training": ("log_every_steps", "checkpoint_dir", "keep_checkpoints", "eval_subset", "keep_final_model")}


# ---- generic dict -> dataclass with type checks ------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        mappings = [a for a in inner if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and mappings:  # str-or-mapping keys (models.student)
            return _coerce(value, mappings[0], where)
        plain = [a for a in inner if not dataclasses.is_dataclass(a)]
        if mappings and isinstance(value, (list, bool)):
            raise ConfigError(f"{where}: expected a string or a mapping of {mappings[0].__name__} keys, got {value!r}")
        return _coerce(value, (plain or inner)[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in valid]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(
            f"unknown config key '{key}'; valid keys{' of ' + where if where else ''}: "
            + ", ".join(valid)
        )
    yaml_bool = {f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml_bool")}
    data = {k: (str(v).lower() if k in yaml_bool and isinstance(v, bool) else v) for k, v in data.items()}
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


# ---- validation ---------------------------------------------------------------------------

def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check cross-field rules; raise ConfigError naming the key and the fix."""
    bad = [t for t in cfg.sweep.distill_types if t not in DISTILL_TYPES]
    if bad:
        raise ConfigError(
            f"sweep.distill_types: unknown distill type '{bad[0]}'; choose from {', '.join(DISTILL_TYPES)}"
        )
    if not cfg.sweep.distill_types:
        raise ConfigError("sweep.distill_types is empty; name at least one of " + ", ".join(DISTILL_TYPES))
    if not cfg.sweep.seeds:
        raise ConfigError("sweep.seeds is empty; give at least one seed, e.g. [0, 1, 2]")
    if len(set(cfg.sweep.seeds)) != len(cfg.sweep.seeds):
        raise ConfigError(f"sweep.seeds has duplicates: {cfg.sweep.seeds}")
    if not cfg.tasks:
        raise ConfigError("tasks is empty; list at least one task")
    names = [t.name for t in cfg.tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: each task name may appear once, got {names}")
    for i, t in enumerate(cfg.tasks):
        _validate_task(t, f"tasks[{i}]")
    td = cfg.teacher_data
    if td.top_k < 1:
        raise ConfigError("teacher_data.top_k must be >= 1")
    if not td.hidden_layers or not td.attention_layers:
        raise ConfigError("teacher_data.hidden_layers and attention_layers need at least one layer, e.g. [-1]")
    if td.hidden_stride < 1 or td.attention_stride < 1:
        raise ConfigError("teacher_data.hidden_stride and attention_stride must be >= 1")
    if td.dtype not in ("float16", "bfloat16", "float32"):
        raise ConfigError(f"teacher_data.dtype '{td.dtype}': choose float16, bfloat16 or float32")
    if td.shard_rows < 1:
        raise ConfigError("teacher_data.shard_rows must be >= 1")
    if td.hidden_encoding not in ("dtype", "int8"):
        raise ConfigError(f"teacher_data.hidden_encoding '{td.hidden_encoding}': choose dtype or int8")
    if td.logprob_encoding not in ("dtype", "gaps8"):
        raise ConfigError(f"teacher_data.logprob_encoding '{td.logprob_encoding}': choose dtype or gaps8")
    if td.hidden_outliers < 0:
        raise ConfigError("teacher_data.hidden_outliers must be >= 0")
    if td.attention_encoding not in ("dtype", "cbrt"):
        raise ConfigError(f"teacher_data.attention_encoding '{td.attention_encoding}': choose dtype or cbrt")
    if not 8 <= td.attention_bits <= 16:
        raise ConfigError(f"teacher_data.attention_bits {td.attention_bits}: choose 8..16")
    if td.attention_rows not in ("all", "answer"):
        raise ConfigError(f"teacher_data.attention_rows '{td.attention_rows}': choose all or answer")
    if td.verify_rows < 0:
        raise ConfigError("teacher_data.verify_rows must be >= 0")
    if td.threads < 0:
        raise ConfigError(f"teacher_data.threads {td.threads}: give a thread count >= 1, or 0 for every core "
                          "this process may use")
    if td.cpus <= 0 or td.gpus < 0:
        raise ConfigError("teacher_data.cpus must be > 0 and teacher_data.gpus >= 0")
    tr = cfg.training
    if tr.epochs < 1 or tr.batch_size < 1:
        raise ConfigError("training.epochs and training.batch_size must be >= 1")
    if tr.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"training.precision '{tr.precision}': choose auto, fp32, bf16 or fp16")
    eff = tr.effective_batch_size or tr.batch_size
    for key in ("batch_size", "whitebox_batch_size"):
        micro = getattr(tr, key) or tr.batch_size
        if eff % micro:
            raise ConfigError(f"training.effective_batch_size ({eff}) must be a multiple of training.{key} "
                              f"({micro}) so every distill type sees the same optimisation schedule")
    if tr.max_bad_steps < 1:
        raise ConfigError("training.max_bad_steps must be >= 1")
    if tr.log_every_steps < 1:
        raise ConfigError(f"training.log_every_steps ({tr.log_every_steps}) must be >= 1")
    if tr.checkpoint_every_steps < 0:
        raise ConfigError(f"training.checkpoint_every_steps ({tr.checkpoint_every_steps}) must be >= 0 "
                          "(0: checkpoint at epoch ends only)")
    if tr.eval_subset < 0:
        raise ConfigError(f"training.eval_subset ({tr.eval_subset}) must be >= 0 (0: every epoch on the whole splits)")
    if tr.keep_checkpoints not in ("weights", "none"):
        raise ConfigError(f"training.keep_checkpoints '{tr.keep_checkpoints}': choose weights or none")
    if tr.keep_final_model not in FINAL_MODEL_POLICIES:
        raise ConfigError(f"training.keep_final_model '{tr.keep_final_model}': choose "
                          + ", ".join(FINAL_MODEL_POLICIES))
    if tr.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"training.device '{tr.device}': choose auto, cpu or cuda")
    if tr.use_deepspeed:
        if not tr.deepspeed_config:
            raise ConfigError("training.use_deepspeed is true but training.deepspeed_config is empty; "
                              "pass --deepspeed-config sweeps/ds_config_zero3.json")
        if not Path(tr.deepspeed_config).expanduser().is_file():
            raise ConfigError(f"training.deepspeed_config: no such file '{tr.deepspeed_config}'")
    _validate_student(cfg)
    if cfg.models.add_bos not in ADD_BOS_CHOICES:
        raise ConfigError(f"models.add_bos '{cfg.models.add_bos}': choose {' | '.join(ADD_BOS_CHOICES)} "
                          "(auto: as the tokenizer encodes text, lm-evaluation-harness's default)")
    if cfg.models.preset.corpus not in ("quickstart", "tasks"):
        raise ConfigError(f"models.preset.corpus '{cfg.models.preset.corpus}': choose quickstart or tasks")
    _validate_loss(cfg.loss)
    _validate_alignment(cfg.alignment)
    sw = cfg.sweep
    if sw.cpus_per_trial <= 0:
        raise ConfigError("sweep.cpus_per_trial must be > 0 (a trial needs a CPU to feed it)")
    for dt, res in sw.resources_by_type.items():
        if dt not in DISTILL_TYPES:
            raise ConfigError(f"sweep.resources_by_type: unknown distill type '{dt}'; choose from {', '.join(DISTILL_TYPES)}")
        if res.cpus is not None and res.cpus <= 0:
            raise ConfigError(f"sweep.resources_by_type.{dt}.cpus must be > 0")
    if sw.headroom_cpus < 0 or sw.max_failures < 0:
        raise ConfigError("sweep.headroom_cpus and sweep.max_failures must be >= 0")
    if sw.gpus_per_trial < 0 or sw.data_cpus <= 0:
        raise ConfigError("sweep.gpus_per_trial must be >= 0 and sweep.data_cpus > 0")
    if sw.gpus_per_trial > 1 and sw.gpus_per_trial != int(sw.gpus_per_trial):
        raise ConfigError("sweep.gpus_per_trial above 1 must be a whole number")
    if sw.gpu_memory_gb < 0:
        raise ConfigError(f"sweep.gpu_memory_gb ({sw.gpu_memory_gb:g}) must be >= 0 (0: read it from the GPU)")
    if not sw.name or "/" in sw.name:
        raise ConfigError(f"sweep.name '{sw.name}' must be a non-empty folder name")
    return cfg


def _validate_task(t: TaskConfig, where: str) -> None:
    if t.n_select < 0:
        raise ConfigError(f"{where}.n_select ({t.n_select}) must be >= 0 (0: no selection set)")
    if t.source not in SOURCES:
        raise ConfigError(f"{where}.source: unknown source '{t.source}'; choose {' | '.join(SOURCES)}")
    if t.source != "quickstart":
        errs = validate_task(t, where)
        if errs:
            raise ConfigError(errs[0])
        return
    if t.name not in TASK_NAMES:
        raise ConfigError(f"{where}.name: unknown quickstart task '{t.name}'; choose from {', '.join(TASK_NAMES)}")
    if t.n_train < 1 or t.n_eval < 1:
        raise ConfigError(f"{where}: n_train and n_eval must be >= 1")
    default = TaskConfig()
    real_only = [f.name for f in dataclasses.fields(TaskConfig)
                 if f.name not in QUICKSTART_TASK_KEYS and getattr(t, f.name) != getattr(default, f.name)]
    if real_only:
        raise ConfigError(f"{where}.{real_only[0]}: only real tasks (source local, hub, jsonl, parquet) use it")


LOSS_CHOICES = {"kd_divergence": ("forward_kl", "reverse_kl", "jsd"), "hidden_loss": ("cosine", "mse", "cka"),
                "attention_loss": ("mse", "kl"), "balancing": ("none", "kd_magnitude")}
MAP_CHOICES = {"hidden_map": ("last", "uniform", "explicit", "from_teacher"),
               "attention_map": ("last", "uniform", "explicit", "from_teacher"),
               "head_map": ("grouped", "explicit")}


def _check_choices(section: str, obj, choices: dict) -> None:
    for key, allowed in choices.items():
        if getattr(obj, key) not in allowed:
            raise ConfigError(f"{section}.{key} '{getattr(obj, key)}': choose {' | '.join(allowed)}")


def _validate_loss(loss: LossConfig) -> None:
    _check_choices("loss", loss, LOSS_CHOICES)
    if loss.temperature <= 0:
        raise ConfigError("loss.temperature must be > 0")
    if min(loss.alpha, loss.beta, loss.gamma_hidden, loss.gamma_attention) < 0:
        raise ConfigError("loss.alpha, beta, gamma_hidden and gamma_attention must be >= 0")
    if not 0.0 < loss.jsd_beta < 1.0:
        raise ConfigError(f"loss.jsd_beta {loss.jsd_beta:g} must lie strictly between 0 and 1")
    if not loss.kd_tail_bucket and loss.kd_divergence != "forward_kl":
        raise ConfigError("loss.kd_tail_bucket=false is only defined for kd_divergence=forward_kl "
                          "(the student's mass outside the top-k has no teacher counterpart); set it to true")
    if loss.kd_chunk_positions < 1:
        raise ConfigError("loss.kd_chunk_positions must be >= 1")
    if loss.balancing == "kd_magnitude" and loss.beta == 0:
        raise ConfigError("loss.balancing=kd_magnitude rescales alignment terms to the KD term, but loss.beta is 0 "
                          "so there is no KD term; set loss.balancing=none or beta > 0")


def is_cut(student) -> bool:
    return isinstance(student, StudentCut)


def _validate_student(cfg: ExperimentConfig) -> None:
    student = cfg.models.student
    if not is_cut(student):
        for kind in ("hidden", "attention"):
            if getattr(cfg.alignment, f"{kind}_map") == "from_teacher":
                raise ConfigError(f"alignment.{kind}_map=from_teacher pairs each student block with the teacher "
                                  "block it was cut from, but models.student is not cut from the teacher; set "
                                  "models.student={from_teacher: {blocks: [...]}} or another alignment map")
        return
    spec, where = student.from_teacher, "models.student.from_teacher"
    if bool(spec.blocks) == bool(spec.every):
        raise ConfigError(f"{where}: give exactly one of blocks (e.g. [0, 6, 12, 17, 23, 29]) or every (e.g. 5)")
    if spec.every < 0:
        raise ConfigError(f"{where}.every must be >= 1, got {spec.every}")
    if any(b < 0 for b in spec.blocks):
        raise ConfigError(f"{where}.blocks: teacher blocks count from 0, got {spec.blocks}")
    if spec.blocks != sorted(set(spec.blocks)):
        raise ConfigError(f"{where}.blocks must be sorted and without duplicates (the student keeps the "
                          f"teacher's block order), got {spec.blocks}; e.g. {sorted(set(spec.blocks))}")


def _cut_defaults(data: dict, cfg: ExperimentConfig) -> None:
    """A cut student's unset alignment maps pair each student block with its teacher block, and the
    store keeps those blocks when they are named (``blocks``); keys the config gives are kept."""
    if not is_cut(cfg.models.student):
        return
    given_al, given_td = data.get("alignment") or {}, data.get("teacher_data") or {}
    blocks = cfg.models.student.from_teacher.blocks
    for kind in ("hidden", "attention"):
        if f"{kind}_map" not in given_al and f"{kind}_pairs" not in given_al:
            setattr(cfg.alignment, f"{kind}_map", "from_teacher")
        if blocks and f"{kind}_layers" not in given_td:
            setattr(cfg.teacher_data, f"{kind}_layers", list(blocks))


def _validate_alignment(al: AlignmentConfig) -> None:
    _check_choices("alignment", al, MAP_CHOICES)
    for kind in ("hidden", "attention"):
        mode, pairs = getattr(al, f"{kind}_map"), getattr(al, f"{kind}_pairs")
        if mode == "explicit" and not pairs:
            raise ConfigError(f"alignment.{kind}_map is explicit but alignment.{kind}_pairs is empty; "
                              "give pairs like [[0, 1], [1, 3]] (student block, teacher block)")
        if mode != "explicit" and pairs:
            raise ConfigError(f"alignment.{kind}_pairs is set but alignment.{kind}_map is '{mode}'; "
                              f"set alignment.{kind}_map=explicit to use the pairs")
        bad = [p for p in pairs if len(p) != 2]
        if bad:
            raise ConfigError(f"alignment.{kind}_pairs: each pair is [student block, teacher block], got {bad[0]}")
    if al.head_map == "explicit" and not al.head_groups:
        raise ConfigError("alignment.head_map is explicit but alignment.head_groups is empty; give one list of "
                          "teacher heads per student head, e.g. [[0, 1], [2, 3]]")
    if any(not g for g in al.head_groups):
        raise ConfigError("alignment.head_groups: every student head needs at least one teacher head")


def _apply_env_defaults(cfg: ExperimentConfig) -> None:
    if not cfg.teacher_data.path:
        cfg.teacher_data.path = os.environ.get("WBVB_OFFLINE_DATA_PATH") or "wbvb_data/teacher"
    if not cfg.output.dir:
        cfg.output.dir = os.environ.get("WBVB_OUTPUT_PATH") or "results"
    if not cfg.models.cache_dir:
        cfg.models.cache_dir = os.environ.get("WBVB_CACHE") or str(Path.home() / ".cache" / "wbvb")


PATH_TASK_SOURCES = ("local", "jsonl", "parquet")  # task sources whose ``path`` names a folder here
CLUSTER_PATH_ERROR = ("teacher_data.path '{path}' is relative, but on a cluster the teacher stage runs on another "
                      "node: give a path every node sees, e.g. --set teacher_data.path=/mnt/wbvb/teacher "
                      "(or set WBVB_OFFLINE_DATA_PATH)")


def _absolute(p: str, base: Path) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def resolve_paths(cfg: ExperimentConfig, base: Path | None = None, cluster: bool = False) -> ExperimentConfig:
    """A copy of ``cfg`` whose local paths are absolute, relative ones taken from ``base`` (default: cwd).

    The driver calls this before the config goes to any other process: a trial runs in Tune's working
    directory and a Ray task in its worker's, so a relative path there would name another folder.
    Covered: output.dir, teacher_data.path, models.cache_dir, training.deepspeed_config, tasks[].path and
    models.teacher/student when they name a folder here (as ``from_pretrained`` reads them). URIs are kept.
    ``cluster``: the teacher stage runs on another node, where a relative teacher_data.path meant nothing
    to the user, so it is refused rather than resolved on the driver's machine.
    """
    base = Path(base or Path.cwd())
    out = copy.deepcopy(cfg)
    td_path = out.teacher_data.path
    if cluster and not is_uri(td_path) and not Path(td_path).expanduser().is_absolute():
        raise ConfigError(CLUSTER_PATH_ERROR.format(path=td_path))
    for obj, key in ((out.output, "dir"), (out.teacher_data, "path")):
        if not is_uri(getattr(obj, key)):
            setattr(obj, key, _absolute(getattr(obj, key), base))
    out.models.cache_dir = _absolute(out.models.cache_dir, base)
    if out.training.deepspeed_config:
        out.training.deepspeed_config = _absolute(out.training.deepspeed_config, base)
    for t in out.tasks:
        if t.path and t.source in PATH_TASK_SOURCES:
            t.path = _absolute(t.path, base)
    for role in ("teacher", "student"):
        name = getattr(out.models, role)
        if not isinstance(name, str):  # a student cut from the teacher: nothing on disk to resolve
            continue
        if name.startswith("gguf:"):
            setattr(out.models, role, "gguf:" + _absolute(name[len("gguf:"):], base))
        elif not name.startswith("preset:") and (base / Path(name).expanduser()).is_dir():
            setattr(out.models, role, _absolute(name, base))
    return out


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Apply ``a.b.c=value`` to a nested dict (``tasks.0.n_train`` indexes lists)."""
    keys = dotted.split(".")
    node: Any = data
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[int(k)]
        else:
            node = node.setdefault(k, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. --set training.epochs=3")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, fill env defaults, validate."""
    path = Path(path) if path else QUICKSTART
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see sweeps/ for examples)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    if "retired" in data:  # a recipe replaced by others: say which
        raise ConfigError(f"{path} is retired: {data['retired']}")
    for item in overrides or []:
        key, value = parse_override(item)
        try:
            set_dotted(data, key, value)
        except (IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"--set {item}: cannot apply ({exc})") from exc
    return config_from_dict(data)


def config_from_dict(data: dict) -> ExperimentConfig:
    cfg = _from_dict(ExperimentConfig, data)
    _apply_env_defaults(cfg)
    _cut_defaults(data, cfg)
    return validate(cfg)
