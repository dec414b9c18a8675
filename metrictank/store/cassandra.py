"""Cassandra chunk store with Metrictank's schema, keys and write semantics (spec §5).

Throughput comes from the shape of the calls, not from threads: the Python driver spends ~45 µs of CPU
per request whatever its size, so chunks going to the same replicas are sent as small UNLOGGED batches
(at most `batch_max` partitions, below Cassandra's 10-partition warning and its 5 KiB size warning).
Grouping by replica set keeps the batch a local write on its coordinator — the multi-partition batch
anti-pattern is about batches that the coordinator must fan out to other nodes.

One dispatcher thread owns all write state (in-flight keys, held writes, retry timers); driver callbacks
only append to a deque and wake it. Per AMKey at most one write is in flight: later chunks of that key
wait in submission order, and a failing write keeps its key until it succeeds, so a retry can never
land after (and overwrite) a newer write of the same chunk.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    InvalidRequest,
    OperationTimedOut,
    Unavailable,
    WriteTimeout,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement, tuple_factory

from metrictank.schema import row_key, row_keys_for_range, table_for_ttl, write_ttl
from metrictank.store import cql
from metrictank.store.base import Chunks, ChunkWrite, read_bounds
from metrictank.store.pipeline import QueuedStore, retry_delay

log = logging.getLogger(__name__)

_I32 = struct.Struct(">i").pack
DEFAULT_PORT = 9042


def parse_addrs(addrs: str | Sequence[str]) -> list[tuple[str, int]]:
    """ "h:p,h:p" (port optional, default 9042) into the driver's (host, port) contact points."""
    items = addrs.split(",") if isinstance(addrs, str) else list(addrs)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):  # bare host or bare IPv6
            out.append((item.strip("[]"), DEFAULT_PORT))
        else:
            out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no Cassandra address given")
    return out


def _connection_class(reactor: str):
    """libev is the driver's fastest reactor (asyncore costs ~2x CPU per request); fall back if absent."""
    if reactor == "libev":
        try:
            from cassandra.io.libevreactor import LibevConnection

            return LibevConnection
        except ImportError:  # pragma: no cover - depends on the driver build
            log.warning("cassandra store: libev reactor unavailable, using the driver default")
            return None
    if reactor == "asyncore":
        from cassandra.io.asyncorereactor import AsyncoreConnection

        return AsyncoreConnection
    if reactor == "asyncio":
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection
    return None


class TableMissing(RuntimeError):
    """A write's table is not (yet) in the schema; retried like any failed write."""


def cassandra_error_reason(exc: BaseException) -> str:
    """A short, stable label for a failed write (the `reason` of `write_errors_by_reason`).

    `timeout` is the driver's client-side request timeout; `write-timeout` and `unavailable` are the
    coordinator's answers (replicas too slow, too few replicas alive); `no-host` means no connection at all.
    """
    if isinstance(exc, OperationTimedOut):
        return "timeout"
    if isinstance(exc, WriteTimeout):
        return "write-timeout"
    if isinstance(exc, Unavailable):
        return "unavailable"
    if isinstance(exc, NoHostAvailable):
        return "no-host"
    if isinstance(exc, CoordinationFailure):
        return "write-failure"
    if isinstance(exc, OverloadedErrorMessage | IsBootstrappingErrorMessage):
        return "overloaded"
    if isinstance(exc, TableMissing):
        return "table-missing"
    if isinstance(exc, InvalidRequest):
        return "invalid-request"
    return "other"


class _Req:
    """One request on the wire: a single chunk or an UNLOGGED batch of chunks for one replica set."""

    __slots__ = ("writes", "keys", "attempt", "nbytes", "gen")

    def __init__(self, gen: int = 0) -> None:
        self.writes: list[ChunkWrite] = []
        self.keys: list[bytes] = []  # row keys, ascii-encoded
        self.attempt = 0
        self.nbytes = 0
        self.gen = gen  # discard generation when its writes were taken from the queues


class CassandraStore(QueuedStore):
    """Metrictank-compatible chunk store on Cassandra (see module docstring for the write path).

    Options that matter for operation:
      addrs              "host:port,host:port" contact points.
      write_queues       N queues chosen by (org + md5 bytes) % N, as Metrictank; `write_queue_size` each.
                         A full queue blocks `submit` (backpressure).
      write_concurrency  chunks in flight + held behind an in-flight chunk of the same key + awaiting
                         retry; bounds memory and the load put on Cassandra.
      batch, batch_max, batch_bytes
                         UNLOGGED batches per replica set; `batch=False` sends one request per chunk.
      timeout            per request (writes and reads), seconds; may be changed at run time.
      retry_base/max     failed writes are retried forever with back-off base * 2^attempt capped at max
                         (counted in stats); only `close()` gives up on them.
      protocol_version   4 by default (Metrictank's default; v5 framing costs more CPU in the Python driver).
    """

    def __init__(
        self,
        addrs: str = "localhost:9042",
        keyspace: str = "metrictank",
        consistency: str = "one",
        timeout: float = 5.0,
        write_queues: int = 10,
        write_queue_size: int = 100_000,
        write_concurrency: int = 500,
        create_keyspace: bool = True,
        replication: str | dict = "SimpleStrategy RF 1",
        ttls: Sequence[int] = (),
        *,
        protocol_version: int = 4,
        batch: bool = True,
        batch_max: int = 10,
        batch_bytes: int = 4096,
        read_concurrency: int = 64,
        retry_base: float = 0.1,
        retry_max: float = 2.0,
        connect_timeout: float = 10.0,
        verify_timeout: float = 25.0,
        reactor: str = "libev",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(write_queues, write_queue_size)
        self.keyspace = keyspace
        self.timeout = timeout  # per request; read at each send so it can be changed at run time
        self._create = create_keyspace
        self._max_inflight = max(1, write_concurrency)  # chunks in flight, held or awaiting retry
        self._batch = batch and batch_max > 1
        self._batch_max = max(1, batch_max)
        self._batch_bytes = batch_bytes
        self._read_concurrency = max(1, read_concurrency)
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._clock = clock
        self._consistency = ConsistencyLevel.name_to_value[consistency.upper()]

        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=self._consistency,
            request_timeout=timeout,
            row_factory=tuple_factory,
        )
        kwargs = {}
        conn_cls = _connection_class(reactor)
        if conn_cls is not None:
            kwargs["connection_class"] = conn_cls
        self._cluster = Cluster(
            parse_addrs(addrs),
            protocol_version=protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            compression=False,  # chunks are already compressed; LZ4 would only cost CPU
            connect_timeout=connect_timeout,
            **kwargs,
        )
        try:
            self._session = self._cluster.connect()
            self._tables: dict[int, tuple[str, int]] = {}  # ttl -> (table, window hours)
            self._inserts: dict[str, PreparedStatement] = {}
            self._selects: dict[str, PreparedStatement] = {}
            self._created: set[str] = set()
            self._looked_up: dict[str, float] = {}  # table -> last server lookup (monotonic)
            self._ddl_lock = threading.Lock()
            if create_keyspace:
                self._session.execute(cql.create_keyspace(keyspace, replication), timeout=max(timeout, 30.0))
                for ttl in ttls:
                    self._ensure_table(*self._table(ttl))
            else:
                self._verify(ttls, verify_timeout)
        except BaseException:
            self._cluster.shutdown()
            raise

        # dispatcher-thread state (no locks: only the dispatcher touches it)
        self._busy: set[str] = set()  # amkeys with a write in flight or awaiting retry
        self._waiting: dict[str, deque[ChunkWrite]] = {}
        self._held = 0
        self._inflight: set[_Req] = set()
        self._inflight_writes = 0
        self._retry: list[tuple[float, int, _Req]] = []
        self._retrying = 0
        self._seq = itertools.count()
        self._completions: deque[tuple[_Req, BaseException | None]] = deque()
        self._gen = 0  # the dispatcher's view of the discard generation
        self._discard_req: tuple[int, threading.Event] | None = None  # set by discard_pending, done here
        self._stop = threading.Event()
        self._extra = {"requests": 0, "batches": 0, "batched_writes": 0}

        self._thread = threading.Thread(target=self._run, name="cassandra-store-writer", daemon=True)
        self._thread.start()

    # -- schema -----------------------------------------------------------------------------------
    def _table(self, ttl: int) -> tuple[str, int]:
        t = self._tables.get(ttl)
        if t is None:
            t = self._tables[ttl] = table_for_ttl(ttl)
        return t

    def _ensure_table(self, table: str, window: int) -> None:
        if not self._create or table in self._created:
            return
        with self._ddl_lock:
            if table not in self._created:
                self._session.execute(
                    cql.create_table(self.keyspace, table, window), timeout=max(self.timeout, 30.0)
                )
                self._created.add(table)

    def _verify(self, ttls: Sequence[int], verify_timeout: float) -> None:
        """Without create_keyspace another node owns the schema: wait a while for it, as Metrictank does."""
        deadline = time.monotonic() + verify_timeout
        need = {self._table(t)[0] for t in ttls}
        while True:
            self._cluster.refresh_schema_metadata()
            ks = self._cluster.metadata.keyspaces.get(self.keyspace)
            missing = sorted(need - set(ks.tables) if ks else need | {"<keyspace>"})
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"cassandra store: keyspace {self.keyspace!r} lacks {missing}")
            log.warning("cassandra store: waiting for %s in keyspace %s", missing, self.keyspace)
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))

    def _table_known(self, table: str) -> bool:
        """Whether the table exists, per the driver's schema metadata.

        Checked before preparing: preparing against a missing table makes the driver log a traceback
        at ERROR, once per retry during an outage. The metadata follows schema events with a delay, so
        a table missing from it is looked up on the server (at most once per second per table).
        """
        ks = self._cluster.metadata.keyspaces.get(self.keyspace)
        if ks is not None and table in ks.tables:
            return True
        now = time.monotonic()
        if now - self._looked_up.get(table, -1e9) < 1.0:
            return False
        self._looked_up[table] = now
        try:
            self._cluster.refresh_table_metadata(self.keyspace, table, max_schema_agreement_wait=0)
        except Exception as exc:  # server unreachable: the caller treats it as missing (and retries)
            log.debug("cassandra store: metadata refresh of %s failed: %r", table, exc)
            return False
        ks = self._cluster.metadata.keyspaces.get(self.keyspace)
        return ks is not None and table in ks.tables

    def _insert_stmt(self, ttl: int) -> PreparedStatement:
        table, window = self._table(ttl)
        ps = self._inserts.get(table)
        if ps is None:
            self._ensure_table(table, window)
            if not self._table_known(table):
                raise TableMissing(f"table {self.keyspace}.{table} does not exist")
            ps = self._session.prepare(cql.insert(self.keyspace, table))
            ps.consistency_level = self._consistency
            self._inserts[table] = ps
        return ps

    def _select_stmt(self, table: str) -> PreparedStatement | None:
        """None when the table does not exist: nothing was ever written with that TTL."""
        ps = self._selects.get(table)
        if ps is None:
            if not self._table_known(table):
                return None
            ps = self._session.prepare(cql.select(self.keyspace, table))
            ps.consistency_level = self._consistency
            self._selects[table] = ps
        return ps

    def table_names(self) -> list[str]:
        return sorted({t for t, _ in self._tables.values()})

    # -- dispatcher -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake_event.clear()
                if not self._step():
                    self._wake_event.wait(self._idle_wait())
        except Exception:  # pragma: no cover - a bug here must at least be visible
            log.exception("cassandra store: writer thread crashed")
            raise
        finally:
            self._abandon_all()

    def _idle_wait(self) -> float:
        if self._retry:
            return max(0.0, min(0.5, self._retry[0][0] - time.monotonic()))
        return 0.5

    def _step(self) -> bool:
        """One round: completions, due retries, new work. Returns whether anything happened."""
        done: list[ChunkWrite] = []
        ready: list[ChunkWrite] = []
        dropped: list[ChunkWrite] = []
        progressed = False
        if self._discard_req is not None:
            self._discard_now(dropped)
            progressed = True
        comps = self._completions
        while comps:
            req, exc = comps.popleft()
            progressed = True
            if req not in self._inflight:
                continue
            self._inflight.discard(req)
            self._inflight_writes -= len(req.writes)
            if exc is None:
                self._counters["saved"] += len(req.writes)
                self._counters["bytes_saved"] += req.nbytes
                done.extend(req.writes)
                for w in req.writes:
                    self._release(w.amkey, ready)
            elif req.gen < self._gen:  # discarded while on the wire: give up instead of retrying
                self._count_error(cassandra_error_reason(exc), len(req.writes))
                dropped.extend(req.writes)
                for w in req.writes:
                    self._release(w.amkey, ready)
            else:
                self._failed(req, exc)
        if dropped:
            self._drop(dropped)

        now = time.monotonic()
        retry_now: list[_Req] = []
        while self._retry and self._retry[0][0] <= now:
            retry_now.append(heapq.heappop(self._retry)[2])
        for req in retry_now:
            self._retrying -= len(req.writes)
            self._counters["retries"] += len(req.writes)
            progressed = True

        budget = self._max_inflight - self._inflight_writes - self._held - self._retrying - len(ready)
        if budget > 0:
            busy = self._busy
            for w in self._queues.take(budget):
                progressed = True
                if w.amkey in busy:
                    q = self._waiting.get(w.amkey)
                    if q is None:
                        q = self._waiting[w.amkey] = deque()
                    q.append(w)
                    self._held += 1
                else:
                    busy.add(w.amkey)
                    ready.append(w)

        # requests to send; expired chunks are dropped here and count as done (as in Metrictank)
        skipped: list[ChunkWrite] = []
        for req in retry_now:
            self._send(req, skipped)
        if ready:
            for req in self._group(ready):
                self._send(req, skipped)
        while skipped:
            progressed = True
            self._counters["skipped_expired"] += len(skipped)
            more: list[ChunkWrite] = []
            for w in skipped:
                self._release(w.amkey, more)
            done.extend(skipped)
            skipped = []
            if more:  # held chunks of those keys are next in line
                for req in self._group(more):
                    self._send(req, skipped)
        if done:
            self._finish(done)
        return progressed

    def _release(self, amkey: str, ready: list[ChunkWrite]) -> None:
        q = self._waiting.get(amkey)
        if q:
            ready.append(q.popleft())  # the key stays busy for its next chunk
            self._held -= 1
            if not q:
                del self._waiting[amkey]
        else:
            self._busy.discard(amkey)

    def _discard_now(self, dropped: list[ChunkWrite]) -> None:
        """Dispatcher: carry out `discard_pending` -- queued, held and retry-waiting writes are dropped, and
        requests on the wire now give up if they fail. Done here because only this thread owns that state."""
        req = self._discard_req
        if req is None:
            return
        gen, ack = req
        self._discard_req = None
        self._gen = max(self._gen, gen)
        dropped.extend(self._queues.clear())
        for q in self._waiting.values():
            dropped.extend(q)
        self._waiting.clear()
        self._held = 0
        for _, _, r in self._retry:
            dropped.extend(r.writes)
        self._retry.clear()
        self._retrying = 0
        # keys stay busy only while a request of theirs is on the wire
        self._busy = {w.amkey for r in self._inflight for w in r.writes}
        ack.set()

    def _discard(self, gen: int, deadline: float) -> None:
        """Hand the discard to the dispatcher and wait for it; without one (closed, or too slow to answer
        before `deadline`) at least the queues are dropped from here."""
        ack = threading.Event()
        self._discard_req = (gen, ack)
        self._wake()
        if self._thread.is_alive() and ack.wait(max(0.0, deadline - time.monotonic())):
            return
        self._drop(self._queues.clear())

    def _failed(self, req: _Req, exc: BaseException) -> None:
        self._count_error(cassandra_error_reason(exc), len(req.writes))
        if req.attempt % 20 == 0:
            log.warning(
                "cassandra store: write of %d chunk(s) failed (attempt %d, first %s:%d): %r",
                len(req.writes),
                req.attempt + 1,
                req.writes[0].amkey,
                req.writes[0].t0,
                exc,
            )
        delay = retry_delay(req.attempt, self._retry_base, self._retry_max)
        req.attempt += 1
        heapq.heappush(self._retry, (time.monotonic() + delay, next(self._seq), req))
        self._retrying += len(req.writes)

    def _group(self, writes: list[ChunkWrite]) -> list[_Req]:
        """Split into requests: one replica set per batch, at most batch_max chunks / batch_bytes."""
        reqs: list[_Req] = []
        if not self._batch:
            for w in writes:
                r = _Req(self._gen)
                r.writes.append(w)
                r.keys.append(row_key(w.amkey, w.t0).encode("ascii"))
                r.nbytes = len(w.data)
                reqs.append(r)
            return reqs
        meta = self._cluster.metadata
        single = len(meta.all_hosts()) <= 1
        open_by_group: dict[object, _Req] = {}
        bmax, bbytes, ks = self._batch_max, self._batch_bytes, self.keyspace
        for w in writes:
            rk = row_key(w.amkey, w.t0).encode("ascii")
            n = len(w.data)
            if single:
                group: object = None
            else:
                group = frozenset(meta.get_replicas(ks, rk))
            r = open_by_group.get(group)
            if r is not None and (len(r.writes) >= bmax or r.nbytes + n > bbytes):
                r = None
            if r is None:
                r = open_by_group[group] = _Req(self._gen)
                reqs.append(r)
            r.writes.append(w)
            r.keys.append(rk)
            r.nbytes += n
        return reqs

    def _send(self, req: _Req, skipped: list[ChunkWrite]) -> None:
        """Bind (relative TTL recomputed at every attempt) and fire one request; while the write gate is closed
        (fenced: the primary lease is not provably ours) it waits among the retries instead."""
        if not self._may_write():
            self._counters["fenced"] += len(req.writes)
            heapq.heappush(self._retry, (time.monotonic() + 0.2, next(self._seq), req))
            self._retrying += len(req.writes)
            return
        now = int(self._clock())
        self._inflight.add(req)
        self._inflight_writes += len(req.writes)
        try:
            stmts: list[BoundStatement] = []
            expired: list[ChunkWrite] = []
            keep_w: list[ChunkWrite] = []
            keep_k: list[bytes] = []
            for w, rk in zip(req.writes, req.keys, strict=True):
                rel = write_ttl(w.t0, w.span, w.ttl, now)
                if rel <= 0:
                    expired.append(w)
                    continue
                bs = BoundStatement(self._insert_stmt(w.ttl))
                bs.values = [rk, _I32(w.t0), w.data, _I32(rel)]
                stmts.append(bs)
                keep_w.append(w)
                keep_k.append(rk)
            if expired:
                self._inflight_writes -= len(expired)
                req.writes, req.keys = keep_w, keep_k
                req.nbytes = sum(len(w.data) for w in keep_w)
                skipped.extend(expired)
            if not stmts:
                self._inflight.discard(req)
                return
            if len(stmts) == 1:
                stmt = stmts[0]
            else:
                stmt = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self._consistency)
                for bs in stmts:
                    stmt.add(bs)
                self._extra["batches"] += 1
                self._extra["batched_writes"] += len(stmts)
            self._extra["requests"] += 1
            fut = self._session.execute_async(stmt, timeout=self.timeout)
        except Exception as exc:  # prepare/DDL/no host: same path as a failed write
            self._completions.append((req, exc))
            self._wake()
            return
        fut.add_callbacks(self._on_ok, self._on_err, callback_args=(req,), errback_args=(req,))

    # driver I/O thread: keep these tiny
    def _on_ok(self, _rows, req: _Req) -> None:
        self._completions.append((req, None))
        self._wake()

    def _on_err(self, exc: BaseException, req: _Req) -> None:
        self._completions.append((req, exc))
        self._wake()

    def _abandon_all(self) -> None:
        """Writer stopping: whatever is not confirmed is given up (and counted)."""
        left: list[ChunkWrite] = []
        for req in self._inflight:
            left.extend(req.writes)
        for _, _, req in self._retry:
            left.extend(req.writes)
        for q in self._waiting.values():
            left.extend(q)
        left.extend(self._queues.close())
        self._inflight.clear()
        self._retry.clear()
        self._waiting.clear()
        self._held = self._retrying = self._inflight_writes = 0
        if left:
            self._counters["abandoned"] += len(left)
            self._finish(left, saved=False)

    # -- reading ----------------------------------------------------------------------------------
    def read(self, amkey: str, ttl: int, start: int, end: int, max_span: int) -> Chunks:
        return self.read_many([(amkey, ttl)], start, end, max_span)[amkey]

    def read_many(
        self, reqs: Sequence[tuple[str, int]], start: int, end: int, max_span: int
    ) -> dict[str, Chunks]:
        """Metrictank's read: all row-key buckets of [start, end) in one IN query per series."""
        out: dict[str, Chunks] = {amkey: [] for amkey, _ in reqs}
        if start >= end:
            return out
        lo = read_bounds(start, max_span)
        pending: deque = deque()
        for amkey, ttl in reqs:
            table = self._table(ttl)[0]
            ps = self._select_stmt(table)
            if ps is None:
                continue
            keys = row_keys_for_range(amkey, start, end)
            pending.append((amkey, self._session.execute_async(ps, (keys, lo, end), timeout=self.timeout)))
            if len(pending) >= self._read_concurrency:
                self._collect(pending.popleft(), out)
        while pending:
            self._collect(pending.popleft(), out)
        return out

    @staticmethod
    def _collect(item, out: dict[str, Chunks]) -> None:
        amkey, fut = item
        rows = list(fut.result())  # iterating fetches further pages, if any
        rows.sort()
        out[amkey] = rows

    # -- lifecycle --------------------------------------------------------------------------------
    def _extra_stats(self) -> dict:
        s = dict(self._extra)
        s["inflight"] = self._inflight_writes
        s["held"] = self._held
        s["retrying"] = self._retrying
        return s

    @property
    def session(self):
        """The driver session (tests and tools use it for ad-hoc queries)."""
        return self._session

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write what is queued for up to `timeout`, then abandon the rest."""
        if self._closed and not self._thread.is_alive():
            return
        self._closed = True
        self.drain(timeout)
        self._stop.set()
        self._wake()
        self._thread.join()
        self._cluster.shutdown()
