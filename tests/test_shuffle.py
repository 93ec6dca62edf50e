"""Epoch order over an Arrow row stream: independent of block splits, replayable without copies."""
import numpy as np
import pyarrow as pa
import pytest

from wbvb.feed.shuffle import RowCutter, batch_rng, shard_order, shuffled_batches


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


def test_row_buffer_takes_in_the_given_order_across_blocks_and_lets_drawn_blocks_go():
    from wbvb.feed.shuffle import _RowBuffer

    buf = _RowBuffer()
    numbers = np.concatenate([buf.add(t) for t in _blocks(20, [5, 5, 10])])
    assert numbers.tolist() == list(range(20))
    rows = np.array([17, 3, 8, 0, 9])
    assert buf.take(rows).column("id").to_pylist() == [17, 3, 8, 0, 9]
    buf.drawn(np.array([5, 6, 7, 8, 9]))  # the whole second block
    assert [p.num_rows for p in buf.parts] == [5, 10] and buf.held() == 15
    assert buf.take(np.array([12, 1])).column("id").to_pylist() == [12, 1]


def test_row_buffer_compaction_copies_sparse_blocks_only_and_bounds_what_is_held():
    from wbvb.feed.shuffle import _RowBuffer

    buf = _RowBuffer()
    for t in _blocks(30, [10, 10, 10]):
        buf.add(t)
    buf.drawn(np.array([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]))  # block 0: 2 alive, block 1: 5, block 2: 10
    live = np.array([25, 8, 15, 9, 20, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29])
    moved = buf.compact(live)
    assert [p.num_rows for p in buf.parts] == [10, 2, 5]  # block 2 kept whole; the 2 + 5 live rows copied out
    assert buf.held() <= 2 * len(live)
    assert buf.take(moved).column("id").to_pylist() == live.tolist()  # same rows, same order
    assert (moved == live)[[0, 4]].all() and not (moved == live)[[1, 2, 3]].any()
