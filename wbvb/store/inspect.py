"""Human views of a teacher store: one example decoded (``inspect``) and totals (``stats``)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from wbvb import storage
from wbvb.models.load import load_tokenizer
from wbvb.store.schema import SIGNAL_COLUMNS, TeacherDataError, decode_row, read_manifest


def locate(manifest: dict, index: int) -> tuple[str, int]:
    """Store-wide row index -> (shard file, row within it)."""
    if not 0 <= index < manifest["num_rows"]:
        raise TeacherDataError(f"row {index} does not exist: the store holds rows 0..{manifest['num_rows'] - 1}")
    for s in manifest["shards"]:
        if index < s["rows"]:
            return s["file"], index
        index -= s["rows"]
    raise TeacherDataError("manifest row counts do not add up to num_rows; run 'python -m wbvb.teacher verify'")


def inspect_row(data_dir: Path | str, index: int, tokenizer=None, top: int = 5) -> str:
    """Text, answer span and the teacher's top tokens at each answer position of one stored row."""
    data_dir = storage.location(data_dir)
    manifest = read_manifest(data_dir)
    shard, local = locate(manifest, index)
    row = storage.open_parquet(storage.join(data_dir, shard)).read().slice(local, 1).to_pylist()[0]
    dec = decode_row(row, manifest)
    if tokenizer is None:
        tokenizer = load_tokenizer(manifest["teacher_path"])
    ids, p = row["input_ids"], row["prompt_len"]
    lines = [f"row {index} ({shard} row {local}): {row['example_id']}  task={row['task']}  label={row['label']!r}",
             f"tokens: {row['seq_len']} (prompt {p}, answer {row['seq_len'] - p})",
             f"prompt: {tokenizer.decode(ids[:p])!r}",
             f"answer: {tokenizer.decode(ids[p:])!r}  (positions {p}..{row['seq_len'] - 1})",
             f"teacher top-{top} for each answer token (distribution stored at the position before it):"]
    top = min(top, dec["topk_ids"].shape[-1])
    for t in range(p, row["seq_len"]):
        ids_k = dec["topk_ids"][t - 1, :top].tolist()
        probs = dec["topk_logprobs"][t - 1, :top].float().exp().tolist()
        cand = "  ".join(f"{tokenizer.decode([i])!r} {q:.3f}" for i, q in zip(ids_k, probs))
        lines.append(f"  {t:4d} {tokenizer.decode([ids[t]])!r:>12} <- {cand}")
    return "\n".join(lines)


def column_bytes(files) -> Counter:
    """On-disk (compressed) bytes per top-level column over Parquet files (paths or ParquetFile)."""
    out = Counter()
    for f in files:
        meta = (f if isinstance(f, pq.ParquetFile) else storage.open_parquet(f)).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                out[rg.column(c).path_in_schema.split(".")[0]] += rg.column(c).total_compressed_size
    return out


def store_stats(data_dir: Path | str) -> dict:
    """Rows per task and split, token counts, and on-disk bytes per signal (total and per token)."""
    data_dir = storage.location(data_dir)
    manifest = read_manifest(data_dir)
    rows, tokens, answer = Counter(), 0, 0
    col_bytes = Counter()
    for s in manifest["shards"]:
        pf = storage.open_parquet(storage.join(data_dir, s["file"]))
        t = pf.read(columns=["task", "split", "seq_len", "prompt_len"])
        for task, split in zip(t.column("task").to_pylist(), t.column("split").to_pylist()):
            rows[f"{task}/{split}"] += 1
        seq = t.column("seq_len").to_numpy()
        tokens += int(seq.sum())
        answer += int((seq - t.column("prompt_len").to_numpy()).sum())
        col_bytes.update(column_bytes([pf]))
    by_signal = {sig: sum(col_bytes[c] for c in cols) for sig, cols in SIGNAL_COLUMNS.items()}
    by_signal["base"] = sum(v for c, v in col_bytes.items() if all(c not in cols for cols in SIGNAL_COLUMNS.values()))
    return {"dir": str(data_dir), "rows": manifest["num_rows"], "shards": len(manifest["shards"]),
            "rows_per_task": dict(sorted(rows.items())), "tokens": tokens, "answer_tokens": answer,
            "bytes_per_signal": by_signal,
            "bytes_per_token": {k: round(v / max(tokens, 1), 1) for k, v in by_signal.items()}}
