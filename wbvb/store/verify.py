"""Check a teacher store before any trial reads it: manifest, files, row counts, tensor shapes, values.

The first problem raises ``TeacherDataError`` naming the shard file, row, column and what was
expected, with the fix. Nothing is deleted or rewritten here.
"""
from __future__ import annotations

import random
import sys
from fnmatch import fnmatch
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from wbvb import storage
from wbvb.store.answers import ANSWERS_FILE
from wbvb.store.codec import BadValues, decode_batch
from wbvb.store.schema import BASE_COLUMNS, MANIFEST, SIGNAL_COLUMNS, TeacherDataError, arrow_schema, read_manifest

SUM_TOL = 1e-2  # fp16/bf16 rounding of up to a few hundred attention probabilities or top-k masses


def open_shard(path: Path | str, expected_rows: int) -> pq.ParquetFile:
    """A listed shard that exists, parses, has every column in the right type and the listed row count."""
    if not storage.is_file(path):
        raise TeacherDataError(f"{path}: listed in the manifest but missing; resume generation "
                               "('python -m wbvb.teacher generate --config ...') or point at the right directory")
    try:
        pf = storage.open_parquet(path)
    except storage.StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means a truncated or corrupt shard
        raise TeacherDataError(f"{path}: not a readable Parquet file, probably truncated ({exc}); move it away "
                               "and resume generation to rewrite it") from exc
    names = pf.schema_arrow.names
    needed = BASE_COLUMNS + [c for cols in SIGNAL_COLUMNS.values() for c in cols]
    missing = [c for c in needed if c not in names]
    if missing:
        raise TeacherDataError(f"{path}: missing column(s) {', '.join(missing)}; regenerate the teacher data")
    for field in arrow_schema():
        got = pf.schema_arrow.field(field.name).type
        binary_ok = pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
        if got != field.type and not (binary_ok and (pa.types.is_binary(got) or pa.types.is_large_binary(got))):
            raise TeacherDataError(f"{path}: column {field.name} has type {got}, expected {field.type}; "
                                   "regenerate the teacher data")
    if pf.metadata.num_rows != expected_rows:
        raise TeacherDataError(f"{path}: {pf.metadata.num_rows} rows, the manifest says {expected_rows}; "
                               "the shard was replaced or truncated: move it away and resume generation")
    return pf


def check_row(where: str, table: pa.Table, manifest: dict) -> None:
    """Shapes and values of one stored row (a 1-row table)."""
    row = table.slice(0, 1).to_pylist()[0]
    n, p, vocab = row["seq_len"], row["prompt_len"], manifest["vocab_size"]
    if len(row["input_ids"]) != n:
        raise TeacherDataError(f"{where} column input_ids: {len(row['input_ids'])} ids, expected seq_len = {n}")
    if not 0 < p < n:
        raise TeacherDataError(f"{where} column prompt_len: {p}, expected 0 < prompt_len < seq_len = {n}")
    if min(row["input_ids"]) < 0 or max(row["input_ids"]) >= vocab:
        raise TeacherDataError(f"{where} column input_ids: ids outside the vocabulary, expected [0, {vocab})")
    try:
        b = decode_batch(table, manifest, manifest["pad_token_id"])
    except BadValues as exc:
        raise TeacherDataError(f"{where} column {exc.column}: wrong shape: {exc}") from exc
    for col in ("topk_ids", "topk_logprobs", "hidden", "attention"):
        if not torch.isfinite(b[col].float()).all():
            raise TeacherDataError(f"{where} column {col}: contains NaN or Inf, expected finite values")
    ids, logp = b["topk_ids"][0, :n], b["topk_logprobs"][0, :n].float()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise TeacherDataError(f"{where} column topk_ids: ids outside [0, {vocab})")
    if float(logp.max()) > 1e-3:
        raise TeacherDataError(f"{where} column topk_logprobs: max {float(logp.max()):.3g}, expected log-probs <= 0")
    if bool((logp[:, 1:] > logp[:, :-1]).any()):
        pos = int((logp[:, 1:] > logp[:, :-1]).any(-1).nonzero()[0])
        raise TeacherDataError(f"{where} column topk_logprobs: position {pos} not sorted, expected descending top-k")
    mass = logp.exp().sum(-1)
    if float(mass.max()) > 1 + SUM_TOL:
        raise TeacherDataError(f"{where} column topk_logprobs: top-k mass {float(mass.max()):.4f}, expected <= 1")
    _check_attention(where, b, manifest)


def _check_attention(where: str, b: dict, manifest: dict) -> None:
    attn = b["attention"][0].float()  # (layers, heads, n_a, n_a), zero above the diagonal
    rows = b["attention_row_mask"][0] if "attention_row_mask" in b else torch.ones(attn.shape[-1], dtype=torch.bool)
    if float(attn.min()) < -SUM_TOL:
        raise TeacherDataError(f"{where} column attention: negative probability {float(attn.min()):.3g}, expected >= 0")
    sums = attn.sum(-1)[..., rows]
    if manifest["strides"]["attention"] == 1:
        bad = (sums - 1).abs() > SUM_TOL
        expected = "rows summing to 1 over the causal window"
    else:  # strided keys hold part of each row's mass
        bad = sums > 1 + SUM_TOL
        expected = "strided rows summing to <= 1 over the causal window"
    if bool(bad.any()):
        worst = float(sums[bad][0])
        raise TeacherDataError(f"{where} column attention: a row sums to {worst:.4f}, expected {expected}")


def stray_shards(data_dir: Path | str, manifest: dict) -> list[Path | str]:
    listed = {s["file"] for s in manifest["shards"]}
    return [storage.join(data_dir, f) for f in storage.listdir(data_dir)
            if fnmatch(f, "shard-*.parquet") and f not in listed]


def unlisted_parquet(data_dir: Path | str, manifest: dict) -> list[Path | str]:
    """Parquet files other than shards that the manifest does not list (nor the seq_kd answers file)."""
    listed = {s["file"] for s in manifest["shards"]} | {ANSWERS_FILE}
    return [storage.join(data_dir, f) for f in storage.listdir(data_dir)
            if f.endswith(".parquet") and not fnmatch(f, "shard-*.parquet") and f not in listed]


def verify(data_dir: Path | str, sample_rows: int | None = 20, seed: int = 0) -> dict:
    """Check the manifest against the shards and ``sample_rows`` rows across the store (None: all)."""
    data_dir = storage.location(data_dir)
    manifest = read_manifest(data_dir)
    if not manifest.get("complete"):
        raise TeacherDataError(f"{data_dir}: teacher data is incomplete (generation was interrupted); "
                               "run the sweep or 'python -m wbvb.teacher generate' again to resume it")
    stray = stray_shards(data_dir, manifest)
    if stray:
        raise TeacherDataError(f"{stray[0]}: a shard that {storage.join(data_dir, MANIFEST)} does not list, so it is "
                               "never read; it belongs to another run: move it out of this directory")
    unlisted = unlisted_parquet(data_dir, manifest)
    for f in unlisted:  # not a shard by name, so not an error: but the user should know it is ignored
        print(f"warning: {f}: a Parquet file that {storage.join(data_dir, MANIFEST)} does not list; it is never "
              "read (move it out of this directory if it was meant to be teacher data)", file=sys.stderr)
    files = [open_shard(storage.join(data_dir, s["file"]), s["rows"]) for s in manifest["shards"]]
    starts, total = [], 0
    for s in manifest["shards"]:
        starts.append(total)
        total += s["rows"]
    if sample_rows is None or sample_rows >= total:
        picks = list(range(total))
    else:
        picks = sorted(random.Random(seed).sample(range(total), sample_rows))
    checked = 0
    for k, (shard, pf) in enumerate(zip(manifest["shards"], files)):
        local = [g - starts[k] for g in picks if starts[k] <= g < starts[k] + shard["rows"]]
        if not local:
            continue
        table = pf.read().take(local)
        for j, r in enumerate(local):
            check_row(f"{storage.join(data_dir, shard['file'])} row {r}", table.slice(j, 1), manifest)
            checked += 1
    return {"dir": str(data_dir), "shards": len(manifest["shards"]), "rows": manifest["num_rows"],
            "rows_checked": checked, "fingerprint": manifest["fingerprint"],
            "unlisted_files": [str(f) for f in unlisted]}
