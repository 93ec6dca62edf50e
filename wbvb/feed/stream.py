"""Ray Data pipeline: teacher shards -> padded torch batches for one distill type.

Reads lazily with column projection (a ``black_box`` trial never reads hidden or attention
bytes), through a Ray Data source built from the manifest (``wbvb.shard_source``). Each epoch
reads the shards in an order and draws batches from a shuffle buffer with seeds derived from
(trial seed, epoch) (``wbvb.shuffle``), and order is preserved otherwise so a run is
reproducible; a trial's epochs are one Ray Data execution, read ahead by a thread across epoch
ends. Memory does not grow with the store (benchmarks/README.md, "Teacher store"): blocks are
capped at ``BLOCK_BYTES``, the read-ahead at ``READ_AHEAD_BYTES``, the shard order is drawn
before reading (``randomize_block_order`` first reads every block into the object store), and
the row shuffle is ours (Ray's local shuffle buffer held up to ~8x the rows it was asked for;
ours lets a block go once its rows are drawn and never concatenates the buffer). Arrow batches
decode straight into padded arrays (``teacher.codec.decode_arrays``), with no per-row Python
objects. Ray Data gets a CPU cap of its own and a no-progress timeout, so a starved pipeline
fails loudly instead of hanging (../shared/DESIGN.md: the Ray Data deadlock). All of this runs in a Ray task beside the
trial (``wbvb.batch_maker``), not in the trial's process: the trial takes ready batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from wbvb import storage
from wbvb.feed.batch_maker import remote_batches, request
from wbvb.feed.prefetch import prefetch
from wbvb.feed.shard_source import TeacherShardSource
from wbvb.feed.shuffle import RowCutter, batch_rng, shard_order, shuffled_batches
from wbvb.store.codec import as_tensors, decode_arrays
from wbvb.store.schema import columns_for, shard_paths


BLOCK_BYTES = 4 << 20  # a trial holds a few blocks (prefetch, the batcher's copy), whatever the store size


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

    def dataset(self, order: Optional[list[int]] = None):
        """The shards (all, or those at ``order``'s indices, in that order) as a lazy Ray Dataset."""
        import ray.data

        configure_data_context(self.data_cpus, self.stall_timeout_s)
        order = range(len(self.paths)) if order is None else order
        source = TeacherShardSource([self.paths[i] for i in order], [self.rows[i] for i in order], self.columns,
                                    self.filesystem, BLOCK_BYTES)
        return ray.data.read_datasource(source, num_cpus=min(0.25, self.data_cpus), override_num_blocks=len(order))

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
        epoch ends, so the next epoch's first batches are ready while this one ends. ``skip``
        batches are drawn as before, not decoded.
        """
        rows = RowCutter(prefetch(self._tables(first_epoch, end_epoch, seed), size=lambda t: t.nbytes,
                                  max_size=READ_AHEAD_BYTES))
        for epoch in range(first_epoch, end_epoch):
            drawn = shuffled_batches(rows.take(self.num_rows), self.batch_size, 4 * self.batch_size,
                                     batch_rng(seed, epoch), skip if epoch == first_epoch else 0)
            for table in drawn:
                if table is not None:
                    yield epoch, decode_arrays(table, self.manifest, self.pad_id)

    def _tables(self, first_epoch: int, end_epoch: int, seed: int) -> Iterator:
        """Arrow blocks of the epochs back to back, each epoch's shards in its seeded order: one Ray
        Data execution for all of them (each execution costs a start and a scheduling loop)."""
        order = [i for epoch in range(first_epoch, end_epoch) for i in shard_order(len(self.paths), seed, epoch)]
        if order:
            yield from self.dataset(order).iter_batches(batch_size=None, batch_format="pyarrow")

    def epoch(self, epoch: int, seed: int) -> Iterator[dict]:
        for _, batch in self.batches(epoch, epoch + 1, seed):
            yield batch
