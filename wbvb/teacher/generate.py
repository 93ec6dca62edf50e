"""Run the teacher once over prompt+answer and store its signals as Parquet shards.

The store lives at ``<teacher_data.path>/<fingerprint>/``, a local folder or a URI (``storage``). The fingerprint hashes every input
that changes the bytes (teacher weights, tokenizer, the train side of each task, max length, k,
layers, strides, dtype, encodings, shard size, format version); a complete store with the same
fingerprint is reused. The shards hold train rows only, so the eval side of a task (``n_eval``,
``eval_shots``) is not in it: the teacher's eval scores are kept apart (``teacher.scores``). Shards are written to
a temp name and renamed, and the manifest is updated after each one, so an interrupted run
resumes at the next missing shard.
"""
from __future__ import annotations


import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import torch

from wbvb import storage
from wbvb.feed.batches import batched, collate, encode_example
from wbvb.tasks import load_all, task_train_identity
from wbvb.store.codec import encode_signals, layout_of, strided
from wbvb.store.compress import bits_for
from wbvb.store.schema import FORMAT_VERSION, MANIFEST, TeacherDataError, read_manifest
from wbvb.storage import write_json_atomic
from wbvb.store.writer import ShardWriter
from wbvb.models.load import load_teacher, pick_device, teacher_dtype
from wbvb.teacher.progress import Progress
from wbvb.teacher.signals import TeacherSignals
from wbvb.train.alignment import resolve_layers

log = logging.getLogger("wbvb.teacher")


def weights_identity(path: str) -> dict:
    """Identity of a checkpoint: for a local dir, sizes and hashes of its config and weight files."""
    p = Path(path)
    if not p.is_dir():
        return {"hub_id": path}
    ident = {}
    for f in sorted(p.iterdir()):
        if f.suffix in (".json", ".safetensors", ".bin") and f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:  # head and tail: cheap for 10 GB shards, sensitive to any retrain
                h.update(fh.read(1 << 20))
                if f.stat().st_size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
            ident[f.name] = f"{f.stat().st_size}:{h.hexdigest()[:16]}"
    return ident


def fingerprint_inputs(cfg, teacher_path: str, tokenizer) -> dict:
    td = cfg.teacher_data
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]
    return {
        "format_version": FORMAT_VERSION,
        "teacher": weights_identity(teacher_path),
        "tokenizer_vocab": vocab,
        "tasks": [task_train_identity(t) for t in cfg.tasks],
        "max_length": cfg.training.max_length,
        "add_bos": cfg.models.add_bos,  # with FORMAT_VERSION 4: prompt + answer encoded jointly, split at the prompt
        "top_k": td.top_k, "hidden_layers": td.hidden_layers, "attention_layers": td.attention_layers,
        "hidden_stride": td.hidden_stride, "attention_stride": td.attention_stride,
        "dtype": td.dtype, "logprob_encoding": td.logprob_encoding, "hidden_encoding": td.hidden_encoding,
        "hidden_outliers": td.hidden_outliers if td.hidden_encoding == "int8" else 0,
        "attention_encoding": td.attention_encoding,
        "attention_bits": td.attention_bits if td.attention_encoding == "cbrt" else 0,
        "attention_rows": td.attention_rows,
        "shard_rows": td.shard_rows,
        # a GPU's bf16/fp16 teacher computes other values than the fp32 one (fp32 stores keep their fingerprint)
        **({"compute_dtype": str(dtype).removeprefix("torch.")}
           if (dtype := teacher_dtype(pick_device(cfg.training.device))) != torch.float32 else {}),
    }


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def store_dir(cfg, teacher_path: str, tokenizer) -> tuple[Path | str, dict, str]:
    inputs = fingerprint_inputs(cfg, teacher_path, tokenizer)
    fp = fingerprint(inputs)
    return storage.join(cfg.teacher_data_dir, fp), inputs, fp


def teacher_rows(signals: TeacherSignals, tokenizer, encoded: list[dict], cfg, layout: dict, device) -> list[dict]:
    """One teacher forward pass over a batch of encoded examples -> shard rows (column bytes)."""
    td = cfg.teacher_data
    b = collate(encoded, tokenizer.pad_token_id)
    lengths = [len(e["input_ids"]) for e in encoded]
    hs, s = td.hidden_stride, td.attention_stride
    # embedding rows padded past the tokenizer (e.g. 152,064 for 151,936 tokens) are not vocabulary
    vals, ids, hidden, attn = signals(b["input_ids"].to(device), b["attention_mask"].to(device), lengths,
                                      td.top_k, len(tokenizer), hs, s)
    rows = []
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        nh, na = strided(n, hs), strided(n, s)
        rows.append({
            "example_id": e["example_id"], "task": e["task"], "split": e["split"],
            "input_ids": e["input_ids"].tolist(), "prompt_len": e["prompt_len"], "seq_len": n, "label": e["label"],
            **encode_signals(e["prompt_len"], ids[i, :n], vals[i, :n], hidden[i, :, :nh],
                             attn[i, :, :, :na, :na], layout),
        })
    return rows


def _open_store(out_dir: Path | str, fp: str, force: bool) -> dict | None:
    """The existing manifest of this store, or None to start afresh; refuse one for other inputs."""
    if force or not storage.is_file(storage.join(out_dir, MANIFEST)):
        return None
    manifest = read_manifest(out_dir)
    if manifest.get("fingerprint") != fp:
        raise TeacherDataError(
            f"{storage.join(out_dir, MANIFEST)}: written for other inputs (fingerprint {manifest.get('fingerprint')}, "
            f"expected {fp}); point teacher_data.path at the right directory, or move this folder away "
            "(or pass --force to overwrite it)")
    return manifest


def store_columns(td, vocab: int, hidden_size: int, heads: int, hidden_layers: list[int],
                  attention_layers: list[int]) -> dict:
    """The manifest's ``columns``: per signal its shape parameters and encoding (what ``codec`` reads)."""
    int8 = td.hidden_encoding == "int8"
    hidden = {"dtype": "int8" if int8 else td.dtype, "dim": hidden_size, "layers": hidden_layers}
    if int8:
        hidden["outliers"] = min(td.hidden_outliers, hidden_size)
    attention = {"dtype": td.dtype, "heads": heads, "layers": attention_layers, "rows": td.attention_rows,
                 "packing": "lower_triangle", "encoding": td.attention_encoding}
    if td.attention_encoding == "cbrt":
        attention["bits"] = td.attention_bits
    return {"topk_ids": {"encoding": "packed", "bits": bits_for(vocab), "k": td.top_k},
            "topk_logprobs": {"dtype": td.dtype, "k": td.top_k, "encoding": td.logprob_encoding},
            "hidden": hidden, "attention": attention}


def older_formats(cfg, inputs: dict) -> list:
    """Stores beside this one written from the same inputs in another format version (never read)."""
    root = cfg.teacher_data_dir
    found = []
    for name in storage.listdir(root, pafs.FileType.Directory):
        path = storage.join(root, name, MANIFEST)
        try:
            old = json.loads(storage.read_bytes(path)) if storage.is_file(path) else {}
        except (OSError, ValueError):
            continue
        theirs = old.get("inputs") or {}
        if theirs.get("format_version") != FORMAT_VERSION and {**theirs, "format_version": FORMAT_VERSION} == inputs:
            found.append((storage.join(root, name), theirs.get("format_version")))
    return found


def generate(cfg, teacher_path: str, tokenizer, force: bool = False, progress: bool = False) -> Path | str:
    """Make sure the teacher store for these inputs exists and is complete; return its dir."""

    out_dir, inputs, fp = store_dir(cfg, teacher_path, tokenizer)
    manifest = _open_store(out_dir, fp, force)
    if manifest is not None and manifest.get("complete"):
        log.info("teacher data: reusing %s (fingerprint %s, %d rows)", out_dir, fp, manifest["num_rows"])
        print(f"teacher data: reusing {out_dir} (fingerprint {fp}, {manifest['num_rows']} rows)", flush=True)
        return out_dir
    for old, version in older_formats(cfg, inputs):
        print(f"teacher data: not reusing {old}: written in format {version}, this wbvb reads format "
              f"{FORMAT_VERSION}; writing a new store at {out_dir} (delete the old folder when done)", flush=True)
    storage.mkdir(out_dir)
    td, device = cfg.teacher_data, pick_device(cfg.training.device)
    model = load_teacher(teacher_path, device)
    vocab = model.config.vocab_size
    n_layers = model.config.num_hidden_layers
    hidden_layers = resolve_layers(td.hidden_layers, n_layers, "hidden_layers")
    attention_layers = resolve_layers(td.attention_layers, n_layers, "attention_layers")
    signals = TeacherSignals(model, hidden_layers, attention_layers)
    examples = load_all(cfg.tasks, "train")
    encoded = [encode_example(ex, tokenizer, cfg.training.max_length, cfg.models.add_bos) for ex in examples]
    encoded.sort(key=lambda e: (len(e["input_ids"]), e["example_id"]))  # length order: little padding
    if manifest is None:
        manifest = {"format_version": FORMAT_VERSION, "fingerprint": fp, "inputs": inputs, "complete": False,
                    "shards": [], "num_rows": 0}
    manifest.update({
        "teacher_path": teacher_path, "vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id,
        "strides": {"hidden": td.hidden_stride, "attention": td.attention_stride},
        "columns": store_columns(td, vocab, model.config.hidden_size, model.config.num_attention_heads,
                                 hidden_layers, attention_layers),
        "teacher_num_layers": n_layers,
    })
    layout = layout_of(manifest)
    present = set(storage.listdir(out_dir))
    done = {s["file"] for s in manifest["shards"] if s["file"] in present}
    chunks = list(batched(encoded, td.shard_rows))
    todo = [(i, c) for i, c in enumerate(chunks) if f"shard-{i:05d}.parquet" not in done]
    # rows are length-sorted: counted in tokens, so the ETA does not read the short rows' pace
    bar = Progress(sum(len(e["input_ids"]) for _, c in todo for e in c), "teacher data", "tokens", bar=progress)
    t0 = time.perf_counter()
    writer = ShardWriter(out_dir, manifest)
    try:
        for idx, chunk in todo:
            rows = []
            for b in batched(chunk, td.batch_size):
                rows.extend(teacher_rows(signals, tokenizer, b, cfg, layout, device))
                bar.update(sum(len(e["input_ids"]) for e in b))
            writer.submit(f"shard-{idx:05d}.parquet", rows)
    finally:
        manifest = writer.close()
        bar.close()
    manifest["generation_seconds"] = round(time.perf_counter() - t0, 2)
    manifest["complete"] = True
    write_json_atomic(storage.join(out_dir, MANIFEST), manifest)
    print(f"teacher data: wrote {manifest['num_rows']} rows in {len(manifest['shards'])} shards to {out_dir} "
          f"({manifest['generation_seconds']} s)", flush=True)
    return out_dir
