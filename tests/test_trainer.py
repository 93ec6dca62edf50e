"""The training engine on CPU: determinism, resume equivalence, accumulation, guards, TensorBoard."""
import math

import pytest
import torch

from wbvb.feed.batches import ExampleSource
from wbvb.config import ConfigError, config_from_dict
from wbvb.models.load import load_tokenizer, resolve_model_paths
from wbvb.tasks import load_all
from wbvb.train.setup import accumulation_steps, micro_batch_size
from wbvb.train.trainer import NonFiniteLossError, Trainer


@pytest.fixture
def setup(tiny_dict):
    tiny_dict["training"].update({"epochs": 2, "batch_size": 8})
    cfg = config_from_dict(tiny_dict)
    paths = resolve_model_paths(cfg)
    tok = load_tokenizer(paths["student"])
    train = load_all(cfg.tasks, "train")
    ev = load_all(cfg.tasks, "eval")
    return cfg, paths["student"], tok, train, ev


def _run(cfg, student, tok, train, ev, seed=0, tb=None, **kw):
    tr = Trainer(cfg, "sft", seed, student, tok, tb_dir=tb)
    src = ExampleSource(train, tok, cfg.training.max_length, tr.micro_batch)
    return tr, tr.fit(src, ev, **kw)


def _comparable(history):
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "data_wait_s")} for m in history]


def test_same_seed_same_metrics_and_seed_matters(setup):
    cfg, student, tok, train, ev = setup
    _, a = _run(cfg, student, tok, train, ev, seed=0)
    _, b = _run(cfg, student, tok, train, ev, seed=0)
    _, c = _run(cfg, student, tok, train, ev, seed=1)
    assert _comparable(a) == _comparable(b)
    assert a[-1]["train_loss"] != c[-1]["train_loss"]
    assert a[-1]["train_loss"] < a[0]["train_loss"]


def test_resumed_run_ends_like_an_uninterrupted_one(setup, tmp_path):
    cfg, student, tok, train, ev = setup
    _, full = _run(cfg, student, tok, train, ev)
    saved = {}

    def stop_after_first(metrics, epoch):
        first.save_checkpoint(tmp_path / "ckpt", epoch)
        saved["m"] = metrics
        raise KeyboardInterrupt  # the trial dies after its first checkpoint

    first = Trainer(cfg, "sft", 0, student, tok)
    with pytest.raises(KeyboardInterrupt):
        first.fit(ExampleSource(train, tok, cfg.training.max_length, first.micro_batch), ev,
                  on_epoch_end=stop_after_first)
    second = Trainer(cfg, "sft", 0, student, tok)
    rest = second.fit(ExampleSource(train, tok, cfg.training.max_length, second.micro_batch), ev,
                      resume_from=tmp_path / "ckpt")
    assert [m["epoch"] for m in rest] == [2]
    assert _comparable([saved["m"]] + rest) == _comparable(full)


def test_accumulation_reaches_the_same_effective_batch(tiny_dict):
    tiny_dict["training"].update({"batch_size": 8, "whitebox_batch_size": 4, "effective_batch_size": 16})
    tr = config_from_dict(tiny_dict).training
    assert (micro_batch_size(tr, "black_box"), accumulation_steps(tr, "black_box")) == (8, 2)
    assert (micro_batch_size(tr, "attention"), accumulation_steps(tr, "attention")) == (4, 4)
    tiny_dict["training"]["whitebox_batch_size"] = 3
    with pytest.raises(ConfigError, match="multiple of training.whitebox_batch_size"):
        config_from_dict(tiny_dict)


def test_accumulated_steps_count_optimizer_steps(setup, tiny_dict):
    cfg, student, tok, train, ev = setup
    tiny_dict["training"].update({"epochs": 1, "batch_size": 8, "effective_batch_size": 24})
    cfg2 = config_from_dict(tiny_dict)
    _, hist = _run(cfg2, student, tok, train, ev)
    assert hist[-1]["steps"] == math.ceil(math.ceil(72 / 8) / 3)  # 9 micro-batches, 3 per optimizer step


def test_non_finite_losses_fail_the_trial_with_context(setup, tiny_dict):
    cfg, student, tok, train, ev = setup
    tiny_dict["training"]["max_bad_steps"] = 2
    cfg = config_from_dict(tiny_dict)
    tr = Trainer(cfg, "sft", 0, student, tok)
    tr._forward_loss = lambda batch: (torch.tensor(float("nan")), {"task": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match=r"2 non-finite losses in a row at optimizer step 0.*task.*"
                                                 r"batch examples: \['"):
        tr.fit(ExampleSource(train, tok, cfg.training.max_length, 8), ev)


def test_tensorboard_scalars_and_hparams_read_back(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, student, tok, train, ev = setup
    _run(cfg, student, tok, train, ev, tb=str(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/task_loss", "train/lr", "train/grad_norm", "epoch/val_acc",
                "epoch/tokens_per_s", "epoch/skipped_steps", "epoch/validation_accuracy_arithmetic"):
        assert tag in tags, tag
    assert len(acc.Scalars("train/loss")) == 18  # 2 epochs x 9 optimizer steps, steps on the x-axis
    plugins = acc.PluginTagToContent("hparams")
    assert plugins, "no HParams summary"


def _counting_reads(monkeypatch):
    """Count the host reads of a tensor's values that logging makes (float(t), t.tolist()); the
    optimizer's own step-counter .item() and the finite check's bool are left out."""
    counts = {"reads": 0}
    for name in ("__float__", "tolist"):
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, **k):
            counts["reads"] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, read)
    return counts


def test_loss_parts_are_read_once_per_logging_interval(setup, tiny_dict, monkeypatch):
    cfg, student, tok, train, ev = setup
    tiny_dict["training"].update({"epochs": 1, "log_every_steps": 4})
    cfg = config_from_dict(tiny_dict)
    tr = Trainer(cfg, "sft", 0, student, tok)
    src = ExampleSource(train, tok, cfg.training.max_length, tr.micro_batch)
    tr._setup_optimisation(9)
    tr.micro_per_epoch = 9
    counts = _counting_reads(monkeypatch)
    metrics = tr._train_epoch(iter(src.batches(0, 1, 0)), 0)
    monkeypatch.undo()
    assert metrics["steps"] == 9  # 9 micro-batches, one optimizer step each
    # read at step 1 (the loss-scale check of the process's first step), at steps 4 and 8, and at
    # the epoch's end (was 4 per micro-batch)
    assert counts["reads"] == 4


def test_a_nan_batch_is_skipped_counted_and_left_out_of_the_means(setup):
    cfg, student, tok, train, ev = setup
    tr = Trainer(cfg, "sft", 0, student, tok)
    real, finite, calls = tr._forward_loss, [], []

    def every_third_nan(batch):
        loss, parts = real(batch)
        calls.append(1)
        if len(calls) % 3 == 0:
            return loss * float("nan"), {k: v * float("nan") for k, v in parts.items()}
        finite.append(loss.item())
        return loss, parts

    tr._forward_loss = every_third_nan
    hist = tr.fit(ExampleSource(train, tok, cfg.training.max_length, 8), ev)
    assert [m["skipped_steps"] for m in hist] == [3, 3]  # 9 micro-batches an epoch, every third one NaN
    assert hist[0]["train_loss"] == pytest.approx(sum(finite[:6]) / 6, rel=1e-6)
    assert hist[1]["train_loss"] == pytest.approx(sum(finite[6:]) / 6, rel=1e-6)
    assert hist[-1]["steps"] == 2 * 6  # a NaN batch's optimizer step is not taken


def test_intermediate_epochs_score_a_fixed_subset_and_the_last_the_whole_split(setup, tiny_dict):
    from collections import Counter

    cfg, student, tok, train, ev = setup
    tiny_dict["training"].update({"epochs": 3, "eval_subset": 5})
    cfg = config_from_dict(tiny_dict)
    scored = []
    for seed in (0, 1):  # every trial scores the same subset
        tr = Trainer(cfg, "sft", seed, student, tok)
        real = tr.evaluate
        tr.evaluate = lambda examples, real=real: scored.append([e.id for e in examples]) or real(examples)
        tr.fit(ExampleSource(train, tok, cfg.training.max_length, tr.micro_batch), ev)
    whole = [e.id for e in ev]
    task = {e.id: e.task for e in ev}
    assert [len(s) for s in scored] == [5 * len(cfg.tasks)] * 2 + [len(whole)] + [5 * len(cfg.tasks)] * 2 + [len(whole)]
    assert scored[0] == scored[1] == scored[3] == scored[4] and scored[2] == scored[5] == whole
    assert Counter(task[i] for i in scored[0]) == {t.name: 5 for t in cfg.tasks}
    assert scored[0] == [i for i in whole if i in set(scored[0])]  # in the split's order
