"""One metrictank-py instance: the components wired together, their lifecycle, and the admin backend.

Startup follows Metrictank's order, with its faults fixed: open the store, read the persist topic up to the newest
offsets seen now (ending as soon as it is caught up), and only then start consuming data, so saved marks are in
place before any chunk completes. The main thread runs `IngestLoop` (the owner of the tank); the HTTP API runs in
threads of its own and reads through short copies under the tank lock (docs/concurrency.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from metrictank import __version__
from metrictank.api.source import InstanceSource
from metrictank.cluster.failover import Failover
from metrictank.cluster.lease import CassandraLeases, Lease, SQLiteLeases, lease_name
from metrictank.cluster.members import Membership
from metrictank.cluster.node import Node, data_complete_wait
from metrictank.cluster.peers import fetch_peers, parse_peers
from metrictank.cluster.persist import PersistListener, PersistNotifier, max_future_for, parse_trust
from metrictank.cluster.persister import Persister
from metrictank.cluster.promotion import PromotionInputs, promotion_reasons
from metrictank.cluster.readwindow import read_window_for
from metrictank.config import Config
from metrictank.heap import HeapTrimmer
from metrictank.index import MemoryIndex
from metrictank.input.handler import IngestHandler
from metrictank.input.kafka import DataConsumer, parse_partitions
from metrictank.instance.loop import IngestLoop
from metrictank.instance.warm import WarmLoader, warm_start_times
from metrictank.query.fallback import GraphiteFallback
from metrictank.retention import Aggregations, Schemas
from metrictank.stats import Stats
from metrictank.store import open_store
from metrictank.store.index import IndexUpdater, open_index_store
from metrictank.systemd import SystemdNotifier
from metrictank.tank import Tank

log = logging.getLogger(__name__)

__all__ = ["Instance"]

MAIN_LOOP_STALL = 15.0  # seconds without a turn of the main loop after which the node is not ready


class Instance:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.name = cfg.instance
        self.admin_token = cfg.http.admin_token

        self.role = cfg.cluster.role
        self.schemas = Schemas.load(cfg.retention.schemas_file or None)
        # A read node keeps memory for what the writers may not have saved yet; the store has the rest. With
        # read-window = auto the window is measured from the persist backlog in start(), before any series.
        self.read_window: dict | None = None
        self._read_window_auto = self.role == "read" and cfg.cluster.read_window == "auto"
        if self.role == "read" and not self._read_window_auto:
            self.schemas = self.schemas.with_memory_window(cfg.cluster.read_window)
            self.read_window = {"mode": "fixed", "seconds": cfg.cluster.read_window}
        self.aggregations = Aggregations.load(cfg.retention.aggregations_file or None)
        self.index = MemoryIndex()
        self.tank = Tank(self.schemas, self.aggregations, clock=clock, row_of_id=self.index.row_of)

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
            batch_consumer=kin.batch_consumer,
            read_ahead_bytes=kin.read_ahead_mb << 20,
        )
        self.partitions = self.consumer.partitions
        self.handler = IngestHandler(
            self.index, self.tank, kin.org_id, on_new_series=lambda ids: self.loop.on_new_series(ids)
        )

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
        self.static_peers = parse_peers(cfg.cluster.peers)
        self._advertised = self.advertise_url()
        self.membership: Membership | None = None
        if cfg.cluster.membership_topic:
            self.membership = Membership(
                cfg.kafka_cluster.brokers or cfg.kafka_mdm_in.brokers,
                cfg.cluster.membership_topic,
                self.name,
                self._announcement,
                heartbeat=cfg.cluster.heartbeat,
            )

        self.store = self._open_store()
        # the index in the store (Metrictank's cassandra-idx): loaded in start(), kept up to date by the handler
        self.index_store = open_index_store(cfg, self.store, self.partitions)
        if self.index_store is not None and cfg.cassandra_idx.update_cassandra_index:
            self.handler.on_definitions = IndexUpdater(
                self.index_store, self.index, cfg.cassandra_idx.update_interval, clock
            )
        self.lease = self._open_lease()
        # The fence is the store's write gate: nothing is written while the lease cannot be proven. A fenced
        # primary still plans and queues (bounded by the write queues): chunks that complete during a long store
        # outage would otherwise leave the ring unsaved. Should the lease turn out to be taken, the queue is
        # dropped (the new holder writes those chunks).
        self.persister = Persister(
            self.tank,
            self.store,
            lambda: self.node.primary,
            epoch=(lambda: self.lease.epoch) if self.lease is not None else None,
        )
        if self.lease is not None:
            self.store.set_write_gate(self.lease.valid)
        kc = cfg.kafka_cluster
        self.notifier: PersistNotifier | None = None
        self.listener: PersistListener | None = None
        if kc.enabled:
            brokers = kc.brokers or kin.brokers
            self.notifier = PersistNotifier(
                brokers,
                kc.topic,
                self.name,
                epoch=(lambda: self.lease.epoch) if self.lease is not None else None,
            )
            # Who may raise saved marks: this node, its peers (names learned from their /node) and
            # `trusted-instances`; a foreign announcement is counted and ignored (docs/operations.md).
            names, patterns = parse_trust(kc.trusted_instances)
            trusted: set[str] | None = names
            if "*" in patterns:  # trust every instance: the policy is off
                trusted, patterns = None, []
            raw_ttls = [r.ttl for r in self.schemas.raw_retentions()]
            self.listener = PersistListener(
                brokers,
                kc.topic,
                self.partitions,
                kc.offset,
                lambda saved: self.loop.apply_saved(saved),
                self.name,
                trusted_instances=trusted,
                trust_patterns=patterns,
                max_future=kc.max_future_t0 or max_future_for(raw_ttls, self.schemas.max_chunkspan()),
            )
        self.systemd = SystemdNotifier()
        self.heap = HeapTrimmer()
        r = cfg.retention
        self.loop = IngestLoop(
            consumer=self.consumer,
            handler=self.handler,
            tank=self.tank,
            index=self.index,
            persister=self.persister,
            node=self.node,
            listener=self.listener,
            notifier=self.notifier,
            heap=self.heap,
            systemd=self.systemd,
            clock=clock,
            gc_interval=r.gc_interval,
            chunk_max_stale=r.chunk_max_stale,
            metric_max_stale=r.metric_max_stale,
            broker_unreachable_timeout=kin.broker_unreachable_timeout,
        )
        self.lock = self.loop.lock  # the tank lock: readers copy under it, the loop applies batches under it
        self.stop_event = self.loop.stop_event
        self.stopped = self.loop.stopped
        self.store.set_on_saved(self._on_saved)
        self.local_source = InstanceSource(self.index, self.tank, self.store, self.schemas, self.lock, clock)
        self.query_source = self.local_source
        if self.static_peers or self.membership is not None:
            from metrictank.api.cluster_source import ClusterSource

            # partitions this node does not consume are read from ready peers (503 when none can serve them)
            self.query_source = ClusterSource(
                self.local_source,
                self.partitions,
                self.consumer.total_partitions,
                self.static_peers or (lambda: self.peers),
                timeout=cfg.cluster.peer_timeout,
            )

        self.failover: Failover | None = None
        if self.lease is not None:
            self.failover = Failover(
                self.lease,
                self.node,
                mode=cfg.cluster.failover,
                hold_off=cfg.cluster.failover_hold_off,
                inputs=self.promotion_inputs,
                promote=lambda: self.node.set_primary(True),
                lost=self._lease_lost,
            )
        self.graphite_fallback = GraphiteFallback.from_config(cfg.graphite)
        self.warm: WarmLoader | None = None
        self.warm_start: dict[int, dict] = {}  # offset auto: per partition the replay start and why
        if kin.offset == "auto":
            self.warm = WarmLoader(
                self.tank,
                self.store,
                self.lock,
                self.loop.hand_loaded,
                self.loop.loaded_pending,
                lambda: self.node.ready,
                self.stop_event,
            )
        self.stats = Stats()
        self._register_stats()
        self._server = None
        self._server_thread: threading.Thread | None = None
        self._known_peers: set[str] = set()
        self._peer_watch_stop = threading.Event()

    @property
    def peers(self) -> list[str]:
        """The static peer list; without one, the members alive on the membership topic."""
        if self.static_peers or self.membership is None:
            return self.static_peers
        return self.membership.peer_urls()

    def advertise_url(self) -> str:
        url = self.cfg.cluster.advertise_url
        if url:
            return url.rstrip("/")
        import socket

        host = self.http_host if self.http_host not in ("", "0.0.0.0", "::") else socket.gethostname()
        return f"http://{host}:{self.http_port}"

    def _announcement(self) -> dict:
        """What this node says about itself each heartbeat (cheap: flags and figures, no I/O)."""
        return {
            "url": self._advertised,
            "role": self.role,
            "color": self.cfg.cluster.color,
            "partitions": list(self.partitions),
            "state": self.node.state,
            "priority": self.node.priority,
            "primary": self.node.primary,
            "epoch": self.lease.epoch if self.lease is not None else 0,
        }

    def standby_color(self) -> bool:
        """A read node of the color that is not the active one: alive, caught up, but not to be queried."""
        m = self.membership
        color = self.cfg.cluster.color
        return m is not None and bool(color) and bool(m.active_color) and m.active_color != color

    # figures the integration tests and the CLI read
    @property
    def points_ingested(self) -> int:
        return self.loop.points_ingested

    @property
    def batches(self) -> int:
        return self.loop.batches

    @property
    def batch_errors(self) -> int:
        return self.loop.batch_errors

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

    def _open_lease(self) -> Lease | None:
        if self.role == "read":  # never writes, never competes for the right to
            return None
        c = self.cfg.cluster
        if not c.lease:
            return None
        if self.cfg.store.backend == "cassandra":
            backend = CassandraLeases(
                self.store.session, self.cfg.cassandra.keyspace, self.cfg.cassandra.timeout
            )
        else:
            backend = SQLiteLeases(self.cfg.sqlite.path, timeout=5.0)
        return Lease(
            backend,
            lease_name(c.name, self.partitions),
            self.name,
            duration=c.lease_duration,
            margin=c.lease_margin,
        )

    def _lease_lost(self, why: str) -> None:
        """Someone else holds the lease: stop being primary and drop what is queued (it must not be written
        late over the new primary's chunks; the new primary holds those chunks and writes them)."""
        self.node.set_primary(False)
        self.persister.wait_idle(5.0)
        dropped = self._drop_queue()
        log.error("self-demoted (%s); %d queued chunk writes dropped", why, dropped)

    def _drop_queue(self) -> int:
        """Drop every chunk write not yet on the wire and let those on the wire settle (they fail without a
        retry): for a node that must not write any more (demoted with a timed-out drain, or its lease taken).
        Returns how many were dropped."""
        dropped = self.store.discard_pending()
        self.store.drain(self.cfg.cassandra.timeout + 1.0)
        return dropped

    def _on_saved(self, writes) -> None:
        """Store I/O thread: chunks are durable; announce them (or, without Kafka notifications, hand the marks
        to the main loop; never take the tank lock here: the loop may be waiting for this thread's progress)."""
        if self.notifier is not None:
            self.notifier.notify((w.amkey, w.t0, w.partition) for w in writes)
        else:
            self.loop.hand_saved([(w.amkey, w.t0) for w in writes])

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, serve_http: bool = True) -> None:
        if serve_http:
            self._start_http()
        if self.index_store is not None and not self._read_window_auto:
            self._load_index()
        if self.membership is not None:
            self.membership.start()  # reads the compacted backlog first: members and the active color
        if self.listener is not None and (self.static_peers or self.membership is not None):
            # learn the peers' names before the backlog, so their marks apply at once
            self.learn_peers(fetch_peers(self.peers, self.cfg.cluster.peer_timeout))
            threading.Thread(target=self._watch_peers, name="peer-watch", daemon=True).start()
        if self.listener is not None:
            self.listener.consume_backlog(self.cfg.kafka_cluster.backlog_process_timeout)
        if self._read_window_auto:
            # the window must be known before the first series gets its ring: the index loads after it (the
            # backlog's marks wait as pending marks until their series appear)
            self._measure_read_window()
            if self.index_store is not None:
                self._load_index()
        self.node.persist_backlog_done = True
        self.consumer.start(self._warm_start_times() if self.warm is not None else None)
        self.node.data_consumption_started()
        if self.warm is not None:
            self.warm.start()
        if self.failover is not None:
            if self.node.primary:  # started as primary: take the lease (or step down) before the first write
                self.failover.step()
            self.failover.start()
        log.info(
            "instance %s started: primary=%s partitions=%s", self.name, self.node.primary, self.partitions
        )

    def learn_peers(self, statuses) -> None:
        """Peers' names (from their /node) are trusted to raise saved marks; names once seen stay trusted, so a
        peer that is briefly unreachable does not lose its trust."""
        names = {p.name for p in statuses if p.reachable and p.name != p.url}
        if self.listener is not None and not names <= self._known_peers:
            self._known_peers |= names
            self.listener.set_known(self._known_peers)

    def _watch_peers(self, every: float = 5.0) -> None:
        while not self._peer_watch_stop.wait(every):
            try:
                self.learn_peers(fetch_peers(self.peers, self.cfg.cluster.peer_timeout))
            except Exception:  # noqa: BLE001 - an informative thread: never let it die
                log.exception("peer poll failed")

    def _measure_read_window(self) -> None:
        """read-window = auto (cluster/readwindow.py): the writers' save delay seen in the persist backlog."""
        assert self.listener is not None  # the config requires kafka-cluster for it
        age = self.listener.save_age.recent_max(self.clock(), 3600)
        window = read_window_for(age, self.cfg.cluster.read_window_margin)
        if window is None:
            log.warning(
                "read-window auto: no raw chunk announcement in the persist backlog's last hour to measure the "
                "save delay by; keeping the schemas' numchunks"
            )
            self.read_window = {"mode": "auto", "seconds": None, "measuredSaveAge": None}
            return
        self.schemas = self.schemas.with_memory_window(window)
        self.tank.schemas = self.schemas  # no series yet: every ring is sized by the cut schemas
        self.local_source.schemas = self.schemas
        self.read_window = {"mode": "auto", "seconds": round(window, 1), "measuredSaveAge": round(age, 1)}
        log.info(
            "read-window auto: writers announce raw chunks up to %.0fs after their t0; keeping %.0fs in memory",
            age,
            window,
        )

    def _warm_start_times(self) -> dict[int, float]:
        """offset = auto: per partition, the time from which nothing unsaved can be missed (instance/warm.py)."""
        kin = self.cfg.kafka_mdm_in
        fallback = kin.auto_offset_fallback or max(
            r.numchunks * r.chunkspan for r in self.schemas.raw_retentions()
        )
        # the index's lastupdate is written at most once per update-interval: a series may be that much newer
        slack = self.cfg.cassandra_idx.update_interval
        now = self.clock()
        with self.lock:
            times, why = warm_start_times(
                self.tank,
                self.partitions,
                now,
                kin.auto_offset_margin,
                fallback,
                last_data=lambda rows: self.index.lastupdates(rows) + int(slack),
            )
        self.warm_start = {
            p: {"from": times[p], "secondsBack": round(now - times[p], 1), "why": why[p]} for p in times
        }
        log.info(
            "warm start: replaying from %s",
            ", ".join(f"partition {p} {now - times[p]:.0f}s back ({why[p]})" for p in sorted(times)),
        )
        return times

    def _load_index(self) -> None:
        """Series known to the store, before the persist backlog (its marks then apply at once) and before any
        data: MetricPoints of a series whose last MetricData is older than the replay are then accepted. The
        tank lock is taken per loaded batch, so the HTTP API keeps answering during a long load."""
        c = self.cfg.cassandra_idx
        t = time.monotonic()
        n = 0
        for batch in self.index_store.load(
            self.partitions,
            max_stale=c.max_stale,
            update_interval=c.update_interval,
            concurrency=c.init_load_concurrency,
            retries=c.init_load_retries,
            now=self.clock(),
        ):
            with self.lock:
                n += self.handler.restore_series([batch])
        log.info(
            "index: %d series loaded from the store for partitions %s in %.1fs",
            n,
            self.partitions,
            time.monotonic() - t,
        )

    def _start_http(self) -> None:
        import uvicorn

        from metrictank.api import QueryLimits, create_app

        writer = self.role == "write"
        app = create_app(
            self,
            None if writer else (lambda: self.query_source),
            local_source=None if writer else (lambda: self.local_source),
            queries_refused=(
                f"{self.name} is a write node (cluster.role = write): it does not answer queries; "
                "ask a read node"
            )
            if writer
            else None,
            query_limits=QueryLimits.from_config(self.cfg.http),
            graphite_fallback=self.graphite_fallback,
            max_request_body=self.cfg.http.max_request_body,
        )
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
        """The main loop (see IngestLoop), until stop() is called."""
        self.loop.run()

    def gc(self) -> None:
        self.loop.gc()

    def replay_progress(self):
        return self.loop.replay_progress()

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop consuming, drain writes (a primary's shutdown is a clean handover), close everything.

        The consumer is closed only once the loop has left it: closing a librdkafka consumer while another
        thread is inside consume() is undefined. A loop that does not stop in time is reported and its
        consumer left to the process exit."""
        timeout = self.cfg.store.drain_timeout if drain_timeout is None else drain_timeout
        self.stop_event.set()
        self._peer_watch_stop.set()
        if self.membership is not None:
            try:
                self.membership.stop()
            except Exception as e:  # noqa: BLE001 - informative; the others must still stop
                log.warning("membership stop failed: %s", e)
        if self.failover is not None:
            self.failover.stop()
        loop_wait = max(30.0, timeout)
        loop_stopped = self.stopped.wait(loop_wait) if self.loop.running else True
        if not loop_stopped:
            log.error(
                "shutdown: the main loop did not stop within %.0fs; its Kafka consumer is left open",
                loop_wait,
            )
        left = self.store.drain(timeout)
        if left:
            log.warning("shutdown: %d chunk writes not drained after %.0fs", left, timeout)
        if self.notifier is not None:
            self.notifier.flush(10)
        if loop_stopped:
            self.consumer.close()
        if self.listener is not None and loop_stopped:
            self.listener.close()
        if self.index_store is not None:  # before the store: it may share its Cassandra session
            self.index_store.close(timeout)
        if self.lease is not None and self.lease.held() and self.store.pending() == 0:
            # Drained: nothing more is written by this process, so the next primary need not wait for the
            # expiry. Before the store closes: the Cassandra lease shares its session. With writes left, close()
            # still tries them, so the lease is kept until it expires.
            try:
                self.lease.release()
            except Exception as e:  # noqa: BLE001 - it expires by itself
                log.warning("lease release at shutdown failed (it expires by itself): %s", e)
        self.store.close()
        if self.lease is not None:
            self.lease.close()
        close_source = getattr(self.query_source, "close", None)
        if close_source is not None and self.query_source is not self.local_source:
            close_source()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(5)

    # --- admin backend -----------------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        # the node's state is updated by the main loop: should the loop hang, the state would keep saying ready
        return self.node.ready and not self.standby_color() and self.loop.stalled_for() < MAIN_LOOP_STALL

    def not_ready_reason(self) -> str:
        stalled = self.loop.stalled_for()
        if stalled >= MAIN_LOOP_STALL:
            return f"main loop stalled for {stalled:.0f}s: not ingesting"
        if self.standby_color():
            return f"standby color: this node is color {self.cfg.cluster.color}, the active color is {self.membership.active_color}"  # type: ignore[union-attr]
        return "node not ready"

    def data_complete_wait(self) -> float:
        tr = self.consumer.tracker
        return data_complete_wait(
            self.clock(),
            self.schemas.all_chunkspans(),
            dict(tr.first_ts),
            {p: tr.from_log_start(p) for p in self.partitions},
            self.partitions,
        )

    def promotion_inputs(self) -> PromotionInputs:
        """What the promotion policy decides on: this node's state and what its peers say now."""
        statuses = fetch_peers(self.peers, self.cfg.cluster.peer_timeout)
        self.learn_peers(statuses)
        peers = [p.view() for p in statuses]
        window = self.cfg.cluster.foreign_writer_window
        return PromotionInputs(
            partitions=self.partitions,
            data_complete_wait=self.data_complete_wait(),
            persist_backlog_done=self.node.persist_backlog_done,
            priority=self.node.priority,
            max_priority=self.node.max_priority,
            broker_reachable=self.loop.broker_reachable(),
            peers=peers,
            recent_writers=(
                self.listener.recent_writers(self.partitions, window) if self.listener is not None else {}
            ),
            # kept with the lease too: a writer that does not take it (a Go Metrictank node of a mixed cluster)
            # is only visible through its announcements
            foreign_writer_window=window if self.listener is not None else 0.0,
        )

    def promotion_checks(self) -> list[str]:
        return promotion_reasons(self.promotion_inputs())

    def promote(self, force: bool) -> tuple[bool, list[str]]:
        """Blocking (peer calls): the HTTP API runs it in a worker thread, never on its event loop."""
        if self.node.primary:
            return True, []
        if self.role == "read":  # not even with force: nothing about this node is set up to write
            return False, [
                "this is a read node (cluster.role = read): it never writes the store, so it cannot become "
                "primary; promote a write node"
            ]
        reasons = self.promotion_checks()
        if self.lease is not None and not force:
            try:
                why = self.lease.blocker()
            except Exception as e:  # noqa: BLE001 - the store (the lease's home) is unreachable
                why = f"the lease store is unreachable: {type(e).__name__}: {e}"
            if why:
                reasons.append(why)
        if reasons and not force:
            log.info("promotion refused: %s", "; ".join(reasons))
            return False, reasons
        if self.lease is not None:
            try:
                ok, why = self.lease.acquire(force=force)
            except Exception as e:  # noqa: BLE001 - the store (the lease's home) is unreachable
                ok, why = False, f"the lease store is unreachable: {type(e).__name__}: {e}"
            if not ok:
                log.info("promotion refused: %s", why)
                return False, [*reasons, why]
        if reasons:
            log.warning("FORCED promotion despite: %s", "; ".join(reasons))
        self.node.set_primary(True)
        log.info(
            "promoted to primary%s", f" (lease epoch {self.lease.epoch})" if self.lease is not None else ""
        )
        return True, []

    def demote(self) -> tuple[bool, str]:
        """Stop writing, then drain what was queued, within `[store] drain-timeout`.

        Blocking (up to the drain timeout): the HTTP API runs it in a worker thread. After the flag is cleared,
        the wait for the main loop's plan+submit in progress guarantees that nothing planned as primary is queued
        after the drain began. When the drain times out (store outage), the remaining writes are dropped and
        counted rather than written late: they would race the next primary's writes of the same chunks (the
        next primary holds those chunks in memory too and writes them itself)."""
        changed = self.node.set_primary(False)
        timeout = self.cfg.store.drain_timeout
        deadline = time.monotonic() + timeout
        self.persister.wait_idle(timeout)
        left = self.store.drain(max(0.0, deadline - time.monotonic()))
        dropped = 0
        if left and not self.node.primary:
            dropped = self._drop_queue()
            left = self.store.pending()
            log.warning(
                "demotion: %d chunk writes not drained after %.0fs were dropped (the new primary writes them)",
                dropped,
                timeout,
            )
        unsent = self.notifier.flush(10) if self.notifier is not None else 0
        if self.failover is not None:
            self.failover.demoted()
        if self.lease is not None and not self.node.primary:
            try:
                self.lease.release()  # the next primary need not wait for the expiry
            except Exception as e:  # noqa: BLE001 - it expires by itself
                log.warning("lease release failed (it expires in %.0fs): %s", self.lease.duration, e)
        if changed:
            log.info("demoted to secondary; %d writes left, %d persist messages unsent", left, unsent)
        if left or unsent:
            return (
                False,
                f"{left} chunk writes still queued after {timeout:.0f}s ({dropped} dropped, not written late) "
                f"and {unsent} persist messages unsent",
            )
        return True, ""

    def node_json(self) -> dict:
        out = self.node.metrictank_json()
        tr = self.consumer.tracker
        out.update(
            {
                "instance": self.name,
                "role": self.role,
                "mainLoopStalledSeconds": round(self.loop.stalled_for(), 1),
                "promotionWait": round(self.node.promotion_wait(), 3),
                "dataCompletePromotionWait": round(self.data_complete_wait(), 3),
                "persistBacklogDone": self.node.persist_backlog_done,
                "brokerReachable": self.node.broker_reachable,
                "brokerUnreachableSeconds": round(self.consumer.probe.unreachable_for(), 1),
                "pendingWrites": self.store.pending(),
                "untrustedWriters": self.listener.untrusted_json() if self.listener is not None else {},
                "failover": self.failover.as_json()
                if self.failover is not None
                else {"mode": "manual", "lease": None},
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
                "readWindow": self.read_window,
                "evictedUnsavedChunks": self.tank.stats()["evicted_unsaved"],
                "warmStart": {
                    "partitions": {str(p): v for p, v in sorted(self.warm_start.items())},
                    "load": self.warm.status(),
                }
                if self.warm is not None
                else None,
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
        self.learn_peers(peers)
        return {
            "name": self.cfg.cluster.name,
            "self": self.node_json(),
            "peers": [p.as_json() for p in peers],
        }

    def metrics_text(self) -> bytes:
        return self.stats.render()

    # --- self metrics: each component registers the figures it owns ---------------------------------------------
    def _register_stats(self) -> None:
        s = self.stats
        self.handler.register_stats(s)
        self.consumer.register_stats(s)
        self.loop.register_stats(s)
        self.persister.register_stats(s)
        self.node.register_stats(s)
        s.gauge(
            "cluster.self.data_complete_promotion_wait",
            "seconds until every chunk this node would save was seen from its start",
            self.data_complete_wait,
        )
        if self.failover is not None:
            self.failover.register_stats(s)
        if self.warm is not None:
            self.warm.register_stats(s)
        if self.membership is not None:
            self.membership.register_stats(s)
        if self.graphite_fallback is not None:
            self.graphite_fallback.register_stats(s)
        s.counter("process.stats_read_errors", "metric families left out of a scrape", lambda: s.read_errors)
        if self.index_store is not None:
            self.index_store.register_stats(s)
        self.store.register_stats(s)
        if self.notifier is not None:
            self.notifier.register_stats(s)
        if self.listener is not None:
            self.listener.register_stats(s)
