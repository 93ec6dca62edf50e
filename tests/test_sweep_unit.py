import pytest

from wbvb.config import ConfigError, config_from_dict
from wbvb.sweep import concurrency, trial_name


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
