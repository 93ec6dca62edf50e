"""teacher_data.threads: validated, every core this process may use by default, set for the stage."""
import os

import pytest
import torch

from wbvb.config import ConfigError, config_from_dict
from wbvb.teacher import prepare as prepare_module
from wbvb.teacher.threads import available_cores, stage_threads


@pytest.mark.parametrize("value", [-1, -8])
def test_negative_threads_are_refused_naming_the_key(tiny_dict, value):
    tiny_dict["teacher_data"]["threads"] = value
    with pytest.raises(ConfigError, match=r"teacher_data\.threads"):
        config_from_dict(tiny_dict)


def test_threads_must_be_a_whole_number(tiny_dict):
    tiny_dict["teacher_data"]["threads"] = "two"
    with pytest.raises(ConfigError, match=r"teacher_data\.threads"):
        config_from_dict(tiny_dict)


def test_default_is_every_core_of_the_affinity_not_the_machine(tiny_cfg, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cores() == 3
    assert tiny_cfg.teacher_data.threads == 0 and stage_threads(tiny_cfg.teacher_data) == 3
    tiny_cfg.teacher_data.cpus = 1.5  # as a Ray task: the CPUs it asked for, rounded up
    assert stage_threads(tiny_cfg.teacher_data, in_ray_task=True) == 2
    tiny_cfg.teacher_data.threads = 1
    assert stage_threads(tiny_cfg.teacher_data) == 1 and stage_threads(tiny_cfg.teacher_data, True) == 1


class _Seen(Exception):
    pass


def test_the_stage_runs_on_the_configured_threads_and_restores_them(tiny_dict, monkeypatch):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    tiny_dict["teacher_data"]["threads"] = want
    seen = []

    def first_step(cfg):
        seen.append(torch.get_num_threads())
        raise _Seen

    monkeypatch.setattr(prepare_module, "resolve_model_paths", first_step)
    with pytest.raises(_Seen):
        prepare_module.prepare(config_from_dict(tiny_dict))
    assert seen == [want] and torch.get_num_threads() == before
