"""Metrictank-compatible chunk codec (Gorilla/tsz compression), implemented in C.

Blob layout, as stored in Cassandra's ``data`` column:

- ``0x02 | span code (1 byte) | SeriesLong bitstream`` -- what Metrictank writes today and what we write.
- ``0x01 | span code | Series4h bitstream`` and ``0x00 | Series4h bitstream`` -- older formats, read only.

The span code indexes :data:`SPANS` (see :mod:`metrictank.chunk.spans`); a blob cannot carry any other span.

Why t0 is not in a SeriesLong blob: the chunk's t0 is already the clustering key of its Cassandra row (column
``ts``) and the ring slot in the tank, so Metrictank dropped the 32-bit copy from the stream. Every decode
therefore needs the t0 stored beside the blob; decoding with the wrong t0 shifts all timestamps. Series4h
streams do start with their own 32-bit t0, and for them the t0 argument is ignored (as in Metrictank).

SeriesLong bitstream (MSB first, last byte zero padded): per point a delta-of-delta timestamp (the delta before
the first point is taken to be 60 s, and the first delta is measured from t0), then the value: the first as
64 raw bits, later ones XORed with the previous value and written with a leading/trailing-zero window; the
window is reset when reusing it would waste 22 bits or more (SeriesLong only -- leaving that rule out changes
the bytes). The stream ends with the marker ``11111``. There is no point count.

Decisions where Metrictank leaves room:

- Encoding requires ``t0 <= ts[0]``, ``ts[0] > 0`` and strictly increasing timestamps, the invariants that
  Metrictank's ``Chunk.Push`` and tank uphold (its bare ``SeriesLong`` would wrap silently). Anything else raises
  :class:`ChunkError`. The span is not checked against the timestamps (neither does Metrictank).
- Encoding zero points gives the header plus the end marker (``02 cc f8``), as Go's Finish on an empty series.
- Metrictank's iterator also stops silently at the end of the bytes. Every blob Metrictank writes ends with its
  end marker, so here a missing marker is a truncation and raises :class:`ChunkError`; so do bits other than the
  zero padding after the marker, a value reusing a window that was never set, a window wider than 64 bits, and
  decoded timestamps that are not strictly increasing or leave the uint32 range. A bit flip can still turn a
  stream into another valid one; there is nothing in the format to detect that.
- Legacy Series4h: a 14-bit first delta that overflowed (chunks over 4.5 h) is repaired as Metrictank does
  without an interval hint: when the next delta would come out negative, 16384 s are added to the first delta.

Batch calls make one C call for all chunks and release the GIL while they work; decoded outputs are zero-copy
numpy views of memory allocated by the C code (bounded by the points actually decoded, each >= 2 bits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metrictank.chunk import _codec
from metrictank.chunk._codec import ChunkError
from metrictank.chunk.spans import _CODES, SPANS, span_code, span_of_code

__all__ = [
    "SPANS",
    "ChunkError",
    "decode_chunk",
    "decode_chunks",
    "encode_chunk",
    "encode_chunks",
    "span_code",
    "span_of_code",
]

_U32 = np.dtype(np.uint32)
_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)


def _as_u32(a: object, what: str) -> np.ndarray:
    """A contiguous uint32 vector of `a`, refusing values that would wrap instead of casting them."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ChunkError(f"{what} must be one-dimensional")
    if arr.dtype == _U32 or arr.size == 0:
        return np.ascontiguousarray(arr, dtype=_U32)
    if arr.dtype.kind not in "iu":
        raise ChunkError(f"{what} must be integers, got {arr.dtype}")
    if int(arr.min()) < 0 or int(arr.max()) > 0xFFFFFFFF:
        raise ChunkError(f"{what} must lie in [0, 2**32)")
    return arr.astype(_U32)


def _as_f64(a: object, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=_F64)
    if arr.ndim != 1:
        raise ChunkError(f"{what} must be one-dimensional")
    return arr


def _as_i64(a: object, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ChunkError(f"{what} must be a one-dimensional integer array")
    if arr.size and arr.dtype == np.uint64 and int(arr.max()) > 2**63 - 1:
        raise ChunkError(f"{what} out of range")
    return np.ascontiguousarray(arr, dtype=_I64)


def _code(span: int) -> int:
    code = _CODES.get(span)
    if code is None:
        raise ChunkError(f"invalid chunk span {span!r}: must be one of {SPANS}")
    return code


# The C functions take exactly-typed contiguous numpy vectors and raise TypeError for anything else; the
# wrappers try the fast path first and only convert (with range checks) when it is refused, which keeps the
# per-call cost of a single-chunk call low.


def encode_chunk(t0: int, span: int, ts: np.ndarray, values: np.ndarray) -> bytes:
    """Encode one finished chunk as Metrictank's format 0x02 blob (header, SeriesLong stream, end marker)."""
    code = _code(span)
    try:
        return _codec.encode(t0, code, ts, values)
    except TypeError:
        return _codec.encode(t0, code, _as_u32(ts, "ts"), _as_f64(values, "values"))


def decode_chunk(t0: int, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a blob of format 0x02, 0x01 or 0x00 into (uint32 timestamps, float64 values)."""
    ts, vals = _codec.decode(t0, blob)
    return np.frombuffer(ts, _U32), np.frombuffer(vals, _F64)


def encode_chunks(
    t0s: np.ndarray, span: int, counts: np.ndarray, ts: np.ndarray, values: np.ndarray
) -> list[bytes]:
    """Encode many chunks of one span in one C call; chunk i holds the next counts[i] points of ts/values."""
    code = _code(span)
    try:
        return _codec.encode_many(t0s, code, counts, ts, values)
    except TypeError:
        return _codec.encode_many(
            _as_u32(t0s, "t0s"), code, _as_i64(counts, "counts"), _as_u32(ts, "ts"), _as_f64(values, "values")
        )


def decode_chunks(t0s: np.ndarray, blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many blobs in one C call into (int64 per-chunk counts, flat uint32 ts, flat float64 values)."""
    try:
        counts, ts, vals = _codec.decode_many(t0s, blobs)
    except TypeError:
        counts, ts, vals = _codec.decode_many(_as_u32(t0s, "t0s"), blobs)
    return np.frombuffer(counts, _I64), np.frombuffer(ts, _U32), np.frombuffer(vals, _F64)
