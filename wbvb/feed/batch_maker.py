"""A trial's teacher batches made by a Ray task beside it, so that work never holds the trial's GIL.

Reading through Ray Data, the row shuffle and decoding are Python and NumPy work. In a thread of the
trial's own process they compete with the training loop for the GIL at every torch op (each op
lets it go and takes it back), which slows the loop measurably (benchmarks/README.md, "Training
engine"). In another process the trial's share is one ``ray.get`` per group of batches. The batch-making task:

- is a streaming-generator task, not an actor: it runs in one of the node's pooled Ray workers,
  which are already up, with Ray Data and wbvb imported by earlier tasks, so a trial's first batch
  comes without a process start (an actor always gets a fresh process, and imports everything anew);
- runs on the trial's node, so batches go through the node's shared-memory object store, never
  the network, and arrive as NumPy arrays without a copy (tensors here, sharing that memory);
- never imports torch (decoding is NumPy), so a worker new to it starts quickly;
- asks for no CPU: its work is the trial's own data work moved out of the trial's process (Ray
  Data's read tasks keep their own cap, ``sweep.data_cpus``); it is never retried (a retry would
  make the stream again from its start);
- is owned by the trial: cancelled when the stream is closed before its end, and its worker is
  killed by Ray if the trial's process dies first;
- sends small batches in groups (one object-store fetch for many), and makes at most ``ahead``
  groups the trial has not taken yet (the streaming generator's back-pressure), so memory stays
  bounded however slow the training step.

Errors raised while making batches (a short shard, a corrupt row, Ray Data's stall timeout) come
out in the trial as themselves, with the task's traceback chained.
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from wbvb.store.codec import as_tensors

# Made and not yet taken: at most AHEAD groups of batches, each up to GROUP_BYTES or one batch
# (white-box batches run to 100s of MiB: two of them, as the trial's reader thread held before).
AHEAD = 2
GROUP_BYTES = 8 << 20


def make_groups(stream, first_epoch: int, end_epoch: int, seed: int, skip: int, group_bytes: int):
    """``stream.local_arrays`` (the pipeline, run in this process) as lists of (epoch, arrays), so
    small batches cost the trial one object-store fetch per group, not per batch. The first group
    holds one batch (training starts at once); each next one up to twice the bytes of the one
    before, at most ``group_bytes`` (and at least one batch)."""
    group, size, limit = [], 0, 0
    for epoch, arrays in stream.local_arrays(first_epoch, end_epoch, seed, skip):
        nbytes = sum(v.nbytes for v in arrays.values() if isinstance(v, np.ndarray))
        if group and size + nbytes > limit:
            yield group
            group, size, limit = [], 0, min(group_bytes, 2 * size)
        group.append((epoch, arrays))
        size += nbytes
    if group:
        yield group


@functools.cache
def _remote_task():
    import ray

    return ray.remote(num_cpus=0, max_retries=0)(make_groups)


def request(stream, first_epoch: int, end_epoch: int, seed: int, skip: int = 0, ahead: int = AHEAD,
            group_bytes: int = GROUP_BYTES):
    """Start making ``stream``'s batches of epochs [first_epoch, end_epoch) on this node, at once, in
    groups of up to ``group_bytes``, at most ``ahead`` groups ahead of ``remote_batches``; returns
    the task's ``ObjectRefGenerator``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return _remote_task().options(
        num_returns="streaming", _generator_backpressure_num_objects=ahead,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(stream, first_epoch, end_epoch, seed, skip, group_bytes)


def remote_batches(refs) -> Iterator[tuple[int, dict]]:
    """(epoch, batch) as ``ShardStream.local_batches`` gives them, out of a ``request``'s ``refs``;
    the task is cancelled if this generator is closed before the stream's end."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    done = False
    try:
        for ref in refs:
            try:
                group = ray.get(ref)
            except RayTaskError as err:
                if isinstance(err.cause, Exception):
                    raise err.cause from err
                raise
            except RayError as err:  # the worker died (out of memory, node lost), not an error in the task
                raise RuntimeError(
                    "the process making this trial's teacher batches (a Ray task on the trial's node) died; if the "
                    "node ran out of memory, lower training.whitebox_batch_size or the trials run at once "
                    f"(sweep.max_concurrent_trials): {err}") from err
            del ref
            for epoch, arrays in group:
                yield epoch, as_tensors(arrays)
        done = True
    finally:
        if not done and ray.is_initialized():  # not when this generator is collected after Ray's shutdown
            ray.cancel(refs)  # its worker goes back to the node's pool
