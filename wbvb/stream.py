"""Ray Data pipeline: teacher shards -> padded torch batches for one distill type.

Reads lazily with column projection (a ``black_box`` trial never reads hidden or attention
bytes), shuffles the shard order and the rows within a window of ``SHUFFLE_WINDOW`` batches with
seeds derived from (trial seed, epoch), and preserves order otherwise so a run is reproducible.
Memory stays flat however large the store (benchmarks/README.md, "Teacher store"): blocks are
capped at ``BLOCK_BYTES`` (Ray Data's default packs shards into blocks of up to 128 MiB), the
shard order is shuffled before reading (``randomize_block_order`` first reads every block into
the object store), and the row shuffle is ours (Ray's local shuffle buffer held up to ~8x the
rows it was asked for). Arrow batches decode straight into padded
tensors (``teacher.codec.decode_batch``), with no per-row Python objects. Ray Data gets a CPU cap of its own and a
no-progress timeout, so a starved pipeline fails loudly instead of hanging (DESIGN: deadlock).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wbvb import storage
from wbvb.teacher.codec import decode_batch
from wbvb.teacher.schema import columns_for, shard_paths


BLOCK_BYTES = 4 << 20  # a trial holds a few blocks (prefetch, the batcher's copy), whatever the store size
SHUFFLE_WINDOW = 4  # batches whose rows are shuffled together


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


class ShardStream:
    """A batch source over a teacher store, reading only ``signals``' columns."""

    def __init__(self, data_dir: Path | str, manifest: dict, signals, batch_size: int,
                 data_cpus: float = 0.5, stall_timeout_s: float = 300.0):
        shards = shard_paths(data_dir, manifest)  # local paths or URIs (s3://, gs://, ...)
        self.filesystem = storage.filesystem(shards[0])[0] if shards and isinstance(shards[0], str) else None
        self.paths = [storage.filesystem(p)[1] if self.filesystem else str(p) for p in shards]
        self.manifest = manifest
        self.columns = columns_for(signals)
        self.batch_size = batch_size
        self.num_rows = manifest["num_rows"]
        self.pad_id = manifest["pad_token_id"]
        self.data_cpus = data_cpus
        self.stall_timeout_s = stall_timeout_s

    def dataset(self, paths: list[str] | None = None):
        import ray.data

        configure_data_context(self.data_cpus, self.stall_timeout_s)
        return ray.data.read_parquet(paths or self.paths, columns=self.columns, filesystem=self.filesystem,
                                     num_cpus=min(0.25, self.data_cpus))

    def epoch(self, epoch: int, seed: int):
        rng = np.random.default_rng(seed * 1009 + epoch)
        order = [self.paths[i] for i in rng.permutation(len(self.paths))]
        bs = self.batch_size
        for window in self.dataset(order).iter_batches(batch_size=SHUFFLE_WINDOW * bs, batch_format="pyarrow"):
            perm = rng.permutation(window.num_rows)
            for start in range(0, window.num_rows, bs):
                yield decode_batch(window.take(perm[start: start + bs]), self.manifest, self.pad_id)
