"""discard_pending and the write counters, on the SQLite store during a (simulated) store outage.

A demotion during a store outage answers after drain-timeout with writes still queued. Before
`discard_pending`, the demoted node kept retrying them and wrote (and announced) them once the store returned,
so the new primary saw a second writer: SPLIT BRAIN. The outage here is a SQLite database held locked by
another connection, which makes every write of the store fail with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from metrictank.store import ChunkWrite
from metrictank.store.sqlite import SQLiteStore, sqlite_error_reason

TTL = 35 * 86400
SPAN = 600
NOW = 1_500_000_000
KEYS = [f"1.{i:032x}" for i in range(1, 7)]


def cw(amkey: str, t0: int) -> ChunkWrite:
    return ChunkWrite(amkey, 1, t0, SPAN, TTL, b"\x02\x0b" + t0.to_bytes(4, "big"), 3)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(
        tmp_path / "chunks.db",
        write_queues=2,
        batch_size=2,  # several batches: one is being retried, the others wait in the queues
        busy_timeout=0.02,
        retry_base=0.01,
        retry_max=0.05,
        clock=lambda: NOW,
    )
    saved: list[ChunkWrite] = []
    s.set_on_saved(saved.extend)
    s.saved = saved  # type: ignore[attr-defined]
    yield s
    s.close(timeout=5)


def _rows(path) -> int:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    finally:
        conn.close()


def test_discard_after_timed_out_drain_leaves_no_stale_writer(store, tmp_path):
    t0 = NOW - NOW % SPAN - SPAN
    store.submit([cw(KEYS[0], t0 - SPAN)])  # creates the table
    assert store.drain(5) == 0
    store.saved.clear()
    locker = sqlite3.connect(tmp_path / "chunks.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the outage
    try:
        store.submit([cw(k, t0) for k in KEYS])
        deadline = time.monotonic() + 5
        while store.write_retries < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.drain(0.2) == len(KEYS)  # the demotion's drain times out
        began = time.monotonic()
        assert store.discard_pending(timeout=5) == len(KEYS)
        assert time.monotonic() - began < 2
        assert store.pending() == 0 and store.writes_dropped == len(KEYS)
    finally:
        locker.execute("ROLLBACK")  # the store is back
        locker.close()
    time.sleep(0.3)  # a stale writer would write now
    assert _rows(tmp_path / "chunks.db") == 1
    assert store.saved == []  # nothing announced either
    assert store.write_errors_by_reason.keys() == {"busy"}
    assert store.write_errors == store.write_errors_by_reason["busy"] >= 2
    assert store.stats["dropped"] == len(KEYS) and store.stats["abandoned"] == 0

    # later writes are not affected
    store.submit([cw(KEYS[1], t0 + SPAN)])
    assert store.drain(5) == 0
    assert [w.t0 for w in store.saved] == [t0 + SPAN]
    assert store.chunks_written == 2


def test_discard_with_nothing_pending_is_harmless(store):
    assert store.discard_pending() == 0
    store.submit([cw(KEYS[0], NOW - NOW % SPAN - SPAN)])
    assert store.drain(5) == 0
    assert store.discard_pending() == 0 and store.chunks_written == 1 and store.writes_dropped == 0


def test_sqlite_error_reasons():
    assert sqlite_error_reason(sqlite3.OperationalError("database is locked")) == "busy"
    assert sqlite_error_reason(sqlite3.OperationalError("database or disk is full")) == "disk-full"
    assert sqlite_error_reason(sqlite3.OperationalError("disk I/O error")) == "io-error"
    assert sqlite_error_reason(sqlite3.IntegrityError("whatever")) == "other"


def test_cassandra_error_reasons():
    from cassandra import ConsistencyLevel, OperationTimedOut, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    from metrictank.store.cassandra import TableMissing, cassandra_error_reason

    assert cassandra_error_reason(OperationTimedOut()) == "timeout"
    assert (
        cassandra_error_reason(WriteTimeout("x", consistency=ConsistencyLevel.ONE, write_type=0))
        == "write-timeout"
    )
    assert cassandra_error_reason(Unavailable("x", consistency=ConsistencyLevel.ONE)) == "unavailable"
    assert cassandra_error_reason(NoHostAvailable("x", {})) == "no-host"
    assert cassandra_error_reason(TableMissing("t")) == "table-missing"
    assert cassandra_error_reason(RuntimeError()) == "other"
