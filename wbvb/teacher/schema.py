"""The teacher shard format: Parquet rows of ids plus fixed-width binary tensors, and a manifest.

Tensors are stored as raw little-endian buffers whose shapes follow from the row's ``seq_len``
and the manifest (k, hidden size, heads, strides), so decoding is one ``frombuffer`` per row and
column: no Python-object loops over elements, no dense vocabulary. ``manifest.json`` is written
atomically and last; a shard without a manifest entry is never read.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BASE_COLUMNS = ["example_id", "task", "split", "input_ids", "prompt_len", "seq_len", "label"]
SIGNAL_COLUMNS = {"topk": ["topk_ids", "topk_logprobs"], "hidden": ["hidden"], "attention": ["attention"]}
_NP = {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16, "int16": np.int16,
       "int32": np.int32, "uint16": np.uint16}


class TeacherDataError(RuntimeError):
    """Teacher data that cannot be used as it is; the message names file, row, column and the fix."""


def arrow_schema() -> pa.Schema:
    fields = [pa.field("example_id", pa.string()), pa.field("task", pa.string()), pa.field("split", pa.string()),
              pa.field("input_ids", pa.list_(pa.int32())), pa.field("prompt_len", pa.int32()),
              pa.field("seq_len", pa.int32()), pa.field("label", pa.string())]
    fields += [pa.field(c, pa.binary()) for cols in SIGNAL_COLUMNS.values() for c in cols]
    return pa.schema(fields)


def columns_for(signals) -> list[str]:
    """Column projection: the base columns plus only the signals a loss reads."""
    return BASE_COLUMNS + [c for s in signals for c in SIGNAL_COLUMNS[s]]


def strided(n: int, stride: int) -> int:
    return (n + stride - 1) // stride


def expected_shape(column: str, seq_len: int, manifest: dict) -> tuple[int, ...]:
    c = manifest["columns"]
    if column in ("topk_ids", "topk_logprobs"):
        return (seq_len, c["topk_ids"]["k"])
    if column == "hidden":  # (stored layers, strided positions, hidden size)
        return (len(c["hidden"]["layers"]), strided(seq_len, manifest["strides"]["hidden"]), c["hidden"]["dim"])
    if column == "attention":  # (stored layers, heads, strided queries, strided keys)
        n = strided(seq_len, manifest["strides"]["attention"])
        return (len(c["attention"]["layers"]), c["attention"]["heads"], n, n)
    raise KeyError(column)


def to_bytes(t: torch.Tensor, dtype: str) -> bytes:
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.uint16).numpy().tobytes()
    return t.to(getattr(torch, dtype)).contiguous().numpy().tobytes()


def from_bytes(buf: bytes, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    arr = np.frombuffer(buf, dtype=_NP[dtype])
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"holds {arr.size} values, expected shape {shape} = {int(np.prod(shape))}")
    t = torch.from_numpy(arr.copy()).view(*shape)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def decode_row(row: dict, manifest: dict) -> dict:
    """A stored row (python/numpy values) -> the row dict that ``batches.collate`` pads."""
    seq_len = int(row["seq_len"])
    out = {"example_id": row["example_id"], "input_ids": np.asarray(row["input_ids"], dtype=np.int32),
           "prompt_len": int(row["prompt_len"])}
    for col in ("topk_ids", "topk_logprobs", "hidden", "attention"):
        if col in row and row[col] is not None:
            dtype = manifest["columns"][col]["dtype"]
            out[col] = from_bytes(row[col], dtype, expected_shape(col, seq_len, manifest))
    return out


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise TeacherDataError(f"{path}: no manifest; generate teacher data with "
                               f"'python -m wbvb.teacher generate --config ...'")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TeacherDataError(f"{path}: manifest is not valid JSON ({exc}); delete the folder and regenerate") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TeacherDataError(f"{path}: format version {manifest.get('format_version')} is not "
                               f"{FORMAT_VERSION}; regenerate the teacher data")
    return manifest


def shard_paths(data_dir: Path, manifest: dict) -> list[str]:
    return [str(Path(data_dir) / s["file"]) for s in manifest["shards"]]
