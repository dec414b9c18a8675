"""This node's role and state, Metrictank's promotion wait, and the checks that make promotion safe.

Metrictank's `cluster.self.promotion_wait` counts from process start to the next boundary of the largest chunkspan,
whatever was replayed from Kafka. We keep that gauge, same name and meaning, and add a data-complete wait: the
seconds until every chunk this node would save has been seen from its start. With a replayed backlog that began
before the current chunks (or at the start of the log) it is 0 at once; it is what the promotion check uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from metrictank import __version__
from metrictank.input.kafka import LagMonitor

__all__ = [
    "NodeState",
    "Node",
    "PromotionCheck",
    "rfc3339",
    "data_complete_wait",
    "metrictank_promotion_target",
]


class NodeState:
    NOT_READY = "NodeNotReady"
    READY = "NodeReady"
    UNREACHABLE = "NodeUnreachable"


def rfc3339(ts: float) -> str:
    """Go's time.Time JSON form (RFC 3339 with nanoseconds, UTC)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((ts % 1) * 1e9):09d}Z"


def metrictank_promotion_target(start: float, max_chunkspan: int) -> int:
    """Metrictank's target: the first boundary of the largest chunkspan after data consumption started."""
    span = max(600, int(max_chunkspan))
    return (int(start) // span + 1) * span


def data_complete_wait(
    now: float,
    spans: Sequence[int],
    partition_first_ts: Mapping[int, float],
    from_log_start: Mapping[int, bool],
    partitions: Sequence[int],
) -> float:
    """Seconds until every chunk this node would save now is one it saw from its start.

    A chunk [t0, t0+span) is complete when consumption of its partition began at the start of the log, or with a
    message no newer than t0. The chunks that would be saved next are the current ones (t0 = now - now % span),
    so the wait is the time to the next boundary of each span whose current chunk began before consumption did.
    A partition not consumed yet is unknown: wait for the largest span's next boundary after it starts.
    """
    wait = 0.0
    for p in partitions:
        if from_log_start.get(p, False):
            continue
        first = partition_first_ts.get(p)
        for span in spans:
            if first is None:
                wait = max(wait, float(span))
                continue
            t0 = int(now) - int(now) % span
            if t0 < first:
                # the first chunk that starts at or after `first`
                nxt = (int(first) // span + (0 if int(first) % span == 0 else 1)) * span
                wait = max(wait, nxt - now)
    return max(0.0, wait)


@dataclass
class PromotionCheck:
    """The outcome of the promotion checks; `reasons` lists every failing one."""

    ok: bool
    reasons: list[str] = field(default_factory=list)


class Node:
    """Role and readiness of this instance (what `GET /node` shows)."""

    def __init__(
        self,
        name: str,
        primary: bool,
        partitions: Sequence[int],
        api_port: int,
        max_priority: int = 10,
        warm_up_period: float = 60.0,
        max_chunkspan: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.clock = clock
        now = clock()
        self.started = now
        self.primary = primary
        self.primary_change = now
        self.state = NodeState.NOT_READY
        self.state_change = now
        self.partitions = list(partitions)
        self.api_port = api_port
        self.max_priority = max_priority
        self.warm_up_period = warm_up_period
        self.max_chunkspan = max(600, max_chunkspan)
        self.priority = 10000
        self.consumption_started: float | None = None
        self.promotion_target: int | None = None
        self.persist_backlog_done = False
        self.broker_reachable = True
        self.lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------------------
    def data_consumption_started(self) -> None:
        now = self.clock()
        self.consumption_started = now
        self.promotion_target = metrictank_promotion_target(now, self.max_chunkspan)

    def set_primary(self, primary: bool) -> bool:
        """Returns whether it changed."""
        with self.lock:
            if self.primary == primary:
                return False
            self.primary = primary
            self.primary_change = self.clock()
            return True

    UNKNOWN_PRIORITY = LagMonitor.UNKNOWN  # Metrictank's priority while nothing is known

    def update(self, priority: int, broker_reachable: bool = True) -> None:
        """Called once a second by the main loop: refresh priority and readiness.

        While the data brokers do not answer, lag figures are frozen at their last values (often 0), so the
        priority is reported as unknown and the node is not ready: queries and promotion go elsewhere."""
        now = self.clock()
        self.broker_reachable = broker_reachable
        if not broker_reachable:
            priority = self.UNKNOWN_PRIORITY
        self.priority = priority
        warm = self.primary or (
            self.consumption_started is not None and now - self.started >= self.warm_up_period
        )
        ready = (
            self.persist_backlog_done
            and self.consumption_started is not None
            and warm
            and priority <= self.max_priority
        )
        state = NodeState.READY if ready else NodeState.NOT_READY
        if state != self.state:
            self.state = state
            self.state_change = now

    @property
    def ready(self) -> bool:
        return self.state == NodeState.READY

    def promotion_wait(self) -> float:
        """Metrictank's cluster.self.promotion_wait: seconds to the target set when consumption started."""
        if self.promotion_target is None:
            return float(self.max_chunkspan)
        return max(0.0, self.promotion_target - self.clock())

    def register_stats(self, stats) -> None:
        stats.gauge(
            "cluster.self.promotion_wait",
            "seconds until Metrictank would consider promotion safe",
            self.promotion_wait,
        )
        stats.gauge("cluster.self.state.primary", "1 if this node is primary", lambda: int(self.primary))
        stats.gauge("cluster.self.state.ready", "1 if this node is ready", lambda: int(self.ready))
        stats.gauge("cluster.self.priority", "this node's priority", lambda: self.priority)

    # --- views -----------------------------------------------------------------------------------------------
    def metrictank_json(self) -> dict:
        """The fields of Metrictank's `GET /node`, with its spelling."""
        now = self.clock()
        return {
            "name": self.name,
            "version": f"metrictank-py-{__version__}",
            "primary": self.primary,
            "primaryChange": rfc3339(self.primary_change),
            "mode": "shard",
            "state": self.state,
            "priority": self.priority,
            "started": rfc3339(self.started),
            "stateChange": rfc3339(self.state_change),
            "partitions": self.partitions,
            "apiPort": self.api_port,
            "apiScheme": "http",
            "updated": rfc3339(now),
        }
