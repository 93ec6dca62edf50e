"""Tensor <-> bytes for teacher signals, and whole-batch decoding straight into padded tensors.

Each signal of a row is one raw little-endian buffer whose shape follows from the row's
``seq_len``/``prompt_len`` and the manifest, so a batch decodes with one contiguous view of the
Arrow column's data buffer and a few slice copies per row: no Python objects per element, no
dense vocabulary. Attention keeps only what a causal model can have (the lower triangle, keys
<= query) and, with ``attention_rows: answer``, only the query rows where a loss is computed.
Top-k ids are bit-packed to the vocabulary's width; log-probs, hidden states and attention may
take the compact codes of ``compress`` (chosen per signal in ``teacher_data``, named in the
manifest's ``columns``). Decoding is NumPy only (``decode_arrays``; torch is imported where a
tensor is made), so a process that only decodes (a trial's batch-making task) starts without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from wbvb.store import compress

if TYPE_CHECKING:
    import torch

# on-disk element types; bfloat16 travels as its uint16 bit pattern
NP_DTYPES = {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16, "int8": np.int8,
             "uint8": np.uint8, "uint16": np.uint16, "int32": np.int32}


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
    import torch

    if dtype == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.uint16).numpy()
    return t.to(getattr(torch, dtype)).contiguous().numpy()


def pack_attention(attn: np.ndarray, first_row: int) -> np.ndarray:
    """[layers, heads, n, n] -> [layers, heads, entries]: lower triangle of rows first_row..n-1."""
    n = attn.shape[-1]
    r, c = np.tril_indices(n)
    sel = slice(tri_count(first_row), tri_count(n))
    return attn[..., r[sel], c[sel]]


def encode_signals(prompt_len: int, topk_ids, topk_logprobs, hidden, attention, layout: dict) -> dict:
    """One row's teacher tensors (already cut to the row and strided) -> column bytes."""
    out = {"topk_ids": compress.pack_bits(topk_ids.numpy(), layout["id_bits"])}
    if layout["logprobs"] == "gaps8":
        head, gmax, codes = compress.encode_logprob_gaps(topk_logprobs)
        out["topk_logprobs"] = head.tobytes() + gmax.tobytes() + codes.tobytes()
    else:
        out["topk_logprobs"] = to_numpy(topk_logprobs, layout["logprobs"]).tobytes()
    if layout["hidden"] == "int8":
        q, scale, idx, vals = compress.quantize_int8(hidden, layout["hidden_outliers"])
        out["hidden"] = q.tobytes()
        out["hidden_scale"] = scale.tobytes() + idx.tobytes() + vals.tobytes()
    else:
        out["hidden"], out["hidden_scale"] = to_numpy(hidden, layout["hidden"]).tobytes(), b""
    first = first_attention_row(prompt_len, layout["attention_stride"], layout["attention_rows"])
    if layout["attention_bits"]:
        out["attention"] = compress.encode_cbrt(pack_attention(attention.float().numpy(), first),
                                                layout["attention_bits"])
    else:  # cast first: less to gather
        out["attention"] = pack_attention(to_numpy(attention, layout["attention"]), first).tobytes()
    return out


def layout_of(manifest: dict) -> dict:
    """The per-column encodings a manifest names, flattened for the encoder and decoder."""
    c = manifest["columns"]
    return {"id_bits": c["topk_ids"]["bits"], "k": c["topk_ids"]["k"],
            "logprobs": "gaps8" if c["topk_logprobs"].get("encoding") == "gaps8" else c["topk_logprobs"]["dtype"],
            "hidden": c["hidden"]["dtype"], "hidden_outliers": c["hidden"].get("outliers", 0),
            "attention": c["attention"]["dtype"],
            "attention_bits": c["attention"]["bits"] if c["attention"].get("encoding") == "cbrt" else 0,
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


def _row_bytes(offsets, data, i: int, nbytes: int, column: str, what: str) -> np.ndarray:
    raw = data[offsets[i]: offsets[i + 1]]
    if raw.size != nbytes:
        raise BadValues(i, column, f"holds {raw.size} bytes, expected {what} = {nbytes} bytes")
    return raw


def _row_parts(offsets, data, i: int, parts: list[tuple[str, int]], column: str) -> list[np.ndarray]:
    """A row's buffer split into typed arrays: ``parts`` lists (dtype, count) in storage order."""
    widths = [np.dtype(NP_DTYPES[dt]).itemsize * n for dt, n in parts]
    what = " + ".join(f"{n} {dt}" for dt, n in parts)
    raw = _row_bytes(offsets, data, i, sum(widths), column, what + " values")
    out, at = [], 0
    for (dt, n), w in zip(parts, widths):
        out.append(raw[at: at + w].view(NP_DTYPES[dt]) if n else np.zeros(0, NP_DTYPES[dt]))
        at += w
    return out


def _row_values(offsets, data, i: int, dtype: str, count: int, column: str) -> np.ndarray:
    return _row_parts(offsets, data, i, [(dtype, count)], column)[0]


BFLOAT16 = "_bfloat16"  # key of a decoded batch listing its arrays that hold bfloat16 bit patterns (uint16)


def as_tensors(arrays: dict) -> dict:
    """A decoded batch's arrays as torch tensors sharing their memory (bfloat16 viewed as such).
    Arrays out of Ray's object store are read-only and stay so: nothing in a trial writes into a batch."""
    import warnings

    import torch

    bf16 = set(arrays.get(BFLOAT16, ()))
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for key, value in arrays.items():
            if key == BFLOAT16:
                continue
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
                if key in bf16:
                    value = value.view(torch.bfloat16)
            out[key] = value
    return out


def decode_batch(table: pa.Table, manifest: dict, pad_id: int) -> dict:
    """Arrow rows -> the padded batch a trial consumes, as tensors (see ``batches.collate`` for the keys)."""
    return as_tensors(decode_arrays(table, manifest, pad_id))


def decode_arrays(table: pa.Table, manifest: dict, pad_id: int) -> dict:
    """Arrow rows -> the padded batch as NumPy arrays (``as_tensors`` makes it tensors).

    Signals are decoded only for the columns present, so column projection carries through.
    """
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
    if not np.array_equal(np.diff(id_off), seq):
        i = int(np.flatnonzero(np.diff(id_off) != seq)[0])
        raise BadValues(i, "input_ids", f"holds {id_off[i + 1] - id_off[i]} ids, expected seq_len = {seq[i]}")
    input_ids[attention_mask] = flat_ids[id_off[0]: id_off[-1]]  # rows are consecutive in the ids buffer
    batch = {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64), "answer_mask": answer_mask,
             "example_ids": table.column("example_id").to_pylist()}
    names = table.column_names
    if "topk_ids" in names:
        batch["topk_ids"] = _decode_ids(table, lay, seq)
    if "topk_logprobs" in names:
        batch["topk_logprobs"] = _decode_logprobs(table, lay, seq)
    if "hidden" in names:
        batch["hidden"] = _decode_hidden(table, manifest, seq)
    if "attention" in names:
        batch["attention"], row_mask = _decode_attention(table, manifest, seq, prompt)
        if lay["attention_rows"] == "answer":
            batch["attention_row_mask"] = row_mask
    stored = {"topk_logprobs": lay["logprobs"], "hidden": lay["hidden"], "attention": lay["attention"]}
    batch[BFLOAT16] = [k for k, dt in stored.items() if dt == "bfloat16" and k in batch and batch[k].dtype == np.uint16]
    return batch


def _sized_rows(table: pa.Table, column: str, need: np.ndarray, what) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a binary column whose row i must hold ``need[i]`` bytes (``what(i)``
    says what those bytes are, for the error)."""
    off, data = _binary_parts(table.column(column))
    have = np.diff(off)
    bad = np.flatnonzero(have != need)
    if bad.size:
        i = int(bad[0])
        raise BadValues(i, column, f"holds {have[i]} bytes, expected {what(i)} = {need[i]} bytes")
    return off, data


def _positions(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, position) of every token of every row, rows in order: how per-token values are laid out."""
    return np.nonzero(np.arange(int(seq.max()))[None, :] < seq[:, None])


def _decode_ids(table: pa.Table, lay: dict, seq: np.ndarray) -> np.ndarray:
    """Bit-packed ids of all rows in one vectorised read (each row's bit stream starts on a byte)."""
    k, bits = lay["k"], lay["id_bits"]
    out = np.zeros((len(seq), int(seq.max()), k), dtype=np.int32)
    need = compress.packed_size(seq * k, bits)
    off, data = _sized_rows(table, "topk_ids", need, lambda i: f"{seq[i] * k} values of {bits} bits")
    rows, pos = _positions(seq)
    start = (off[rows] * 8)[:, None] + (pos[:, None] * k + np.arange(k)[None, :]) * bits
    out[rows, pos] = compress.unpack_bits_at(data, start, bits)
    return out


def _decode_logprobs(table: pa.Table, lay: dict, seq: np.ndarray) -> np.ndarray:
    """All rows at once: stored values are consecutive rows of [seq_len, k] (gaps8: per row, the
    head [n] float32, the largest gap [n] float32, then the codes [n, k-1] uint8)."""
    k, dt = lay["k"], lay["logprobs"]
    gaps = dt == "gaps8"
    out = np.zeros((len(seq), int(seq.max()), k), dtype=np.float32 if gaps else NP_DTYPES[dt])
    rows, pos = _positions(seq)
    if gaps:
        need = seq * (8 + (k - 1))
        off, data = _sized_rows(table, "topk_logprobs", need,
                                lambda i: f"{seq[i]} float32 + {seq[i]} float32 + {seq[i] * (k - 1)} uint8 values")
        base, n = off[rows], seq[rows]
        head = _gather(data, base + 4 * pos, 4).view(np.float32).ravel()
        gmax = _gather(data, base + 4 * (n + pos), 4).view(np.float32).ravel()
        codes = _gather(data, base + 8 * n + pos * (k - 1), k - 1)
        out[rows, pos] = compress.decode_logprob_gaps(head, gmax, codes)
        return out
    width = np.dtype(NP_DTYPES[dt]).itemsize
    off, data = _sized_rows(table, "topk_logprobs", seq * k * width, lambda i: f"{seq[i] * k} {dt} values")
    out[rows, pos] = data[off[0]: off[-1]].view(NP_DTYPES[dt]).reshape(-1, k)
    return out


def _gather(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """[len(starts), width] bytes of ``data`` from each start."""
    return data[starts[:, None] + np.arange(width)[None, :]]


def _decode_hidden(table: pa.Table, manifest: dict, seq: np.ndarray) -> np.ndarray:
    c, s = manifest["columns"]["hidden"], manifest["strides"]["hidden"]
    nl, d, dt = len(c["layers"]), c["dim"], c["dtype"]
    m = c.get("outliers", 0)
    n = strided(seq, s)
    quant = dt == "int8"
    out = np.zeros((len(seq), nl, int(n.max()), d), dtype=np.float32 if quant else NP_DTYPES[dt])
    off, data = _binary_parts(table.column("hidden"))
    if quant:
        soff, sdata = _binary_parts(table.column("hidden_scale"))
    for i in range(len(seq)):
        v = _row_values(off, data, i, dt, nl * n[i] * d, "hidden").reshape(nl, n[i], d)
        if quant:
            vecs = nl * n[i]
            scale, idx, vals = _row_parts(soff, sdata, i,
                                          [("float32", vecs), ("uint16", vecs * m), ("float32", vecs * m)],
                                          "hidden_scale")
            out[i, :, : n[i]] = compress.dequantize_int8(v, scale.reshape(nl, n[i]), idx.reshape(nl, n[i], m),
                                                         vals.reshape(nl, n[i], m))
        else:
            out[i, :, : n[i]] = v
    return out


def _decode_attention(table: pa.Table, manifest: dict, seq: np.ndarray, prompt: np.ndarray):
    c, s = manifest["columns"]["attention"], manifest["strides"]["attention"]
    lay = layout_of(manifest)
    nl, h, dt, rows, bits = len(c["layers"]), c["heads"], c["dtype"], lay["attention_rows"], lay["attention_bits"]
    n = strided(seq, s)
    N = int(n.max())
    out = np.zeros((len(seq), nl * h, N, N), dtype=np.float32 if bits else NP_DTYPES[dt])
    row_mask = np.zeros((len(seq), N), dtype=bool)
    tr, tc = np.tril_indices(N)
    off, data = _binary_parts(table.column("attention"))
    for i in range(len(seq)):
        first = first_attention_row(int(prompt[i]), s, rows)
        sel = slice(tri_count(first), tri_count(n[i]))
        count = nl * h * (sel.stop - sel.start)
        if bits:
            raw = _row_bytes(off, data, i, compress.cbrt_size(count, bits), "attention", f"{count} codes of {bits} bits")
            v = compress.decode_cbrt(raw, bits, count)
        else:
            v = _row_values(off, data, i, dt, count, "attention")
        out[i][:, tr[sel], tc[sel]] = v.reshape(nl * h, -1)
        row_mask[i, first: n[i]] = True
    return out.reshape(len(seq), nl, h, N, N), row_mask
