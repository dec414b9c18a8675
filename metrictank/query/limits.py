"""Per-request limits of the Graphite API: what one query may cost, so that no query stalls a node, eats its
memory or keeps a thread busy after its client gave up.

The figures are the `[http]` options of the configuration (Metrictank's names where it has them):

- `max-points-per-req-soft`: when the points a request would read exceed it, the request is consolidated
  harder: every fetch asks for at most soft / series points per series, which makes the source pick a coarser
  archive where there is one, and the output is consolidated to that many points per series.
- `max-points-per-req-hard`: a request that would still read more is refused (400) before anything is read.
- `max-series-per-req`: a request whose targets resolve to more series is refused (400) before fetching.
- `query-timeout`: the render is abandoned (503) once it has run this long; the engine and the source check
  the deadline between fetch blocks and function evaluations, so the worker thread stops too.
- `max-target-length` / `max-nesting-depth`: a target longer, or nesting function calls (and pipes) deeper,
  is refused (400) before it is parsed further.

`maxDataPoints` absent, empty or 0 means the default of 800 (Metrictank's); 0 no longer means "unlimited".
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import QueryError

__all__ = [
    "Deadline",
    "PointBudget",
    "QueryLimits",
    "charge_points",
    "check_deadline",
    "current_deadline",
    "current_limits",
    "deadline_scope",
]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The limits one Graphite request is held to (defaults: the `[http]` option defaults)."""

    max_points_per_req_soft: int = 1_000_000
    max_points_per_req_hard: int = 20_000_000
    max_series_per_req: int = 100_000
    query_timeout: float = 60.0
    max_target_length: int = 65_536
    max_nesting_depth: int = 100

    @classmethod
    def from_config(cls, http: Mapping[str, Any]) -> QueryLimits:
        """The limits of a config's `[http]` section (`cfg.http`); options it lacks keep their defaults."""
        d = cls()

        def get(key: str, default: Any) -> Any:
            try:
                v = http[key]
            except KeyError:
                return default
            return default if v is None else v

        return cls(
            max_points_per_req_soft=int(get("max-points-per-req-soft", d.max_points_per_req_soft)),
            max_points_per_req_hard=int(get("max-points-per-req-hard", d.max_points_per_req_hard)),
            max_series_per_req=int(get("max-series-per-req", d.max_series_per_req)),
            query_timeout=float(get("query-timeout", d.query_timeout)),
            max_target_length=int(get("max-target-length", d.max_target_length)),
            max_nesting_depth=int(get("max-nesting-depth", d.max_nesting_depth)),
        )


class Deadline:
    """When a request must be done by (monotonic clock); `check()` raises a 503 QueryError once it has passed."""

    __slots__ = ("at", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout if timeout > 0 else float("inf")

    def check(self) -> None:
        if time.monotonic() >= self.at:
            raise QueryError(
                f"query timed out: it ran longer than query-timeout ({self.timeout:g} s) and was abandoned; "
                "narrow the time range or the series it selects",
                status=503,
            )


class PointBudget:
    """The points one request may read or produce in all (max-points-per-req-hard): fetches are charged their
    estimate before they read, and functions that make a new grid (summarize to a finer interval) before they
    allocate it."""

    __slots__ = ("hard", "used")

    def __init__(self, hard: int) -> None:
        self.hard = hard
        self.used = 0

    def charge(self, n: int) -> None:
        self.used += int(n)
        if self.used > self.hard:
            raise QueryError(
                f"the request would read or produce {self.used} points, more than max-points-per-req-hard "
                f"({self.hard}): reduce the time range or the number of series"
            )


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("query_deadline", default=None)
_budget: contextvars.ContextVar[PointBudget | None] = contextvars.ContextVar("query_budget", default=None)


_limits: contextvars.ContextVar[QueryLimits | None] = contextvars.ContextVar("query_limits", default=None)


@contextmanager
def deadline_scope(
    deadline: Deadline | None, budget: PointBudget | None = None, limits: QueryLimits | None = None
) -> Iterator[None]:
    """Make `deadline` (and `budget`, `limits`) the ones `check_deadline()`, `charge_points()` and
    `current_limits()` see in this thread (context) while the block runs: how they reach a source's fetch loop
    or a function's allocation without a parameter on every `SeriesSource` method and function."""
    token = _current.set(deadline)
    btoken = _budget.set(budget)
    ltoken = _limits.set(limits)
    try:
        yield
    finally:
        _limits.reset(ltoken)
        _budget.reset(btoken)
        _current.reset(token)


def charge_points(n: int) -> None:
    """Count `n` points a function is about to allocate against the request's budget (QueryError 400 past it;
    no-op outside a render)."""
    b = _budget.get()
    if b is not None:
        b.charge(n)


def check_deadline() -> None:
    """Raise a 503 QueryError if the current request's deadline has passed (no-op outside a render)."""
    d = _current.get()
    if d is not None:
        d.check()


def current_deadline() -> Deadline | None:
    """The current request's deadline (None outside a render): for work that waits on others, such as a
    cluster query's peers, and must stop waiting when it passes."""
    return _current.get()


def current_limits() -> QueryLimits:
    """The current request's limits (the defaults outside a render): for a function that parses a target it
    made itself (aliasQuery), which must be held to the same limits as the request's own targets."""
    return _limits.get() or QueryLimits()
