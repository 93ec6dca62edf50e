"""How many trials run side by side: their CPUs, Ray Data's share and the headroom (the driver and the plan ask)."""
from __future__ import annotations

import math

from wbvb.config import ConfigError
from wbvb.sweep.trial import trial_resources


def concurrency(cfg, cluster_cpus: float) -> int:
    """How many trials run at once so Ray Data's reads always find CPUs (../shared/DESIGN.md: the Ray Data deadlock).

    Each running trial holds its CPUs and its Ray Data reads may take ``data_cpus`` outside the
    trial's reservation; ``headroom_cpus`` stay free for the driver and Ray itself:
    concurrent * (trial CPUs + data_cpus) + headroom_cpus <= cluster CPUs (largest trial counts).
    """
    sw = cfg.sweep
    per_trial = max(trial_resources(cfg, t)["CPU"] for t in sw.distill_types) + sw.data_cpus
    if sw.address and sw.max_concurrent_trials > 0:
        return sw.max_concurrent_trials  # a (possibly autoscaling) cluster: its size now says little
    if per_trial + sw.headroom_cpus > cluster_cpus + 1e-9:
        raise ConfigError(f"a trial's CPUs ({per_trial - sw.data_cpus:g}) + sweep.data_cpus ({sw.data_cpus:g}) + "
                          f"sweep.headroom_cpus ({sw.headroom_cpus:g}) exceed the cluster's {cluster_cpus:g} CPUs, "
                          "so a trial's data reads could never be scheduled; lower them (on an autoscaling "
                          "cluster, set sweep.max_concurrent_trials instead)")
    fit = max(1, math.floor((cluster_cpus - sw.headroom_cpus) / per_trial + 1e-9))
    return min(fit, sw.max_concurrent_trials) if sw.max_concurrent_trials > 0 else fit
