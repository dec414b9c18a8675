"""SQLite chunk store: the single-machine default.

Same keys as the Cassandra schema (a table per TTL bucket named like Metrictank's, 28-day row keys,
`ts` = t0) so data and tools move between the two without translation. SQLite has no cell TTL, so
each row carries an absolute `expires`; reads ignore expired rows and a periodic prune deletes them.
One writer thread batches many chunks per transaction (WAL mode): the cost is per transaction, not per
chunk. Readers use their own connections, which WAL lets run beside the writer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path

from metrictank.schema import ROW_KEY_BUCKET, row_key, row_keys_for_range, table_for_ttl, write_ttl
from metrictank.store.base import Chunks, ChunkWrite, read_bounds
from metrictank.store.pipeline import QueuedStore, retry_delay

log = logging.getLogger(__name__)

_DDL = (
    "CREATE TABLE IF NOT EXISTS {t} (key TEXT NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL, "
    "expires INTEGER NOT NULL, PRIMARY KEY (key, ts)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)",
)
_INSERT = "INSERT OR REPLACE INTO {t} (key, ts, data, expires) VALUES (?, ?, ?, ?)"
_SELECT = "SELECT ts, data FROM {t} WHERE key IN ({marks}) AND ts >= ? AND ts < ? AND expires > ? ORDER BY ts"
_SELECT_KEYED = (
    "SELECT key, ts, data FROM {t} WHERE key IN ({marks}) AND ts >= ? AND ts < ? AND expires > ? "
    "ORDER BY key, ts"
)
#: row keys per query of a batched read: one statement per few hundred series instead of one per series,
#: well under SQLite's host-parameter limit (999 in old builds)
_KEYS_PER_QUERY = 500
_PRUNE = "DELETE FROM {t} WHERE expires <= ?"


def sqlite_error_reason(exc: BaseException) -> str:
    """A short, stable label for a failed SQLite write (the `reason` of `write_errors_by_reason`)."""
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return "busy"
    if "full" in msg:
        return "disk-full"
    if "disk i/o" in msg or "readonly" in msg or "read-only" in msg:
        return "io-error"
    return "other"


def enable_wal(conn: sqlite3.Connection, within: float = 60.0) -> None:
    """Switch the file to WAL, retrying while another process holds it: nodes sharing one file start together,
    and the switch needs the file to itself for a moment (one instance of the demo died at start-up with
    "database is locked" while its sibling created its tables)."""
    deadline = time.monotonic() + within
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


class SQLiteStore(QueuedStore):
    """Chunk store in one SQLite file (WAL), fed by a single batching writer thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        write_queues: int = 10,
        write_queue_size: int = 100_000,
        batch_size: int = 10_000,
        ttls: Sequence[int] = (),
        prune_interval: float = 600.0,
        retry_base: float = 0.1,
        retry_max: float = 2.0,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(write_queues, write_queue_size)
        self.path = str(path)
        self._batch_size = batch_size
        self._prune_interval = prune_interval
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._stop = threading.Event()  # writer: give up (abandon) what is left
        self._retry_wake = threading.Event()  # ends a retry back-off early (close, discard_pending)
        self._retry_gen: int | None = None  # discard generation of the batch being retried, if any
        self._tables: set[str] = set()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._extra = {"transactions": 0, "pruned": 0, "batch_max": 0}

        self._conn = self._connect(synchronous)
        enable_wal(self._conn)
        for ttl in ttls:
            self._ensure_table(table_for_ttl(ttl)[0])
        self._writer = threading.Thread(target=self._run, name="sqlite-store-writer", daemon=True)
        self._writer.start()

    # -- connections ------------------------------------------------------------------------------
    def _connect(self, synchronous: str = "NORMAL") -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous={synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _ensure_table(self, table: str) -> None:
        if table in self._tables:
            return
        for stmt in _DDL:
            self._conn.execute(stmt.format(t=table))
        self._tables.add(table)

    # -- writing ----------------------------------------------------------------------------------
    def _run(self) -> None:
        next_prune = time.monotonic() + self._prune_interval
        while not self._stop.is_set():
            gen = self._discard_gen
            batch = self._queues.take(self._batch_size, timeout=0.2)
            if batch:
                self._write_with_retry(batch, gen)
            if time.monotonic() >= next_prune:
                self._prune_logged()
                next_prune = time.monotonic() + self._prune_interval

    def _write_with_retry(self, batch: list[ChunkWrite], gen: int) -> None:
        """Write until it succeeds; between attempts give up if closed (abandoned) or discarded (dropped). While
        the write gate is closed (fenced) it waits as between retries, without counting an error."""
        attempt = 0
        while True:
            fenced = not self._may_write()
            if fenced:
                self._counters["fenced"] += len(batch)
                delay = 0.2
            else:
                try:
                    self._write(batch)
                    return
                except sqlite3.Error as exc:
                    self._count_error(sqlite_error_reason(exc), len(batch))
                    if attempt % 20 == 0:
                        log.warning(
                            "sqlite store: write of %d chunks failed (attempt %d): %s",
                            len(batch),
                            attempt + 1,
                            exc,
                        )
                    delay = retry_delay(attempt, self._retry_base, self._retry_max)
                    attempt += 1
            self._retry_gen = gen
            try:
                self._retry_wake.wait(delay)
                self._retry_wake.clear()
                if self._stop.is_set():
                    self._counters["abandoned"] += len(batch)
                    self._finish(batch, saved=False)
                    return
                if self._discard_gen != gen:
                    self._drop(batch)
                    return
            finally:
                self._retry_gen = None
            if not fenced:
                self._counters["retries"] += len(batch)

    def _discard(self, gen: int, deadline: float) -> None:
        """Drop the queues, then wake a retrying writer and wait (until `deadline`) for it to drop its batch."""
        self._drop(self._queues.clear())
        while True:
            rg = self._retry_gen
            if rg is None or rg >= gen or not self._writer.is_alive():
                return
            self._retry_wake.set()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def _write(self, batch: list[ChunkWrite]) -> None:
        now = int(self._clock())
        rows: dict[str, list[tuple]] = {}
        skipped = 0
        nbytes = 0
        for w in batch:
            rel = write_ttl(w.t0, w.span, w.ttl, now)
            if rel <= 0:
                skipped += 1
                continue
            table = table_for_ttl(w.ttl)[0]
            r = rows.get(table)
            if r is None:
                r = rows[table] = []
            r.append((row_key(w.amkey, w.t0), w.t0, w.data, now + rel))
            nbytes += len(w.data)
        conn = self._conn
        if rows:
            for table in rows:
                self._ensure_table(table)
            conn.execute("BEGIN")
            try:
                for table, r in rows.items():
                    conn.executemany(_INSERT.format(t=table), r)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._extra["transactions"] += 1
        self._extra["batch_max"] = max(self._extra["batch_max"], len(batch))
        self._counters["saved"] += len(batch) - skipped
        self._counters["skipped_expired"] += skipped
        self._counters["bytes_saved"] += nbytes
        self._finish(batch)

    # -- pruning ----------------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Delete expired rows now; returns how many. Runs periodically on the writer thread too."""
        cutoff = int(self._clock() if now is None else now)
        conn = self._connect()
        try:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'metric\\_%' ESCAPE '\\'"
                )
            ]
            total = 0
            for t in tables:
                total += conn.execute(_PRUNE.format(t=t), (cutoff,)).rowcount
        finally:
            conn.close()
        self._extra["pruned"] += total
        return total

    def _prune_logged(self) -> None:
        try:
            n = self.prune()
            if n:
                log.info("sqlite store: pruned %d expired chunks", n)
        except sqlite3.Error as exc:
            log.warning("sqlite store: prune failed: %s", exc)

    # -- reading ----------------------------------------------------------------------------------
    def read(self, amkey: str, ttl: int, start: int, end: int, max_span: int) -> Chunks:
        """Chunks of `amkey` that may hold points in [start, end), t0 ascending."""
        if start >= end:
            return []
        table = table_for_ttl(ttl)[0]
        keys = row_keys_for_range(amkey, start, end)
        lo = read_bounds(start, max_span)
        sql = _SELECT.format(t=table, marks=",".join("?" * len(keys)))
        try:
            cur = self._reader().execute(sql, (*keys, lo, end, int(self._clock())))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return cur.fetchall()

    def read_many(
        self, reqs: Sequence[tuple[str, int]], start: int, end: int, max_span: int
    ) -> dict[str, Chunks]:
        """`read` of many series: one query per table and `_KEYS_PER_QUERY` row keys, not one per series (a
        render of 1000 series paid ~50 us per statement). An AMKey given twice is read from the table of its
        last TTL."""
        want = {amkey: ttl for amkey, ttl in reqs}
        out: dict[str, Chunks] = {amkey: [] for amkey in want}
        if start >= end or not want:
            return out
        owner: dict[str, dict[str, str]] = {}  # table -> row key -> AMKey (a row key names one AMKey)
        for amkey, ttl in want.items():
            keys = owner.setdefault(table_for_ttl(ttl)[0], {})
            for rk in row_keys_for_range(amkey, start, end):
                keys[rk] = amkey
        lo = read_bounds(start, max_span)
        now = int(self._clock())
        conn = self._reader()
        for table, keys in owner.items():
            rkeys = list(keys)
            for i in range(0, len(rkeys), _KEYS_PER_QUERY):
                part = rkeys[i : i + _KEYS_PER_QUERY]
                sql = _SELECT_KEYED.format(t=table, marks=",".join("?" * len(part)))
                try:
                    cur = conn.execute(sql, (*part, lo, end, now))
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        break
                    raise
                for key, ts, data in cur.fetchall():
                    out[keys[key]].append((ts, data))
        if (end - 1) // ROW_KEY_BUCKET > start // ROW_KEY_BUCKET:
            # rows came key by key: a series spanning two row keys is put back in t0 order
            for chunks in out.values():
                chunks.sort(key=itemgetter(0))
        return out

    # -- lifecycle --------------------------------------------------------------------------------
    def _extra_stats(self) -> dict:
        return dict(self._extra)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write what is queued for up to `timeout`, then give up on the rest."""
        if self._closed and not self._writer.is_alive():
            return
        self._closed = True
        self.drain(timeout)
        self._stop.set()
        self._retry_wake.set()
        self._writer.join()
        left = self._queues.close()
        if left:
            self._counters["abandoned"] += len(left)
            self._finish(left, saved=False)
        self._conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
