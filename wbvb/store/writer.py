"""A background shard writer: Parquet encoding and disk I/O overlap the teacher's forward passes.

Each shard is written to a hidden temporary name, renamed into place (uploaded whole, remotely:
``storage.atomic_output``), and only then listed in ``manifest.json`` (rewritten atomically), so a
killed run leaves either a listed, complete shard or nothing that is ever read.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wbvb import storage
from wbvb.store.schema import MANIFEST, TENSOR_COLUMNS, arrow_schema
from wbvb.storage import write_json_atomic


# Row groups of at most this many uncompressed bytes (whole rows, at least one): an epoch reads rows in
# a uniformly random order, and a row costs the read of its whole group, so bytes read per row stay
# under this however large the shard. Smaller groups cost footer (about 1 KiB per group) and a
# fixed cost per group read.
ROW_GROUP_BYTES = 128 << 10


def row_group_sizes(row_bytes: list[int], limit: int | None = None) -> list[int]:
    """Consecutive groups of rows, each of at most ``limit`` (default ``ROW_GROUP_BYTES``) bytes or a single row."""
    limit = ROW_GROUP_BYTES if limit is None else limit
    sizes, size, held = [], 0, 0
    for n in row_bytes:
        if size and held + n > limit:
            sizes.append(size)
            size, held = 0, 0
        size, held = size + 1, held + n
    return sizes + ([size] if size else [])


def _row_bytes(row: dict) -> int:
    return 64 + 4 * len(row["input_ids"]) + sum(len(row[c]) for c in TENSOR_COLUMNS if row.get(c) is not None)


def write_shard(path: Path | str, rows: list[dict]) -> None:
    """Rows -> one Parquet file in row groups of at most ``ROW_GROUP_BYTES``; tensor columns
    unencoded by dictionaries or stats."""
    table = pa.Table.from_pylist(rows, schema=arrow_schema())
    plain = [c for c in arrow_schema().names if c not in TENSOR_COLUMNS]
    with storage.atomic_output(path) as tmp:
        with pq.ParquetWriter(str(tmp), arrow_schema(), compression="zstd", compression_level=1,
                              use_dictionary=["task", "split"], write_statistics=plain) as out:
            start = 0
            for size in row_group_sizes([_row_bytes(r) for r in rows]) or [0]:
                out.write_table(table.slice(start, size), row_group_size=max(size, 1))
                start += size


class ShardWriter:
    """Writes shards on a thread while the caller computes the next ones; errors surface on close."""

    def __init__(self, out_dir: Path | str, manifest: dict, max_pending: int = 2):
        self.out_dir, self.manifest = out_dir, manifest
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wbvb-shard-writer", daemon=True)
        self._thread.start()

    def submit(self, name: str, rows: list[dict]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((name, rows))

    def close(self) -> dict:
        """Wait for every submitted shard; return the manifest as last written."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.manifest

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue
            name, rows = item
            try:
                write_shard(storage.join(self.out_dir, name), rows)
                shards = [s for s in self.manifest["shards"] if s["file"] != name] + [{"file": name, "rows": len(rows)}]
                self.manifest["shards"] = sorted(shards, key=lambda s: s["file"])
                self.manifest["num_rows"] = sum(s["rows"] for s in self.manifest["shards"])
                write_json_atomic(storage.join(self.out_dir, MANIFEST), self.manifest)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
