"""Produce the next batches in a background thread while the current one trains.

Reading, decoding and padding a batch is Python and NumPy work; the training step is mostly
torch kernels that release the GIL. Overlapping them hides most of the data wait. Order is kept
(one producer), so a seeded run stays reproducible; the producer's exceptions surface in the
consumer.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` with up to ``depth`` of them made ahead in a daemon thread."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="wbvb-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
