import pytest

from wbvb.config import ConfigError, config_from_dict, load_config
from wbvb.sweep.cli import build_parser, config_from_args


def test_quickstart_loads_with_defaults():
    cfg = load_config()
    assert cfg.sweep.name == "quickstart"
    assert [t.name for t in cfg.tasks] == ["sentiment", "multiple_choice", "arithmetic"]


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"training": {"epoch": 3}})
    msg = str(e.value)
    assert "training.epoch" in msg and "epochs" in msg and "batch_size" in msg


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match="unknown config key 'trainig'.*training"):
        config_from_dict({"trainig": {}})


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="training.epochs: expected an integer"):
        config_from_dict({"training": {"epochs": "three"}})


def test_bad_distill_type_lists_choices():
    with pytest.raises(ConfigError, match="unknown distill type 'blackbox'.*black_box"):
        config_from_dict({"sweep": {"distill_types": ["blackbox"]}})


def test_task_list_validates_each_entry():
    with pytest.raises(ConfigError, match=r"tasks\[0\].n_trian"):
        config_from_dict({"tasks": [{"name": "sentiment", "n_trian": 3}]})
    with pytest.raises(ConfigError, match="unknown quickstart task 'sst3'"):
        config_from_dict({"tasks": [{"name": "sst3"}]})


def test_deepspeed_needs_an_existing_config(tmp_path):
    with pytest.raises(ConfigError, match="deepspeed_config is empty"):
        config_from_dict({"training": {"use_deepspeed": True}})
    with pytest.raises(ConfigError, match="no such file"):
        config_from_dict({"training": {"use_deepspeed": True, "deepspeed_config": str(tmp_path / "nope.json")}})


def test_set_overrides_and_list_index():
    cfg = load_config(None, ["training.epochs=7", "tasks.1.n_train=11", "loss.beta=0.25"])
    assert cfg.training.epochs == 7 and cfg.tasks[1].n_train == 11 and cfg.loss.beta == 0.25


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["training.epochs"])


def test_env_vars_set_default_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("WBVB_OFFLINE_DATA_PATH", str(tmp_path / "td"))
    monkeypatch.setenv("WBVB_OUTPUT_PATH", str(tmp_path / "out"))
    cfg = config_from_dict({})
    assert cfg.teacher_data_dir == (tmp_path / "td").resolve()
    assert cfg.run_dir == (tmp_path / "out" / "quickstart").resolve()


def test_legacy_cli_flags(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    args = build_parser().parse_args(["--distill-types", "black_box,hidden_state", "--seeds", "0,1,2",
                                      "--use-deepspeed", "--deepspeed-config", str(ds), "--set", "training.epochs=1"])
    cfg = config_from_args(args)
    assert cfg.sweep.distill_types == ["black_box", "hidden_state"]
    assert cfg.sweep.seeds == [0, 1, 2]
    assert cfg.training.use_deepspeed and cfg.training.deepspeed_config == str(ds)
    assert cfg.training.epochs == 1


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("sweeps/nope.yaml")


@pytest.mark.parametrize("card, micro, whitebox, gpus", [("a100-40gb", 4, 2, 1.0), ("a100-80gb", 8, 4, 0.5)])
def test_a100_recipes_load_as_the_seed_study(card, micro, whitebox, gpus):
    from pathlib import Path

    from wbvb.train.setup import accumulation_steps, micro_batch_size

    cfg = load_config(Path(__file__).parent.parent / "sweeps" / f"{card}.yaml")
    assert [(t.family or t.name, t.n_train - t.n_select) for t in cfg.tasks] == [
        ("sst2", 5000), ("mmlu", 1000), ("gsm8k", 1000)]  # trained on; n_select more held out for --epoch best
    assert len(cfg.sweep.distill_types) * len(cfg.sweep.seeds) == 42
    for dt, m in (("black_box", micro), ("hidden_state", whitebox)):  # 40 per optimizer step, every type
        assert micro_batch_size(cfg.training, dt) == m and m * accumulation_steps(cfg.training, dt) == 40
    assert cfg.sweep.gpus_per_trial == gpus and cfg.training.keep_checkpoints == "none"
    assert cfg.training.keep_final_model == "first_seed"  # 6 final models kept, not 42 (benchmarks/README.md)


def test_the_retired_a100_recipe_names_its_replacements():
    from pathlib import Path

    with pytest.raises(ConfigError, match="retired.*a100-40gb.yaml.*a100-80gb.yaml"):
        load_config(Path(__file__).parent.parent / "sweeps" / "a100.yaml")


def test_cluster_recipe_is_the_real_study_with_resources_per_type():
    from pathlib import Path

    from wbvb.distill_types import DISTILL
    from wbvb.sweep.trial import trial_resources

    cfg = load_config(Path(__file__).parent.parent / "sweeps" / "cluster.yaml")
    assert [(t.source, t.family or t.name, t.n_train - t.n_select) for t in cfg.tasks] == [
        ("hub", "sst2", 5000), ("hub", "mmlu", 1000), ("hub", "gsm8k", 1000)]
    for dt in cfg.sweep.distill_types:  # white-box trials a whole GPU; the rest two per GPU
        assert trial_resources(cfg, dt)["GPU"] == (1.0 if DISTILL[dt].white_box else 0.5), dt
    assert cfg.training.checkpoint_dir.startswith("/mnt/wbvb/")  # shared: a retry resumes on any node
