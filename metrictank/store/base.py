"""The chunk-store contract shared by every backend.

The tank hands completed chunks to a store and must not wait for the database: `submit` only enqueues,
and slows the caller down only when the bounded queues are full (backpressure instead of unbounded
memory). Confirmation comes back through `on_saved`, which is what drives persist notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
    """What the tank, the persist notifier and the query layer rely on."""

    stats: dict

    def submit(self, writes: Sequence[ChunkWrite]) -> None: ...

    def set_on_saved(self, cb: SavedCallback | None) -> None: ...

    def drain(self, timeout: float) -> int: ...

    def pending(self) -> int: ...

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


def read_lower_bound(start: int, max_span: int, bucket: int) -> int:
    """Smallest t0 that can hold a point at or after `start`.

    A chunk holding `start` began at most `max_span - 1` seconds earlier. Spans divide the 28-day row
    bucket, so that chunk always lives in `start`'s own bucket: never look before the bucket's start.
    Without a known span (`max_span <= 0`) we fall back to the whole first bucket, which is what
    Metrictank itself reads.
    """
    first = (start // bucket) * bucket
    if max_span <= 0:
        return first
    return max(start - max_span + 1, first)
