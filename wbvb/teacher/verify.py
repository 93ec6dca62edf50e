"""Check a teacher store before any trial reads it: manifest, files, row counts, tensor shapes, values."""
from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import torch

from wbvb.teacher.schema import (BASE_COLUMNS, SIGNAL_COLUMNS, TeacherDataError, decode_row, read_manifest)


def verify(data_dir: Path, sample_rows: int = 16, seed: int = 0) -> dict:
    """Raise TeacherDataError naming shard, row and column on the first problem; else a summary."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if not manifest.get("complete"):
        raise TeacherDataError(f"{data_dir}: teacher data is incomplete (generation was interrupted); "
                               "run the sweep or 'python -m wbvb.teacher generate' again to resume it")
    rng = random.Random(seed)
    needed = BASE_COLUMNS + [c for cols in SIGNAL_COLUMNS.values() for c in cols]
    vocab = manifest["vocab_size"]
    checked = 0
    for shard in manifest["shards"]:
        path = data_dir / shard["file"]
        if not path.is_file():
            raise TeacherDataError(f"{path}: listed in the manifest but missing; regenerate the teacher data")
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - any read failure means a corrupt shard
            raise TeacherDataError(f"{path}: not a readable Parquet file ({exc}); delete it and resume generation") from exc
        missing = [c for c in needed if c not in pf.schema_arrow.names]
        if missing:
            raise TeacherDataError(f"{path}: missing column(s) {', '.join(missing)}; regenerate the teacher data")
        if pf.metadata.num_rows != shard["rows"]:
            raise TeacherDataError(f"{path}: {pf.metadata.num_rows} rows, the manifest says {shard['rows']}")
        picks = sorted(rng.sample(range(shard["rows"]), min(sample_rows, shard["rows"])))
        table = pf.read().take(picks)
        for j, row in enumerate(table.to_pylist()):
            where = f"{path.name} row {picks[j]}"
            if len(row["input_ids"]) != row["seq_len"]:
                raise TeacherDataError(f"{where} column input_ids: {len(row['input_ids'])} ids but seq_len {row['seq_len']}")
            if not 0 < row["prompt_len"] < row["seq_len"]:
                raise TeacherDataError(f"{where} column prompt_len: {row['prompt_len']} outside (0, {row['seq_len']})")
            for col in ("topk_ids", "topk_logprobs", "hidden", "attention"):
                try:
                    t = decode_row({**row, **{c: None for c in ("topk_ids", "topk_logprobs", "hidden", "attention")
                                             if c != col}}, manifest)[col]
                except ValueError as exc:
                    raise TeacherDataError(f"{where} column {col}: wrong shape: {exc}") from exc
                tf = t.float()
                if not torch.isfinite(tf).all():
                    raise TeacherDataError(f"{where} column {col}: contains NaN or Inf")
                if col == "topk_ids" and (int(tf.min()) < 0 or int(tf.max()) >= vocab):
                    raise TeacherDataError(f"{where} column topk_ids: ids outside [0, {vocab})")
                if col == "topk_logprobs" and float(tf.max()) > 1e-3:
                    raise TeacherDataError(f"{where} column topk_logprobs: positive log-probs (max {float(tf.max()):.3g})")
            checked += 1
    return {"dir": str(data_dir), "shards": len(manifest["shards"]), "rows": manifest["num_rows"],
            "rows_checked": checked, "fingerprint": manifest["fingerprint"]}
