"""Compact codes for teacher signals: bit-packed ids and three quantizers, each vectorised (numpy).

Why each code is safe (the fidelity tests hold them to 1e-3 relative on every loss):

* ``pack_bits``: lossless; top-k ids take ``ceil(log2(vocab))`` bits (15 for 32,000 tokens).
* log-prob gaps: a position keeps its top log-prob exactly and the gaps ``g_j = lp_1 - lp_j`` of
  the sorted rest as 8-bit codes on a companded scale ``1 - exp(-g / TAU)``, scaled to the
  position's largest gap (stored too). Steps are fine at the head, where the mass (and so the
  KD loss) is, and coarse in the far tail; the order of the top-k survives.
* attention, cube-root code: ``round(a^(1/3) * (2^bits - 1))``. The error grows like
  ``a^(2/3)``, so the many small probabilities of a row stay accurate (the exponent that kept
  both the MSE and the KL attention losses closest at 8 bits, next to 1/2, 2/5, 3/10 and 1/4).
* hidden, int8 + outliers: the ``m`` largest-magnitude dims of each vector are kept as float32
  (real LMs carry a few huge outlier features; bf16 alone misses the bound on them) and the rest is absmax int8 per vector, so
  one outlier does not coarsen the step of the other 1,000 dims.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TAU = 12.0  # log-prob gap companding scale, nats (4 and 8 kept KD 3-10x further from fp32 at 8 bits)
GAP_LEVELS = 255


def bits_for(n: int) -> int:
    """Bits that hold every integer in [0, n)."""
    return max(1, int(n - 1).bit_length())


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers < 2**bits -> a little-endian bit stream of ``bits`` bits each."""
    v = np.ascontiguousarray(values, dtype=np.uint32).ravel()
    if v.size and int(v.max()) >> bits:
        raise ValueError(f"pack_bits: value {int(v.max())} does not fit in {bits} bits")
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(buf: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits`` for ``bits`` <= 24: each value read from one 32-bit window."""
    return unpack_bits_at(buf, np.arange(count, dtype=np.int64) * bits, bits)


def unpack_bits_at(buf: np.ndarray, start: np.ndarray, bits: int) -> np.ndarray:
    """The ``bits``-bit values whose bit streams start at bit offsets ``start`` (any shape) of ``buf``."""
    if bits > 24:
        raise ValueError(f"unpack_bits: {bits} bits per value is more than the 24 supported")
    byte = start >> 3
    padded = np.zeros(buf.size + 4, dtype=np.uint32)
    padded[: buf.size] = buf
    word = padded[byte] | (padded[byte + 1] << 8) | (padded[byte + 2] << 16) | (padded[byte + 3] << 24)
    return (word >> (start & 7).astype(np.uint32)) & np.uint32((1 << bits) - 1)


# ---- log-probs: exact head, companded 8-bit gaps -------------------------------------------------

def encode_logprob_gaps(logp: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, k] sorted log-probs -> (head [n], largest gap [n], uint8 codes [n, k-1]), float32 / uint8.

    numpy, not torch: on small per-row arrays torch's thread pool costs more than the arithmetic.
    """
    lp = logp.float().numpy()
    head = lp[:, 0].copy()
    gaps = np.maximum(head[:, None] - lp[:, 1:], 0)
    gmax = gaps[:, -1].copy() if gaps.shape[1] else np.zeros_like(head)
    top = -np.expm1(-gmax / TAU)  # companded value of the largest gap
    c = -np.expm1(-gaps / TAU) / np.maximum(top, 1e-30)[:, None]
    codes = np.clip(np.rint(c * GAP_LEVELS), 0, GAP_LEVELS).astype(np.uint8)
    return head, gmax, codes


def decode_logprob_gaps(head: np.ndarray, gmax: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_logprob_gaps``: float32 [n, k] log-probs, sorted descending."""
    top = -np.expm1(-gmax.astype(np.float32) / TAU)
    c = codes.astype(np.float32) * (top[:, None] / GAP_LEVELS)
    gaps = -TAU * np.log1p(-np.minimum(c, 1 - 1e-7))
    out = np.empty((head.shape[0], codes.shape[1] + 1), dtype=np.float32)
    out[:, 0] = head
    out[:, 1:] = head[:, None].astype(np.float32) - gaps
    return out


# ---- attention: cube-root code -----------------------------------------------------------------

def cbrt_size(count: int, bits: int) -> int:
    return count * (1 if bits <= 8 else 2)


def encode_cbrt(probs: np.ndarray, bits: int) -> bytes:
    """Probabilities in [0, 1] -> codes round(p^(1/3) * (2^bits - 1)), one byte each up to 8 bits.

    Wider codes are stored as two byte planes (all low bytes, then all high bytes) rather than
    bit-packed: most probabilities of a row are small, so the high plane is mostly zeros and
    Parquet's zstd takes it down to a fraction of its size, which it cannot do to a bit stream.
    """
    levels = (1 << bits) - 1
    codes = np.rint(np.cbrt(np.clip(probs.astype(np.float32), 0.0, 1.0)) * levels).ravel()
    if bits <= 8:
        return codes.astype(np.uint8).tobytes()
    c = codes.astype(np.uint16)
    return (c & 0xFF).astype(np.uint8).tobytes() + (c >> 8).astype(np.uint8).tobytes()


def decode_cbrt(buf: np.ndarray, bits: int, count: int) -> np.ndarray:
    if bits <= 8:
        codes = buf.astype(np.float32)
    else:
        codes = buf[:count].astype(np.float32) + 256.0 * buf[count:].astype(np.float32)
    r = codes * np.float32(1.0 / ((1 << bits) - 1))
    return r * r * r


# ---- hidden states: int8 with per-vector outliers kept ------------------------------------------

def quantize_int8(x: torch.Tensor, outliers: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[..., d] -> (int8 values, float32 scales [...], outlier dims uint16 [..., m], float32 outlier values [..., m]).

    The ``outliers`` largest-magnitude dims of each vector are taken out (their int8 slot is 0) and
    returned exactly; the rest is absmax int8 per vector: x ~= q * scale, then outliers put back.
    """
    x = x.float().numpy().copy()
    if outliers:
        idx = np.sort(np.argpartition(-np.abs(x), outliers - 1, axis=-1)[..., :outliers], axis=-1)
        vals = np.take_along_axis(x, idx, axis=-1)
        np.put_along_axis(x, idx, 0.0, axis=-1)
    else:
        idx, vals = np.zeros(x.shape[:-1] + (0,), dtype=np.int64), x[..., :0]
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-12) / np.float32(127.0)
    q = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
    return q, scale[..., 0].astype(np.float32), idx.astype(np.uint16), vals.astype(np.float32)


def dequantize_int8(q: np.ndarray, scale: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Inverse of ``quantize_int8``: float32 [..., d]."""
    out = q.astype(np.float32) * scale[..., None]
    if idx.shape[-1]:
        np.put_along_axis(out, idx.astype(np.int64), vals.astype(np.float32), axis=-1)
    return out
