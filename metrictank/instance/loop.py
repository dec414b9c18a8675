"""The main loop: the one thread that owns the tank and the index writes.

It consumes data batches, applies them to the index and the tank, plans the primary's chunk writes, applies
saved marks (from the persist topic, and from the store's threads through a lock-free inbox), ticks readiness
once a second and collects garbage. Every mutation of the tank happens here, under the tank lock, which readers
take only to copy what they need (see docs/concurrency.md). Nothing here waits on I/O while holding that lock:
Kafka is polled and chunk writes are queued (which may wait for room in the write queues) outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from metrictank.cluster.persist import PendingMarks
from metrictank.input.progress import format_progress, replay_progress
from metrictank.stats import Stats, by_label

log = logging.getLogger(__name__)

__all__ = ["IngestLoop"]

_SWEEP_BLOCK = 65536  # slots per step of a catch-up sweep: bounds its memory and how long it holds the lock


class IngestLoop:
    def __init__(
        self,
        *,
        consumer,
        handler,
        tank,
        index,
        persister,
        node,
        listener,
        notifier=None,
        heap,
        systemd,
        clock: Callable[[], float],
        gc_interval: float,
        chunk_max_stale: float,
        metric_max_stale: float,
        broker_unreachable_timeout: float,
    ) -> None:
        self.consumer = consumer
        self.handler = handler
        self.tank = tank
        self.index = index
        self.persister = persister
        self.node = node
        self.listener = listener
        self.notifier = notifier
        self.heap = heap
        self.systemd = systemd
        self.clock = clock
        self.gc_interval = gc_interval
        self.chunk_max_stale = chunk_max_stale
        self.metric_max_stale = metric_max_stale
        self.broker_unreachable_timeout = broker_unreachable_timeout
        # Readers (HTTP threads) hold it only to copy; the loop holds it while it applies a batch.
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.stopped = threading.Event()
        self.running = False
        self.last_turn = time.monotonic()  # when the loop last went round (a stuck loop must not look ready)
        self.pending_marks = PendingMarks()
        self._inbox: deque[list[tuple[str, int]]] = deque()  # saved marks handed over by the store's threads
        self._loaded: deque[tuple] = deque()  # saved chunks read back by the warm-start loader
        self.warm_chunks_loaded = 0
        self.points_ingested = 0
        self.batches = 0
        self.batch_errors = 0
        self.loop_errors: Counter[str] = Counter()  # failures of a loop step other than a batch, by step
        self.marks_invalid = 0
        self.split_brain_seconds = 0
        self._next_progress_log = 0.0
        self._replaying = False
        self._partition_started: set[int] = set()
        self._could_persist = False
        self.sweeps = 0

    # --- saved marks ---------------------------------------------------------------------------------------------
    def hand_saved(self, saved: list[tuple[str, int]]) -> None:
        """Any thread: marks to apply. Lock-free (deque.append is atomic), so a store thread confirming writes
        never waits for the loop, which may itself be waiting for room in the store's queues."""
        self._inbox.append(saved)

    def hand_loaded(
        self, slots: np.ndarray, t0s: np.ndarray, blobs: list[bytes], npoints: np.ndarray, keys: list[str]
    ) -> None:
        """Any thread: saved chunks read from the store (a warm start) for the loop to put into the rings."""
        self._loaded.append((slots, t0s, blobs, npoints, keys))

    def loaded_pending(self) -> int:
        """Blocks of loaded chunks not applied yet (the loader waits while there are a few: bounded memory)."""
        return len(self._loaded)

    def _apply_loaded(self) -> None:
        # one block per turn: a block's insertion holds the tank lock for milliseconds, not the whole load
        slots, t0s, blobs, npoints, keys = self._loaded.popleft()
        with self.lock:
            self.warm_chunks_loaded += self.tank.load_saved(slots, t0s, blobs, npoints, keys)

    def _apply_inbox(self) -> None:
        if self._loaded:
            self._apply_loaded()
        if not self._inbox:
            return
        saved: list[tuple[str, int]] = []
        while self._inbox:
            saved.extend(self._inbox.popleft())
        self.apply_saved(saved)

    def apply_saved(self, saved: list[tuple[str, int]]) -> None:
        """Owner thread: raise the saved marks of these (AMKey, t0); keep those of series not in memory yet."""
        slots, t0s = [], []
        with self.lock:
            for amkey, t0 in saved:
                try:
                    slot = self.tank.slot_of(amkey)
                except (
                    ValueError,
                    KeyError,
                ):  # the listener validates keys; this is the last line of defence
                    self.marks_invalid += 1
                    continue
                if slot is None:
                    self.pending_marks.add(amkey, t0)
                else:
                    slots.append(slot)
                    t0s.append(t0)
            if slots:
                self.tank.mark_saved(np.asarray(slots, np.int64), np.asarray(t0s, np.int64))

    def on_new_series(self, ids: list[str]) -> None:
        if len(self.pending_marks):
            marks = self.pending_marks.pop(ids)
            if marks:
                self.apply_saved(marks)

    # --- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Until `stop_event` is set."""
        next_tick = 0.0
        next_gc = time.monotonic() + self.gc_interval
        self.running = True
        try:
            while not self.stop_event.is_set():
                self.last_turn = time.monotonic()
                self._apply_inbox()
                batch = self.consumer.poll(timeout=0.1)
                if batch.values:
                    self._ingest(batch)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._step("tick", self._tick)
                if now >= next_gc:
                    next_gc = now + self.gc_interval
                    self._step("gc", self.gc)
            self._apply_inbox()
        finally:
            self.running = False
            self.stopped.set()

    def stalled_for(self) -> float:
        """Seconds since the loop last went round (0 when it is not running)."""
        return max(0.0, time.monotonic() - self.last_turn) if self.running else 0.0

    def _step(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failed step must not stop ingest; it is counted and logged
            self.loop_errors[name] += 1
            log.exception("main loop step %s failed; continuing", name)

    def _ingest(self, batch) -> None:
        self.persister.begin()
        try:
            with self.lock:
                # before the batch: a replay that starts mid-chunk may complete that chunk in this batch
                self._apply_partition_starts()
                try:
                    self.points_ingested += self.handler.process(batch.values, batch.partition_source)
                except Exception:  # noqa: BLE001 - a bad batch must not stop the instance
                    self.batch_errors += 1
                    log.exception("ingest of a batch of %d messages failed; skipped", len(batch.values))
                writes = self._plan_writes()
            self.persister.submit(writes, stopping=self.stop_event.is_set)
        finally:
            self.persister.end()
        self.batches += 1
        self.heap.consumed(batch.nbytes)

    def _plan_writes(self) -> list:
        completed = self.tank.take_completed()
        return self.persister.plan_completed(completed) if len(completed) else []

    def _apply_partition_starts(self) -> None:
        tr = self.consumer.tracker
        for p, ts in list(tr.first_ts.items()):
            if p not in self._partition_started:
                self._partition_started.add(p)
                self.tank.set_partition_start(p, 0 if tr.from_log_start(p) else int(ts))

    def _sweep_if_newly_writing(self) -> None:
        """When this node becomes able to write (promoted, or unfenced after its lease was proven again), queue at
        once every complete chunk that is not saved yet, instead of waiting for each series' next chunk to
        complete: those chunks completed while another node was expected to write them (or while this one
        could not), and the sooner they are saved the smaller the window in which they exist only in memory."""
        may = bool(self.persister.is_primary())
        if may and not self._could_persist:
            self.sweeps += 1
            for lo in range(0, self.tank.n_slots, _SWEEP_BLOCK):
                self.persister.begin()
                try:
                    with self.lock:
                        slots = np.arange(lo, min(lo + _SWEEP_BLOCK, self.tank.n_slots), dtype=np.int64)
                        writes = self.persister.plan_slots(slots)
                    self.persister.submit(writes, stopping=self.stop_event.is_set)
                finally:
                    self.persister.end()
        self._could_persist = may

    def _tick(self) -> None:
        self._sweep_if_newly_writing()
        if self.listener is not None:
            self.listener.poll(timeout=0)  # applies marks through apply_saved, which takes the lock
            if self.node.primary:
                others = self.listener.recent_writers(self.node.partitions, 2.0)
                if others:
                    self.split_brain_seconds += 1
                    log.error(
                        "SPLIT BRAIN: this node is primary and %s also wrote chunks of shared partitions; "
                        "demote one of them",
                        ", ".join(f"{n} {p}" for n, (p, _a) in others.items()),
                    )
        if self.notifier is not None:
            self.notifier.pump()  # persist messages deferred while the broker was unreachable or the queue full
        self.consumer.sample_lag()
        self.consumer.check_stall()
        self.node.update(self.consumer.lag.priority(), self.broker_reachable())
        self.systemd.tick(self.node)
        now = time.monotonic()
        if now >= self._next_progress_log:
            self._next_progress_log = now + 10
            progress = self.replay_progress()
            behind = sum(pp.behind for pp in progress.values())
            if self.node.priority > self.node.max_priority and behind:
                log.info(format_progress(progress))
                self._replaying = True
            elif self._replaying:
                self._replaying = False
                log.info("backlog replay caught up")
                self.heap.now()  # the replay's last batches leave freed heap behind

    def broker_reachable(self) -> bool:
        t = self.broker_unreachable_timeout
        return t <= 0 or self.consumer.probe.unreachable_for() <= t

    def gc(self) -> None:
        self.persister.begin()
        try:
            with self.lock:
                _finished, removed = self.tank.gc(
                    int(self.clock()), int(self.chunk_max_stale), int(self.metric_max_stale)
                )
                if len(removed):
                    self.index.remove(np.asarray(removed, np.int64))
                writes = self._plan_writes()
            self.persister.submit(writes, stopping=self.stop_event.is_set)
        finally:
            self.persister.end()
        self.heap.now()

    def replay_progress(self):
        """Per partition: messages behind, fraction of the backlog read, rate and ETA."""
        return replay_progress(self.consumer.lag.samples(), self.consumer.tracker.first_offset)

    # --- figures -------------------------------------------------------------------------------------------------
    def register_stats(self, stats: Stats) -> None:
        tank = self.tank
        stats.gauge("tank.metrics_active", "series in memory", lambda: len(self.index))
        stats.counter(
            "tank.discarded",
            "points discarded by the tank by reason",
            lambda: by_label(tank.discarded),
            ("reason",),
        )
        stats.counter("tank.points_added", "points added to the tank", lambda: tank.points_added)
        stats.counter(
            "tank.warm_load.chunks_loaded",
            "saved chunks a warm start put back into memory (read back, then taken by the rings)",
            lambda: self.warm_chunks_loaded,
        )
        stats.gauge(
            "process.main_loop_stalled_seconds",
            "seconds since the main loop last went round (normally well under a second)",
            self.stalled_for,
        )
        stats.gauge(
            "tank.chunks_in_ring",
            "closed chunks held in memory (a read node holds only its read-window)",
            lambda: tank.stats()["chunks_in_ring"],
        )
        stats.counter(
            "tank.evicted_unsaved_chunks",
            "chunks that left memory before a save was announced for them (a read-window or numchunks shorter "
            "than the writers' save delay: reads of that range find neither memory nor store until the save)",
            lambda: tank.stats()["evicted_unsaved"],
        )
        stats.counter(
            "input.kafka-mdm.batch_errors",
            "consumed batches whose ingest failed (skipped; see the log)",
            lambda: self.batch_errors,
        )
        stats.counter(
            "process.main_loop_errors",
            "failed main loop steps other than batches, by step",
            lambda: by_label(self.loop_errors),
            ("step",),
        )
        stats.counter(
            "cluster.saved_marks_invalid", "saved marks whose key names no series", lambda: self.marks_invalid
        )
        stats.counter(
            "cluster.split_brain_seconds",
            "seconds during which this primary saw another instance write shared partitions",
            lambda: self.split_brain_seconds,
        )
        stats.counter(
            "process.heap_trims", "times freed heap was handed back to the OS", lambda: self.heap.trims
        )
        stats.counter(
            "process.heap_trim_seconds", "seconds spent handing freed heap back", lambda: self.heap.seconds
        )
