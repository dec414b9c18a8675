"""One metrictank-py instance: wiring and the main loop.

Startup follows Metrictank's order, with its faults fixed: open the store, read the persist topic up to the newest
offsets seen now (ending as soon as it is caught up), and only then start consuming data, so saved marks are in
place before any chunk completes. The main thread runs the ingest loop (decode, index, tank, persist policy); the
HTTP API runs in a thread of its own (I/O only) and takes the same lock for reads of the tank and index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from metrictank import __version__
from metrictank.api.source import InstanceSource
from metrictank.cluster.node import Node, data_complete_wait
from metrictank.cluster.peers import fetch_peers, parse_peers
from metrictank.cluster.persist import PendingMarks, PersistListener, PersistNotifier
from metrictank.cluster.persister import Persister
from metrictank.config import Config
from metrictank.heap import HeapTrimmer
from metrictank.index import MemoryIndex
from metrictank.input.handler import IngestHandler
from metrictank.input.kafka import DataConsumer, parse_partitions
from metrictank.input.progress import format_progress, replay_progress
from metrictank.retention import Aggregations, Schemas
from metrictank.stats import Stats
from metrictank.store import open_store
from metrictank.systemd import SystemdNotifier
from metrictank.tank import Tank

log = logging.getLogger(__name__)

__all__ = ["Instance"]


class Instance:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.name = cfg.instance
        self.admin_token = cfg.http.admin_token
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.stopped = threading.Event()

        self.schemas = Schemas.load(cfg.retention.schemas_file or None)
        self.aggregations = Aggregations.load(cfg.retention.aggregations_file or None)
        self.index = MemoryIndex()
        self.tank = Tank(self.schemas, self.aggregations, clock=clock, row_of_id=self.index.row_of)
        self.pending_marks = PendingMarks()

        kin = cfg.kafka_mdm_in
        self.topics = [t.strip() for t in kin.topics.split(",") if t.strip()]
        self.consumer = DataConsumer(
            kin.brokers,
            self.topics,
            parse_partitions(kin.partitions),
            kin.offset,
            batch_size=kin.batch_size,
            fetch_max_wait=kin.fetch_max_wait,
            extra_options=kin.consumer_options,
            client_id=f"{self.name}-mdm",
        )
        self.partitions = self.consumer.partitions
        self.handler = IngestHandler(self.index, self.tank, kin.org_id, on_new_series=self._on_new_series)

        listen = cfg.http.listen
        host, _, port = listen.rpartition(":")
        self.http_host = host or "0.0.0.0"
        self.http_port = int(port)
        self.node = Node(
            self.name,
            cfg.cluster.primary_node,
            self.partitions,
            self.http_port,
            max_priority=cfg.cluster.max_priority,
            warm_up_period=cfg.cluster.warm_up_period,
            max_chunkspan=self.schemas.max_chunkspan(),
            clock=clock,
        )
        self.peers = parse_peers(cfg.cluster.peers)

        self.store = self._open_store()
        self.persister = Persister(self.tank, self.store, lambda: self.node.primary)
        kc = cfg.kafka_cluster
        self.notifier: PersistNotifier | None = None
        self.listener: PersistListener | None = None
        if kc.enabled:
            brokers = kc.brokers or kin.brokers
            self.notifier = PersistNotifier(brokers, kc.topic, self.name)
            self.listener = PersistListener(
                brokers, kc.topic, self.partitions, kc.offset, self._apply_saved, self.name
            )
        self.store.set_on_saved(self._on_saved)
        self.local_source = InstanceSource(self.index, self.tank, self.store, self.schemas, self.lock, clock)
        self.query_source = self.local_source
        if self.peers:
            from metrictank.api.cluster_source import ClusterSource

            # partitions this node does not consume are read from ready peers (503 when none can serve them)
            self.query_source = ClusterSource(
                self.local_source,
                self.partitions,
                self.consumer.total_partitions,
                self.peers,
                timeout=cfg.cluster.peer_timeout,
            )

        self.gc_interval = cfg.retention.gc_interval
        self.stats = Stats()
        self._register_stats()
        self.systemd = SystemdNotifier()
        self._server = None
        self._server_thread: threading.Thread | None = None
        self.points_ingested = 0
        self.batches = 0
        self.batch_errors = 0
        self.heap = HeapTrimmer()
        self.split_brain_seconds = 0
        self._next_progress_log = 0.0
        self._replaying = False
        self._partition_started: set[int] = set()

    # --- construction helpers ------------------------------------------------------------------------------
    def _open_store(self):
        s = self.cfg.store
        if s.backend == "cassandra":
            c = self.cfg.cassandra
            return open_store(
                "cassandra",
                addrs=c.addrs,
                keyspace=c.keyspace,
                consistency=c.consistency,
                timeout=c.timeout,
                write_queues=s.write_queues,
                write_queue_size=s.write_queue_size,
                write_concurrency=c.write_concurrency,
                create_keyspace=c.create_keyspace,
                replication=c.replication,
                ttls=self.schemas.all_ttls(),
            )
        return open_store(
            "sqlite",
            path=self.cfg.sqlite.path,
            write_queues=s.write_queues,
            write_queue_size=s.write_queue_size,
        )

    # --- persist marks ----------------------------------------------------------------------------------------
    def _on_saved(self, writes) -> None:
        """Store I/O thread: chunks are durable; announce them."""
        if self.notifier is not None:
            self.notifier.notify((w.amkey, w.t0, w.partition) for w in writes)
        else:  # single node without Kafka notifications: raise our own marks directly
            with self.lock:
                self._apply_saved([(w.amkey, w.t0) for w in writes])

    def _apply_saved(self, saved: list[tuple[str, int]]) -> None:
        slots, t0s = [], []
        for amkey, t0 in saved:
            slot = self.tank.slot_of(amkey)
            if slot is None:
                self.pending_marks.add(amkey, t0)
            else:
                slots.append(slot)
                t0s.append(t0)
        if slots:
            self.tank.mark_saved(np.asarray(slots, np.int64), np.asarray(t0s, np.int64))

    def _on_new_series(self, ids: list[str]) -> None:
        if len(self.pending_marks):
            marks = self.pending_marks.pop(ids)
            if marks:
                self._apply_saved(marks)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, serve_http: bool = True) -> None:
        if serve_http:
            self._start_http()
        if self.listener is not None:
            self.listener.consume_backlog(self.cfg.kafka_cluster.backlog_process_timeout)
        self.node.persist_backlog_done = True
        self.consumer.start()
        self.node.data_consumption_started()
        log.info(
            "instance %s started: primary=%s partitions=%s", self.name, self.node.primary, self.partitions
        )

    def _start_http(self) -> None:
        import uvicorn

        from metrictank.api import create_app

        app = create_app(self, lambda: self.query_source, local_source=lambda: self.local_source)
        config = uvicorn.Config(
            app, host=self.http_host, port=self.http_port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"HTTP API could not listen on {self.cfg.http.listen}")

    def run(self) -> None:
        """The main loop, until stop() is called."""
        next_tick = 0.0
        next_gc = time.monotonic() + self.gc_interval
        try:
            while not self.stop_event.is_set():
                batch = self.consumer.poll(timeout=0.1)
                if batch.values:
                    with self.lock:
                        # before the batch: a replay that starts mid-chunk may complete that chunk in this batch
                        self._apply_partition_starts()
                        try:
                            self.points_ingested += self.handler.process(batch.values, batch.partition_of)
                        except Exception:  # noqa: BLE001 - a bad batch must not stop the instance
                            self.batch_errors += 1
                            log.exception(
                                "ingest of a batch of %d messages failed; skipped", len(batch.values)
                            )
                        self._after_ingest()
                    self.batches += 1
                    self.heap.consumed(batch.nbytes)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._tick()
                if now >= next_gc:
                    next_gc = now + self.gc_interval
                    self.gc()
        finally:
            self.stopped.set()

    def _after_ingest(self) -> None:
        completed = self.tank.take_completed()
        if len(completed):
            self.persister.handle_completed(completed)

    def _apply_partition_starts(self) -> None:
        tr = self.consumer.tracker
        for p, ts in tr.first_ts.items():
            if p not in self._partition_started:
                self._partition_started.add(p)
                self.tank.set_partition_start(p, 0 if tr.from_log_start(p) else int(ts))

    def _tick(self) -> None:
        if self.listener is not None:
            with self.lock:
                self.listener.poll(timeout=0)
            if self.node.primary:
                others = self.listener.recent_writers(self.partitions, 2.0)
                if others:
                    self.split_brain_seconds += 1
                    log.error(
                        "SPLIT BRAIN: this node is primary and %s also wrote chunks of shared partitions; "
                        "demote one of them",
                        ", ".join(f"{n} {p}" for n, (p, _a) in others.items()),
                    )
        self.consumer.sample_lag()
        self.consumer.check_stall()
        self.node.update(self.consumer.lag.priority())
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

    def gc(self) -> None:
        r = self.cfg.retention
        with self.lock:
            _finished, removed = self.tank.gc(
                int(self.clock()), int(r.chunk_max_stale), int(r.metric_max_stale)
            )
            if len(removed):
                self.index.remove(np.asarray(removed, np.int64))
            completed = self.tank.take_completed()
            if len(completed):
                self.persister.handle_completed(completed)
        self.heap.now()

    def replay_progress(self):
        """Per partition: messages behind, fraction of the backlog read, rate and ETA."""
        return replay_progress(self.consumer.lag.samples(), self.consumer.tracker.first_offset)

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop consuming, drain writes (a primary's shutdown is a clean handover), close everything."""
        self.stop_event.set()
        self.stopped.wait(5)
        timeout = self.cfg.store.drain_timeout if drain_timeout is None else drain_timeout
        left = self.store.drain(timeout)
        if left:
            log.warning("shutdown: %d chunk writes not drained after %.0fs", left, timeout)
        if self.notifier is not None:
            self.notifier.flush(10)
        self.consumer.close()
        if self.listener is not None:
            self.listener.close()
        self.store.close()
        close_source = getattr(self.query_source, "close", None)
        if close_source is not None and self.query_source is not self.local_source:
            close_source()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(5)

    # --- admin backend -----------------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self.node.ready

    def data_complete_wait(self) -> float:
        tr = self.consumer.tracker
        return data_complete_wait(
            self.clock(),
            self.schemas.all_chunkspans(),
            tr.first_ts,
            {p: tr.from_log_start(p) for p in self.partitions},
            self.partitions,
        )

    def promotion_checks(self) -> list[str]:
        reasons = []
        wait = self.data_complete_wait()
        if wait > 0:
            reasons.append(
                f"data-complete promotion wait is {wait:.0f}s: chunks now in memory began before this node "
                "started consuming, so they are partial"
            )
        if not self.node.persist_backlog_done:
            reasons.append("the persist topic backlog is not consumed yet")
        prio = self.node.priority
        if prio > self.node.max_priority:
            reasons.append(f"priority {prio} is above max-priority {self.node.max_priority} (Kafka lag)")
        mine = set(self.partitions)
        peers = fetch_peers(self.peers, self.cfg.cluster.peer_timeout)
        for peer in peers:
            if peer.primary and mine & set(peer.partitions):
                reasons.append(
                    f"peer {peer.node.get('name', peer.url)} ({peer.url}) is primary for shared partitions "
                    f"{sorted(mine & set(peer.partitions))}; demote it first"
                )
        window = self.cfg.cluster.foreign_writer_window
        if self.listener is not None and window > 0:
            demoted = {p.node.get("name") for p in peers if p.reachable and not p.primary}
            for name, (parts, ago) in self.listener.recent_writers(self.partitions, window).items():
                if name not in demoted:
                    reasons.append(
                        f"instance {name} announced chunk writes for partitions {parts} {ago:.0f}s ago and is not "
                        f"a reachable demoted peer: it may still be primary (demote it, or wait {window - ago:.0f}s "
                        "if it is gone)"
                    )
        return reasons

    def promote(self, force: bool) -> tuple[bool, list[str]]:
        if self.node.primary:
            return True, []
        reasons = self.promotion_checks()
        if reasons and not force:
            log.info("promotion refused: %s", "; ".join(reasons))
            return False, reasons
        if reasons:
            log.warning("FORCED promotion despite: %s", "; ".join(reasons))
        self.node.set_primary(True)
        log.info("promoted to primary")
        return True, []

    def demote(self) -> tuple[bool, str]:
        changed = self.node.set_primary(False)
        timeout = self.cfg.store.drain_timeout
        left = self.store.drain(timeout)
        unsent = self.notifier.flush(10) if self.notifier is not None else 0
        if changed:
            log.info("demoted to secondary; %d writes left, %d persist messages unsent", left, unsent)
        if left or unsent:
            return (
                False,
                f"{left} chunk writes still queued and {unsent} persist messages unsent after {timeout:.0f}s",
            )
        return True, ""

    def node_json(self) -> dict:
        out = self.node.metrictank_json()
        tr = self.consumer.tracker
        out.update(
            {
                "instance": self.name,
                "promotionWait": round(self.node.promotion_wait(), 3),
                "dataCompletePromotionWait": round(self.data_complete_wait(), 3),
                "persistBacklogDone": self.node.persist_backlog_done,
                "pendingWrites": self.store.pending(),
                "chunksSkippedPartial": self.persister.skipped_partial,
                "chunksQueued": self.persister.queued,
                "savedMarks": self.tank.saved_summary(),
                "otherWriters": {
                    name: {"partitions": parts, "secondsAgo": round(ago, 1)}
                    for name, (parts, ago) in (
                        self.listener.recent_writers(self.partitions, 3600)
                        if self.listener is not None
                        else {}
                    ).items()
                },
                "partitionState": {
                    str(p): {
                        "firstOffset": tr.first_offset.get(p),
                        "firstTimestamp": tr.first_ts.get(p),
                        "fromLogStart": tr.from_log_start(p),
                        "lag": self.consumer.lag.lag(p),
                        "priority": self.consumer.lag.partition_priority(p),
                    }
                    for p in self.partitions
                },
                "metricsActive": len(self.index),
                "replay": {str(p): pp.as_json() for p, pp in sorted(self.replay_progress().items())},
                "version": f"metrictank-py-{__version__}",
            }
        )
        return out

    def priority_json(self) -> dict:
        return {
            "priority": self.node.priority,
            "partitions": {str(p): self.consumer.lag.partition_priority(p) for p in self.partitions},
        }

    def cluster_json(self) -> dict:
        peers = fetch_peers(self.peers, self.cfg.cluster.peer_timeout)
        return {
            "name": self.cfg.cluster.name,
            "self": self.node_json(),
            "peers": [p.as_json() for p in peers],
        }

    def metrics_text(self) -> bytes:
        return self.stats.render()

    # --- self metrics ------------------------------------------------------------------------------------------
    def _register_stats(self) -> None:
        s, h, c = self.stats, self.handler, self.consumer
        s.counter(
            "input.kafka-mdm.metricdata.received",
            "MetricData messages received",
            lambda: h.metricdata_received,
        )
        s.counter(
            "input.kafka-mdm.metricpoint.received", "MetricPoints received", lambda: h.metricpoint_received
        )
        s.counter(
            "input.kafka-mdm.metricpoint.unknown",
            "points of series not in the index",
            lambda: h.unknown_points,
        )
        s.counter(
            "input.kafka-mdm.metricdata.invalid",
            "invalid MetricData by reason",
            lambda: [((k,), v) for k, v in h.metricdata_invalid.items()],
            ("reason",),
        )
        s.counter(
            "input.kafka-mdm.metrics_decode_err",
            "undecodable messages or points by reason",
            lambda: [((k,), v) for k, v in h.decode_errors.items()],
            ("reason",),
        )
        s.gauge(
            "input.kafka-mdm.partition.lag",
            "messages behind the high watermark",
            lambda: [((p,), c.lag.lag(p) or 0) for p in self.partitions],
            ("partition",),
        )
        s.gauge(
            "input.kafka-mdm.partition.priority",
            "per-partition priority",
            lambda: [((p,), c.lag.partition_priority(p)) for p in self.partitions],
            ("partition",),
        )
        s.gauge(
            "input.kafka-mdm.partition.offset",
            "last offset consumed",
            lambda: [((p,), o) for p, o in c.tracker.last_offset.items()],
            ("partition",),
        )
        s.counter(
            "input.kafka-mdm.fetch_restarts",
            "times fetching was restarted because no data arrived although the broker had some",
            lambda: c.fetch_restarts,
        )
        s.gauge("tank.metrics_active", "series in memory", lambda: len(self.index))
        s.counter(
            "tank.discarded",
            "points discarded by the tank by reason",
            lambda: [((k,), v) for k, v in self.tank.discarded.items()],
            ("reason",),
        )
        s.counter("tank.points_added", "points added to the tank", lambda: self.tank.points_added)
        s.counter("process.heap_trims", "times freed heap was handed back to the OS", lambda: self.heap.trims)
        s.counter(
            "process.heap_trim_seconds", "seconds spent handing freed heap back", lambda: self.heap.seconds
        )
        s.counter("tank.persist.queued", "chunk writes queued by this node", lambda: self.persister.queued)
        s.counter(
            "tank.persist.skipped_partial",
            "chunks not persisted because this node did not see their start",
            lambda: self.persister.skipped_partial,
        )
        s.gauge("store.write_queue.items", "chunk writes queued or in flight", lambda: self.store.pending())
        s.gauge(
            "cluster.self.promotion_wait",
            "seconds until Metrictank would consider promotion safe",
            self.node.promotion_wait,
        )
        s.gauge(
            "cluster.self.data_complete_promotion_wait",
            "seconds until every chunk this node would save was seen from its start",
            self.data_complete_wait,
        )
        s.gauge("cluster.self.state.primary", "1 if this node is primary", lambda: int(self.node.primary))
        s.gauge("cluster.self.state.ready", "1 if this node is ready", lambda: int(self.node.ready))
        s.gauge("cluster.self.priority", "this node's priority", lambda: self.node.priority)
        if self.notifier is not None:
            n = self.notifier
            s.counter(
                "cluster.notifier.kafka.messages-published",
                "persist messages sent",
                lambda: n.messages_published,
            )
        if self.listener is not None:
            li = self.listener
            s.counter(
                "cluster.notifier.all.messages-received",
                "persist messages received",
                lambda: li.messages_received,
            )
            s.counter(
                "cluster.notifier.foreign_chunks",
                "saved chunks announced by other instances",
                lambda: li.foreign_chunks,
            )
        s.counter(
            "cluster.split_brain_seconds",
            "seconds during which this primary saw another instance write shared partitions",
            lambda: self.split_brain_seconds,
        )
