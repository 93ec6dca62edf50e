"""seq_kd: the teacher's generated answers are stored once, reused, and become the training targets."""
import dataclasses

import pytest

from wbvb.feed.batches import ExampleSource
from wbvb.models.load import load_tokenizer, resolve_model_paths
from wbvb.tasks import load_all
from wbvb.store.answers import ANSWERS_FILE, seq_kd_examples
from wbvb.teacher.answers import teacher_answers
from wbvb.store.schema import TeacherDataError


def test_teacher_answers_stored_reused_and_used_as_targets(tiny_cfg, tmp_path, capsys):
    paths = resolve_model_paths(tiny_cfg)
    tok = load_tokenizer(paths["teacher"])
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(TeacherDataError, match="no teacher answers for seq_kd"):
        seq_kd_examples(load_all(tiny_cfg.tasks, "train"), store)
    teacher_answers(tiny_cfg, paths["teacher"], tok, store)
    assert (store / ANSWERS_FILE).is_file()
    capsys.readouterr()
    teacher_answers(tiny_cfg, paths["teacher"], tok, store)
    assert "reusing" in capsys.readouterr().out
    train = load_all(tiny_cfg.tasks, "train")
    taught = seq_kd_examples(train, store)
    assert [e.id for e in taught] == [e.id for e in train] and [e.prompt for e in taught] == [e.prompt for e in train]
    for ex in taught:
        if ex.choices:
            assert ex.answer in ex.choices  # the teacher's highest-likelihood choice
        else:
            assert "Question:" not in ex.answer  # cut at the next question
    with pytest.raises(TeacherDataError, match="no teacher answer for 1 train examples"):
        seq_kd_examples(train + [dataclasses.replace(train[0], id="unseen")], store)


def test_seq_kd_trains_on_task_loss_only(tiny_cfg, tmp_path):
    from wbvb.train.trainer import Trainer

    paths = resolve_model_paths(tiny_cfg)
    tok = load_tokenizer(paths["student"])
    train = load_all(tiny_cfg.tasks, "train")[:16]
    trainer = Trainer(tiny_cfg, "seq_kd", 0, paths["student"], tok)
    (metrics,) = trainer.fit(ExampleSource(train, tok, 96, trainer.micro_batch), load_all(tiny_cfg.tasks, "eval")[:4])
    assert metrics["kd_loss"] == 0.0 and metrics["align_hidden_loss"] == 0.0 and metrics["task_loss"] > 0
