"""Ray Data pipeline: teacher shards -> padded torch batches for one distill type.

Reads lazily with column projection (a ``black_box`` trial never reads hidden or attention
bytes), through a Ray Data source built from the manifest (``feed.shard_source``). Each epoch
reads every example once in the order ``feed.shuffle.epoch_order`` defines on example ids (a
uniformly random permutation seeded by (trial seed, epoch), the same order an ``ExampleSource``
over the same examples gives), batches being consecutive runs of it; a trial's epochs are one Ray
Data execution, read ahead by a thread across epoch ends. The stream first indexes the store
(every shard's example ids and row groups), then reads the order in windows of about
``WINDOW_BYTES`` of projected columns, each window one Ray Data read task that reads only the row
groups its rows lie in. Memory does not grow with the store (benchmarks/README.md, "Teacher
store"): a window, blocks of ``BLOCK_BYTES`` and the read-ahead (``READ_AHEAD_BYTES``) are fixed
sizes; only the index (an id and two integers per row) grows with the rows. Arrow batches decode
straight into padded arrays (``store.codec.decode_arrays``), with no per-row Python objects. Ray
Data gets a CPU cap of its own and a no-progress timeout, so a starved pipeline fails loudly
instead of hanging (../shared/DESIGN.md: the Ray Data deadlock). All of this runs in a Ray task
beside the trial (``feed.batch_maker``), not in the trial's process: the trial takes ready batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from wbvb import storage
from wbvb.feed.batch_maker import remote_batches, request
from wbvb.feed.prefetch import prefetch
from wbvb.feed.shard_source import TeacherRowSource, index_shards
from wbvb.feed.shuffle import batch_tables, epoch_order
from wbvb.store.codec import as_tensors, decode_arrays
from wbvb.store.schema import TeacherDataError, columns_for, shard_paths


BLOCK_BYTES = 4 << 20  # a trial holds a few blocks (prefetch, the batcher's copy), whatever the store size
# One read task's rows: it holds them all to put them in order. A store up to this size is one window
# an epoch, so each of its row groups is read once per epoch.
WINDOW_BYTES = 32 << 20


def configure_data_context(data_cpus: float, stall_timeout_s: float) -> None:
    import logging

    from ray.data import DataContext, ExecutionResources

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = DataContext.get_current()
    ctx.execution_options.resource_limits = ExecutionResources(cpu=data_cpus)
    ctx.target_max_block_size = BLOCK_BYTES
    ctx.execution_options.preserve_order = True
    ctx.execution_no_progress_timeout_s = stall_timeout_s
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False


# Arrow blocks read ahead of the batches, by size: small projected columns (black_box) run whole
# epochs ahead, so each epoch's Ray Data execution ends early instead of polling for the whole
# epoch (its scheduling loop costs the reading process CPU for as long as it runs); large
# white-box blocks stay a few. Whatever the store's size, a trial holds at most this much ahead.
READ_AHEAD_BYTES = 32 << 20


class ShardStream:
    """A batch source over a teacher store, reading only ``signals``' columns."""

    runs_ahead = True  # made ahead in another process: a reader thread in the trial would only compete for its GIL

    def __init__(self, data_dir: Path | str, manifest: dict, signals, batch_size: int,
                 data_cpus: float = 0.5, stall_timeout_s: float = 300.0):
        shards = shard_paths(data_dir, manifest)  # local paths or URIs (s3://, gs://, ...)
        remote = [storage.filesystem(p) for p in shards] if shards and isinstance(shards[0], str) else None
        self.filesystem = remote[0][0] if remote else None
        self.paths = [path for _, path in remote] if remote else [str(p) for p in shards]
        self.rows = [int(s["rows"]) for s in manifest["shards"]]
        self.manifest = manifest
        self.columns = columns_for(signals)
        self.batch_size = batch_size
        self.num_rows = manifest["num_rows"]
        self.pad_id = manifest["pad_token_id"]
        self.data_cpus = data_cpus
        self.stall_timeout_s = stall_timeout_s
        self._made = None  # (the epochs asked for at ``start``, the batch-making task's refs)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_made": None}  # the task gets the stream, not its own refs

    def start(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0) -> None:
        """Start making the batches of epochs [first_epoch, end_epoch) now (call this before loading
        models): ``batches`` asked for the same takes them, and the first ones are ready when
        training begins."""
        if self._made is None:
            self._made = ((first_epoch, end_epoch, seed, skip), request(self, first_epoch, end_epoch, seed, skip))

    def index(self):
        """Where each example of the store is (``shard_source.index_shards``)."""
        return index_shards(self.paths, self.rows, self.columns, self.filesystem)

    def dataset(self, index=None, windows=None):
        """The rows at ``windows`` (arrays of row numbers of ``index``, in read order; by default
        every row in storage order) as a lazy Ray Dataset."""
        import ray.data

        index = self.index() if index is None else index
        if windows is None:
            windows = self._windows(index, [np.arange(len(index.example_ids))])
        configure_data_context(self.data_cpus, self.stall_timeout_s)
        source = TeacherRowSource(self.paths, index, windows, self.columns, self.filesystem, BLOCK_BYTES)
        return ray.data.read_datasource(source, num_cpus=min(0.25, self.data_cpus), override_num_blocks=len(windows))

    def batches(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0) -> Iterator[tuple[int, dict]]:
        """(epoch, batch) for epochs [first_epoch, end_epoch), made by a Ray task on this node
        (``local_batches``' work, in another process); closing this generator cancels the task.
        ``skip``: micro-batches of ``first_epoch`` already trained (a mid-epoch resume)."""
        import ray

        made, self._made = self._made, None
        asked = (first_epoch, end_epoch, seed, skip)
        if made is not None and made[0] == asked:
            return remote_batches(made[1])
        if made is not None:  # started on other epochs: not these
            ray.cancel(made[1])
        return remote_batches(request(self, *asked))

    def local_batches(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0) -> Iterator[tuple[int, dict]]:
        """``batches``, made in this process."""
        for epoch, arrays in self.local_arrays(first_epoch, end_epoch, seed, skip):
            yield epoch, as_tensors(arrays)

    def local_arrays(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0) -> Iterator[tuple[int, dict]]:
        """``local_batches`` as NumPy arrays (what the batch-making task runs: it never imports torch).

        A thread reads Arrow blocks ahead of the batches (up to ``READ_AHEAD_BYTES``), across
        epoch ends, so the next epoch's first batches are ready while this one ends. The ``skip``
        batches' examples are not read at all.
        """
        index = self.index()
        if len(index.example_ids) != self.num_rows:
            raise TeacherDataError(f"the manifest says {self.num_rows} rows, its shards hold {len(index.example_ids)}; "
                                   "the store is damaged: regenerate it (python -m wbvb.teacher generate --force)")
        orders = {epoch: epoch_order(index.example_ids, seed, epoch) for epoch in range(first_epoch, end_epoch)}
        if first_epoch in orders:
            orders[first_epoch] = orders[first_epoch][skip * self.batch_size:]
        blocks = prefetch(self._tables(index, list(orders.values())), size=lambda t: t.nbytes,
                          max_size=READ_AHEAD_BYTES)
        epochs = list(orders)
        for i, table in batch_tables(blocks, [len(o) for o in orders.values()], self.batch_size):
            yield epochs[i], decode_arrays(table, self.manifest, self.pad_id)

    def _tables(self, index, orders: list) -> Iterator:
        """Arrow blocks of the epochs' orders back to back, in windows of about ``WINDOW_BYTES``: one
        Ray Data execution for all of them (each execution costs a start and a scheduling loop)."""
        windows = self._windows(index, orders)
        if windows:
            yield from self.dataset(index, windows).iter_batches(batch_size=None, batch_format="pyarrow")

    @staticmethod
    def _windows(index, orders: list) -> list:
        """The orders cut into windows of about ``WINDOW_BYTES`` of projected columns (one read task each)."""
        size = max(1, int(WINDOW_BYTES // max(index.row_bytes, 1.0)))
        return [order[i: i + size] for order in orders for i in range(0, len(order), size)]

    def epoch(self, epoch: int, seed: int) -> Iterator[dict]:
        for _, batch in self.batches(epoch, epoch + 1, seed):
            yield batch
