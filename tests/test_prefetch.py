import pytest

from wbvb.prefetch import prefetch


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


def test_consumer_may_stop_early():
    seen = []

    def gen():
        for i in range(1000):
            seen.append(i)
            yield i

    it = prefetch(gen(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert len(seen) < 20  # the producer stopped instead of draining the source
