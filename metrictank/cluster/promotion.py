"""The promotion policy: whether this node may become primary now, as a pure function of what it knows.

Metrictank promotes whoever is told to. Here `POST /node primary=true` is refused (409) with every failing reason
unless promotion cannot lose or overwrite data. Keeping the decision a pure function of a snapshot of inputs
(gathered by the instance: its own state, the peers' `GET /node`, the persist topic's recent writers) makes each
reason testable on its own and keeps I/O out of the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["PeerView", "PromotionInputs", "promotion_reasons"]


@dataclass(frozen=True)
class PeerView:
    """What a peer's `GET /node` said (or that it did not answer)."""

    name: str
    url: str
    reachable: bool
    primary: bool = False
    partitions: tuple[int, ...] = ()
    pending_writes: int = 0  # chunk writes still queued or in flight on that peer
    priority: int = 10000  # LagMonitor.UNKNOWN: nothing known
    candidate: bool = False  # qualifies to take over (auto failover)


@dataclass(frozen=True)
class PromotionInputs:
    partitions: Sequence[int]
    data_complete_wait: float  # seconds until every in-memory chunk was seen from its start
    persist_backlog_done: bool
    priority: int
    max_priority: int
    broker_reachable: bool = True
    peers: Sequence[PeerView] = ()
    # other instances that announced chunk writes on our partitions: name -> (partitions, seconds ago)
    recent_writers: Mapping[str, tuple[list[int], float]] = field(default_factory=dict)
    foreign_writer_window: float = 0.0


def promotion_reasons(i: PromotionInputs) -> list[str]:
    """Every reason this node may not be promoted now; an empty list means it may."""
    reasons = []
    if i.data_complete_wait > 0:
        reasons.append(
            f"data-complete promotion wait is {i.data_complete_wait:.0f}s: chunks now in memory began before "
            "this node started consuming, so they are partial"
        )
    if not i.persist_backlog_done:
        reasons.append("the persist topic backlog is not consumed yet")
    if not i.broker_reachable:
        reasons.append("the data broker is unreachable: this node cannot know what it is missing")
    if i.priority > i.max_priority:
        reasons.append(f"priority {i.priority} is above max-priority {i.max_priority} (Kafka lag)")
    mine = set(i.partitions)
    for peer in i.peers:
        if not peer.reachable:
            continue
        shared = sorted(mine & set(peer.partitions))
        if not shared:
            continue
        if peer.primary:
            reasons.append(
                f"peer {peer.name} ({peer.url}) is primary for shared partitions {shared}; demote it first"
            )
        elif peer.pending_writes > 0:
            # a demoted node still writing its queue would race the new primary's writes of the same chunks
            reasons.append(
                f"peer {peer.name} ({peer.url}) still has {peer.pending_writes} chunk writes queued for shared "
                f"partitions {shared}; wait for its drain (or demote it again: a timed-out drain drops them)"
            )
    if i.foreign_writer_window > 0:
        demoted = {p.name for p in i.peers if p.reachable and not p.primary}
        for name, (parts, ago) in sorted(i.recent_writers.items()):
            if name not in demoted:
                reasons.append(
                    f"instance {name} announced chunk writes for partitions {parts} {ago:.0f}s ago and is not "
                    f"a reachable demoted peer: it may still be primary (demote it, or wait "
                    f"{i.foreign_writer_window - ago:.0f}s if it is gone)"
                )
    return reasons
