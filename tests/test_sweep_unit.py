import pytest

from wbvb.config import ConfigError, config_from_dict
from wbvb.sweep.resume import config_differences
from wbvb.sweep.run import concurrency
from wbvb.sweep.trial import trial_name, trial_resources


def _cfg(**sweep):
    return config_from_dict({"sweep": sweep})


def test_concurrency_leaves_cpus_for_ray_data():
    # 2 x (0.5 + 0.25) + 0.5 = 2 CPUs
    assert concurrency(_cfg(cpus_per_trial=0.5, data_cpus=0.25, headroom_cpus=0.5), 2) == 2
    # (4 CPUs - 1 headroom) / (1 trial + 0.5 data) = 2
    assert concurrency(_cfg(cpus_per_trial=1, data_cpus=0.5, headroom_cpus=1), 4) == 2
    assert concurrency(_cfg(cpus_per_trial=1, data_cpus=0.5, headroom_cpus=1, max_concurrent_trials=1), 4) == 1
    assert concurrency(_cfg(cpus_per_trial=4, data_cpus=1, headroom_cpus=1), 64) == 12


def test_concurrency_refuses_a_trial_that_cannot_fit():
    with pytest.raises(ConfigError, match="data reads could never be scheduled"):
        concurrency(_cfg(cpus_per_trial=2, data_cpus=0.5, headroom_cpus=1), 2)


def test_autoscaling_cluster_uses_the_configured_concurrency():
    cfg = _cfg(address="auto", cpus_per_trial=8, data_cpus=2, max_concurrent_trials=16)
    assert concurrency(cfg, 0) == 16  # no workers yet: the CPU budget is not checked against the head


def test_trial_names_carry_type_and_seed():
    assert trial_name("black_box", 3) == "black_box-seed3"


def test_per_type_resources_override_the_sweep_defaults():
    cfg = _cfg(cpus_per_trial=1, gpus_per_trial=0.25, memory_gb_per_trial=2, custom_resources={"a100": 0.25},
               resources_by_type={"attention": {"cpus": 2, "gpus": 0.5, "custom": {"big": 1}}},
               headroom_cpus=0)
    assert trial_resources(cfg, "sft") == {"CPU": 1, "GPU": 0.25, "memory": 2 * 2**30, "a100": 0.25}
    assert trial_resources(cfg, "attention") == {"CPU": 2, "GPU": 0.5, "memory": 2 * 2**30, "a100": 0.25, "big": 1}
    assert concurrency(cfg, 10) == 4  # the largest trial (2 CPUs + 0.5 data) sets the pace


def test_config_differences_ignore_execution_settings():
    a = config_from_dict({}).to_dict()
    b = config_from_dict({"sweep": {"max_concurrent_trials": 3, "address": "auto"}, "loss": {"beta": 0.7}}).to_dict()
    assert config_differences(a, b) == ["loss.beta"]


def test_unknown_type_in_resource_overrides():
    with pytest.raises(ConfigError, match="resources_by_type: unknown distill type 'attn'"):
        _cfg(resources_by_type={"attn": {"cpus": 1}})


def test_object_store_output_has_a_local_mirror_for_the_driver():
    from pathlib import Path

    cfg = config_from_dict({"output": {"dir": "gs://bucket/studies/"}, "sweep": {"name": "s1"},
                            "models": {"cache_dir": "/tmp/wbvb-cache"}})
    assert cfg.run_uri == "gs://bucket/studies/s1"
    assert cfg.run_dir == Path("/tmp/wbvb-cache/runs/gs/bucket/studies/s1")
    local = config_from_dict({"output": {"dir": "/mnt/nfs/results"}, "sweep": {"name": "s1"}})
    assert local.run_uri == str(local.run_dir) == "/mnt/nfs/results/s1"


def test_teacher_stage_resources_are_execution_settings():
    a = config_from_dict({}).to_dict()
    b = config_from_dict({"teacher_data": {"gpus": 1, "cpus": 8, "custom_resources": {"a100": 1}}}).to_dict()
    del a["teacher_data"]["gpus"]  # a run folder saved before these keys existed still resumes
    assert config_differences(a, b) == []


def _tune_result(dt, seed, epoch=None, error=None):
    """What Tune's ResultGrid holds per trial: its config, its last reported metrics, its error."""
    from types import SimpleNamespace

    return SimpleNamespace(config={"distill_type": dt, "seed": seed}, metrics={} if epoch is None else {"epoch": epoch},
                           error=error)


def test_an_interrupted_sweep_counts_its_unfinished_trials_and_exits_non_zero(monkeypatch):
    from wbvb.sweep import cli
    from wbvb.sweep.run import trial_outcomes

    # Ctrl-C with 12 trials of 2 epochs: 5 done, 1 stopped after epoch 1, 6 never started (no metrics).
    results = ([_tune_result("sft", s, 2) for s in range(5)] + [_tune_result("sft", 5, 1)]
               + [_tune_result("black_box", s) for s in range(6)])
    failed, unfinished = trial_outcomes(results, 12, epochs=2)
    assert (failed, unfinished) == ([], 7)
    # A trial that failed after reporting its last epoch is not finished either.
    failed, unfinished = trial_outcomes(results[:5] + [_tune_result("sft", 5, 2, error=RuntimeError("boom"))], 6, 2)
    assert failed == [{"trial": "sft-seed5", "error": "boom"}] and unfinished == 1

    outcomes = iter([{"errors": [], "unfinished": 7}, {"errors": ["boom"], "unfinished": 1},
                     {"errors": [], "unfinished": 0}])
    monkeypatch.setattr(cli, "run_sweep", lambda cfg, resume=False, **kw: next(outcomes))
    assert cli.main([]) == 130  # interrupted: the shell's status for Ctrl-C
    assert cli.main([]) == 1  # a failed trial
    assert cli.main([]) == 0  # every trial finished
