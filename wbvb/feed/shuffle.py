"""The order every distill type reads its examples in, per epoch, and cutting a row stream into batches.

The order is defined on example ids, not on where a row is stored: an epoch reads the examples
sorted by id, permuted by a uniformly random permutation seeded by (seed, epoch). Shards
(``ShardStream``) and in-memory examples (``ExampleSource``) holding the same examples therefore
give the same order, whatever the shard layout, so paired comparisons between distill types also
pair on data order; batches are consecutive runs of that order, so they mix tasks as a uniform
shuffle does. A mid-epoch resume skips the first ``skip`` batches' examples of the order.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa


def epoch_order(example_ids: Sequence[str], seed: int, epoch: int) -> np.ndarray:
    """Indices into ``example_ids`` in the epoch's order: the sorted ids under a permutation drawn
    uniformly at random, seeded by (seed, epoch). Ids must be unique (the order is theirs)."""
    ids = np.asarray(example_ids, dtype=object)
    by_id = np.argsort(ids, kind="stable")
    sorted_ids = ids[by_id]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) if len(ids) > 1 else []
    if len(repeated):
        raise ValueError(f"example id {sorted_ids[repeated[0]]!r} occurs more than once ({len(repeated)} repeats); "
                         "the epoch order is defined on unique ids: give each example its own id")
    return by_id[np.random.default_rng([seed, epoch]).permutation(len(ids))]


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


def batch_tables(blocks: Iterable[pa.Table], epoch_rows: Sequence[int], batch_size: int) -> Iterator[tuple[int, pa.Table]]:
    """(i, batch) out of blocks that hold epochs of ``epoch_rows[i]`` rows back to back: each epoch
    cut into consecutive batches of ``batch_size`` rows (only its last may be short)."""
    rows = RowCutter(blocks)
    for i, n in enumerate(epoch_rows):
        for start in range(0, n, batch_size):
            yield i, pa.concat_tables(rows.take(min(batch_size, n - start)))
