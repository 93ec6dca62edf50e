"""A Ray Data source over a teacher store's shards, read exactly as the manifest lists them.

``ray.data.read_parquet`` starts each execution by listing and sampling its files in a Ray task
of its own (a second on an idle cluster, measured in benchmarks/README.md, "Training engine"),
before the first row is read. The manifest already
holds the shard files and their row counts, so this source makes one read task per shard
straight away, in the order given (an epoch's seeded shard order), reads only the projected
columns, and cuts each shard into blocks of about ``block_bytes``.
"""
from __future__ import annotations

from functools import partial
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


def _read_shard(path: str, columns: list[str], filesystem, block_bytes: int) -> Iterator[pa.Table]:
    """One shard's projected columns, a block of about ``block_bytes`` (uncompressed) at a time."""
    with pq.ParquetFile(path, filesystem=filesystem) as f:
        meta = f.metadata
        names = set(columns)
        raw = sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
                  for c in range(meta.num_columns) if meta.row_group(g).column(c).path_in_schema.split(".")[0] in names)
        rows = max(1, int(block_bytes * meta.num_rows / max(raw, 1)))
        for batch in f.iter_batches(batch_size=rows, columns=columns, use_threads=False):
            yield pa.Table.from_batches([batch])


class TeacherShardSource(Datasource):
    """The shards at ``paths`` (``rows`` each), in that order, ``columns`` only."""

    def __init__(self, paths: list[str], rows: list[int], columns: list[str], filesystem=None,
                 block_bytes: int = 4 << 20):
        self.paths, self.rows, self.columns = list(paths), list(rows), list(columns)
        self.filesystem, self.block_bytes = filesystem, block_bytes

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context=None) -> list[ReadTask]:
        return [ReadTask(partial(_read_shard, path, self.columns, self.filesystem, self.block_bytes),
                         BlockMetadata(num_rows=n, size_bytes=None, exec_stats=None, input_files=(path,)))
                for path, n in zip(self.paths, self.rows)]

    def get_name(self) -> str:
        return "TeacherShards"
