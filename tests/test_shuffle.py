"""Epoch order over an Arrow row stream: independent of block splits, replayable without copies."""
import numpy as np
import pyarrow as pa
import pytest

from wbvb.shuffle import RowCutter, batch_rng, shard_order, shuffled_batches


def _blocks(n_rows, sizes):
    ids = np.arange(n_rows)
    out, start = [], 0
    for size in sizes:
        out.append(pa.table({"id": ids[start:start + size]}))
        start += size
    assert start == n_rows
    return out


def _ids(batches):
    return [b.column("id").to_pylist() for b in batches]


def test_draws_do_not_depend_on_how_rows_are_split_into_blocks():
    a = _ids(shuffled_batches(_blocks(50, [50]), 8, 20, batch_rng(3, 1)))
    b = _ids(shuffled_batches(_blocks(50, [7, 1, 30, 12]), 8, 20, batch_rng(3, 1)))
    assert a == b
    assert [len(x) for x in a] == [8] * 6 + [2]  # only the last batch is short
    assert sorted(sum(a, [])) == list(range(50))  # every row once
    assert a != _ids(shuffled_batches(_blocks(50, [50]), 8, 20, batch_rng(3, 2)))  # the epoch matters
    assert sum(a, [])[:8] != list(range(8))  # shuffled


def test_skipped_batches_are_drawn_but_not_materialised():
    full = _ids(shuffled_batches(_blocks(50, [13, 37]), 8, 20, batch_rng(0, 0)))
    out = list(shuffled_batches(_blocks(50, [13, 37]), 8, 20, batch_rng(0, 0), skip=4))
    assert out[:4] == [None] * 4
    assert _ids(out[4:]) == full[4:]


def test_row_cutter_splits_epochs_inside_a_block():
    cut = RowCutter(_blocks(30, [4, 12, 14]))
    assert [t.column("id").to_pylist() for t in cut.take(10)] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
    assert sum(t.num_rows for t in cut.take(20)) == 20
    with pytest.raises(ValueError, match="ended 5 rows before the end of an epoch"):
        list(cut.take(5))


def test_shard_order_is_a_seeded_permutation_per_epoch():
    assert shard_order(6, 0, 1) == shard_order(6, 0, 1)
    assert sorted(shard_order(6, 0, 1)) == list(range(6))
    assert len({tuple(shard_order(6, s, e)) for s in range(2) for e in range(3)}) > 1


def test_draws_unchanged_when_the_buffer_is_compacted():
    """Small blocks and a small buffer make old undrawn rows get copied out; the draws stay the same."""
    one = _ids(shuffled_batches(_blocks(600, [600]), 4, 8, batch_rng(1, 0)))
    small = _ids(shuffled_batches(_blocks(600, [5] * 120), 4, 8, batch_rng(1, 0)))
    assert one == small
    assert sorted(sum(small, [])) == list(range(600))
