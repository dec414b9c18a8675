"""The index in the store: Metrictank's `metric_idx` table, written by every instance, loaded at start-up.

Why: producers of the compact MetricPoint formats send a series' full MetricData only now and then. A node
that restarts replays Kafka from `[kafka-mdm-in] offset`; a series whose last MetricData is older than that
window would be unknown and its points dropped (`metricpoint.unknown`). Metrictank keeps every definition in
Cassandra (`cassandra-idx`) and loads the node's partitions before consuming; so do we, with its schema and
column values, so that Metrictank's tools (`mt-index-cat`) and nodes see our series and we see theirs
(docs/index.md lists the facts this relies on).

Two parts:
  * `IndexStore` (backends `SQLiteIndexStore`, `CassandraIndexStore`): a bounded queue, writer thread(s),
    bulk load by partition in bounded batches, pruning of stale rows. `update` never blocks: a full queue
    drops the update and counts it (`idx.cassandra.save.skipped`, Metrictank's figure).
  * `IndexUpdater`: the policy, fed by the ingest handler after each batch: a new series is written at
    once, a live one at most once per `update-interval` (row-indexed numpy columns, so the per-batch check is
    a few vector operations, not a dict lookup per point). An update that was dropped is retried the next
    time the series is seen, as Metrictank does.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metrictank.index.defbatch import DefBatch
from metrictank.index.keys import parse_id
from metrictank.schema.validate import _MAX_TS, _valid_utf8, eat_dots, validate_tag
from metrictank.stats import Stats
from metrictank.store.pipeline import retry_delay
from metrictank.store.sqlite import enable_wal

log = logging.getLogger(__name__)

__all__ = [
    "IndexStore",
    "SQLiteIndexStore",
    "CassandraIndexStore",
    "IndexUpdater",
    "open_index_store",
    "cql_create_table",
]

#: definitions per queue item and per write transaction / round of concurrent inserts
WRITE_CHUNK = 500
#: rows per load batch handed to the memory index (bounded memory whatever the table size)
LOAD_BATCH = 10_000

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


def cql_create_table(keyspace: str, table: str) -> str:
    """Metrictank's `schema_table` of scripts/config/schema-idx-cassandra.toml, column for column.

    The compression option is spelled `class` (Cassandra >= 3.0); Metrictank's file still uses the older
    `sstable_compression`, which Cassandra 4 rejects. Same compressor (LZ4), same table."""
    return (
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{table} (id text, orgid int, partition int, name text, "
        "interval int, unit text, mtype text, tags set<text>, lastupdate int, PRIMARY KEY (partition, id)) "
        "WITH compaction = {'class': 'SizeTieredCompactionStrategy'} "
        "AND compression = {'class': 'org.apache.cassandra.io.compress.LZ4Compressor'}"
    )


def cql_create_archive_table(keyspace: str, table: str) -> str:
    """Metrictank's `schema_archive_table`: the same columns plus `archived_at`, the same key. Metrictank's nodes
    and tools (mt-index-cat, mt-store-cat) stop at start-up when it is missing, so it is created beside
    `metric_idx` even when nothing is archived."""
    return (
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{table} (id text, orgid int, partition int, name text, "
        "interval int, unit text, mtype text, tags set<text>, lastupdate int, archived_at int, "
        "PRIMARY KEY (partition, id)) "
        "WITH compaction = {'class': 'SizeTieredCompactionStrategy'} "
        "AND compression = {'class': 'org.apache.cassandra.io.compress.LZ4Compressor'}"
    )


def _i32(v: int) -> int:
    """Cassandra's `int` is 32 bits; Metrictank's driver would reject a larger value, we clamp it."""
    return _I32_MIN if v < _I32_MIN else _I32_MAX if v > _I32_MAX else v


_U32_MAX = (1 << 32) - 1
_I62 = 1 << 62  # a lastupdate beyond this is garbage (and `+ update-interval` must not overflow int64)


def _valid_row(r: tuple) -> bool:
    """Whether a loaded row is a definition the memory index can take: an id `<org>.<32 hex>`, integer org,
    partition and lastupdate, an interval and a (normalised, UTF-8) name as ingest validation accepts them,
    text unit and mtype, tags a sequence of valid `k=v` strings. The table is shared (Metrictank's tools and
    nodes write it too) and may be corrupt: a bad row is skipped and counted, it must not fail the load --
    and with it the start-up of every node that owns the partition."""
    try:
        i, o, p, nm, iv, u, mt, t, lu = r
        parse_id(i)
    except (ValueError, TypeError, AttributeError):
        return False
    return (
        type(o) is int
        and _I32_MIN <= o <= _U32_MAX
        and type(p) is int
        and type(iv) is int
        and 0 < iv < _MAX_TS
        and type(lu) is int
        and -_I62 < lu < _I62
        and type(nm) is str
        and nm != ""
        and eat_dots(nm) == nm
        and _valid_utf8(nm)
        and type(u) is str
        and type(mt) is str
        and isinstance(t, tuple | list)
        and all(type(x) is str and validate_tag(x) for x in t)
    )


def _json_tags(text: Any) -> tuple | None:
    """The tags column of a SQLite row (a JSON array), or None when it is not one (the row is then invalid)."""
    try:
        tags = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None
    return tuple(tags) if type(tags) is list else None


class IndexStore:
    """Persistent series definitions: non-blocking writes through a bounded queue, bulk loads, pruning.

    Subclasses provide `_write`, `_delete`, `_scan`, `_prune_rows` and `_close_backend`; everything about
    queueing, retries, loading policy and figures is here, so both backends behave the same."""

    backend = "abstract"

    def __init__(
        self,
        *,
        write_queue_size: int = 100_000,
        writers: int = 1,
        retry_base: float = 0.1,
        retry_max: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.write_queue_size = max(1, write_queue_size)
        self._clock = clock
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._cv = threading.Condition()
        self._q: deque[tuple[str, Any, int]] = deque()  # (op, payload, definitions)
        self._queued = 0  # definitions waiting (the bound applies to these)
        self._busy = 0  # definitions taken by a writer and not yet written
        self._closing = False
        self._stop = threading.Event()  # writers: abandon what is left
        # figures (Metrictank's idx.cassandra.* names where it has one)
        self.save_skipped = 0
        self.inserts_ok = 0
        self.insert_errors = 0
        self.deletes_ok = 0
        self.archived_ok = 0
        self.delete_errors = 0
        self.loaded = 0
        self.load_invalid = 0
        self.load_stale = 0
        self.pruned = 0
        self._writers = [
            threading.Thread(target=self._run, name=f"index-store-writer-{i}", daemon=True)
            for i in range(max(1, writers))
        ]

    def _start_writers(self) -> None:
        for t in self._writers:
            t.start()

    # -- writes (any thread; never blocks) ---------------------------------------------------------------------
    def room(self) -> int:
        """Definitions the queue can take now (the bound counts those being written too: Metrictank's
        `write-queue-size` is the number of definitions allowed to be unwritten)."""
        return max(0, self.write_queue_size - self._queued - self._busy)

    def update(self, defs: DefBatch) -> int:
        """Queue definitions to be written; returns how many were taken. Never waits: what does not fit
        is dropped and counted (`save.skipped`); the caller retries it later."""
        n = len(defs)
        if n == 0:
            return 0
        with self._cv:
            take = 0 if self._closing else min(n, self.room())
            self.save_skipped += n - take
            self._queued += take  # reserved now, so concurrent callers cannot overfill the queue
        if take <= 0:
            return 0
        # the rows are built outside the lock: the writers keep going meanwhile
        sub = defs if take == n else defs.take(np.arange(take))
        rows = [(i, o, p, nm, iv, u, mt, t, _i32(lu)) for i, o, p, nm, iv, u, mt, t, lu in sub.rows()]
        with self._cv:
            for s in range(0, take, WRITE_CHUNK):
                chunk = rows[s : s + WRITE_CHUNK]
                self._q.append(("insert", chunk, len(chunk)))
            self._cv.notify_all()
        return take

    def delete(self, ids: Sequence[str], partitions: Sequence[int]) -> bool:
        """Queue deletes of (partition, id) rows (a series removed by a control message, or one that moved to
        another partition: the key includes the partition, so its old row would stay). Never waits."""
        keys = [(int(p), str(i)) for i, p in zip(ids, partitions, strict=True)]
        if not keys:
            return True
        with self._cv:
            if self._closing or len(keys) > self.room():
                self.save_skipped += len(keys)
                return False
            self._q.append(("delete", keys, len(keys)))
            self._queued += len(keys)
            self._cv.notify_all()
        return True

    def archive(self, defs: DefBatch, archived_at: int) -> bool:
        """Queue the move of these definitions' rows to the archive table (a control message archiving series:
        Metrictank's `metric_idx_archive`, with `archived_at`). Never waits; False when the queue is full."""
        n = len(defs)
        if n == 0:
            return True
        rows = [
            (i, o, p, nm, iv, u, mt, t, _i32(lu), _i32(int(archived_at)))
            for i, o, p, nm, iv, u, mt, t, lu in defs.rows()
        ]
        with self._cv:
            if self._closing or n > self.room():
                self.save_skipped += n
                return False
            self._q.append(("archive", rows, n))
            self._queued += n
            self._cv.notify_all()
        return True

    def pending(self) -> int:
        """Definitions queued or being written."""
        return self._queued + self._busy

    def drain(self, timeout: float) -> int:
        """Wait up to `timeout` for the queue to be written; returns what is left."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queued + self._busy and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, 0.1))
            return self._queued + self._busy

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait(0.5)
                if not self._q or self._stop.is_set():
                    return
                op, payload, n = self._q.popleft()
                self._queued -= n
                self._busy += n
            try:
                self._execute(op, payload)
            finally:
                with self._cv:
                    self._busy -= n
                    self._cv.notify_all()

    def _execute(self, op: str, payload: list) -> None:
        """Retried until it succeeds (Metrictank retries index writes forever) or the store is closed."""
        attempt = 0
        while not self._stop.is_set():
            try:
                if op == "insert":
                    self._write(payload)
                    self.inserts_ok += len(payload)
                elif op == "archive":
                    self._archive(payload)
                    self.archived_ok += len(payload)
                else:
                    self._delete(payload)
                    self.deletes_ok += len(payload)
                return
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried, never fatal
                if op == "insert":
                    self.insert_errors += 1
                else:
                    self.delete_errors += 1
                if attempt % 20 == 0:
                    log.warning(
                        "index store: %s of %d definitions failed (retrying): %r", op, len(payload), exc
                    )
                self._stop.wait(retry_delay(attempt, self._retry_base, self._retry_max))
                attempt += 1

    # -- load (start-up, before consumption) -------------------------------------------------------------------
    def load(
        self,
        partitions: Iterable[int],
        *,
        max_stale: float = 0.0,
        update_interval: float = 0.0,
        concurrency: int = 1,
        retries: int = 3,
        batch_size: int = LOAD_BATCH,
        now: float | None = None,
    ) -> Iterator[DefBatch]:
        """The definitions of `partitions`, in batches of at most `batch_size` (bounded memory).

        As Metrictank: lastupdate is bumped by `update_interval` (capped at now), since a row is rewritten only
        that often and the series may have had data since; with `max_stale` > 0, rows whose (bumped)
        lastupdate is older than now - max_stale are not loaded. Rows with an unparsable id are skipped and
        counted. A partition that cannot be read after `retries` attempts raises: starting without it
        would silently drop its series' points."""
        parts = sorted({int(p) for p in partitions})
        t_now = int(self._clock() if now is None else now)
        cutoff = t_now - int(max_stale) if max_stale > 0 else None
        bump = int(update_interval)

        def one(p: int) -> Iterator[DefBatch]:
            done = 0  # raw rows of this partition handed on (a scan's order is the key's, so it repeats)
            for attempt in range(max(1, retries)):
                skip = done
                try:
                    for raw in self._scan(p, batch_size):
                        # a retry after a failure mid-partition re-reads it: skip what was handed on already
                        if skip:
                            k = min(skip, len(raw))
                            skip -= k
                            raw = raw[k:]
                            if not raw:
                                continue
                        # prepared before it counts as handed on: a batch that fails here is read again
                        b = self._prepare(raw, t_now, bump, cutoff)
                        done += len(raw)
                        yield b
                    return
                except Exception as exc:  # noqa: BLE001
                    if attempt + 1 >= max(1, retries):
                        raise RuntimeError(f"index store: loading partition {p} failed: {exc!r}") from exc
                    log.warning(
                        "index store: loading partition %d failed (attempt %d): %r", p, attempt + 1, exc
                    )
                    time.sleep(retry_delay(attempt, self._retry_base, self._retry_max))

        if concurrency <= 1 or len(parts) <= 1:
            for p in parts:
                yield from one(p)
            return
        yield from self._load_concurrent(parts, one, concurrency)

    def _load_concurrent(
        self, parts: list[int], one: Callable[[int], Iterator[DefBatch]], concurrency: int
    ) -> Iterator[DefBatch]:
        """Partitions read by `concurrency` threads; a small hand-over queue bounds what is in memory."""
        out: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=concurrency * 2)
        todo: queue.Queue[int] = queue.Queue()
        for p in parts:
            todo.put(p)
        abort = threading.Event()

        def work() -> None:
            try:
                while not abort.is_set():
                    try:
                        p = todo.get_nowait()
                    except queue.Empty:
                        return
                    for b in one(p):
                        while not abort.is_set():
                            try:
                                out.put(("batch", b), timeout=0.2)
                                break
                            except queue.Full:
                                continue
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                out.put(("error", exc))
            finally:
                out.put(("done", None))

        threads = [
            threading.Thread(target=work, name=f"index-load-{i}", daemon=True) for i in range(concurrency)
        ]
        for t in threads:
            t.start()
        running = len(threads)
        try:
            while running:
                kind, item = out.get()
                if kind == "done":
                    running -= 1
                elif kind == "error":
                    raise item
                else:
                    yield item
        finally:
            abort.set()
            while any(t.is_alive() for t in threads):
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass

    def _prepare(self, raw: Sequence[tuple], now: int, bump: int, cutoff: int | None) -> DefBatch:
        good = [r for r in raw if _valid_row(r)]
        self.load_invalid += len(raw) - len(good)
        b = DefBatch.from_rows(good)
        if len(b):
            b.lastupdates = np.minimum(b.lastupdates + bump, now)
            if cutoff is not None:
                fresh = b.lastupdates >= cutoff
                if not fresh.all():
                    self.load_stale += int(len(b) - np.count_nonzero(fresh))
                    b = b.take(fresh)
        self.loaded += len(b)
        return b

    # -- pruning -------------------------------------------------------------------------------------------
    def prune(self, older_than: int, partitions: Iterable[int] | None = None) -> int:
        """Delete rows whose lastupdate is before `older_than` (of `partitions`, or all); returns how many."""
        n = self._prune_rows(
            int(older_than), None if partitions is None else sorted({int(p) for p in partitions})
        )
        self.pruned += n
        return n

    def start_pruning(self, partitions: Iterable[int], max_stale: float, interval: float) -> None:
        """Every `interval`, prune the rows of `partitions` older than now - max_stale (0 disables it)."""
        if max_stale <= 0:
            return
        parts = sorted({int(p) for p in partitions})

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    n = self.prune(int(self._clock() - max_stale), parts)
                    log.info("index store: pruned %d definitions older than %.0fs", n, max_stale)
                except Exception:  # noqa: BLE001 - retried at the next interval
                    log.exception("index store: pruning failed")

        threading.Thread(target=run, name="index-store-prune", daemon=True).start()

    # -- lifecycle & figures -------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued for up to `timeout`, then abandon the rest (it is rewritten after the restart:
        every series is due at its first batch then, or was loaded with its row)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        left = self.drain(timeout)
        if left:
            log.warning("index store: %d definition writes abandoned at close", left)
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for t in self._writers:
            if t.is_alive():
                t.join(max(1.0, timeout))
        self._close_backend()

    def register_stats(self, stats: Stats) -> None:
        """Metrictank's `idx.cassandra.*` figures (whatever the backend: the name is what dashboards know)."""
        stats.counter(
            "idx.cassandra.save.skipped",
            "definition writes dropped because the index write queue was full (retried later)",
            lambda: self.save_skipped,
        )
        stats.counter("idx.cassandra.query-insert.ok", "definitions written", lambda: self.inserts_ok)
        stats.counter(
            "idx.cassandra.query-insert.fail",
            "failed definition writes (retried)",
            lambda: self.insert_errors,
        )
        stats.counter("idx.cassandra.query-delete.ok", "definition rows deleted", lambda: self.deletes_ok)
        stats.counter(
            "idx.cassandra.archived", "definition rows moved to the archive table", lambda: self.archived_ok
        )
        stats.counter(
            "idx.cassandra.query-delete.fail",
            "failed definition deletes (retried)",
            lambda: self.delete_errors,
        )
        stats.counter("idx.cassandra.loaded", "definitions loaded at startup", lambda: self.loaded)
        stats.counter(
            "idx.cassandra.load_skipped",
            "rows not loaded at startup by reason",
            lambda: [(("invalid",), self.load_invalid), (("stale",), self.load_stale)],
            ("reason",),
        )
        stats.counter("idx.cassandra.pruned", "definition rows deleted by pruning", lambda: self.pruned)
        stats.gauge(
            "idx.cassandra.write_queue.items", "definition writes queued or in progress", self.pending
        )

    # -- backend -------------------------------------------------------------------------------------------
    def _write(self, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _delete(self, keys: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    def _archive(self, rows: list[tuple]) -> None:
        """Insert the rows (with archived_at) into the archive table, then delete them from the index table."""
        raise NotImplementedError

    def _scan(self, partition: int, batch_size: int) -> Iterator[list[tuple]]:
        """Raw rows (id, orgid, partition, name, interval, unit, mtype, tags, lastupdate) of one partition."""
        raise NotImplementedError

    def _prune_rows(self, older_than: int, partitions: list[int] | None) -> int:
        raise NotImplementedError

    def _close_backend(self) -> None:
        pass


class SQLiteIndexStore(IndexStore):
    """`metric_idx` in the SQLite store's file: the same columns and key; `tags` is a JSON array of the sorted,
    de-duplicated tags (SQLite has no set type; `[]` for an untagged series)."""

    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        table: str = "metric_idx",
        *,
        archive_table: str = "metric_idx_archive",
        busy_timeout: float = 30.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.path = str(path)
        self.table = table
        self.archive_table = archive_table
        self._busy_timeout = busy_timeout
        self._conn = self._connect()
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL, orgid INTEGER NOT NULL, "
            "partition INTEGER NOT NULL, name TEXT NOT NULL, interval INTEGER NOT NULL, unit TEXT NOT NULL, "
            "mtype TEXT NOT NULL, tags TEXT NOT NULL, lastupdate INTEGER NOT NULL, PRIMARY KEY (partition, id)) "
            "WITHOUT ROWID"
        )
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {archive_table} (id TEXT NOT NULL, orgid INTEGER NOT NULL, "
            "partition INTEGER NOT NULL, name TEXT NOT NULL, interval INTEGER NOT NULL, unit TEXT NOT NULL, "
            "mtype TEXT NOT NULL, tags TEXT NOT NULL, lastupdate INTEGER NOT NULL, archived_at INTEGER NOT NULL, "
            "PRIMARY KEY (partition, id)) WITHOUT ROWID"
        )
        self._wlock = threading.Lock()  # one writer connection; several writer threads take turns
        self._start_writers()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _tx(self, *steps: tuple[str, list]) -> None:
        """executemany of each (sql, rows) in one transaction, under the writer lock."""
        with self._wlock:
            c = self._conn
            c.execute("BEGIN")
            try:
                for sql, rows in steps:
                    c.executemany(sql, rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def _write(self, rows: list[tuple]) -> None:
        data = [
            (i, o, p, nm, iv, u, mt, json.dumps(sorted(set(t))), lu) for i, o, p, nm, iv, u, mt, t, lu in rows
        ]
        self._tx(
            (
                f"INSERT OR REPLACE INTO {self.table} (id, orgid, partition, name, interval, unit, mtype, tags, "
                "lastupdate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                data,
            )
        )

    def _delete(self, keys: list[tuple[int, str]]) -> None:
        self._tx((f"DELETE FROM {self.table} WHERE partition = ? AND id = ?", keys))

    def _archive(self, rows: list[tuple]) -> None:
        data = [
            (i, o, p, nm, iv, u, mt, json.dumps(sorted(set(t))), lu, at)
            for i, o, p, nm, iv, u, mt, t, lu, at in rows
        ]
        self._tx(
            (
                f"INSERT OR REPLACE INTO {self.archive_table} (id, orgid, partition, name, interval, unit, mtype, "
                "tags, lastupdate, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                data,
            ),
            (f"DELETE FROM {self.table} WHERE partition = ? AND id = ?", [(r[2], r[0]) for r in rows]),
        )

    def _scan(self, partition: int, batch_size: int) -> Iterator[list[tuple]]:
        conn = self._connect()  # a reader of its own: WAL lets it run beside the writer
        # text that is not UTF-8 (a corrupt or foreign row) must not fail the scan: kept as surrogate escapes,
        # the row is then refused by `_valid_row`
        conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        try:
            cur = conn.execute(
                f"SELECT id, orgid, partition, name, interval, unit, mtype, tags, lastupdate FROM {self.table} "
                "WHERE partition = ? ORDER BY id",
                (partition,),
            )
            while True:
                raw = cur.fetchmany(batch_size)
                if not raw:
                    return
                yield [(*r[:7], _json_tags(r[7]), r[8]) for r in raw]
        finally:
            conn.close()

    def _prune_rows(self, older_than: int, partitions: list[int] | None) -> int:
        with self._wlock:
            if partitions is None:
                cur = self._conn.execute(f"DELETE FROM {self.table} WHERE lastupdate < ?", (older_than,))
                return cur.rowcount
            n = 0
            for p in partitions:
                n += self._conn.execute(
                    f"DELETE FROM {self.table} WHERE partition = ? AND lastupdate < ?", (p, older_than)
                ).rowcount
            return n

    def _close_backend(self) -> None:
        with self._wlock:
            self._conn.close()


class CassandraIndexStore(IndexStore):
    """`metric_idx` in Cassandra exactly as Metrictank creates and writes it (one INSERT per definition, the
    nine columns in Metrictank's order; `tags` a `set<text>`, so an untagged series has a null set)."""

    backend = "cassandra"

    def __init__(
        self,
        session: Any,
        keyspace: str,
        table: str = "metric_idx",
        *,
        archive_table: str = "metric_idx_archive",
        create: bool = True,
        timeout: float = 5.0,
        concurrency: int = 32,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        from cassandra.query import tuple_factory

        self._session = session
        self.keyspace = keyspace
        self.table = table
        self.timeout = timeout
        self._concurrency = max(1, concurrency)
        self._tuple_factory = tuple_factory
        t = f"{keyspace}.{table}"
        self.archive_table = archive_table
        if create:
            session.execute(cql_create_table(keyspace, table), timeout=max(timeout, 30.0))
            session.execute(cql_create_archive_table(keyspace, archive_table), timeout=max(timeout, 30.0))
        self._insert_archive = session.prepare(
            f"INSERT INTO {keyspace}.{archive_table} (id, orgid, partition, name, interval, unit, mtype, tags, "
            "lastupdate, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert = session.prepare(
            f"INSERT INTO {t} (id, orgid, partition, name, interval, unit, mtype, tags, lastupdate) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._del = session.prepare(f"DELETE FROM {t} WHERE partition = ? AND id = ?")
        self._select = session.prepare(
            f"SELECT id, orgid, partition, name, interval, unit, mtype, tags, lastupdate FROM {t} WHERE partition = ?"
        )
        self._select_ids = session.prepare(f"SELECT id, lastupdate FROM {t} WHERE partition = ?")
        self._start_writers()

    def _run_concurrent(self, stmt: Any, params: list[tuple]) -> None:
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(
            self._session, stmt, params, concurrency=self._concurrency, raise_on_first_error=False
        )
        failed = [(p, r) for p, (ok, r) in zip(params, results, strict=True) if not ok]
        if failed:
            # the caller retries the whole chunk: inserts and deletes of the same rows are idempotent
            raise RuntimeError(f"{len(failed)} of {len(params)} statements failed, first: {failed[0][1]!r}")

    def _write(self, rows: list[tuple]) -> None:
        self._run_concurrent(
            self._insert,
            [(i, o, p, nm, iv, u, mt, set(t) or None, lu) for i, o, p, nm, iv, u, mt, t, lu in rows],
        )

    def _delete(self, keys: list[tuple[int, str]]) -> None:
        self._run_concurrent(self._del, keys)

    def _archive(self, rows: list[tuple]) -> None:
        # archive first: a retry after a failure in between repeats both (idempotent), nothing is lost
        self._run_concurrent(
            self._insert_archive,
            [(i, o, p, nm, iv, u, mt, set(t) or None, lu, at) for i, o, p, nm, iv, u, mt, t, lu, at in rows],
        )
        self._run_concurrent(self._del, [(r[2], r[0]) for r in rows])

    def _scan(self, partition: int, batch_size: int) -> Iterator[list[tuple]]:
        bs = self._select.bind((partition,))
        bs.fetch_size = batch_size  # pages of one batch: memory stays bounded whatever the partition's size
        rs = self._session.execute(bs, timeout=max(self.timeout, 30.0))
        buf: list[tuple] = []
        for r in rs:  # the driver fetches the next page as this loop reaches it
            i, o, p, nm, iv, u, mt, t, lu = tuple(r)
            buf.append((i, o, p, nm or "", iv or 0, u or "", mt or "", tuple(t) if t else (), lu or 0))
            if len(buf) >= batch_size:
                yield buf
                buf = []
        if buf:
            yield buf

    def _prune_rows(self, older_than: int, partitions: list[int] | None) -> int:
        if partitions is None:
            raise ValueError("cassandra index store: prune needs the partitions (no full-table scans)")
        n = 0
        for p in partitions:
            rs = self._session.execute(self._select_ids, (p,), timeout=max(self.timeout, 30.0))
            stale = [(p, r[0]) for r in rs if (r[1] or 0) < older_than]
            for s in range(0, len(stale), WRITE_CHUNK):
                self._run_concurrent(self._del, stale[s : s + WRITE_CHUNK])
            n += len(stale)
        return n


class IndexUpdater:
    """Which definitions the store must (re)write, decided per ingest batch from the index's rows.

    Metrictank's rule: a new series is written at once; a known one when its last save is older than
    `update-interval` (wall clock). A loaded series counts as saved at its loaded lastupdate. When the
    store's queue is full the last save is not advanced, so the series is retried the next time it is seen
    (Metrictank does the same; it would eventually block ingest, we never do: the drop is counted)."""

    def __init__(
        self,
        store: IndexStore,
        index: Any,
        update_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.index = index
        self.update_interval = float(update_interval)
        self.clock = clock
        self._last_save = np.zeros(0, np.int64)  # per index row; 0 = never saved
        self._saved_part = np.zeros(0, np.int64)  # partition of the row written last, -1 = none

    def _grow(self, n: int) -> None:
        cap = len(self._last_save)
        if n <= cap:
            return
        new = max(n, cap * 2, 1024)
        ls = np.zeros(new, np.int64)
        ls[:cap] = self._last_save
        sp = np.full(new, -1, np.int64)
        sp[:cap] = self._saved_part
        self._last_save, self._saved_part = ls, sp

    def restored(self, rows: np.ndarray, lastupdates: np.ndarray, partitions: np.ndarray) -> None:
        """Rows loaded from the store: saved at their (loaded) lastupdate, in their partition."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return
        self._grow(int(rows.max()) + 1)
        self._last_save[rows] = np.asarray(lastupdates, np.int64)
        self._saved_part[rows] = np.asarray(partitions, np.int64)

    def seen(self, rows: np.ndarray, new_rows: np.ndarray | None = None) -> int:
        """After a batch: `rows` got data (any order, repeats allowed), `new_rows` were created by it.
        Queues the due ones; returns how many were queued."""
        rows = np.asarray(rows, np.int64)
        if new_rows is not None and len(new_rows):
            new_rows = np.asarray(new_rows, np.int64)
            self._grow(int(new_rows.max()) + 1)
            self._last_save[new_rows] = 0  # a reused row must not inherit its old series' save
            self._saved_part[new_rows] = -1
            rows = np.concatenate([rows, new_rows])
        if not len(rows):
            return 0
        self._grow(int(rows.max()) + 1)
        now = int(self.clock())
        due_mask = self._last_save[rows] <= now - self.update_interval if self.update_interval > 0 else None
        due = np.unique(rows if due_mask is None else rows[due_mask])
        if not len(due):
            return 0
        room = self.store.room()
        if room < len(due):
            self.store.save_skipped += len(due) - room
            due = due[:room]
            if not len(due):
                return 0
        defs = self.index.definitions(due)
        if len(defs) != len(due):  # a row removed meanwhile: keep the rows that are still live
            due = self.index.lookup_ids(defs.ids)
        moved = (self._saved_part[due] >= 0) & (self._saved_part[due] != defs.partitions)
        if moved.any():
            at = np.flatnonzero(moved)
            self.store.delete([defs.ids[i] for i in at.tolist()], self._saved_part[due[at]].tolist())
        taken = self.store.update(defs)
        self._last_save[due[:taken]] = now
        self._saved_part[due[:taken]] = defs.partitions[:taken]
        return taken

    def removed(self, defs: DefBatch) -> None:
        """Series deleted by a control message: delete their rows too (Metrictank does)."""
        if len(defs):
            self.store.delete(defs.ids, defs.partitions.tolist())

    def archived(self, defs: DefBatch) -> None:
        """Series archived by a control message: their rows move to the archive table (Metrictank's
        `ArchiveDefs`), stamped with the wall clock."""
        if len(defs):
            self.store.archive(defs, int(self.clock()))


def open_index_store(cfg: Any, store: Any, partitions: Sequence[int]) -> IndexStore | None:
    """The index store `[cassandra-idx]` asks for, next to the chunk store `[store] backend` (reusing the
    Cassandra session, or the SQLite file); None when disabled. Pruning starts here when `max-stale` > 0."""
    c = cfg.section("cassandra-idx")
    if not c["enabled"]:
        return None
    kw = {"write_queue_size": c["write-queue-size"], "writers": c["num-conns"]}
    if cfg.store.backend == "cassandra":
        keyspace = c["keyspace"] or cfg.cassandra.keyspace
        if cfg.cassandra.create_keyspace and keyspace != cfg.cassandra.keyspace:
            from metrictank.store import cql

            store.session.execute(
                cql.create_keyspace(keyspace, cfg.cassandra.replication),
                timeout=max(cfg.cassandra.timeout, 30.0),
            )
        idx: IndexStore = CassandraIndexStore(
            store.session,
            keyspace,
            c["table"],
            archive_table=c["archive-table"],
            create=cfg.cassandra.create_keyspace,
            timeout=cfg.cassandra.timeout,
            **kw,
        )
    else:
        idx = SQLiteIndexStore(cfg.sqlite.path, c["table"], archive_table=c["archive-table"], **kw)
    if c["update-cassandra-index"]:
        idx.start_pruning(partitions, c["max-stale"], c["prune-interval"])
    return idx
