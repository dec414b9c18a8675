"""The chunk-store contract shared by every backend.

The tank hands completed chunks to a store and must not wait for the database: `submit` only enqueues,
and slows the caller down only when the bounded queues are full (backpressure instead of unbounded
memory). Confirmation comes back through `on_saved`, which is what drives persist notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from metrictank.schema import ROW_KEY_BUCKET, read_lower_bound

SavedCallback = Callable[[Sequence["ChunkWrite"]], None]
Chunks = list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    """One completed chunk to persist.

    `partition` is not stored; it travels along so that the persist notifier can publish to the
    series' data partition once the write is confirmed.
    """

    amkey: str  # "<org>.<hex>" or "<id>_<method>_<span>"
    org: int
    t0: int
    span: int  # chunkspan seconds
    ttl: int  # archive TTL seconds
    data: bytes  # encoded chunk blob (0x02 ...)
    partition: int


@runtime_checkable
class ChunkStore(Protocol):
    """What the tank, the persist notifier and the query layer rely on.

    - `submit` keeps per-AMKey order: chunks of one key are written (and confirmed) in submission order,
      and a series and its rollups share a queue.
    - `on_saved` runs on the store's I/O thread with batches of confirmed chunks (chunks skipped because
      they had already expired are included, as Metrictank sends persist messages for them too). It
      must not block for long nor call `submit` (which may block on a full queue: deadlock).
    - `read` returns the chunks whose t0 lies in [start - max_span, end) within the row-key buckets of
      [start, end), t0 ascending; callers trim points outside [start, end).
    - `close` writes what it can within its timeout, then gives up on the rest (counted as abandoned).
    - `discard_pending` drops queued writes and stops retries (a demotion whose drain timed out), so that a
      demoted node does not write (and announce) chunks after the new primary took over.

    Counters for metrics: `chunks_written`, `write_errors`, `write_errors_by_reason` (dict), `write_retries`,
    `writes_dropped`, `writes_abandoned`; `stats` has them all plus gauges.
    """

    stats: dict
    write_errors_by_reason: dict[str, int]

    def submit(self, writes: Sequence[ChunkWrite], abort: Callable[[], bool] | None = None) -> int: ...

    def set_on_saved(self, cb: SavedCallback | None) -> None: ...

    def drain(self, timeout: float) -> int: ...

    def pending(self) -> int: ...

    def discard_pending(self, timeout: float = 5.0) -> int: ...

    def set_write_gate(self, gate: Callable[[], bool] | None) -> None: ...

    def register_stats(self, stats) -> None: ...

    def read(self, amkey: str, ttl: int, start: int, end: int, max_span: int) -> Chunks: ...

    def read_many(
        self, reqs: Sequence[tuple[str, int]], start: int, end: int, max_span: int
    ) -> dict[str, Chunks]: ...

    def close(self) -> None: ...


class StoreClosed(RuntimeError):
    """Raised by `submit` after `close`: silently dropping chunks would lose data without a trace."""

    accepted: int = 0  # how many of the submitted writes were queued before the close


def queue_index(amkey: str, org: int, n: int) -> int:
    """Metrictank's queue choice: (org + sum of the 16 md5 bytes of the MKey) % n.

    Only the series id part of the AMKey counts, so a raw series and all its rollups share one queue
    and are written in submission order. Keys that are not Metrictank ids (tests, foreign tools) fall
    back to the bytes of everything before the first '_' so the rule stays deterministic.
    """
    if n == 1:
        return 0
    dot = amkey.find(".")
    hexpart = amkey[dot + 1 : dot + 33]
    try:
        total = sum(bytes.fromhex(hexpart)) if dot >= 0 and len(hexpart) == 32 else -1
    except ValueError:
        total = -1
    if total < 0:
        total = sum(amkey.split("_", 1)[0].encode())
    return (org + total) % n


def read_bounds(start: int, max_span: int) -> int:
    """Lowest t0 a read of [start, ...) must include (schema.read_lower_bound, spec §5).

    `max_span` is the largest chunkspan the series may have used; when the caller does not know it
    (<= 0) we read the whole first 28-day bucket, which is what Metrictank itself does.
    """
    return read_lower_bound(start, max_span if max_span > 0 else ROW_KEY_BUCKET)
