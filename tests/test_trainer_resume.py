"""Checkpoints inside an epoch: a trial restarted from one ends with an uninterrupted run's metrics."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.resume_runs import Stop, checkpointing, comparable, interrupt, resume, uninterrupted

from wbvb.feed.batches import ExampleSource
from wbvb.config import ConfigError, config_from_dict
from wbvb.models.load import load_tokenizer, resolve_model_paths
from wbvb.tasks import load_all
from wbvb.train.trainer import Trainer


@pytest.fixture
def sft_setup(tiny_dict):
    # 72 rows, micro-batch 8, 2 per optimizer step: 9 micro-batches, 5 steps an epoch (the last one short)
    tiny_dict["training"].update({"epochs": 2, "batch_size": 8, "effective_batch_size": 16,
                                  "checkpoint_every_steps": 2})
    cfg = config_from_dict(tiny_dict)
    student = resolve_model_paths(cfg)["student"]
    tok = load_tokenizer(student)
    train, ev = load_all(cfg.tasks, "train"), load_all(cfg.tasks, "eval")
    return (lambda tb_dir=None: Trainer(cfg, "sft", 0, student, tok, tb_dir=tb_dir),
            lambda t: ExampleSource(train, tok, cfg.training.max_length, t.micro_batch), ev)


def test_sft_resumed_mid_epoch_ends_like_an_uninterrupted_run(sft_setup, tmp_path, monkeypatch):
    import wbvb.feed.batches

    make_trainer, make_source, ev = sft_setup
    full, seen = uninterrupted(make_trainer, make_source, ev, tmp_path / "full")
    # every 2 optimizer steps, never at an epoch end (the epoch's own checkpoint covers it)
    assert seen == [round(x, 4) for x in (4 / 9, 8 / 9, 1 + 2 / 9, 1 + 6 / 9)]

    interrupt(make_trainer, make_source, ev, tmp_path / "ckpt", stop_at=2)  # after 8 of epoch 1's 9 micro-batches
    padded = []
    collate = wbvb.feed.batches.collate
    monkeypatch.setattr(wbvb.feed.batches, "collate", lambda rows, pad: padded.append(len(rows)) or collate(rows, pad))
    second, rest, seen = resume(make_trainer, make_source, ev, tmp_path / "ckpt")
    assert (second.start_epoch, second.start_micro) == (0, 8)
    assert len(padded) == 1 + 9  # the restart pads only epoch 1's ninth micro-batch, then epoch 2
    assert seen == [round(x, 4) for x in (1 + 2 / 9, 1 + 6 / 9)]
    assert comparable(rest) == comparable(full)


def test_tensorboard_of_a_restarted_run_has_each_step_once(sft_setup, tmp_path):
    """The stopped run logged steps past its last checkpoint; the restart logs them again, and
    TensorBoard's reader must see each step once, as in one uninterrupted run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer, make_source, ev = sft_setup

    def steps(tb_dir):
        acc = EventAccumulator(str(tb_dir))
        acc.Reload()
        return {tag: [e.step for e in acc.Scalars(tag)] for tag in ("train/loss", "epoch/val_acc")}

    full = make_trainer(tmp_path / "tb-full")
    full.fit(make_source(full), ev)
    full.writer.close()
    first = make_trainer(tmp_path / "tb")
    saved = []

    def on_checkpoint(progress):  # keep the first checkpoint only, die at the third
        if not saved:
            first.save_checkpoint(tmp_path / "ckpt")
        saved.append(progress["steps"])
        if len(saved) == 3:
            raise Stop
    with pytest.raises(Stop):
        first.fit(make_source(first), ev, on_checkpoint=on_checkpoint)
    first.writer.flush()
    assert max(steps(tmp_path / "tb")["train/loss"]) == saved[-1] > saved[0]  # logged past the checkpoint
    second = make_trainer(tmp_path / "tb")
    second.fit(make_source(second), ev, resume_from=tmp_path / "ckpt")
    second.writer.close()
    assert steps(tmp_path / "tb") == steps(tmp_path / "tb-full")


def test_a_checkpoint_from_other_batch_sizes_is_refused(sft_setup, tiny_dict, tmp_path):
    make_trainer, make_source, ev = sft_setup
    first = make_trainer()
    cb, _ = checkpointing(first, tmp_path / "ckpt", stop_at=1)
    with pytest.raises(Stop):
        first.fit(make_source(first), ev, on_checkpoint=cb)
    tiny_dict["training"].update({"batch_size": 4, "effective_batch_size": 16})
    cfg = config_from_dict(tiny_dict)
    other = Trainer(cfg, "sft", 0, first.bundle.student.config._name_or_path, first.tokenizer)
    with pytest.raises(ConfigError, match=r"mid-epoch checkpoint taken at 9 micro-batches per epoch, now 18"):
        other.fit(ExampleSource(load_all(cfg.tasks, "train"), first.tokenizer, 96, 4), ev,
                  resume_from=tmp_path / "ckpt")


def test_checkpoint_every_steps_is_validated(tiny_dict):
    tiny_dict["training"]["checkpoint_every_steps"] = -1
    with pytest.raises(ConfigError, match="training.checkpoint_every_steps"):
        config_from_dict(tiny_dict)


@pytest.mark.e2e
def test_black_box_resumed_mid_epoch_from_shards_ends_like_an_uninterrupted_run(tiny_dict, tmp_path, monkeypatch):
    import ray

    import wbvb.feed.stream
    from wbvb.distill_types import DISTILL
    from wbvb.feed.stream import ShardStream
    from wbvb.teacher.prepare import prepare
    from wbvb.store.schema import TeacherDims

    tiny_dict["training"].update({"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 4})
    cfg = config_from_dict(tiny_dict)
    prep = prepare(cfg)
    tok = load_tokenizer(prep.student_path)
    dims = TeacherDims.from_manifest(prep.manifest)
    ev = load_all(cfg.tasks, "eval")

    def make_trainer():
        return Trainer(cfg, "black_box", 0, prep.student_path, tok, dims)

    def make_source(t):
        return ShardStream(prep.data_dir, prep.manifest, DISTILL["black_box"].signals, t.micro_batch, 0.25, 120)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cancelled, cancel = [], ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda refs, **kw: cancelled.append(refs) or cancel(refs, **kw))
    try:
        full, seen = uninterrupted(make_trainer, make_source, ev, tmp_path / "full")
        assert seen == [round(x, 4) for x in (4 / 9, 8 / 9, 1 + 3 / 9, 1 + 7 / 9)]
        interrupt(make_trainer, make_source, ev, tmp_path / "ckpt", stop_at=1)  # 4 micro-batches into epoch 1
        second, rest, _ = resume(make_trainer, make_source, ev, tmp_path / "ckpt")
        # only the interrupted run's batch-making task was cancelled; the whole runs read theirs to the end
        assert len(cancelled) == 1
        # the restart decodes only epoch 1's remaining 5 micro-batches, then epoch 2 (counted in this
        # process: the pipeline its batch-making task ran, with the same skip)
        decoded = []
        decode = wbvb.feed.stream.decode_arrays
        monkeypatch.setattr(wbvb.feed.stream, "decode_arrays", lambda *a: decoded.append(1) or decode(*a))
        list(make_source(second).local_batches(second.start_epoch, second.epochs, second.seed, second.start_micro))
    finally:
        ray.shutdown()
    assert (second.start_epoch, second.start_micro) == (0, 4)
    assert len(decoded) == 5 + 9
    assert comparable(rest) == comparable(full)


@pytest.mark.e2e
def test_deepspeed_zero3_resumed_mid_epoch_ends_like_an_uninterrupted_run(tiny_dict, tmp_path):
    # 9 micro-batches an epoch in groups of 2: epoch 2's groups start one micro-batch off DeepSpeed's own
    # counter, which a resumed engine restarts at 0; only the trainer's boundaries give equal runs
    tiny_dict["training"].update({"epochs": 2, "batch_size": 8, "effective_batch_size": 16, "checkpoint_every_steps": 2,
                                  "use_deepspeed": True, "deepspeed_config": str(
                                      Path(__file__).parent.parent / "sweeps" / "ds_config_zero3.json")})
    config_from_dict(tiny_dict)  # valid before it goes to the other process
    script = Path(__file__).parent / "support" / "deepspeed_resume_run.py"
    done = subprocess.run([sys.executable, str(script), json.dumps(tiny_dict), str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["position"] == [1, 2]  # 2 micro-batches into epoch 2
    assert [m["epoch"] for m in out["resumed"]] == [2] and out["resumed"] == out["full"][1:]


def test_rng_states_load_on_the_cpu_when_the_model_goes_elsewhere(sft_setup, tmp_path, monkeypatch):
    """On CUDA the model's map_location is the GPU; torch.set_rng_state takes CPU ByteTensors only.
    `meta` stands in for the GPU: the weights land there, the RNG states (CUDA's included) must not."""
    import torch

    import wbvb.train.trainer as trainer_mod
    from wbvb.train.setup import rng_states, set_rng_states

    make_trainer, make_source, ev = sft_setup
    trainer = make_trainer()
    trainer.fit(make_source(trainer), ev)
    # what rng_states() adds on a CUDA machine: one CPU ByteTensor per GPU
    monkeypatch.setattr(trainer_mod, "rng_states", lambda: {**rng_states(), "cuda": [torch.get_rng_state()]})
    trainer.save_checkpoint(tmp_path / "ckpt", epoch=1)
    state, rng = trainer_mod.read_checkpoint(tmp_path / "ckpt", torch.device("meta"))
    assert {t.device.type for t in state["model"].values()} == {"meta"}
    for t in (rng["torch"], *rng["cuda"]):
        assert (t.device.type, t.dtype) == ("cpu", torch.uint8)
    expected = torch.rand(3, generator=torch.Generator().set_state(rng["torch"]))
    set_rng_states(rng)  # raises for a state on any other device
    assert torch.equal(torch.rand(3), expected)


def test_trial_checkpoints_keep_one_local_state_and_resume_from_it(sft_setup, tmp_path):
    """What Tune copies holds a pointer (and bf16 weights at epoch ends), never the optimizer; the
    local disk keeps the latest resume state only; a run resumed through the pointer ends like an
    uninterrupted one."""
    import torch
    from safetensors.torch import load_file

    from wbvb.sweep.checkpoints import TrialCheckpoints

    make_trainer, make_source, ev = sft_setup
    full = make_trainer()
    full_hist = full.fit(make_source(full), ev)
    keep = TrialCheckpoints(tmp_path / "local", "weights")
    reported = []

    def report(trainer, epoch=None):
        d = tmp_path / "tune" / f"checkpoint_{len(reported):03d}"
        keep.prune(keep.save(trainer, d, epoch))
        reported.append(d)
        assert len(list((tmp_path / "local").iterdir())) == 1  # the latest state only

    first = make_trainer()
    with pytest.raises(Stop):
        first.fit(make_source(first), ev, on_epoch_end=lambda m, e: report(first, e),
                  on_checkpoint=lambda p: report(first) or (len(reported) == 4 and (_ for _ in ()).throw(Stop)))
    # checkpoints: mid epoch 1 twice, end of epoch 1 (weights kept), mid epoch 2, then the trial dies
    assert [sorted(p.name for p in d.iterdir()) for d in reported] == [
        ["resume.json"], ["resume.json"], ["resume.json", "weights"], ["resume.json"]]
    assert not list((tmp_path / "tune").rglob("trainer_state.pt"))  # no optimizer state for Tune to copy
    second = make_trainer()
    rest = second.fit(make_source(second), ev, resume_from=TrialCheckpoints.resume_state(reported[-1]),
                      on_epoch_end=lambda m, e: report(second, e))
    assert comparable(rest) == comparable(full_hist[1:])
    final = load_file(str(reported[-1] / "final_model" / "model.safetensors"))
    weights = second.bundle.student.state_dict()
    assert {t.dtype for t in final.values()} == {torch.bfloat16}
    for k, t in final.items():
        assert torch.equal(t, weights[k].to(torch.bfloat16)), k
    keep.clear()
    assert not (tmp_path / "local").exists()


@pytest.mark.parametrize("policy, seed, kept", [("all", 3, True), ("first_seed", 0, True), ("first_seed", 3, False),
                                                ("none", 0, False)])
def test_the_last_epoch_keeps_the_final_model_only_for_the_trials_the_policy_names(tmp_path, policy, seed, kept):
    """training.keep_final_model: every trial's, the first seed's of each type (seeds 3, 0, 5 listed:
    the smallest is first), or none; the resume pointer is written either way."""
    from types import SimpleNamespace

    from wbvb.config import TrainingConfig, keeps_final_model
    from wbvb.sweep.checkpoints import POINTER, TrialCheckpoints

    saved = []
    trainer = SimpleNamespace(global_step=7, epochs=2,
                              save_checkpoint=lambda path, epoch: Path(path).mkdir(parents=True),
                              save_pretrained=lambda path: saved.append(Path(path).name))
    final = keeps_final_model(TrainingConfig(keep_final_model=policy), seed, [3, 0, 5])
    keep = TrialCheckpoints(tmp_path / "local", "none", final_model=final)
    keep.save(trainer, tmp_path / "epoch1", 0)
    keep.save(trainer, tmp_path / "epoch2", 1)
    assert saved == (["final_model"] if kept else [])
    assert (tmp_path / "epoch2" / POINTER).is_file()
