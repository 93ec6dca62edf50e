"""Build a cache folder once, atomically, even with several processes at it.

A folder is built under a temp name beside its final place and renamed when complete (its
``done.json`` written last), so a half-written folder is never taken for a finished one. A lock
file makes a second process wait for the first and reuse its folder instead of building again;
should the lock be unavailable (a filesystem without ``flock``), the rename still keeps it safe.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

DONE = "done.json"


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock here: the atomic rename alone keeps the folder whole
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_built(root: Path) -> bool:
    return (Path(root) / DONE).is_file()


def build_once(root: Path, build: Callable[[Path], dict]) -> Path:
    """``root``, built by ``build(tmp_dir) -> done-record`` if no complete copy exists yet."""
    root = Path(root)
    if is_built(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f".{root.name}.lock"):
        if is_built(root):  # another process finished it while this one waited
            return root
        if root.exists():  # a folder without its done record is left from a crash: never reused
            shutil.rmtree(root, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".building-{root.name}-", dir=root.parent))
        try:
            record = build(tmp)
            (tmp / DONE).write_text(json.dumps(record, indent=1, sort_keys=True))
            try:
                os.rename(tmp, root)
            except OSError:  # another process (without the lock) finished first: theirs is as good
                if not is_built(root):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
