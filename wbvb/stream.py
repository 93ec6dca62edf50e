"""Ray Data pipeline: teacher shards -> padded torch batches for one distill type.

Reads lazily with column projection (a ``black_box`` trial never reads hidden or attention
bytes), shuffles blocks and a local buffer with seeds derived from (trial seed, epoch), and
preserves order otherwise so a run is reproducible. Arrow batches decode straight into padded
tensors (``teacher.codec.decode_batch``), with no per-row Python objects. Ray Data gets a CPU cap of its own and a
no-progress timeout, so a starved pipeline fails loudly instead of hanging (DESIGN: deadlock).
"""
from __future__ import annotations

from pathlib import Path

from wbvb import storage
from wbvb.teacher.codec import decode_batch
from wbvb.teacher.schema import columns_for, shard_paths


BLOCK_BYTES = 16 << 20


def configure_data_context(data_cpus: float, stall_timeout_s: float) -> None:
    import logging

    from ray.data import DataContext, ExecutionResources

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = DataContext.get_current()
    ctx.execution_options.resource_limits = ExecutionResources(cpu=data_cpus)
    # Ray Data packs shards into blocks of up to 128 MiB; the trial holds a block (and the batcher's
    # copy of it), so its memory grew with the store until blocks were this small (benchmarks/README.md)
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

    def dataset(self):
        import ray.data

        configure_data_context(self.data_cpus, self.stall_timeout_s)
        return ray.data.read_parquet(self.paths, columns=self.columns, filesystem=self.filesystem,
                                     ray_remote_args={"num_cpus": min(0.25, self.data_cpus)})

    def epoch(self, epoch: int, seed: int):
        ds = self.dataset().randomize_block_order(seed=seed * 1009 + epoch)
        for table in ds.iter_batches(batch_size=self.batch_size, batch_format="pyarrow",
                                     local_shuffle_buffer_size=4 * self.batch_size,
                                     local_shuffle_seed=seed * 1009 + epoch):
            yield decode_batch(table, self.manifest, self.pad_id)
