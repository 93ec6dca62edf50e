"""The teacher shard format: Parquet rows of ids plus fixed-width binary tensors, and a manifest.

Tensors are stored as raw little-endian buffers (``codec``) whose shapes follow from the row's
``seq_len``/``prompt_len`` and the manifest (k, hidden size, heads, strides, attention rows), so a
batch decodes from the column's data buffer with no Python objects per element and no dense
vocabulary. ``manifest.json`` is written atomically and last; a shard without a manifest entry
is never read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from wbvb import storage
from wbvb.store.codec import decode_batch

# 2: narrow ids, lower-triangular attention, optional answer-only rows, int8 hidden
# 3: bit-packed ids; optional gaps8 log-probs, int8 hidden with float32 outliers, cube-root attention
# 4: row groups of at most ROW_GROUP_BYTES (store.writer), so rows read in a random order cost little;
#    prompt + answer encoded jointly and split at the prompt (lm-eval's rule); BOS per models.add_bos
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
BASE_COLUMNS = ["example_id", "task", "split", "input_ids", "prompt_len", "seq_len", "label"]
SIGNAL_COLUMNS = {"topk": ["topk_ids", "topk_logprobs"], "hidden": ["hidden", "hidden_scale"],
                  "attention": ["attention"]}
TENSOR_COLUMNS = [c for cols in SIGNAL_COLUMNS.values() for c in cols]


class TeacherDataError(RuntimeError):
    """Teacher data that cannot be used as it is; the message names file, row, column and the fix."""


def arrow_schema() -> pa.Schema:
    fields = [pa.field("example_id", pa.string()), pa.field("task", pa.string()), pa.field("split", pa.string()),
              pa.field("input_ids", pa.list_(pa.int32())), pa.field("prompt_len", pa.int32()),
              pa.field("seq_len", pa.int32()), pa.field("label", pa.string())]
    fields += [pa.field(c, pa.large_binary()) for c in TENSOR_COLUMNS]
    return pa.schema(fields)


def columns_for(signals) -> list[str]:
    """Column projection: the base columns plus only the signals a loss reads."""
    return BASE_COLUMNS + [c for s in signals for c in SIGNAL_COLUMNS[s]]


def decode_row(row: dict, manifest: dict) -> dict:
    """One stored row (python values, e.g. from ``to_pylist``) -> unpadded tensors (inspection, tests)."""
    present = {k: v for k, v in row.items() if v is not None or k not in TENSOR_COLUMNS}
    table = pa.Table.from_pylist([present], schema=pa.schema([arrow_schema().field(k) for k in present]))
    batch = decode_batch(table, manifest, manifest["pad_token_id"])
    out = {"example_id": row["example_id"], "input_ids": batch["input_ids"][0].numpy().astype(np.int32),
           "prompt_len": int(row["prompt_len"])}
    for key in ("topk_ids", "topk_logprobs", "hidden", "attention", "attention_row_mask"):
        if key in batch:
            out[key] = batch[key][0]
    return out


def read_manifest(data_dir: Path | str) -> dict:
    """The manifest of a store folder (local path or URI), checked for this format version."""
    path = storage.join(storage.location(data_dir), MANIFEST)
    if not storage.is_file(path):
        raise TeacherDataError(f"{path}: no manifest; generate teacher data with "
                               f"'python -m wbvb.teacher generate --config ...' or point at the right directory")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except json.JSONDecodeError as exc:
        raise TeacherDataError(f"{path}: manifest is not valid JSON ({exc}); delete the folder and regenerate") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TeacherDataError(f"{path}: format version {manifest.get('format_version')} is not "
                               f"{FORMAT_VERSION}; regenerate the teacher data")
    return manifest


def shard_paths(data_dir: Path | str, manifest: dict) -> list[Path | str]:
    d = storage.location(data_dir)
    return [storage.join(d, s["file"]) for s in manifest["shards"]]


@dataclass
class TeacherDims:
    """What a student aligns to, as the manifest records it: the teacher's depth, width and heads,
    and which of its blocks the store keeps, at which strides."""

    hidden_size: int = 0
    hidden_stride: int = 1
    attention_stride: int = 1
    hidden_layers: tuple[int, ...] = ()  # stored teacher blocks, in the order of the batch's layer axis
    attention_layers: tuple[int, ...] = ()
    num_layers: int = 0  # the teacher's decoder blocks
    heads: int = 0  # the teacher's attention heads

    @classmethod
    def from_manifest(cls, manifest: dict) -> "TeacherDims":
        cols = manifest["columns"]
        return cls(hidden_size=cols["hidden"]["dim"], hidden_stride=manifest["strides"]["hidden"],
                   attention_stride=manifest["strides"]["attention"],
                   hidden_layers=tuple(cols["hidden"]["layers"]), attention_layers=tuple(cols["attention"]["layers"]),
                   num_layers=manifest["teacher_num_layers"], heads=cols["attention"]["heads"])
