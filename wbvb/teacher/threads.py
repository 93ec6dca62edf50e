"""Torch threads of the teacher stage (``teacher_data.threads``; 0: every core this process may use).

The stage is one long forward-only job, so by default it takes every core it may run on (its CPU
affinity, which a container or ``taskset`` narrows, not ``os.cpu_count()``). On a machine shared
with other jobs fewer threads can be faster: benchmarks/README.md ("Teacher threads") has figures.
As a Ray task it gets the CPUs it asked for (``teacher_data.cpus``) unless ``threads`` is set.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def stage_threads(td, in_ray_task: bool = False) -> int:
    """The stage's torch thread count: ``teacher_data.threads``, or its default where it runs."""
    if td.threads:
        return td.threads
    return max(1, math.ceil(td.cpus)) if in_ray_task else available_cores()


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block, and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
