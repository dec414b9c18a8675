"""Who writes what: the primary-only persistence policy.

When chunks complete in the tank, a secondary writes nothing. A primary queues, per series archive, every ring
chunk beyond its save-start mark (so chunks that completed while it was secondary and were never confirmed get
written too, as Metrictank does) -- but never a chunk whose start this node did not see (Metrictank issue 452): a
node that began consuming a partition in the middle of a chunk holds only part of it, and writing it would
overwrite the complete chunk the previous primary saved. Such chunks are counted and logged, not written.

Planning and submitting are separate steps because they need different conditions: planning reads and marks the
tank (the owner thread, under the tank lock); submitting may block on a full write queue, so it runs after the
lock is released, or a render waiting for the lock and a store thread confirming writes would wait on each other.
Demotion must not race a submit in progress: `begin`/`end` bracket plan+submit, and `wait_idle` lets a demotion
wait until no write planned while the node was primary can still be queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from metrictank.stats import Stats
from metrictank.store import ChunkStore, ChunkWrite

log = logging.getLogger(__name__)

__all__ = ["Persister"]


class Persister:
    def __init__(
        self, tank, store: ChunkStore, is_primary: Callable[[], bool], epoch: Callable[[], int] | None = None
    ) -> None:
        self.tank = tank
        self.epoch = epoch  # the primary lease epoch under which writes are queued (for the log)
        self.store = store
        self.is_primary = is_primary
        self.queued = 0
        self.skipped_partial = 0
        self.not_primary = 0
        self.dropped_demoted = 0  # planned while primary, not queued because the node was demoted meanwhile
        self._last_partial_log = 0.0
        self._busy = 0
        self._idle = threading.Condition()

    def register_stats(self, stats: Stats) -> None:
        stats.counter("tank.persist.queued", "chunk writes queued by this node", lambda: self.queued)
        stats.counter(
            "tank.persist.skipped_partial",
            "chunks not persisted because this node did not see their start",
            lambda: self.skipped_partial,
        )
        stats.counter(
            "tank.persist.dropped_demoted",
            "chunk writes planned while primary and not queued because the node was demoted meanwhile",
            lambda: self.dropped_demoted,
        )

    # --- the owner thread --------------------------------------------------------------------------------------
    def begin(self) -> None:
        """The owner is about to plan writes: a demotion waits for the matching `end`."""
        with self._idle:
            self._busy += 1

    def end(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    def plan_completed(self, completed) -> list[ChunkWrite]:
        """The writes a batch of completed chunks calls for (under the tank lock); marks them as started."""
        n = len(completed)
        if n == 0:
            return []
        if not self.is_primary():
            self.not_primary += n
            return []
        return self.plan_slots(np.unique(np.asarray(completed.slot)))

    def plan_slots(self, slots: np.ndarray) -> list[ChunkWrite]:
        """Every unsaved, complete ring chunk of these slots; raises their save-start marks."""
        cands = self.tank.unsaved_ring_chunks(slots)
        if len(cands) == 0:
            return []
        complete = np.asarray(cands.complete, dtype=bool)
        partial = int((~complete).sum())
        if partial:
            self.skipped_partial += partial
            now = time.monotonic()
            if now - self._last_partial_log > 10:
                self._last_partial_log = now
                i = int(np.flatnonzero(~complete)[0])
                log.warning(
                    "not persisting %d chunk(s) whose start this node did not see (e.g. %s t0=%d); "
                    "%d skipped so far",
                    partial,
                    cands.amkey(i),
                    int(cands.t0[i]),
                    self.skipped_partial,
                )
        writes = []
        for i in np.flatnonzero(complete):
            amkey = cands.amkey(i)
            writes.append(
                ChunkWrite(
                    amkey=amkey,
                    org=int(amkey.split(".", 1)[0]),
                    t0=int(cands.t0[i]),
                    span=int(cands.span[i]),
                    ttl=int(cands.ttl[i]),
                    data=cands.data[i],
                    partition=int(cands.partition[i]),
                )
            )
        # Marks move past partial chunks too: they must never be revisited by a later walk-back.
        self.tank.mark_save_started(np.asarray(cands.slot), np.asarray(cands.t0))
        return writes

    def submit(self, writes: Sequence[ChunkWrite], stopping: Callable[[], bool] | None = None) -> int:
        """Queue planned writes (without the tank lock: this may wait for room in the write queues). A demotion,
        or `stopping()`, ends the wait: what is not queued then is left to the next primary."""
        if not writes:
            return 0
        if not self.is_primary():  # demoted since the plan: the new primary writes these chunks
            self.dropped_demoted += len(writes)
            return 0
        # while waiting for room, a demotion stops the rest from being queued
        queued = self.store.submit(
            writes, abort=lambda: not self.is_primary() or (stopping is not None and stopping())
        )
        self.queued += queued
        self.dropped_demoted += len(writes) - queued
        if queued and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "queued %d chunk writes (lease epoch %d), e.g. %s t0=%d",
                queued,
                self.epoch() if self.epoch is not None else 0,
                writes[0].amkey,
                writes[0].t0,
            )
        return queued

    # --- other threads -----------------------------------------------------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Wait until no plan+submit is in progress (a demotion calls this after clearing the primary flag, so
        every write queued from then on was planned before: `drain` then covers them all)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True
