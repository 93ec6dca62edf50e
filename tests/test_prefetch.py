import pytest

from wbvb.feed.prefetch import prefetch


def test_keeps_order_and_length():
    assert list(prefetch(range(100), depth=3)) == list(range(100))
    assert list(prefetch([], depth=2)) == []
    assert list(prefetch(iter("abc"), depth=0)) == ["a", "b", "c"]


def test_producer_error_reaches_the_consumer():
    def gen():
        yield 1
        raise ValueError("shard 3 row 7 column hidden: bad")

    it = prefetch(gen(), depth=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="shard 3 row 7"):
        next(it)


def _recorded(n: int, seen: list):
    """0..n-1, noting in ``seen`` each item as the producer makes it."""
    for i in range(n):
        seen.append(i)
        yield i


def test_consumer_may_stop_early():
    seen = []
    it = prefetch(_recorded(1000, seen), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert len(seen) < 20  # the producer stopped instead of draining the source


def test_a_size_budget_bounds_what_is_made_ahead():
    import time

    seen = []
    it = prefetch(_recorded(100, seen), size=lambda i: 10, max_size=35)
    assert next(it) == 0
    time.sleep(0.3)  # let the producer run as far ahead as the budget allows
    assert len(seen) <= 1 + 3 + 1  # consumed, 3 queued (30 <= 35), one made and waiting for room
    assert list(it) == list(range(1, 100))
    assert list(prefetch(range(3), size=lambda i: 100, max_size=10)) == [0, 1, 2]  # oversized: one at a time
