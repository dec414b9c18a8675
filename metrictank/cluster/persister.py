"""Who writes what: the primary-only persistence policy.

When chunks complete in the tank, a secondary writes nothing. A primary queues, per series archive, every ring
chunk beyond its save-start mark (so chunks that completed while it was secondary and were never confirmed get
written too, as Metrictank does) -- but never a chunk whose start this node did not see (Metrictank issue 452): a
node that began consuming a partition in the middle of a chunk holds only part of it, and writing it would
overwrite the complete chunk the previous primary saved. Such chunks are counted and logged, not written.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from metrictank.store import ChunkStore, ChunkWrite

log = logging.getLogger(__name__)

__all__ = ["Persister"]


class Persister:
    def __init__(self, tank, store: ChunkStore, is_primary) -> None:
        self.tank = tank
        self.store = store
        self.is_primary = is_primary
        self.queued = 0
        self.skipped_partial = 0
        self.not_primary = 0
        self._last_partial_log = 0.0

    def handle_completed(self, completed) -> int:
        """Persist what a batch of completed chunks calls for; returns the number of writes queued."""
        n = len(completed)
        if n == 0:
            return 0
        if not self.is_primary():
            self.not_primary += n
            return 0
        slots = np.unique(np.asarray(completed.slot))
        return self.persist_slots(slots)

    def persist_slots(self, slots: np.ndarray) -> int:
        """Queue every unsaved, complete ring chunk of these slots and raise their save-start marks."""
        cands = self.tank.unsaved_ring_chunks(slots)
        if len(cands) == 0:
            return 0
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
        if writes:
            self.store.submit(writes)
            self.queued += len(writes)
        return len(writes)
