"""Series keys: the binary MKey form used on the hot path, and its id-string form.

A series is identified by the 16 md5 bytes of its id plus an org. The ingest path receives MetricPoints
that carry only that binary key, so the index routes by `(k0, k1, org)`: the md5 split into two
little-endian uint64 words (`np.frombuffer(md5, '<u8')`) and the org as uint32. Keeping the key as three
fixed-width integers lets a whole batch be hashed and compared with numpy instead of per-point Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

# Odd 64-bit multipliers (golden ratio and two splitmix64 constants). md5 words are already uniform,
# but ids are trusted as sent, so producers that invent ids (all-zero prefixes, counters) must not
# collapse onto a few slots: every word is mixed in.
_C1 = 0x9E3779B97F4A7C15
_C2 = 0xBF58476D1CE4E5B9
_C3 = 0x94D049BB133111EB
_NC1, _NC2, _NC3 = np.uint64(_C1), np.uint64(_C2), np.uint64(_C3)
_S29, _S32 = np.uint64(29), np.uint64(32)


def parse_id(id: str) -> tuple[int, int, int]:
    """Split an id string `"<org>.<32 hex>"` into `(org, k0, k1)`.

    The org is the one written in the id (Metrictank derives the MKey from the id, never from the
    MetricData's OrgId field), returned as a Python int, possibly negative for the public org -1.
    """
    org_s, sep, hex_s = id.partition(".")
    if not sep or len(hex_s) != 32:
        raise ValueError(f"invalid series id {id!r}: want '<org>.<32 hex digits>'")
    try:
        org = int(org_s)
        md5 = bytes.fromhex(hex_s)
        if len(md5) != 16:  # fromhex skips whitespace
            raise ValueError
    except ValueError:
        raise ValueError(f"invalid series id {id!r}: want '<org>.<32 hex digits>'") from None
    return org, int.from_bytes(md5[:8], "little"), int.from_bytes(md5[8:], "little")


def parse_ids(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch `parse_id`: (org int64, k0 uint64, k1 uint64) arrays; one hex decode for the batch."""
    n = len(ids)
    if n == 0:
        e = np.zeros(0, np.uint64)
        return np.zeros(0, np.int64), e, e
    parts = [i.partition(".") for i in ids]
    try:
        if any(len(p[2]) != 32 or not p[1] for p in parts):
            raise ValueError
        orgs = np.fromiter((int(p[0]) for p in parts), np.int64, n)
        md5 = bytes.fromhex("".join(p[2] for p in parts))
        if len(md5) != 16 * n:
            raise ValueError
    except ValueError:
        bad = next((i for i in ids if not _valid(i)), ids[0])
        raise ValueError(f"invalid series id {bad!r}: want '<org>.<32 hex digits>'") from None
    k0, k1 = split_md5(md5)
    return orgs, k0, k1


def _valid(id: str) -> bool:
    try:
        parse_id(id)
    except ValueError:
        return False
    return True


def format_id(org: int, k0: int, k1: int) -> str:
    """The id string of a key, lowercase hex as Metrictank prints it."""
    return f"{org}.{(k0 & M64).to_bytes(8, 'little').hex()}{(k1 & M64).to_bytes(8, 'little').hex()}"


def split_md5(md5: np.ndarray | bytes) -> tuple[np.ndarray, np.ndarray]:
    """`(k0, k1)` arrays from n concatenated 16-byte md5 keys (bytes or a uint8 array of n*16)."""
    words = np.frombuffer(md5 if isinstance(md5, bytes | bytearray | memoryview) else md5.tobytes(), "<u8")
    return words[0::2], words[1::2]


def hash_key(k0: int, k1: int, org: int) -> int:
    """Scalar twin of `hash_keys`; the two must agree bit for bit (they address the same table)."""
    h = (k0 * _C1 ^ k1 * _C2 ^ (org & M32) * _C3) & M64
    h ^= h >> 32
    h = (h * _C1) & M64
    return h ^ (h >> 29)


def hash_keys(k0: np.ndarray, k1: np.ndarray, org: np.ndarray) -> np.ndarray:
    """64-bit mix of a batch of keys (uint64 wrap-around arithmetic)."""
    with np.errstate(over="ignore"):
        h = k0 * _NC1
        h ^= k1 * _NC2
        h ^= org.astype(np.uint64) * _NC3
        h ^= h >> _S32
        h *= _NC1
        h ^= h >> _S29
    return h
