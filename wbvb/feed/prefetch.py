"""Produce the next items in a background thread while the current one is used.

Reading, decoding and padding a batch is Python and NumPy work; the training step is mostly
torch kernels that release the GIL. Overlapping them hides most of the data wait. Order is kept
(one producer), so a seeded run stays reproducible; the producer's exceptions surface in the
consumer. The lead is bounded by a count of items, or by their total size (``size`` and
``max_size``): a budget in bytes lets small items run far ahead while large ones stay few.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterable, Iterator, Optional

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable, depth: int = 2, size: Optional[Callable] = None, max_size: float = 0) -> Iterator:
    """Iterate ``items`` with up to ``depth`` of them made ahead in a daemon thread, or, with
    ``size``, as many as fit in ``max_size`` (at least one, however large)."""
    if depth <= 0 and size is None:
        yield from items
        return
    ready: deque = deque()
    held = [0.0]  # total size of the items in ``ready``
    cond = threading.Condition()
    stop = threading.Event()

    def room(weight: float) -> bool:
        if not ready:
            return True
        return held[0] + weight <= max_size if size is not None else len(ready) < depth

    def produce() -> None:
        try:
            for item in items:
                weight = size(item) if size is not None else 1
                with cond:
                    while not stop.is_set() and not room(weight):
                        cond.wait(0.5)
                    if stop.is_set():
                        return
                    ready.append((item, weight))
                    held[0] += weight
                    cond.notify_all()
            end: object = _DONE
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            end = _Failure(exc)
        with cond:
            ready.append((end, 0))
            cond.notify_all()

    thread = threading.Thread(target=produce, name="wbvb-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            with cond:
                while not ready:
                    cond.wait()
                item, weight = ready.popleft()
                held[0] -= weight
                cond.notify_all()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        with cond:
            stop.set()
            cond.notify_all()
