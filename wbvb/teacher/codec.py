"""Tensor <-> bytes for teacher signals, and whole-batch decoding straight into padded tensors.

Each signal of a row is one raw little-endian buffer whose shape follows from the row's
``seq_len``/``prompt_len`` and the manifest, so a batch decodes with one contiguous view of the
Arrow column's data buffer and a few slice copies per row: no Python objects per element, no
dense vocabulary. Attention keeps only what a causal model can have (the lower triangle, keys
<= query) and, with ``attention_rows: answer``, only the query rows where a loss is computed.
Hidden states may be stored as int8 with one float32 scale per vector (absmax / 127).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

# on-disk element types; bfloat16 travels as its uint16 bit pattern
NP_DTYPES = {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16, "int8": np.int8,
             "uint8": np.uint8, "uint16": np.uint16, "int32": np.int32}


def id_dtype_for(vocab_size: int) -> str:
    """The narrowest integer type that holds every token id of the vocabulary."""
    if vocab_size <= 1 << 8:
        return "uint8"
    if vocab_size <= 1 << 16:
        return "uint16"
    return "int32"


def strided(n: int, stride: int) -> int:
    return (n + stride - 1) // stride


def first_attention_row(prompt_len: int, stride: int, rows: str) -> int:
    """First stored (strided) query row: 0, or the first one at or after the position that
    predicts the first answer token (``prompt_len - 1``), where the losses start counting."""
    if rows == "all":
        return 0
    return strided(max(prompt_len - 1, 0), stride)


def tri_count(n: int) -> int:
    """Entries of an n x n lower triangle including the diagonal."""
    return n * (n + 1) // 2


def to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    """A tensor in a storage dtype as a numpy array (bfloat16 as its bit pattern)."""
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.uint16).numpy()
    return t.to(getattr(torch, dtype)).contiguous().numpy()


def quantize_int8(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-vector (last axis) absmax int8: values and float32 scales, x ~= q * scale."""
    x = x.float()
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    q = torch.round(x / scale).clamp(-127, 127).to(torch.int8)
    return q.numpy(), scale.squeeze(-1).numpy().astype(np.float32)


def pack_attention(attn: np.ndarray, first_row: int) -> np.ndarray:
    """[layers, heads, n, n] -> [layers, heads, entries]: lower triangle of rows first_row..n-1."""
    n = attn.shape[-1]
    r, c = np.tril_indices(n)
    sel = slice(tri_count(first_row), tri_count(n))
    return attn[..., r[sel], c[sel]]


def encode_signals(prompt_len: int, topk_ids, topk_logprobs, hidden, attention, layout: dict) -> dict:
    """One row's teacher tensors (already cut to the row and strided) -> column bytes."""
    out = {"topk_ids": to_numpy(topk_ids, layout["topk_ids"]).tobytes(),
           "topk_logprobs": to_numpy(topk_logprobs, layout["topk_logprobs"]).tobytes()}
    if layout["hidden"] == "int8":
        q, scale = quantize_int8(hidden)
        out["hidden"], out["hidden_scale"] = q.tobytes(), scale.tobytes()
    else:
        out["hidden"], out["hidden_scale"] = to_numpy(hidden, layout["hidden"]).tobytes(), b""
    first = first_attention_row(prompt_len, layout["attention_stride"], layout["attention_rows"])
    packed = pack_attention(to_numpy(attention, layout["attention"]), first)  # cast first: less to gather
    out["attention"] = packed.tobytes()
    return out


def layout_of(manifest: dict) -> dict:
    c = manifest["columns"]
    return {"topk_ids": c["topk_ids"]["dtype"], "topk_logprobs": c["topk_logprobs"]["dtype"],
            "hidden": c["hidden"]["dtype"], "attention": c["attention"]["dtype"],
            "attention_stride": manifest["strides"]["attention"],
            "attention_rows": c["attention"].get("rows", "all")}


class BadValues(ValueError):
    """A row's buffer does not hold the values its shape asks for; carries row index and column."""

    def __init__(self, row: int, column: str, message: str):
        super().__init__(message)
        self.row, self.column = row, column


def _binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to this array's rows, data bytes) of a (large_)binary array, zero-copy."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    bufs = arr.buffers()
    off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _row_values(offsets, data, i: int, dtype: str, count: int, column: str) -> np.ndarray:
    raw = data[offsets[i]: offsets[i + 1]]
    width = np.dtype(NP_DTYPES[dtype]).itemsize
    if raw.size != count * width:
        raise BadValues(i, column, f"holds {raw.size} bytes, expected {count} {dtype} values = {count * width} bytes")
    return raw.view(NP_DTYPES[dtype]) if raw.size else np.zeros(0, NP_DTYPES[dtype])


def _as_torch(arr: np.ndarray, dtype: str) -> torch.Tensor:
    t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def decode_batch(table: pa.Table, manifest: dict, pad_id: int) -> dict:
    """Arrow rows -> the padded batch a trial consumes (see ``batches.collate`` for the keys).

    Signals are decoded only for the columns present, so column projection carries through.
    """
    c = manifest["columns"]
    lay = layout_of(manifest)
    seq = table.column("seq_len").to_numpy().astype(np.int64)
    prompt = table.column("prompt_len").to_numpy().astype(np.int64)
    b, L = len(seq), int(seq.max())
    ids_col = table.column("input_ids").combine_chunks()
    flat_ids = ids_col.values.to_numpy(zero_copy_only=False)
    id_off = np.asarray(ids_col.offsets).astype(np.int64)
    input_ids = np.full((b, L), pad_id, dtype=np.int64)
    pos = np.arange(L)
    attention_mask = pos[None, :] < seq[:, None]
    answer_mask = attention_mask & (pos[None, :] >= prompt[:, None])
    for i in range(b):
        input_ids[i, : seq[i]] = flat_ids[id_off[i]: id_off[i + 1]]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
             "answer_mask": torch.from_numpy(answer_mask), "example_ids": table.column("example_id").to_pylist()}
    names = table.column_names
    k = c["topk_ids"]["k"]
    for col, out_dtype in (("topk_ids", np.int32), ("topk_logprobs", None)):
        if col in names:
            dt = lay[col]
            out = np.zeros((b, L, k), dtype=out_dtype or NP_DTYPES[dt])
            off, data = _binary_parts(table.column(col))
            for i in range(b):
                out[i, : seq[i]] = _row_values(off, data, i, dt, seq[i] * k, col).reshape(seq[i], k)
            batch[col] = _as_torch(out, dt) if out_dtype is None else torch.from_numpy(out)
    if "hidden" in names:
        batch["hidden"] = _decode_hidden(table, manifest, seq)
    if "attention" in names:
        batch["attention"], row_mask = _decode_attention(table, manifest, seq, prompt)
        if lay["attention_rows"] == "answer":
            batch["attention_row_mask"] = torch.from_numpy(row_mask)
    return batch


def _decode_hidden(table: pa.Table, manifest: dict, seq: np.ndarray) -> torch.Tensor:
    c, s = manifest["columns"]["hidden"], manifest["strides"]["hidden"]
    nl, d, dt = len(c["layers"]), c["dim"], c["dtype"]
    n = strided(seq, s)
    quant = dt == "int8"
    out = np.zeros((len(seq), nl, int(n.max()), d), dtype=np.float32 if quant else NP_DTYPES[dt])
    off, data = _binary_parts(table.column("hidden"))
    if quant:
        soff, sdata = _binary_parts(table.column("hidden_scale"))
    for i in range(len(seq)):
        v = _row_values(off, data, i, dt, nl * n[i] * d, "hidden").reshape(nl, n[i], d)
        if quant:
            scale = _row_values(soff, sdata, i, "float32", nl * n[i], "hidden_scale").reshape(nl, n[i], 1)
            out[i, :, : n[i]] = v * scale
        else:
            out[i, :, : n[i]] = v
    return torch.from_numpy(out) if quant else _as_torch(out, dt)


def _decode_attention(table: pa.Table, manifest: dict, seq: np.ndarray, prompt: np.ndarray):
    c, s = manifest["columns"]["attention"], manifest["strides"]["attention"]
    nl, h, dt, rows = len(c["layers"]), c["heads"], c["dtype"], c.get("rows", "all")
    n = strided(seq, s)
    N = int(n.max())
    out = np.zeros((len(seq), nl * h, N, N), dtype=NP_DTYPES[dt])
    row_mask = np.zeros((len(seq), N), dtype=bool)
    tr, tc = np.tril_indices(N)
    off, data = _binary_parts(table.column("attention"))
    for i in range(len(seq)):
        first = first_attention_row(int(prompt[i]), s, rows)
        sel = slice(tri_count(first), tri_count(n[i]))
        m = sel.stop - sel.start
        v = _row_values(off, data, i, dt, nl * h * m, "attention").reshape(nl * h, m)
        out[i][:, tr[sel], tc[sel]] = v
        row_mask[i, first: n[i]] = True
    return _as_torch(out, dt).view(len(seq), nl, h, N, N), row_mask
