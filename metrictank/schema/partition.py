"""Kafka partition selection, bit-for-bit as Metrictank producers do it (spec section 2, "Partitioning").

A consumer never needs this (it reads whatever partitions it is assigned), but every producer does, and a
series hashed to the wrong partition is invisible to the nodes that own it. Two Go details make a naive port
wrong: the FNV schemes hash *code points* (Go's ``range`` over a string), not bytes, and Go's ``%`` truncates
toward zero, so the remainder is taken on ``abs(int32(h))``. ``bySeriesWithTags`` uses XXH64 and Lamping-Veach
jump hash with Go's float64 arithmetic, reproduced operation for operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import xxhash

METHODS: tuple[str, ...] = ("byOrg", "bySeries", "bySeriesWithTags", "bySeriesWithTagsFnv")
DEFAULT_METHOD = "bySeries"

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_JUMP_MUL = 2862933555777941757
_TWO31 = float(1 << 31)
_BATCH = 4096  # strings per vectorised FNV pass: bounds the (rows x longest string) scratch matrix


def _check(method: str, partitions: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; expected one of {', '.join(METHODS)}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")


def fnv1a32_runes(s: str) -> int:
    """FNV-1a 32 over code points, each XORed whole (Go's ``range`` over a string).

    A surrogate stands for a byte that was not valid UTF-8 (``surrogateescape``); Go decodes such a byte as
    U+FFFD, so that is what is hashed.
    """
    h = _FNV_OFFSET
    for ch in s:
        c = ord(ch)
        if 0xD800 <= c <= 0xDFFF:
            c = 0xFFFD
        h = ((h ^ c) * _FNV_PRIME) & _M32
    return h


def fnv1a32_bytes(b: bytes) -> int:
    """Plain byte-wise FNV-1a 32 (Go's ``hash/fnv``), used for ``byOrg``."""
    h = _FNV_OFFSET
    for c in b:
        h = ((h ^ c) * _FNV_PRIME) & _M32
    return h


def _go_mod_abs(h: int, partitions: int) -> int:
    """``p = int32(h) % n; if p < 0 { p = -p }`` — equal to ``abs(int32(h)) % n`` computed on Python ints."""
    v = h - (1 << 32) if h & 0x80000000 else h
    return abs(v) % partitions


def jump_hash(key: int, buckets: int) -> int:
    """Lamping-Veach jump consistent hash with the float64 steps of ``github.com/dgryski/go-jump``."""
    b = -1
    j = 0
    key &= _M64
    while j < buckets:
        b = j
        key = (key * _JUMP_MUL + 1) & _M64
        j = int(float(b + 1) * (_TWO31 / float((key >> 33) + 1)))
    return b


def sorted_tag_string(name: str, tags: Iterable[str]) -> str:
    """``name;tag1;tag2`` with tags in byte order and ``name=...`` tags left out (Go ``writeSortedTagString``)."""
    parts = [name]
    for t in sorted(tags, key=lambda t: t.encode("utf-8", "surrogateescape")):
        if len(t) > 5 and t.startswith("name="):
            continue
        parts.append(t)
    return ";".join(parts)


@lru_cache(maxsize=1 << 16)
def _partition_cached(method: str, org: int, name: str, tags: tuple[str, ...], partitions: int) -> int:
    if method == "bySeries":
        return _go_mod_abs(fnv1a32_runes(name), partitions)
    if method == "byOrg":
        return _go_mod_abs(fnv1a32_bytes((org & _M32).to_bytes(4, "little")), partitions)
    key = sorted_tag_string(name, tags)
    if method == "bySeriesWithTagsFnv":
        return _go_mod_abs(fnv1a32_runes(key), partitions)
    return jump_hash(xxhash.xxh64_intdigest(key.encode("utf-8", "surrogateescape")), partitions)


def partition(method: str, org: int, name: str, tags: Sequence[str] | None, partitions: int) -> int:
    """The partition a Metrictank producer using ``method`` sends this series to.

    Results are memoised: producers ask for the same series every interval.
    """
    _check(method, partitions)
    return _partition_cached(method, org, name, tuple(tags or ()), partitions)


# --------------------------------------------------------------------------------------------- vectorised


def _fnv_runes_many(strings: list[str]) -> np.ndarray:
    """Rune-wise FNV-1a over many strings at once: one numpy pass per character position."""
    out = np.empty(len(strings), dtype=np.uint32)
    for lo in range(0, len(strings), _BATCH):
        chunk = strings[lo : lo + _BATCH]
        lens = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        order = np.argsort(-lens, kind="stable")  # longest first: active rows are always a prefix
        lens_sorted = lens[order]
        width = int(lens_sorted[0]) if len(chunk) else 0
        h = np.full(len(chunk), _FNV_OFFSET, dtype=np.uint32)
        if width:
            cps = (
                np.array([chunk[i] for i in order], dtype=f"<U{width}")
                .view(np.uint32)
                .reshape(len(chunk), width)
            )
            cps = np.where((cps >= 0xD800) & (cps <= 0xDFFF), np.uint32(0xFFFD), cps)
            # active[j] = number of strings longer than j
            active = np.searchsorted(-lens_sorted, -np.arange(width), side="left")
            prime = np.uint32(_FNV_PRIME)
            for j in range(width):
                k = int(active[j])
                h[:k] = (h[:k] ^ cps[:k, j]) * prime
        out[lo + order] = h
    return out


def _go_mod_abs_many(h: np.ndarray, partitions: int) -> np.ndarray:
    return (np.abs(h.view(np.int32).astype(np.int64)) % partitions).astype(np.int32)


def jump_hash_many(keys: np.ndarray, buckets: int) -> np.ndarray:
    """Vectorised :func:`jump_hash`; iterations are O(log buckets), each a few numpy ops over live keys."""
    key = np.asarray(keys, dtype=np.uint64).copy()
    b = np.full(key.shape, -1, dtype=np.int64)
    j = np.zeros(key.shape, dtype=np.int64)
    live = np.arange(key.size)
    mul = np.uint64(_JUMP_MUL)
    one = np.uint64(1)
    while live.size:
        b[live] = j[live]
        k = key[live] * mul + one
        key[live] = k
        denom = ((k >> np.uint64(33)) + one).astype(np.float64)
        j[live] = ((b[live] + 1).astype(np.float64) * (_TWO31 / denom)).astype(np.int64)
        live = live[j[live] < buckets]
    return b.astype(np.int32)


def partition_many(
    method: str,
    orgs: int | Sequence[int] | np.ndarray,
    names: Sequence[str],
    tags: Sequence[Sequence[str]] | None,
    partitions: int,
) -> np.ndarray:
    """Partitions for many series at once (int32 array), for producers that route whole batches.

    ``orgs`` may be a scalar; ``tags`` may be None (no tags anywhere). Results equal :func:`partition`.
    """
    _check(method, partitions)
    n = len(names)
    if method == "byOrg":
        org_arr = np.broadcast_to(np.asarray(orgs, dtype=np.int64), (n,)).astype(np.uint32)
        b = org_arr.astype("<u4").view(np.uint8).reshape(n, 4)
        h = np.full(n, _FNV_OFFSET, dtype=np.uint32)
        for j in range(4):
            h = (h ^ b[:, j]) * np.uint32(_FNV_PRIME)
        return _go_mod_abs_many(h, partitions)
    if method == "bySeries":
        return _go_mod_abs_many(_fnv_runes_many(list(names)), partitions)
    if tags is None:
        keys = list(names)
    else:
        keys = [sorted_tag_string(nm, tg) if tg else nm for nm, tg in zip(names, tags, strict=True)]
    if method == "bySeriesWithTagsFnv":
        return _go_mod_abs_many(_fnv_runes_many(keys), partitions)
    digests = np.fromiter(
        (xxhash.xxh64_intdigest(k.encode("utf-8", "surrogateescape")) for k in keys), dtype=np.uint64, count=n
    )
    return jump_hash_many(digests, partitions)
