"""A trial's teacher batches made in a Ray actor beside it, so that work never holds the trial's GIL.

Reading through Ray Data, the row shuffle and decoding are Python and NumPy work. In a thread of the
trial's own process they compete with the training loop for the GIL at every torch op (each op
lets it go and takes it back): the loop spent ~1.5 s of 30 waiting, and ran ~10 % slower
(benchmarks/README.md, "Training engine"). In a process of its own the trial's share is one
``ray.get`` per batch. The actor:

- runs on the trial's node, so batches go through the node's shared-memory object store, never
  the network, and arrive as NumPy arrays without a copy (tensors here, sharing that memory);
- never imports torch (decoding is NumPy), so it starts in about a second;
- asks for no CPU: its work is the trial's own data work moved out of the trial's process (Ray
  Data's read tasks keep their own cap, ``sweep.data_cpus``);
- is owned by the trial's process and dies with it; ``batches`` ends it when the stream closes;
- sends small batches in groups (one object-store fetch for many), and makes at most ``ahead``
  groups the trial has not taken yet (a Ray streaming generator's back-pressure), so memory
  stays bounded however slow the training step.

Errors raised while making batches (a short shard, a corrupt row, Ray Data's stall timeout) come
out in the trial as themselves, with the actor's traceback chained.
"""
from __future__ import annotations

import functools
import importlib
from typing import Iterator

import numpy as np

# Made and not yet taken: at most AHEAD groups of batches, each up to GROUP_BYTES or one batch
# (white-box batches run to 100s of MiB: two of them, as the trial's reader thread held before).
AHEAD = 2
GROUP_BYTES = 8 << 20


class BatchMaker:
    """Holds a ShardStream and makes its batches in the actor's process (``ShardStream.local_arrays``)."""

    def __init__(self, stream):
        importlib.import_module("wbvb.shard_source")  # Ray Data: imported now, while the trial loads its models
        self.stream = stream

    def ready(self) -> bool:
        return True

    def batches(self, first_epoch: int, end_epoch: int, seed: int, skip: int, group_bytes: int):
        """Lists of (epoch, arrays), so small batches cost the trial one object-store fetch per group,
        not per batch. The first group holds one batch (training starts at once); each next one up
        to twice the bytes of the one before, at most ``group_bytes`` (and at least one batch)."""
        group, size, limit = [], 0, 0
        for epoch, arrays in self.stream.local_arrays(first_epoch, end_epoch, seed, skip):
            nbytes = sum(v.nbytes for v in arrays.values() if isinstance(v, np.ndarray))
            if group and size + nbytes > limit:
                yield group
                group, size, limit = [], 0, min(group_bytes, 2 * size)
            group.append((epoch, arrays))
            size += nbytes
        if group:
            yield group


@functools.cache
def _remote_class():
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(BatchMaker)


def start_maker(stream):
    """A BatchMaker actor for ``stream`` on this node, starting now (its process and imports take
    about a second: start it before loading models and it is ready when training begins)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return _remote_class().options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(stream)


def request(maker, first_epoch: int, end_epoch: int, seed: int, skip: int = 0, ahead: int = AHEAD,
            group_bytes: int = GROUP_BYTES):
    """Ask ``maker`` for the batches of epochs [first_epoch, end_epoch): it starts making them at once,
    in groups of up to ``group_bytes``, at most ``ahead`` groups ahead of ``remote_batches``. One
    request per actor: the actor makes one stream at a time."""
    return maker.batches.options(num_returns="streaming", _generator_backpressure_num_objects=ahead).remote(
        first_epoch, end_epoch, seed, skip, group_bytes)


def remote_batches(maker, refs) -> Iterator[tuple[int, dict]]:
    """(epoch, batch) as ``ShardStream.local_batches`` gives them, out of a ``request``'s ``refs``; the
    actor is killed when this generator ends or is closed."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from wbvb.teacher.codec import as_tensors

    try:
        for ref in refs:
            try:
                group = ray.get(ref)
            except RayTaskError as err:
                if isinstance(err.cause, Exception):
                    raise err.cause from err
                raise
            except RayActorError as err:
                raise RuntimeError(
                    "the process making this trial's teacher batches (a Ray actor on the trial's node) died; if the "
                    "node ran out of memory, lower training.whitebox_batch_size or the trials run at once "
                    f"(sweep.max_concurrent_trials): {err}") from err
            del ref
            for epoch, arrays in group:
                yield epoch, as_tensors(arrays)
    finally:
        if ray.is_initialized():  # not when this generator is collected after Ray's shutdown
            ray.kill(maker)
