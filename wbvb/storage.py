"""Where teacher data lives: a local folder or any filesystem URI that pyarrow knows.

A location is a ``Path`` (local) or a URI string (``s3://bucket/dir``, ``gs://bucket/dir``,
``hdfs://…``), so a cluster's trials read one shared copy. Every remote operation goes through
``pyarrow.fs``, the layer Ray Data reads with too; ``gs://`` takes exactly the calls ``s3://``
does (tested against a local S3 server; there is no GCS emulator here).

Atomicity: a local file is written to a temporary name and renamed. An object store has no
rename, but an object is created whole when its upload completes, and a killed upload leaves no
object; so remote files are written locally first and then uploaded in one go.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs
import pyarrow.parquet as pq

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FIX = ("check the URI, that the bucket exists and that this process has credentials for it "
        "(s3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role, AWS_ENDPOINT_URL for a non-AWS "
        "endpoint; gs: GOOGLE_APPLICATION_CREDENTIALS)")


class StorageError(RuntimeError):
    """A location that cannot be reached or written; the message names the URI and the fix."""


def is_uri(p: str | Path) -> bool:
    """An object-store (or other non-local) location: ``s3://``, ``gs://``, ...; ``file://`` is local."""
    return isinstance(p, str) and bool(_SCHEME.match(p)) and not p.startswith("file://")


def location(p: str | Path) -> Path | str:
    """A local path (expanded, absolute) or a URI (kept as written, without a trailing slash)."""
    if isinstance(p, Path):
        return p
    if p.startswith("file://"):
        return Path(p[len("file://"):]).expanduser().resolve()
    if is_uri(p):
        return p.rstrip("/")
    return Path(p).expanduser().resolve()


def join(base: Path | str, *parts: str) -> Path | str:
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return "/".join([base.rstrip("/"), *parts])


def name(p: Path | str) -> str:
    return p.name if isinstance(p, Path) else p.rstrip("/").rsplit("/", 1)[-1]


@lru_cache(maxsize=32)
def _root(scheme: str, netloc: str, env: tuple) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}")


def _fs_env() -> tuple:
    """The variables that configure cloud filesystems: a change (endpoint, credentials) opens a new one."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "GCS_"))))


def filesystem(p: Path | str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a location."""
    if isinstance(p, Path):
        return pafs.LocalFileSystem(), str(p)
    parts = urlsplit(p)
    try:
        fs, root = _root(parts.scheme, parts.netloc, _fs_env())
    except (OSError, ValueError) as exc:  # unknown scheme, no such bucket, no credentials
        raise StorageError(f"{p}: cannot open this location ({exc}); {_FIX}") from exc
    path = root.rstrip("/") + "/" + parts.path.strip("/") if parts.path.strip("/") else root
    return fs, path


@contextlib.contextmanager
def _errors(uri):
    """Remote I/O failures (OSError: network, permissions, missing bucket) as a StorageError naming the URI."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{uri}: {exc}; {_FIX}") from exc


def _info(p: Path | str) -> pafs.FileInfo:
    fs, path = filesystem(p)
    with _errors(p):
        return fs.get_file_info(path)


def is_file(p: Path | str) -> bool:
    if isinstance(p, Path):
        return p.is_file()
    return _info(p).type == pafs.FileType.File


def exists(p: Path | str) -> bool:
    if isinstance(p, Path):
        return p.exists()
    return _info(p).type != pafs.FileType.NotFound


def size(p: Path | str) -> int:
    return p.stat().st_size if isinstance(p, Path) else _info(p).size


def mkdir(p: Path | str) -> None:
    if isinstance(p, Path):
        p.mkdir(parents=True, exist_ok=True)
        return
    fs, path = filesystem(p)
    with _errors(p):
        fs.create_dir(path, recursive=True)


def listdir(p: Path | str, kind: pafs.FileType = pafs.FileType.File) -> list[str]:
    """Names of the files (or, with ``kind=FileType.Directory``, folders) directly in a folder (none
    if it does not exist)."""
    if isinstance(p, Path):
        keep = Path.is_file if kind == pafs.FileType.File else Path.is_dir
        return sorted(f.name for f in p.iterdir() if keep(f)) if p.is_dir() else []
    fs, path = filesystem(p)
    with _errors(p):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == kind)


def read_bytes(p: Path | str) -> bytes:
    if isinstance(p, Path):
        return p.read_bytes()
    fs, path = filesystem(p)
    with _errors(p), fs.open_input_stream(path) as f:
        return f.read()


def open_parquet(p: Path | str) -> pq.ParquetFile:
    """A Parquet file opened for reading; local files memory-mapped, remote ones read on demand."""
    if isinstance(p, Path):
        return pq.ParquetFile(p)
    fs, path = filesystem(p)
    with _errors(p):
        return pq.ParquetFile(fs.open_input_file(path))


@contextlib.contextmanager
def atomic_output(p: Path | str):
    """Yields a local path to write; on success it becomes ``p`` in one step (rename, or one upload)."""
    if isinstance(p, Path):
        tmp = p.parent / f".{p.name}.tmp"
        try:
            yield tmp
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix="wbvb-upload-")
    os.close(fd)
    try:
        yield Path(tmp)
        fs, path = filesystem(p)
        with _errors(p):
            pafs.copy_files(tmp, path, destination_filesystem=fs)
    finally:
        os.unlink(tmp)


def write_bytes_atomic(p: Path | str, data: bytes) -> None:
    with atomic_output(p) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(p: Path | str, data: dict) -> None:
    """A JSON file (sorted keys, indented) that readers see whole or not at all."""
    write_bytes_atomic(p, json.dumps(data, indent=1, sort_keys=True).encode())
