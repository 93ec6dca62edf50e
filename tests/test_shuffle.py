"""Cutting an Arrow row stream into epochs and batches: independent of how rows are split into blocks."""
import numpy as np
import pyarrow as pa
import pytest

from wbvb.feed.shuffle import RowCutter


def _blocks(n_rows, sizes):
    ids = np.arange(n_rows)
    out, start = [], 0
    for size in sizes:
        out.append(pa.table({"id": ids[start:start + size]}))
        start += size
    assert start == n_rows
    return out


def test_row_cutter_splits_epochs_inside_a_block():
    cut = RowCutter(_blocks(30, [4, 12, 14]))
    assert [t.column("id").to_pylist() for t in cut.take(10)] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
    assert sum(t.num_rows for t in cut.take(20)) == 20
    with pytest.raises(ValueError, match="ended 5 rows before the end of an epoch"):
        list(cut.take(5))


def test_cuts_do_not_depend_on_how_rows_are_split_into_blocks():
    def cuts(sizes):
        cut = RowCutter(_blocks(50, sizes))
        return [sum((t.column("id").to_pylist() for t in cut.take(8)), []) for _ in range(6)]

    assert cuts([50]) == cuts([7, 1, 30, 12]) == [list(range(i, i + 8)) for i in range(0, 48, 8)]
