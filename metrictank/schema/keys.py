"""Cassandra table names, row keys and TTL math (spec section 5), and the rollup boundary.

These decide *where* a chunk lives. A Go node reading what we wrote (or the other way round) only finds the
chunk if table, row key and ts agree exactly, so each function mirrors one expression of Metrictank's
``store/cassandra`` or ``mdata`` code.
"""

from __future__ import annotations

import numpy as np

from .ids import AMKey

#: Row keys bucket chunks by 28 days of t0 (Go ``Month_sec``).
ROW_KEY_BUCKET = 2419200
#: Default ``window-factor`` of Metrictank's Cassandra store.
WINDOW_FACTOR = 20
TABLE_NAME_FORMAT = "metric_{}"


def table_for_ttl(ttl_seconds: int, window_factor: int = WINDOW_FACTOR) -> tuple[str, int]:
    """``("metric_<N>", W)``: N = 2^floor(log2(ttl hours)) (0 under an hour), W = N // window_factor + 1.

    Integer arithmetic equals Go's float ``Exp2(Floor(Log2(ttl/3600)))`` because powers of two are integers.
    """
    hours = int(ttl_seconds) // 3600
    n = 1 << (hours.bit_length() - 1) if hours >= 1 else 0
    return TABLE_NAME_FORMAT.format(n), n // window_factor + 1


def row_key(amkey: AMKey | str, t0: int) -> str:
    """``"<amkey>_<t0 // 2419200>"``."""
    return f"{amkey}_{t0 // ROW_KEY_BUCKET}"


def write_ttl(t0: int, span: int, ttl: int, now: int) -> int:
    """Cassandra ``USING TTL`` for a chunk: keep it ``ttl`` seconds past its last possible point.

    A result <= 0 means the chunk has already expired: skip the write.
    """
    return t0 + span + ttl - now


def row_keys_for_range(amkey: AMKey | str, start: int, end: int) -> list[str]:
    """Row keys covering reads of ``[start, end)``: buckets ``start // B`` to ``(end - 1) // B``; [] if empty."""
    if start >= end:
        return []
    prefix = str(amkey)
    return [f"{prefix}_{b}" for b in range(start // ROW_KEY_BUCKET, (end - 1) // ROW_KEY_BUCKET + 1)]


def read_lower_bound(start: int, max_chunkspan: int) -> int:
    """Lower ts bound of a range read: back by the largest chunkspan, but not before ``start``'s bucket.

    (Go computes ``start - span`` in uint32 and can wrap around for small ``start``; we clamp instead.)
    """
    return max(start - max_chunkspan, (start // ROW_KEY_BUCKET) * ROW_KEY_BUCKET)


def agg_boundary(ts: int, span: int) -> int:
    """Timestamp of the rollup point ``ts`` belongs to: the next multiple of ``span`` >= ``ts``.

    Equal to Go's ``AggBoundary`` for every ts >= 1 (Go's uint32 wrap makes ts == 0 meaningless there).
    """
    return -(-ts // span) * span


def agg_boundaries(ts: np.ndarray, span: int) -> np.ndarray:
    """Vectorised :func:`agg_boundary`, computed in int64; integer inputs keep their dtype."""
    a = np.asarray(ts)
    t = a.astype(np.int64, copy=False)
    out = -(-t // span) * span
    return out.astype(a.dtype, copy=False) if a.dtype.kind in "iu" else out
