"""Relative paths are the user's: relative to where the command ran, never to a trial's working directory."""
import copy
import json
import os
from pathlib import Path

import pytest

from support.sweep_proc import kill_group, start_sweep, write_config
from wbvb.config import ConfigError, config_from_dict, resolve_paths


def test_relative_paths_are_made_absolute_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WBVB_OUTPUT_PATH", raising=False)
    monkeypatch.delenv("WBVB_OFFLINE_DATA_PATH", raising=False)
    (tmp_path / "ds.json").write_text("{}")
    (tmp_path / "models" / "student").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({
        "models": {"teacher": "org/hub-model", "student": "models/student", "cache_dir": "cache"},
        "tasks": [{"name": "sst2", "source": "jsonl", "path": "../data/sst2"}],
        "training": {"use_deepspeed": True, "deepspeed_config": "ds.json"}})
    got = resolve_paths(cfg)
    assert got.output.dir == str(tmp_path / "results")  # the default ./results
    assert got.teacher_data.path == str(tmp_path / "wbvb_data" / "teacher")  # the default ./wbvb_data/teacher
    assert got.models.cache_dir == str(tmp_path / "cache")
    assert got.training.deepspeed_config == str(tmp_path / "ds.json")
    assert got.tasks[0].path == str(tmp_path.parent / "data" / "sst2")
    assert got.models.student == str(tmp_path / "models" / "student")  # a folder here, as from_pretrained reads it
    assert got.models.teacher == "org/hub-model"  # no such folder: a hub id
    assert cfg.output.dir == "results"  # a copy: the caller's config is unchanged
    # A trial rebuilds the config in another working directory: the same folders.
    monkeypatch.chdir(tmp_path / "models")
    again = config_from_dict(copy.deepcopy(got.to_dict()))
    assert again.run_dir == tmp_path / "results" / "quickstart" and again.to_dict() == got.to_dict()
    assert resolve_paths(again).to_dict() == got.to_dict()  # idempotent


def test_uris_and_presets_are_kept_and_a_cluster_refuses_a_relative_store(tmp_path):
    cfg = config_from_dict({"output": {"dir": "s3://bucket/wbvb"}, "teacher_data": {"path": "gs://b/teacher"}})
    got = resolve_paths(cfg, base=tmp_path)
    assert (got.output.dir, got.teacher_data.path) == ("s3://bucket/wbvb", "gs://b/teacher")
    assert (got.models.teacher, got.models.student) == ("preset:tiny", "preset:tiny")
    with pytest.raises(ConfigError, match="teacher_data.path 'store' is relative.*every node sees"):
        resolve_paths(config_from_dict({"teacher_data": {"path": "store"}}), base=tmp_path, cluster=True)


@pytest.mark.e2e
def test_a_cut_student_is_kept_and_a_relative_gguf_path_is_made_absolute(tmp_path):
    cfg = config_from_dict({"models": {"teacher": "gguf:models/t.gguf", "student": {"from_teacher": {"every": 5}}}})
    got = resolve_paths(cfg, base=tmp_path)
    assert got.models.teacher == f"gguf:{tmp_path / 'models' / 't.gguf'}"
    assert got.models.student.from_teacher.every == 5
    assert resolve_paths(got, base=tmp_path / "elsewhere").models.teacher == got.models.teacher


def test_default_output_folder_holds_the_tensorboard_logs(tmp_path):
    """The README's quickstart layout, from a fresh working directory with no WBVB_* variables."""
    from conftest import TINY

    d = copy.deepcopy(TINY)
    d["models"]["cache_dir"] = "cache"  # relative too (and ~/.cache stays clean)
    d["training"]["epochs"] = 1
    d["sweep"].update({"distill_types": ["black_box"], "seeds": [0], "num_cpus": 2, "max_concurrent_trials": 1})
    assert "output" not in d and "path" not in d["teacher_data"]  # the defaults: ./results, ./wbvb_data/teacher
    write_config(d, tmp_path / "tiny.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WBVB_")}
    log = tmp_path / "sweep.log"
    proc = start_sweep(Path("tiny.yaml"), log, cwd=tmp_path, env=env)
    try:
        rc = proc.wait(timeout=600)
    finally:
        kill_group(proc)
    assert rc == 0, log.read_text()[-4000:]
    run = tmp_path / "results" / "tiny"
    events = list((run / "tensorboard" / "black_box-seed0").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events), sorted(p.name for p in run.iterdir())
    assert (run / "tune" / "black_box-seed0" / "result.json").is_file()
    teacher = json.loads((run / "teacher.json").read_text())
    store = Path(teacher["data_dir"])
    assert store.parent == tmp_path / "wbvb_data" / "teacher" and (store / "manifest.json").is_file()
    assert Path(teacher["teacher_path"]).is_relative_to(tmp_path / "cache")  # the preset was built in ./cache
    saved = json.loads((run / "config.json").read_text())
    assert saved["output"]["dir"] == str(tmp_path / "results") and saved["models"]["cache_dir"] == str(tmp_path / "cache")
