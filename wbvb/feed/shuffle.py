"""Seeded epoch order over a stream of Arrow rows: shard order, epoch cuts and a local shuffle.

A trial reads its epochs back to back as one stream of Arrow tables (each epoch's shards in a
seeded order), read ahead across epoch ends so the next epoch's Ray Data execution starts while
the current one trains. These helpers cut that row stream back into epochs and draw batches from
a shuffle buffer. The draws depend only on the order of the rows, never on how Ray Data splits them into blocks, so a
seeded run is reproducible and a resumed run can replay the draws of the batches it already
trained on without materialising or decoding them.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa


def shard_order(n_shards: int, seed: int, epoch: int) -> list[int]:
    """The order an epoch reads its shards in: a permutation fixed by (seed, epoch)."""
    return [int(i) for i in np.random.default_rng([seed, epoch, 1009]).permutation(n_shards)]


def batch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of an epoch's shuffle-buffer draws."""
    return np.random.default_rng([seed, epoch])


class RowCutter:
    """Consecutive pieces of one table stream, ``n`` rows at a time (a table may straddle a cut)."""

    def __init__(self, tables: Iterable[pa.Table]):
        self._tables = iter(tables)
        self._rest: Optional[pa.Table] = None

    def take(self, n: int) -> Iterator[pa.Table]:
        while n > 0:
            table, self._rest = (self._rest if self._rest is not None else next(self._tables, None)), None
            if table is None:
                raise ValueError(f"the teacher data stream ended {n} rows before the end of an epoch; the "
                                 "shards hold fewer rows than their manifest says (python -m wbvb.teacher verify)")
            if table.num_rows > n:
                table, self._rest = table.slice(0, n), table.slice(n)
            n -= table.num_rows
            if table.num_rows:
                yield table


class _RowBuffer:
    """Rows of the incoming tables, kept as the record batches they came in (no copy), numbered.

    A row is found by its running number. A draw takes from each record batch separately: a take
    on a many-chunk table first concatenates every chunk, i.e. copies the whole buffer on each draw.
    A record batch is let go as soon as its last row is drawn, wherever it sits in the buffer.
    """

    def __init__(self):
        self.parts: list[pa.RecordBatch] = []
        self.starts: list[int] = []  # running number of each part's first row, ascending
        self.alive: list[int] = []  # rows of each part not drawn yet
        self.end = 0  # running number the next row gets

    def _append(self, part: pa.RecordBatch) -> None:
        self.parts.append(part)
        self.starts.append(self.end)
        self.alive.append(part.num_rows)
        self.end += part.num_rows

    def add(self, table: pa.Table) -> np.ndarray:
        first = self.end
        for part in table.to_batches():
            if part.num_rows:
                self._append(part)
        return np.arange(first, self.end)

    def held(self) -> int:
        return sum(part.num_rows for part in self.parts)

    def _keep(self, parts: list[int]) -> None:
        self.parts, self.starts, self.alive = ([x[i] for i in parts] for x in (self.parts, self.starts, self.alive))

    def _part_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts), rows, side="right") - 1

    def take(self, rows: np.ndarray) -> pa.Table:
        """The rows, in the order given, as one table (a copy of those rows only)."""
        which = self._part_of(rows)
        order = np.argsort(which, kind="stable")  # grouped by part, in the given order within a part
        pieces = [self.parts[p].take(pa.array(rows[which == p] - self.starts[p])) for p in np.unique(which)]
        table = pa.Table.from_batches(pieces)
        if np.any(np.diff(which) < 0):
            table = table.take(pa.array(np.argsort(order)))  # back to the given order
        return table

    def drawn(self, rows: np.ndarray) -> None:
        """Count ``rows`` as drawn; let go of the parts that have none left."""
        parts, counts = np.unique(self._part_of(rows), return_counts=True)
        for p, c in zip(parts, counts):
            self.alive[p] -= int(c)
        self._keep([i for i, n in enumerate(self.alive) if n > 0])

    def compact(self, live: np.ndarray) -> np.ndarray:
        """Copy the live rows of parts that are at most half alive into parts of their own (so
        the rest of those parts can go): afterwards the buffer holds at most 2x its live rows.
        Returns ``live`` with the moved rows renumbered, in the same order (the draws are unchanged)."""
        which = self._part_of(live)
        sparse = np.array([2 * self.alive[p] <= self.parts[p].num_rows for p in range(len(self.parts))], dtype=bool)
        moving = np.sort(live[sparse[which]])
        if not len(moving):
            return live
        pieces = self.take(moving).to_batches()
        self._keep([i for i in range(len(self.parts)) if not sparse[i]])
        renumbered = live.copy()
        renumbered[sparse[which]] = self.end + np.searchsorted(moving, live[sparse[which]])
        for piece in pieces:
            self._append(piece)
        return renumbered


def shuffled_batches(tables: Iterable[pa.Table], batch_size: int, buffer_rows: int, rng: np.random.Generator,
                     skip: int = 0) -> Iterator[Optional[pa.Table]]:
    """Batches of ``batch_size`` rows drawn at random from a buffer kept at ``buffer_rows`` rows.

    A draw happens each time the buffer fills up, then the rest drains at the end, so every row is
    used once and only the last batch may be short. The first ``skip`` batches are drawn but come
    out as None (nothing is copied). Only the drawn batch is copied out of the incoming tables.
    """
    buffer_rows = max(buffer_rows, batch_size)
    buf = _RowBuffer()
    live = np.empty(0, dtype=np.int64)  # running numbers of the rows not drawn yet
    drawn = 0

    def draw(k: int) -> Optional[pa.Table]:
        nonlocal live, drawn
        pick = rng.choice(len(live), size=k, replace=False)
        rows = live[pick]
        live = np.delete(live, pick)
        drawn += 1
        batch = None if drawn <= skip else buf.take(rows)
        buf.drawn(rows)
        return batch

    for table in tables:
        if buf.held() > 2 * buffer_rows:  # a few undrawn rows would pin their whole blocks:
            live = buf.compact(live)  # copy them out (the draws are unchanged)
        incoming = buf.add(table)
        pos = 0
        while pos < len(incoming):
            add = min(buffer_rows - len(live), len(incoming) - pos)
            live = np.concatenate([live, incoming[pos:pos + add]])
            pos += add
            if len(live) == buffer_rows:
                yield draw(batch_size)
    while len(live):
        yield draw(min(batch_size, len(live)))
