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


def shuffled_batches(tables: Iterable[pa.Table], batch_size: int, buffer_rows: int, rng: np.random.Generator,
                     skip: int = 0) -> Iterator[Optional[pa.Table]]:
    """Batches of ``batch_size`` rows drawn at random from a buffer kept at ``buffer_rows`` rows.

    A draw happens each time the buffer fills up, then the rest drains at the end, so every row is
    used once and only the last batch may be short. The first ``skip`` batches are drawn but come
    out as None (nothing is copied). Only the drawn batch is copied out of the incoming tables.
    """
    buffer_rows = max(buffer_rows, batch_size)
    buf: Optional[pa.Table] = None
    live = np.empty(0, dtype=np.int64)  # rows of ``buf`` not drawn yet
    drawn = 0

    def draw(k: int) -> Optional[pa.Table]:
        nonlocal live, drawn
        pick = rng.choice(len(live), size=k, replace=False)
        rows = live[pick]
        live = np.delete(live, pick)
        drawn += 1
        return None if drawn <= skip else buf.take(rows)

    for table in tables:
        if buf is not None:  # drop the rows in front of the oldest undrawn one (zero-copy slice)
            first = int(live.min()) if len(live) else buf.num_rows
            buf, live = buf.slice(first), live - first
            if buf.num_rows > 2 * buffer_rows:  # an old undrawn row would pin every block after it:
                buf, live = buf.take(live), np.arange(len(live))  # copy the live rows out (draws unchanged)
        base = 0 if buf is None else buf.num_rows
        buf = table if buf is None else pa.concat_tables([buf, table])
        pos = 0
        while pos < table.num_rows:
            add = min(buffer_rows - len(live), table.num_rows - pos)
            live = np.concatenate([live, np.arange(base + pos, base + pos + add)])
            pos += add
            if len(live) == buffer_rows:
                yield draw(batch_size)
    while len(live):
        yield draw(min(batch_size, len(live)))
