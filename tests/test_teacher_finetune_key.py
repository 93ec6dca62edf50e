"""The fine-tuned teacher is keyed on what its weights depend on, not on the students' settings."""
from wbvb.config import config_from_dict
from wbvb.teacher.finetune import finetuned_dir


def _dir(tmp_path, **training):
    cfg = config_from_dict({"models": {"cache_dir": str(tmp_path), "teacher_finetune_epochs": 2},
                            "training": {"epochs": 2, "lr": 1e-3, "batch_size": 16, **training}})
    return finetuned_dir(cfg, "preset-folder-that-is-a-hub-id")


def test_students_epochs_lr_eval_and_checkpoints_keep_the_fine_tuned_teacher(tmp_path):
    base = _dir(tmp_path)
    assert base.parent == tmp_path / "teachers"
    for change in ({"epochs": 5}, {"lr": 3e-4}, {"eval_subset": 200}, {"eval_batch_size": 8},
                   {"checkpoint_every_steps": 10}, {"max_new_tokens": 4}):
        assert _dir(tmp_path, **change) == base, change


def test_what_the_fine_tune_trains_with_makes_another_teacher(tmp_path):
    base = _dir(tmp_path)
    for change in ({"batch_size": 32}, {"max_length": 64}, {"warmup_ratio": 0.0}, {"weight_decay": 0.1},
                   {"grad_clip": 0.5}, {"precision": "bf16"}):
        assert _dir(tmp_path, **change) != base, change
