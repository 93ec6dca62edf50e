"""Readers of the tasks' original file formats; every record carries its ``file:line`` origin.

A missing file or a malformed row is a ``TaskDataError`` naming the file and line, so a bad
download is found at load time, not as a strange accuracy later.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path


class TaskDataError(ValueError):
    """Task data that cannot be read as configured; the message names file and line."""


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file ({what}); set the task's path to the folder holding it")
    return path


def read_tsv_with_header(path: Path) -> list[tuple[dict, str]]:
    """GLUE TSV: a header line, then one tab-separated row per line (no quoting)."""
    require_file(path, "GLUE TSV")
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        for n, line in enumerate(fh, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            cells = line.split("\t")
            if len(cells) != len(header):
                raise TaskDataError(f"{path}:{n}: expected {len(header)} tab-separated fields "
                                    f"({', '.join(header)}), got {len(cells)}")
            rows.append((dict(zip(header, cells)), f"{path}:{n}"))
    return rows


def read_csv_no_header(path: Path, columns: list[str]) -> list[tuple[dict, str]]:
    """A headerless CSV (quoted fields may span lines; the origin names the row's first line)."""
    require_file(path, "CSV")
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        start = 1
        for cells in reader:
            origin = f"{path}:{start}"
            start = reader.line_num + 1
            if not cells:
                continue
            if len(cells) != len(columns):
                raise TaskDataError(f"{origin}: expected {len(columns)} comma-separated fields "
                                    f"({','.join(columns)}), got {len(cells)}")
            rows.append((dict(zip(columns, cells)), origin))
    return rows


def read_jsonl(path: Path) -> list[tuple[dict, str]]:
    require_file(path, "JSONL")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskDataError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise TaskDataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            rows.append((obj, f"{path}:{n}"))
    return rows


def read_parquet(path: Path) -> list[tuple[dict, str]]:
    """Parquet rows; the origin is ``file:row`` (row numbers from 1, like lines)."""
    import pyarrow.parquet as pq

    require_file(path, "Parquet")
    return [(row, f"{path}:row {n}") for n, row in enumerate(pq.read_table(path).to_pylist(), start=1)]


_HASHES: dict[tuple, str] = {}


def files_identity(paths) -> dict:
    """{file: size:sha256 prefix} of the files read, so edited data changes every fingerprint.

    Hashes are cached per (path, size, mtime) within a process: a sweep asks more than once.
    """
    out = {}
    for p in sorted({Path(p).resolve() for p in paths}):
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in _HASHES:
            _HASHES[key] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        out[str(p)] = f"{st.st_size}:{_HASHES[key]}"
    return out
