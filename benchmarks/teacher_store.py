"""Teacher store vs the earlier format, measured side by side in one run; prints ``name: value`` lines.

Baseline (the scripts wbvb replaces): nested Python lists of fp16 values and int32 ids in Parquet,
zstd level 3, one row group per 4 rows, read per row with read_row_group -> slice -> to_pydict ->
np.array. Both formats get the same synthetic teacher tensors (``wbvb.store.synthetic``: peaked
next-token distributions, attention with a sink and a recency bias under a causal mask, hidden
states with outlier features): seq 256, k 128, hidden 1024 (one layer), 8 heads (one layer),
hidden and attention strides 2, vocab 32000.

    PYTHONPATH=. python benchmarks/teacher_store.py [--rows 24] [--stream-rows 32]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from wbvb.feed.batches import collate
from wbvb.config import TeacherDataConfig
from wbvb.store import synthetic
from wbvb.store.codec import decode_batch, encode_signals, layout_of
from wbvb.teacher.generate import store_columns
from wbvb.store.inspect import column_bytes
from wbvb.store.schema import FORMAT_VERSION, MANIFEST, SIGNAL_COLUMNS
from wbvb.storage import write_json_atomic
from wbvb.store.writer import write_shard

SEQ, K, DIM, HEADS, STRIDE, VOCAB = 256, 128, 1024, 8, 2, 32000
BATCH = 16


def synthetic_rows(n_rows: int, seed: int = 0) -> list[dict]:
    """fp32 teacher outputs per row, already strided (what a generator holds before encoding)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n_rows):
        r = synthetic.teacher_row(SEQ, VOCAB, K, DIM, HEADS, STRIDE, STRIDE, gen)
        rows.append({"example_id": f"ex{i}", "input_ids": torch.randint(0, VOCAB, (SEQ,), generator=gen),
                     "prompt_len": SEQ // 2, "ids": r["ids"], "logp": r["logp"], "hidden": r["hidden"],
                     "attention": r["attention"]})
    return rows


COMPACT = dict(logprob_encoding="gaps8", hidden_encoding="int8", attention_encoding="cbrt")
SETTINGS = {  # name -> teacher_data encodings, all at dtype float16
    "fp16": {},  # lossless at fp16: bit-packed ids, lower-triangular attention
    "int8_hidden": dict(hidden_encoding="int8"),
    "compact": COMPACT,  # every signal quantized within the fidelity bound
    "compact_answer_rows": dict(COMPACT, attention_rows="answer"),
}


def manifest_for(**encodings) -> dict:
    td = TeacherDataConfig(top_k=K, hidden_stride=STRIDE, attention_stride=STRIDE, dtype="float16", **encodings)
    return {"format_version": FORMAT_VERSION, "fingerprint": "bench", "complete": True, "pad_token_id": 0,
            "vocab_size": VOCAB, "strides": {"hidden": STRIDE, "attention": STRIDE}, "shards": [], "num_rows": 0,
            "columns": store_columns(td, VOCAB, DIM, HEADS, [0], [0])}


# ---- the earlier format ------------------------------------------------------------------------

def baseline_write(rows: list[dict], path: Path) -> None:
    table = pa.Table.from_pylist([{
        "example_id": r["example_id"], "input_ids": r["input_ids"].tolist(), "prompt_len": r["prompt_len"],
        "topk_ids": r["ids"].int().tolist(), "topk_logprobs": r["logp"].half().tolist(),
        "hidden": r["hidden"][0].half().tolist(), "attention": r["attention"][0].half().tolist(),
    } for r in rows], schema=pa.schema([
        ("example_id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("prompt_len", pa.int32()),
        ("topk_ids", pa.list_(pa.list_(pa.int32()))), ("topk_logprobs", pa.list_(pa.list_(pa.float16()))),
        ("hidden", pa.list_(pa.list_(pa.float16()))), ("attention", pa.list_(pa.list_(pa.list_(pa.float16()))))]))
    pq.write_table(table, path, compression="zstd", compression_level=3, row_group_size=4)


def baseline_batches(path: Path):
    pf = pq.ParquetFile(path)
    rows = []
    for g in range(pf.num_row_groups):
        table = pf.read_row_group(g)
        for j in range(table.num_rows):
            d = table.slice(j, 1).to_pydict()
            rows.append({"example_id": d["example_id"][0], "input_ids": np.array(d["input_ids"][0]),
                         "prompt_len": d["prompt_len"][0],
                         "topk_ids": torch.from_numpy(np.array(d["topk_ids"][0], dtype=np.int32)),
                         "topk_logprobs": torch.from_numpy(np.array(d["topk_logprobs"][0], dtype=np.float16)),
                         "hidden": torch.from_numpy(np.array(d["hidden"][0], dtype=np.float16))[None],
                         "attention": torch.from_numpy(np.array(d["attention"][0], dtype=np.float16))[None]})
            if len(rows) == BATCH:
                yield collate(rows, 0)
                rows = []
    if rows:
        yield collate(rows, 0)


# ---- wbvb's format -------------------------------------------------------------------------------

def wbvb_write(rows: list[dict], path: Path, manifest: dict) -> None:
    lay = layout_of(manifest)
    write_shard(path, [{
        "example_id": r["example_id"], "task": "t", "split": "train", "input_ids": r["input_ids"].tolist(),
        "prompt_len": r["prompt_len"], "seq_len": SEQ, "label": "",
        **encode_signals(r["prompt_len"], r["ids"], r["logp"], r["hidden"], r["attention"], lay),
    } for r in rows])


def wbvb_batches(path: Path, manifest: dict):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
        yield decode_batch(pa.Table.from_batches([batch]), manifest, 0)


def rate(fn, n_rows: int, repeats: int = 3) -> float:
    """Rows per second, best of ``repeats`` (the machine is shared: the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_rows / best


def drain(batches) -> int:
    return sum(b["input_ids"].shape[0] for b in batches)


# ---- streaming memory: a trial process reading 1x vs 10x the rows through ShardStream ---------------

_STREAM_TRIAL = """
import json, sys, threading, time
from pathlib import Path
import ray
from wbvb.feed.stream import ShardStream

def status(key):
    return [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(key)][0]

peak_anon, done = [0.0], [False]
def sample():
    while not done[0]:
        peak_anon[0] = max(peak_anon[0], status("RssAnon:"))
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
d = Path(sys.argv[1]); m = json.loads((d / "manifest.json").read_text())
s = ShardStream(d, m, ["topk", "hidden", "attention"], 16, data_cpus=1.0, stall_timeout_s=120)
n = sum(b["input_ids"].shape[0] for _, b in s.local_batches(0, 1, 0))  # what a trial's batch-making task runs
assert n == m["num_rows"], n
done[0] = True
print(json.dumps({"private": peak_anon[0], "total": status("VmHWM:")}))
"""


def stream_peak_rss(store: Path) -> dict:
    """Stream a store through ShardStream (Ray Data, all signals) in a fresh process; its peak memory, MiB.

    The pipeline runs in this process (``local_batches``), as it does in a trial's batch-making task,
    so what it holds is measured here.

    ``private``: peak anonymous RSS, sampled every 10 ms (what the trial itself holds). ``total``:
    VmHWM, which also counts the pages of Ray's shared-memory object store that the trial mapped;
    that store is a fixed-size cache shared by every process on the node.
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RAY_DEDUP_LOGS": "0"}
    out = subprocess.run([sys.executable, "-c", _STREAM_TRIAL, str(store)], env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def replicated_store(rows: list[dict], copies: int, out: Path, manifest: dict) -> Path:
    """``copies`` shards of the same rows, each copy under its own example ids (the order is on ids)."""
    out.mkdir(parents=True)
    m = json.loads(json.dumps(manifest))
    for c in range(copies):
        wbvb_write([{**r, "example_id": f"c{c}-{r['example_id']}"} for r in rows], out / f"shard-{c:05d}.parquet", m)
        m["shards"].append({"file": f"shard-{c:05d}.parquet", "rows": len(rows)})
    m["num_rows"] = len(rows) * copies
    write_json_atomic(out / MANIFEST, m)
    return out


def compare_formats(tmp: Path, n_rows: int) -> None:
    rows = synthetic_rows(n_rows)
    tokens = n_rows * SEQ
    base = tmp / "baseline.parquet"
    baseline_write(rows[:2], base)  # warm-up: first-use imports (pandas via pyarrow) are not timed
    wbvb_write(rows[:2], base, manifest_for())
    r_base_w = rate(lambda: baseline_write(rows, base), n_rows)
    r_base_r = rate(lambda: drain(baseline_batches(base)), n_rows)
    print(f"baseline_bytes_per_token: {base.stat().st_size / tokens:.1f}")
    print(f"baseline_write_rows_per_s: {r_base_w:.2f}")
    print(f"baseline_decode_rows_per_s: {r_base_r:.2f}")
    base_cols = column_bytes([base])
    print("baseline_bytes_per_token_by_signal: " + json.dumps(
        {sig: round(sum(base_cols.get(c, 0) for c in cols) / tokens, 1) for sig, cols in SIGNAL_COLUMNS.items()}))
    for name, enc in SETTINGS.items():
        m = manifest_for(**enc)
        path = tmp / f"{name}.parquet"
        r_w = rate(lambda: wbvb_write(rows, path, m), n_rows)
        r_r = rate(lambda: drain(wbvb_batches(path, m)), n_rows)
        size = path.stat().st_size / tokens
        print(f"wbvb_{name}_bytes_per_token: {size:.1f}")
        print(f"wbvb_{name}_bytes_ratio: {size / (base.stat().st_size / tokens):.3f}")
        cols = column_bytes([path])
        print(f"wbvb_{name}_bytes_per_token_by_signal: " + json.dumps(
            {sig: round(sum(cols.get(c, 0) for c in cs) / tokens, 1) for sig, cs in SIGNAL_COLUMNS.items()}))
        print(f"wbvb_{name}_write_speedup: {r_w / r_base_w:.1f}")
        print(f"wbvb_{name}_decode_speedup: {r_r / r_base_r:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16, help="rows for size and throughput (scaled down for 2 CPUs)")
    ap.add_argument("--stream-rows", type=int, default=32, help="rows of the 1x streaming store")
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--skip-formats", action="store_true", help="only the streaming-memory figures")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the machine is shared: intra-op threads only add contention noise here
    tmp = Path(tempfile.mkdtemp(prefix="wt4-bench-"))
    try:
        if not args.skip_formats:
            compare_formats(tmp, args.rows)
        if not args.skip_stream:
            m = manifest_for()
            rows = synthetic_rows(args.stream_rows, seed=1)
            one = stream_peak_rss(replicated_store(rows, 1, tmp / "x1", m))
            ten = stream_peak_rss(replicated_store(rows, 10, tmp / "x10", m))
            for kind in ("private", "total"):
                print(f"stream_peak_{kind}_rss_mib_1x: {one[kind]:.0f}")
                print(f"stream_peak_{kind}_rss_mib_10x: {ten[kind]:.0f}")
                print(f"stream_peak_{kind}_rss_ratio_10x_over_1x: {ten[kind] / one[kind]:.3f}")
        print(f"bench_peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
