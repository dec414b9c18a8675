"""Book-keeping common to the queued backends: outstanding count, drain, on_saved, counters.

A chunk counts as outstanding from the moment `submit` accepts it until its write is confirmed (or
skipped as already expired, or abandoned at close). `on_saved` runs *before* the count drops, so
`drain() == 0` also means every persist notification has been handed over: what a clean hand-over
on demotion or shutdown needs (Metrictank issues 357, 275).

`discard_pending` is the other way out of a demotion: when the drain timed out (a store outage), the writes
still queued or being retried are dropped, so that a demoted node does not become a stale writer -- and a
"split brain" for the new primary -- the moment the store comes back. Dropped chunks are not announced
(`on_saved` is not called for them); the new primary writes them, as it would after a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from metrictank.stats import Stats, by_label
from metrictank.store.base import ChunkWrite, SavedCallback, StoreClosed
from metrictank.store.queues import WriteQueues

log = logging.getLogger(__name__)


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Back-off before retry number `attempt` + 1: base * 2^attempt, at most `cap`. The exponent is bounded:
    writes are retried forever, and 2^1024 no longer converts to a float (OverflowError in the writer)."""
    return min(cap, base * (2.0 ** min(attempt, 30)))


COUNTERS = (
    "submitted",  # chunks accepted by submit
    "saved",  # chunks confirmed written
    "skipped_expired",  # chunks whose relative TTL was <= 0: not written, reported as saved (as Metrictank)
    "write_errors",  # failed chunk write attempts (by reason: `write_errors_by_reason`)
    "retries",  # re-sent chunk writes after a failure
    "abandoned",  # writes given up at close
    "dropped",  # writes dropped by `discard_pending` (queued, held or awaiting a retry)
    "on_saved_errors",  # exceptions raised by the on_saved callback
    "bytes_saved",
    "fenced",  # write attempts held back because the write gate (the primary lease) was closed
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
        self._gate: Callable[[], bool] | None = None
        #: failed chunk write attempts by reason (`timeout`, `write-timeout`, `unavailable`, `busy`, ... `other`)
        self.write_errors_by_reason: dict[str, int] = {}
        self._discard_gen = 0  # bumped by discard_pending: writes of older generations must not be retried
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

    def set_write_gate(self, gate: Callable[[], bool] | None) -> None:
        """`gate()` is asked right before every write attempt; while it says no, writes wait (they are neither
        failed nor dropped; `discard_pending` still drops them). The primary lease is the gate: a node that can no
        longer prove it holds the lease must not write, even what it queued while it could."""
        self._gate = gate

    def _may_write(self) -> bool:
        g = self._gate
        return g is None or bool(g())

    def pending(self) -> int:
        return self._outstanding

    # -- counters ----------------------------------------------------------------------------------------
    def register_stats(self, stats: Stats) -> None:
        """Metrictank's `store.chunk_operations.*` figures (save_fail by reason), and the queue depth."""
        stats.gauge("store.write_queue.items", "chunk writes queued or in flight", self.pending)
        stats.counter("store.chunk_operations.save_ok", "chunks written", lambda: self.chunks_written)
        stats.counter(
            "store.chunk_operations.save_fail",
            "failed chunk write attempts, by reason",
            lambda: by_label(self.write_errors_by_reason),
            ("reason",),
        )
        stats.counter(
            "store.chunk_operations.retries",
            "chunk writes sent again after a failure",
            lambda: self.write_retries,
        )
        stats.counter(
            "store.chunk_operations.dropped",
            "chunk writes dropped after a demotion's drain timed out",
            lambda: self.writes_dropped,
        )
        stats.counter(
            "store.chunk_operations.abandoned",
            "chunk writes given up at close",
            lambda: self.writes_abandoned,
        )
        stats.counter(
            "store.write_queue.blocked_puts",
            "times the main loop waited for room",
            lambda: self._queues.blocked_puts,
        )

    @property
    def chunks_written(self) -> int:
        """Chunks confirmed written."""
        return self._counters["saved"]

    @property
    def write_errors(self) -> int:
        """Failed chunk write attempts (the sum of `write_errors_by_reason`)."""
        return self._counters["write_errors"]

    @property
    def write_retries(self) -> int:
        """Chunk writes re-sent after a failure."""
        return self._counters["retries"]

    @property
    def writes_dropped(self) -> int:
        """Writes dropped by `discard_pending`."""
        return self._counters["dropped"]

    @property
    def writes_abandoned(self) -> int:
        """Writes given up at close."""
        return self._counters["abandoned"]

    def _count_error(self, reason: str, n: int) -> None:
        """Writer thread: `n` chunk writes failed for `reason`."""
        self._counters["write_errors"] += n
        self.write_errors_by_reason[reason] = self.write_errors_by_reason.get(reason, 0) + n

    # -- giving up --------------------------------------------------------------------------------------
    def discard_pending(self, timeout: float = 5.0) -> int:
        """Drop every write that has not started yet, and make writes being retried give up; returns how many.

        For a demotion whose drain timed out: queued writes are dropped, and a write that fails from now on is
        dropped instead of retried, so this node stops writing once the store is back. Writes already on the
        wire may still complete (and are then announced as usual): wait for them with `drain` if needed.
        Later submissions are not affected. Waits at most `timeout` for the writer thread to let go.
        """
        before = self._counters["dropped"]
        with self._done:
            self._discard_gen += 1
            gen = self._discard_gen
        self._discard(gen, time.monotonic() + max(0.0, timeout))
        dropped = self._counters["dropped"] - before
        if dropped:
            log.warning("store: dropped %d pending chunk writes", dropped)
        return dropped

    def _discard(self, gen: int, deadline: float) -> None:
        """Backend hook; by default only what waits in the queues is dropped."""
        self._drop(self._queues.clear())

    def _drop(self, writes: Sequence[ChunkWrite]) -> None:
        """Release writes given up by `discard_pending` (not announced, counted in `writes_dropped`)."""
        if writes:
            with self._done:
                self._counters["dropped"] += len(writes)
            self._finish(writes, saved=False)

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
