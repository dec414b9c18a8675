"""Progress of a backlog replay, per partition: how far, how fast, and when it will be caught up.

A restarted node replays Kafka from its start offset; an operator (or a script waiting to promote it) wants to see
that it moves and when it will be done. The figures come from the lag samples the consumer already takes once a
second, so they cost nothing on the ingest path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PartitionProgress", "replay_progress", "format_progress"]


@dataclass(frozen=True)
class PartitionProgress:
    partition: int
    behind: int  # messages between the read position and the high watermark
    done: float  # fraction of the backlog (from the first offset consumed to the newest high watermark) read
    rate: float  # messages read per second over the sample window
    eta: float | None  # seconds until caught up at that rate; None while not moving

    def as_json(self) -> dict:
        return {
            "behind": self.behind,
            "done": round(self.done, 4),
            "rate": round(self.rate, 1),
            "eta": None if self.eta is None else round(self.eta, 1),
        }


def replay_progress(
    samples: dict[int, Sequence[tuple[float, int, int]]], first_offset: dict[int, int]
) -> dict[int, PartitionProgress]:
    """From lag samples `(time, high watermark, next offset to read)` per partition and the first offsets read."""
    out = {}
    for p, s in samples.items():
        if not s:
            continue
        t1, high, read = s[-1]
        behind = max(0, high - read)
        first = first_offset.get(p, read)
        total = high - first
        done = 1.0 if total <= 0 else min(1.0, max(0.0, (read - first) / total))
        t0, _h0, read0 = s[0]
        rate = (read - read0) / (t1 - t0) if t1 > t0 else 0.0
        eta = 0.0 if behind == 0 else (behind / rate if rate > 0 else None)
        out[p] = PartitionProgress(p, behind, done, rate, eta)
    return out


def format_progress(progress: dict[int, PartitionProgress]) -> str:
    """One log line: the total, then the partitions still behind."""
    behind = [pp for pp in progress.values() if pp.behind > 0]
    total = sum(pp.behind for pp in behind)
    etas = [pp.eta for pp in behind if pp.eta is not None]
    eta = f"eta {max(etas):.0f}s" if len(etas) == len(behind) and etas else "eta unknown"
    parts = ", ".join(
        f"p{pp.partition} {pp.done:.0%} ({pp.behind} behind, {pp.rate:.0f}/s)"
        for pp in sorted(behind, key=lambda x: x.partition)
    )
    return f"replaying backlog: {total} messages behind, {eta}; {parts}"
