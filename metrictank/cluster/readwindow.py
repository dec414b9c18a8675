"""How long a chunk stays unsaved: what a read node must keep in memory (`[cluster] read-window = "auto"`).

A read node answers from memory what the writers have not saved yet and reads the rest from the store; a chunk
that leaves its ring before the save is announced is a hole in its answers until the save lands. The time from
a raw chunk's t0 to the persist message that announces it (the message's Kafka timestamp minus t0) is exactly
how far back memory must reach for that chunk: the chunkspan, the wait for the next chunk's first point, the
write queue and the store. A read node measures it from the persist backlog at start-up and keeps that much plus
a margin (never more than the schema's numchunks); the listener goes on measuring, and the tank counts chunks
evicted before their save (`tank.evicted_unsaved_chunks`), the sign that the window has become too short.

Only raw chunks are measured (a rollup's key carries its interval, not its chunkspan, and every archive keeps at
least two chunks, so a rollup chunk stays a whole rollup chunkspan after it completes). Ages are taken from
trusted announcements only and bounded (`MAX_AGE`): a hostile topic can at most make the window the configured
numchunks, which is what a node holds without this feature.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_AGE", "MAX_SKEW", "SaveAge", "read_window_for"]

MAX_AGE = 7 * 86400  # an age beyond this is not a save delay but a backfill or garbage
BUCKET = 60
MAX_SKEW = 300  # seconds an announcement's timestamp may be ahead of this node's clock


class SaveAge:
    """Largest save age (announce time - t0 of a raw chunk) per minute of announce time, for the last `keep` s."""

    def __init__(self, keep: float = 3600) -> None:
        self.keep = keep
        self._max: dict[int, float] = {}  # minute of announce time -> largest age announced in it
        self.samples = 0

    def add(self, announced: float, chunks: Iterable[tuple[str, int]], now: float | None = None) -> None:
        """Chunks of one persist message announced at `announced` (unix seconds, the message's timestamp, which
        its producer sets). With `now`, an announcement stamped more than `MAX_SKEW` ahead of this clock is
        ignored: its minute would stay "recent" for good and pin the window at its largest."""
        if now is not None and announced > now + MAX_SKEW:
            return
        best = -1.0
        for amkey, t0 in chunks:
            if "_" in amkey:
                continue
            age = announced - t0
            if 0 <= age <= MAX_AGE and age > best:
                best = age
        if best < 0:
            return
        self.samples += 1
        b = int(announced // BUCKET)
        if best > self._max.get(b, -1.0):
            self._max[b] = best
        if len(self._max) > self.keep // BUCKET + 2:
            newest = max(self._max)
            for k in [k for k in self._max if k < newest - self.keep // BUCKET]:
                del self._max[k]

    def recent_max(self, now: float, within: float) -> float | None:
        """Largest age announced in the last `within` seconds before `now`; None when nothing was."""
        lo = (now - within) // BUCKET
        ages = [a for b, a in list(self._max.items()) if b >= lo]
        return max(ages) if ages else None


def read_window_for(age: float | None, margin: float) -> float | None:
    """The window a read node keeps: the measured save age plus the margin; None without a measurement (the
    node then keeps the schemas' numchunks)."""
    return None if age is None else age + margin
