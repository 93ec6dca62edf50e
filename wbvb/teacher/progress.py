"""Progress of the teacher stage's long steps: a bar with rate and ETA on a terminal, a line per
~10 % elsewhere (sweep and Ray task logs stay readable), weighted by what the work costs.

Rows are length-sorted for the store, so counting rows would make the first (short) ones look
fast and the ETA optimistic: the store and the fine-tune count tokens; eval and answers count
examples (their rows are in file order, so each is an average row).
"""
from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

LINE_EVERY = 0.1  # without a terminal: one line per this fraction of the work


class Progress:
    """``update(amount)`` as work is done; ``close()`` at the end. ``bar``: a tqdm bar when stderr is
    a terminal (``python -m wbvb.teacher generate``); otherwise lines, as in a sweep's log."""

    def __init__(self, total: float, desc: str, unit: str, bar: bool = False):
        self.total, self.desc, self.unit = max(float(total), 1.0), desc, unit
        self.done, self.next_line, self.t0 = 0.0, LINE_EVERY, time.perf_counter()
        self.bar = None
        if bar and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def update(self, amount: float) -> None:
        self.done += amount
        if self.bar is not None:
            self.bar.update(amount)
            return
        if self.done / self.total + 1e-9 >= self.next_line:
            print(self.line(), flush=True)
            while self.next_line <= self.done / self.total + 1e-9:
                self.next_line += LINE_EVERY

    def line(self) -> str:
        """``desc: 40% (1,234/3,086 tokens), 210 tokens/s, ETA 9 s``."""
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"{self.desc}: {100 * self.done / self.total:.0f}% ({self.done:,.0f}/{self.total:,.0f} {self.unit}), "
                f"{rate:,.1f} {self.unit}/s, ETA {eta:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def part_size(n_rows: int, batch_size: int) -> int:
    """Rows per progress step: about a tenth of them, in whole batches."""
    return max(batch_size, math.ceil(n_rows * LINE_EVERY / batch_size) * batch_size)


def by_task(examples) -> dict[str, list]:
    """Examples grouped by task, tasks in first-seen order."""
    out: dict[str, list] = {}
    for ex in examples:
        out.setdefault(ex.task, []).append(ex)
    return out


class CountingSource:
    """A batch source whose batches report their real tokens to a ``Progress`` as they are taken."""

    def __init__(self, source, progress: Progress):
        self.source, self.progress = source, progress
        self.num_rows = source.num_rows

    def batches(self, *args, **kwargs):
        for epoch, batch in self.source.batches(*args, **kwargs):
            yield epoch, batch
            self.progress.update(int(batch["attention_mask"].sum()))
