"""Rows of a teacher store's shards, read in any order: an index of where each example is stored,
and a Ray Data source whose read tasks each gather one window of an epoch's order.

An epoch's order (``shuffle.epoch_order``) is a uniformly random permutation of every row, so the
rows a batch needs lie anywhere in the store. The shards are written in row groups of a bounded
byte size (``store.writer.ROW_GROUP_BYTES``), so a row costs the read of its own group only: a
read task takes a window of consecutive positions of the order, reads just the row groups those
rows lie in (each once per window, a few at a time), takes the rows and puts them in the order's
sequence. Memory is bounded by the window's bytes, whatever the store's size.

``ray.data.read_parquet`` would start each execution by listing and sampling its files in a Ray task
of its own; the manifest already names the shards and their rows, so this source needs no listing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from wbvb.store.schema import TeacherDataError


@dataclass
class ShardIndex:
    """Where each example is stored: rows numbered across the shards in manifest order."""

    example_ids: np.ndarray  # object array: the id of each row
    shard: np.ndarray  # the shard each row is in
    row: np.ndarray  # its row within that shard
    group_starts: list[np.ndarray]  # per shard: the first row of each row group, then the shard's rows
    row_bytes: float  # mean uncompressed bytes per row of the projected columns


# Footers of shards read recently, per process (a Ray Data worker reads many windows): a footer of a
# shard with many small row groups is large, and parsing it again for every window would cost more
# than the rows. Keyed by path, size and modification time, so a rewritten shard is read afresh.
_FOOTERS: "OrderedDict[tuple, pq.FileMetaData]" = OrderedDict()
_FOOTER_BYTES = 64 << 20
_FOOTER_LOCK = threading.Lock()


def open_shard(path: str, filesystem=None, remember: bool = True) -> pq.ParquetFile:
    """The shard, its footer from this process's cache when it was read recently (``remember``:
    keep it there)."""
    fs = filesystem or pafs.LocalFileSystem()
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise TeacherDataError(f"{path}: listed in the manifest but not there; regenerate the teacher data "
                               "(python -m wbvb.teacher generate --force) or point at the right directory")
    key = (path, info.size, info.mtime_ns)
    with _FOOTER_LOCK:
        meta = _FOOTERS.get(key)
        if meta is not None:
            _FOOTERS.move_to_end(key)
    f = pq.ParquetFile(path, filesystem=filesystem, metadata=meta)
    if meta is None and remember:
        with _FOOTER_LOCK:
            _FOOTERS[key] = f.metadata
            while sum(m.serialized_size for m in _FOOTERS.values()) > _FOOTER_BYTES and len(_FOOTERS) > 1:
                _FOOTERS.popitem(last=False)
    return f


def _projected_bytes(meta: pq.FileMetaData, columns: list[str]) -> int:
    names = set(columns)
    return sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
               for c in range(meta.num_columns) if meta.row_group(g).column(c).path_in_schema.split(".")[0] in names)


def index_shards(paths: list[str], rows: list[int], columns: list[str], filesystem=None) -> ShardIndex:
    """Read each shard's example ids and row-group layout (one small column per shard)."""
    ids, shard, row, starts = [], [], [], []
    nbytes = 0
    for s, (path, n) in enumerate(zip(paths, rows)):
        with open_shard(path, filesystem, remember=False) as f:  # read once here: not worth keeping
            meta = f.metadata
            if meta.num_rows != n:
                raise TeacherDataError(f"{path}: holds {meta.num_rows} rows, its manifest entry says {n}; the store "
                                       "is damaged: regenerate it (python -m wbvb.teacher generate --force)")
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            starts.append(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
            nbytes += _projected_bytes(meta, columns)
            ids.append(np.asarray(f.read(columns=["example_id"], use_threads=False).column(0).to_pylist(), dtype=object))
        shard.append(np.full(n, s, dtype=np.int32))
        row.append(np.arange(n, dtype=np.int64))
    total = sum(rows)
    cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype=dtype))
    return ShardIndex(cat(ids, object), cat(shard, np.int32), cat(row, np.int64), starts, nbytes / max(total, 1))


def _read_window(paths: dict, group_starts: dict, shard: np.ndarray, row: np.ndarray, columns: list[str],
                 filesystem, read_rows: int, block_rows: int) -> Iterator[pa.Table]:
    """The rows (``shard``, ``row``) in that sequence, in blocks of ``block_rows``; each shard's row
    groups are read about ``read_rows`` rows at a time, and only the groups holding a wanted row."""
    pieces, places = [], []
    for s in np.unique(shard):
        at = np.flatnonzero(shard == s)  # places in the window of this shard's rows
        r = row[at]
        starts = group_starts[s]
        g = np.searchsorted(starts, r, side="right") - 1
        wanted = np.unique(g)
        with open_shard(paths[s], filesystem) as f:
            i = 0
            while i < len(wanted):
                j = i + 1
                while j < len(wanted) and starts[wanted[j] + 1] - starts[wanted[i]] <= read_rows:
                    j += 1
                chunk = wanted[i:j]
                table = f.read_row_groups(chunk.tolist(), columns=columns, use_threads=False)
                sizes = starts[chunk + 1] - starts[chunk]
                offsets = np.cumsum(sizes) - sizes  # of each group in ``table``
                mine = (g >= chunk[0]) & (g <= chunk[-1])  # ``chunk`` is a run of ``wanted``: these are its groups
                local = offsets[np.searchsorted(chunk, g[mine])] + r[mine] - starts[g[mine]]
                pieces.append(table.take(pa.array(local)))
                places.append(at[mine])
                i = j
    window = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(places), kind="stable")))
    for start in range(0, window.num_rows, block_rows):
        yield window.slice(start, block_rows)


class TeacherRowSource(Datasource):
    """Windows of rows, each a list of (shard, row) in the order it is read: one read task per window."""

    def __init__(self, paths: list[str], index: ShardIndex, windows: list[np.ndarray], columns: list[str],
                 filesystem=None, block_bytes: int = 4 << 20):
        self.paths, self.index, self.windows, self.columns = list(paths), index, windows, list(columns)
        self.filesystem, self.block_bytes = filesystem, block_bytes

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context=None) -> list[ReadTask]:
        rows = max(1, int(self.block_bytes // max(self.index.row_bytes, 1.0)))
        tasks = []
        for positions in self.windows:
            shard, row = self.index.shard[positions], self.index.row[positions]
            touched = np.unique(shard).tolist()
            read = partial(_read_window, {s: self.paths[s] for s in touched},
                           {s: self.index.group_starts[s] for s in touched}, shard, row, self.columns,
                           self.filesystem, rows, rows)
            tasks.append(ReadTask(read, BlockMetadata(num_rows=len(positions), size_bytes=None, exec_stats=None,
                                                      input_files=tuple(self.paths[s] for s in touched))))
        return tasks

    def get_name(self) -> str:
        return "TeacherRows"
