"""Warm start (`[kafka-mdm-in] offset = auto`): replay only what may be unsaved, load the rest from the store.

A restart with a duration offset replays the whole in-memory window from Kafka (Metrictank's issue 275: hours).
Everything in that window but the open chunks is normally in the store already, so a warm start

1. after the index load and the persist backlog (which set the saved marks), asks the tank per partition from
   which data time nothing unsaved can be missed (`Tank.replay_from`: the first unsaved chunk of every series,
   minus `auto-offset-margin`), and the consumer starts each partition at the first message at or after that
   time (`offsets_for_times`). A partition the marks say nothing about replays `auto-offset-fallback`.
2. once consuming, reads the saved chunks of the in-memory window back from the store in the background
   (`WarmLoader`), in blocks of slots, bounded in memory, and hands them to the main loop, which puts them into
   the rings (`Tank.load_saved`). Until a series' chunks are back, queries read them from the store (the read
   path stitches memory and store by the oldest point memory vouches for), so the node is ready as soon as its
   replay caught up; the load only spares the store the reads.

Why nothing is lost or written twice: replayed chunks that began before the first consumed message are
incomplete and never saved (the tank's complete flag); saved marks keep the primary from rewriting a saved
chunk; a loaded chunk is the stored bytes, marked saved; the store's copy replaces an incomplete chunk of the
same t0. Threads: the loader reads the store and decodes point counts (the C decoder releases the GIL); only the
main loop changes the tank.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from metrictank.chunk import ChunkError, decode_chunk, decode_chunks

log = logging.getLogger(__name__)

__all__ = ["WarmLoader", "warm_start_times"]

BLOCK = 1024  # slots planned and read per step: ~12k chunks, ~15-20 ms of the tank lock to insert
MAX_PENDING = 8  # blocks read but not applied by the main loop yet


def warm_start_times(
    tank,
    partitions: Sequence[int],
    now: float,
    margin: float,
    fallback: float,
    last_data: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[int, float], dict[int, str]]:
    """Per partition the unix time to consume from, and why (for the log and GET /node)."""
    judged = tank.replay_from(list(partitions), int(now), int(margin), last_data=last_data)
    times: dict[int, float] = {}
    why: dict[int, str] = {}
    for p in partitions:
        t = judged.get(p)
        if t is None:
            times[p] = now - fallback
            why[p] = f"no saved marks: fallback {fallback:.0f}s"
        else:
            times[p] = float(min(t, now))
            why[p] = f"saved marks: {now - times[p]:.0f}s back"
    return times, why


class WarmLoader:
    """Reads the saved chunks of the in-memory window from the store and hands them to the main loop."""

    def __init__(
        self,
        tank,
        store,
        lock,
        hand: Callable[[np.ndarray, np.ndarray, list, np.ndarray, list], None],
        pending: Callable[[], int],
        start_when: Callable[[], bool],
        stop_event: threading.Event,
        block: int = BLOCK,
    ) -> None:
        self.tank = tank
        self.store = store
        self.lock = lock
        self.hand = hand
        self.pending = pending
        self.start_when = start_when
        self.stop_event = stop_event
        self.block = block
        self.state = "waiting"  # waiting | loading | done | failed
        self.chunks_read = 0
        self.bytes_read = 0
        self.read_errors = 0
        self.chunks_invalid = 0
        self.slots_done = 0
        self.slots_total = 0
        self.started_at = 0.0
        self.seconds = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="warm-load", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        return {
            "state": self.state,
            "chunksRead": self.chunks_read,
            "bytesRead": self.bytes_read,
            "readErrors": self.read_errors,
            "chunksInvalid": self.chunks_invalid,
            "slotsDone": self.slots_done,
            "slotsTotal": self.slots_total,
            "seconds": round(self.seconds if self.state in ("done", "failed") else self._elapsed(), 3),
        }

    def register_stats(self, stats) -> None:
        stats.counter(
            "tank.warm_load.chunks_read",
            "saved chunks read back from the store by a warm start",
            lambda: self.chunks_read,
        )
        stats.counter(
            "tank.warm_load.read_errors",
            "failed store reads of a warm start's load",
            lambda: self.read_errors,
        )
        stats.counter(
            "tank.warm_load.chunks_invalid",
            "stored chunks a warm start's load could not decode (skipped; queries reading them report it)",
            lambda: self.chunks_invalid,
        )
        stats.gauge(
            "tank.warm_load.done",
            "1 once a warm start's load of saved chunks has finished (0 while it waits or loads, -1 failed)",
            lambda: {"done": 1, "failed": -1}.get(self.state, 0),
        )
        stats.gauge(
            "tank.warm_load.seconds",
            "how long the load of saved chunks took (so far)",
            lambda: self.status()["seconds"],
        )

    def _elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def _run(self) -> None:
        # Load once the replay has caught up: loading earlier is correct (a chunk only goes behind the oldest
        # one in memory) but the replay would evict much of it again.
        while not self.stop_event.is_set() and not self.start_when():
            self.stop_event.wait(0.2)
        if self.stop_event.is_set():
            return
        self.state = "loading"
        self.started_at = time.monotonic()
        try:
            with self.lock:
                n = self.tank.n_slots
            self.slots_total = n
            for lo in range(0, n, self.block):
                if self.stop_event.is_set():
                    return
                self._block(np.arange(lo, min(lo + self.block, n), dtype=np.int64))
                self.slots_done = min(lo + self.block, n)
            self.state = "done"
        except Exception:  # noqa: BLE001 - the load only saves store reads: never let it take the node down
            self.state = "failed"
            log.exception("warm start: loading saved chunks failed; queries keep reading them from the store")
        finally:
            self.seconds = self._elapsed()
            log.info(
                "warm start: %d saved chunks (%d bytes) read from the store for %d slots in %.1fs (%s)",
                self.chunks_read,
                self.bytes_read,
                self.slots_done,
                self.seconds,
                self.state,
            )

    def _block(self, slots: np.ndarray) -> None:
        with self.lock:
            plan = self.tank.warm_load_plan(slots)
        if not len(plan):
            return
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (lo, hi) in enumerate(zip(plan.lo.tolist(), plan.hi.tolist(), strict=True)):
            groups.setdefault((lo, hi), []).append(i)
        out_slots, out_t0, out_blobs, out_keys = [], [], [], []
        for (lo, hi), idx in groups.items():
            reqs = [(plan.keys[i], int(plan.ttls[i])) for i in idx]
            got = self._read(reqs, lo, hi)
            if got is None:
                continue
            for i in idx:
                for t0, blob in got.get(plan.keys[i], ()):
                    if lo <= t0 <= hi:
                        out_slots.append(int(plan.slots[i]))
                        out_t0.append(int(t0))
                        out_blobs.append(bytes(blob))
                        out_keys.append(plan.keys[i])
        if not out_blobs:
            return
        t0s = np.asarray(out_t0, np.int64)
        try:
            counts, _ts, _vals = decode_chunks(t0s.astype(np.uint32), out_blobs)
        except ChunkError:
            # a row that does not decode (written by a broken or hostile writer) must cost only itself: the
            # block is decoded chunk by chunk, the bad ones are counted and left in the store for queries to
            # report, the rest of the load goes on
            # Memory vouches for everything from its oldest chunk on: a slot keeps only the chunks newer than
            # its newest bad one, or the chunks behind it would hide a hole from the store fallback.
            sizes: dict[int, int] = {}
            bad_above: dict[int, int] = {}  # slot -> newest t0 that did not decode
            for i, (slot, t0, blob) in enumerate(zip(out_slots, out_t0, out_blobs, strict=True)):
                try:
                    sizes[i] = len(decode_chunk(t0, blob)[0])
                except ChunkError:
                    self.chunks_invalid += 1
                    bad_above[slot] = max(t0, bad_above.get(slot, t0))
            keep = [i for i in sizes if out_t0[i] > bad_above.get(out_slots[i], -1)]
            counts = [sizes[i] for i in keep]
            log.warning(
                "warm start: stored chunks of %d series do not decode; %d chunks of them not loaded (queries read "
                "those from the store)",
                len(bad_above),
                len(out_blobs) - len(keep),
            )
            out_slots = [out_slots[i] for i in keep]
            out_blobs = [out_blobs[i] for i in keep]
            out_keys = [out_keys[i] for i in keep]
            t0s = t0s[keep]
            if not keep:
                return
        self.chunks_read += len(out_blobs)
        self.bytes_read += sum(len(b) for b in out_blobs)
        while self.pending() >= MAX_PENDING and not self.stop_event.is_set():
            self.stop_event.wait(0.01)
        self.hand(np.asarray(out_slots, np.int64), t0s, out_blobs, np.asarray(counts, np.int64), out_keys)

    def _read(self, reqs: list[tuple[str, int]], lo: int, hi: int, attempts: int = 3) -> dict | None:
        for attempt in range(attempts):
            try:
                return self.store.read_many(reqs, lo, hi + 1, 1)
            except Exception as e:  # noqa: BLE001 - counted; the block is skipped after the retries
                self.read_errors += 1
                log.warning("warm start: store read failed (%s), attempt %d of %d", e, attempt + 1, attempts)
                self.stop_event.wait(0.5 * (attempt + 1))
        return None
