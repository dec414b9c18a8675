"""MessagePack writers that pick the same encodings as Go's tinylib/msgp (v1.1, as vendored by Metrictank).

The generic Python ``msgpack`` packer encodes positive integers with the *unsigned* types, which is valid
MessagePack but not byte-identical to what Metrictank producers emit. Byte identity matters for golden tests
and for anything that hashes or compares payloads, so the few shapes the schema needs are written by hand.
Reading is left to the C ``msgpack`` unpacker: it accepts every encoding Go's reader accepts.
"""

from __future__ import annotations

import struct

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

_pack_b_b = struct.Struct(">Bb").pack
_pack_b_h = struct.Struct(">Bh").pack
_pack_b_i = struct.Struct(">Bi").pack
_pack_b_q = struct.Struct(">Bq").pack
_pack_b_B = struct.Struct(">BB").pack
_pack_b_H = struct.Struct(">BH").pack
_pack_b_I = struct.Struct(">BI").pack
_pack_b_Q = struct.Struct(">BQ").pack
_pack_b_d = struct.Struct(">Bd").pack

# Small non-negative ints dominate (intervals, orgs, tag counts): precompute their one-byte forms.
_FIXINT = [bytes((i,)) for i in range(128)]


def w_int(i: int) -> bytes:
    """Go ``AppendInt64``: fixint, else the smallest *signed* type (positive values never use int8)."""
    if 0 <= i <= 0x7F:
        return _FIXINT[i]
    if i >= 0:
        if i <= 0x7FFF:
            return _pack_b_h(0xD1, i)
        if i <= 0x7FFFFFFF:
            return _pack_b_i(0xD2, i)
        if i <= _I64_MAX:
            return _pack_b_q(0xD3, i)
        raise ValueError(f"integer {i} does not fit in int64")
    if i >= -32:
        return bytes((i & 0xFF,))
    if i >= -0x80:
        return _pack_b_b(0xD0, i)
    if i >= -0x8000:
        return _pack_b_h(0xD1, i)
    if i >= -0x80000000:
        return _pack_b_i(0xD2, i)
    if i >= _I64_MIN:
        return _pack_b_q(0xD3, i)
    raise ValueError(f"integer {i} does not fit in int64")


def w_uint(u: int) -> bytes:
    """Go ``AppendUint64``: fixint, else the smallest *unsigned* type."""
    if 0 <= u <= 0x7F:
        return _FIXINT[u]
    if u < 0:
        raise ValueError(f"unsigned integer expected, got {u}")
    if u <= 0xFF:
        return _pack_b_B(0xCC, u)
    if u <= 0xFFFF:
        return _pack_b_H(0xCD, u)
    if u <= 0xFFFFFFFF:
        return _pack_b_I(0xCE, u)
    if u <= 0xFFFFFFFFFFFFFFFF:
        return _pack_b_Q(0xCF, u)
    raise ValueError(f"integer {u} does not fit in uint64")


def w_float64(f: float) -> bytes:
    """Go ``AppendFloat64``: always the 9-byte float64 form, even for integral values."""
    return _pack_b_d(0xCB, f)


def w_str_bytes(b: bytes) -> bytes:
    """Go ``AppendString`` for an already UTF-8 encoded string: fixstr, str8, str16 or str32."""
    n = len(b)
    if n <= 31:
        return bytes((0xA0 | n,)) + b
    if n <= 0xFF:
        return _pack_b_B(0xD9, n) + b
    if n <= 0xFFFF:
        return _pack_b_H(0xDA, n) + b
    return _pack_b_I(0xDB, n) + b


def w_str(s: str) -> bytes:
    """Encode ``s`` as a msgpack str; surrogate escapes map back to the original undecodable bytes."""
    return w_str_bytes(s.encode("utf-8", "surrogateescape"))


def w_bin(b: bytes) -> bytes:
    """Go ``AppendBytes``: bin8 / bin16 / bin32 (never fixstr)."""
    n = len(b)
    if n <= 0xFF:
        return _pack_b_B(0xC4, n) + b
    if n <= 0xFFFF:
        return _pack_b_H(0xC5, n) + b
    return _pack_b_I(0xC6, n) + b


def w_array_header(n: int) -> bytes:
    """Go ``AppendArrayHeader``: fixarray, array16 or array32."""
    if n <= 15:
        return bytes((0x90 | n,))
    if n <= 0xFFFF:
        return _pack_b_H(0xDC, n)
    return _pack_b_I(0xDD, n)


def is_int(v: object) -> bool:
    """True for msgpack integers; bools are ints in Python but a distinct type on the wire."""
    return type(v) is int


def key_str(k: object) -> str | None:
    """Map keys may be str or bin in Go's reader (``ReadMapKeyZC``); anything else cannot match a field."""
    if type(k) is str:
        return k
    if type(k) is bytes:
        return k.decode("utf-8", "surrogateescape")
    return None
