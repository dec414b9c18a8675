"""Book-keeping common to the queued backends: outstanding count, drain, on_saved, counters.

A chunk counts as outstanding from the moment `submit` accepts it until its write is confirmed (or
skipped as already expired, or abandoned at close). `on_saved` runs *before* the count drops, so
`drain() == 0` also means every persist notification has been handed over: what a clean hand-over
on demotion or shutdown needs (Metrictank issues 357, 275).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from metrictank.store.base import ChunkWrite, SavedCallback, StoreClosed
from metrictank.store.queues import WriteQueues

log = logging.getLogger(__name__)

COUNTERS = (
    "submitted",  # chunks accepted by submit
    "saved",  # chunks confirmed written
    "skipped_expired",  # chunks whose relative TTL was <= 0: not written, reported as saved (as Metrictank)
    "write_errors",  # failed write attempts
    "retries",  # re-sent writes after a failure
    "abandoned",  # writes given up at close
    "on_saved_errors",  # exceptions raised by the on_saved callback
    "bytes_saved",
)


class QueuedStore:
    """Base for backends that drain `WriteQueues` from their own I/O thread(s)."""

    def __init__(self, write_queues: int, write_queue_size: int) -> None:
        self._wake_event = threading.Event()
        self._queues = WriteQueues(write_queues, write_queue_size, wakeup=self._wake)
        self._on_saved: SavedCallback | None = None
        self._done = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._started = time.monotonic()

    # -- producer side ---------------------------------------------------------------------------
    def submit(self, writes: Sequence[ChunkWrite], abort: Callable[[], bool] | None = None) -> int:
        """Queue writes, waiting for room; returns how many were queued (fewer only when `abort()` said so
        while waiting: a demoted node must not queue what it planned as primary)."""
        if not writes:
            return 0
        if self._closed:
            raise StoreClosed("store closed")
        n = len(writes)
        with self._done:
            self._outstanding += n
            self._counters["submitted"] += n
        try:
            accepted = self._queues.put_many(writes, abort)
        except StoreClosed as err:
            # what was enqueued before the close is released by the backend's close (as abandoned)
            refused = n - getattr(err, "accepted", 0)
            with self._done:
                self._outstanding -= refused
                self._counters["submitted"] -= refused
                self._done.notify_all()
            raise
        if accepted < n:
            with self._done:
                self._outstanding -= n - accepted
                self._counters["submitted"] -= n - accepted
                self._done.notify_all()
        return accepted

    def set_on_saved(self, cb: SavedCallback | None) -> None:
        self._on_saved = cb

    def pending(self) -> int:
        return self._outstanding

    def drain(self, timeout: float) -> int:
        """Wait until everything submitted so far is confirmed; return what is still outstanding."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._done:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._done.wait(min(left, 0.5))
            return self._outstanding

    @property
    def stats(self) -> dict:
        """A snapshot: counters plus live gauges (queue depth, outstanding)."""
        s: dict = dict(self._counters)
        s["queue_depth"] = len(self._queues)
        s["queue_depths"] = self._queues.depths()
        s["queue_blocked_puts"] = self._queues.blocked_puts
        s["pending"] = self._outstanding
        s.update(self._extra_stats())
        return s

    def _extra_stats(self) -> dict:
        return {}

    # -- consumer side ---------------------------------------------------------------------------
    def _wake(self) -> None:
        ev = self._wake_event
        if not ev.is_set():
            ev.set()

    def _finish(self, writes: Sequence[ChunkWrite], saved: bool = True) -> None:
        """Report confirmed (or given-up) writes, then release them from the outstanding count."""
        if not writes:
            return
        if saved:
            cb = self._on_saved
            if cb is not None:
                try:
                    cb(writes)
                except Exception:  # a broken notifier must not kill the writer thread
                    self._counters["on_saved_errors"] += 1
                    log.exception("on_saved callback failed")
        with self._done:
            self._outstanding -= len(writes)
            if self._outstanding <= 0:
                self._done.notify_all()
