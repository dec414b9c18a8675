"""SQLite chunk store: what the tank, the persist notifier and the query layer rely on."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from metrictank.schema import ROW_KEY_BUCKET, row_key, table_for_ttl
from metrictank.store import ChunkWrite, StoreClosed, open_store
from metrictank.store.sqlite import SQLiteStore

TTL = 35 * 86400
SPAN = 600
KEY = "1.0dd2132bf7bcb5dcbde9786f9eea621b"
ROLLUP = KEY + "_sum_3600"


class Clock:
    """Settable wall clock, so TTL expiry is tested without sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def blob(i: int) -> bytes:
    return bytes([0x02, 11]) + i.to_bytes(4, "big") * 8


def cw(
    amkey: str, t0: int, data: bytes | None = None, ttl: int = TTL, span: int = SPAN, org: int = 1
) -> ChunkWrite:
    return ChunkWrite(amkey, org, t0, span, ttl, blob(t0) if data is None else data, 3)


@pytest.fixture
def clock() -> Clock:
    return Clock(1_500_000_000)


@pytest.fixture
def store(tmp_path, clock):
    s = SQLiteStore(
        tmp_path / "chunks.db", write_queue_size=1000, clock=clock, busy_timeout=0.05, retry_base=0.01
    )
    yield s
    s.close(timeout=5)


def test_roundtrip_orders_by_t0_and_honours_range(store, clock):
    base = 1_500_000_000 - 1_500_000_000 % SPAN - 10 * SPAN
    t0s = [base + i * SPAN for i in range(10)]
    store.submit([cw(KEY, t) for t in reversed(t0s)])
    assert store.drain(10) == 0

    got = store.read(KEY, TTL, base, base + 10 * SPAN, SPAN)
    assert got == [(t, blob(t)) for t in t0s]

    # start inside chunk 3: chunk 3 holds it and must be returned; chunk 7 starts at end: excluded
    start, end = t0s[3] + 17, t0s[7]
    assert [t for t, _ in store.read(KEY, TTL, start, end, SPAN)] == t0s[3:7]
    # a max_span larger than the real span may return one extra chunk before, never miss one
    assert [t for t, _ in store.read(KEY, TTL, start, end, 2 * SPAN)][-4:] == t0s[3:7]
    assert store.read(KEY, TTL, end, start, SPAN) == []


def test_stored_with_metrictank_table_and_row_key(store, tmp_path):
    t0 = 1_500_000_000 - 1_500_000_000 % SPAN - SPAN
    store.submit([cw(KEY, t0)])
    assert store.drain(10) == 0
    table, _ = table_for_ttl(TTL)
    assert table == "metric_512"
    with sqlite3.connect(tmp_path / "chunks.db") as conn:
        rows = conn.execute(f"SELECT key, ts, data, expires FROM {table}").fetchall()
    assert rows == [(row_key(KEY, t0), t0, blob(t0), t0 + SPAN + TTL)]


def test_read_across_row_key_bucket_boundary(tmp_path):
    boundary = 620 * ROW_KEY_BUCKET  # 1_499_904_000, start of bucket 620
    clock = Clock(boundary + 3600)
    s = SQLiteStore(tmp_path / "b.db", clock=clock)
    try:
        t0s = [boundary - 2 * SPAN, boundary - SPAN, boundary, boundary + SPAN]
        s.submit([cw(KEY, t) for t in t0s])
        assert s.drain(10) == 0
        got = s.read(KEY, TTL, boundary - 2 * SPAN + 5, boundary + 2 * SPAN, SPAN)
        assert [t for t, _ in got] == t0s
        # the chunk that began before start, in the previous bucket, is found too
        got = s.read(KEY, TTL, boundary - 1, boundary + 1, SPAN)
        assert [t for t, _ in got] == [boundary - SPAN, boundary]
        with sqlite3.connect(tmp_path / "b.db") as conn:
            keys = {k for (k,) in conn.execute("SELECT key FROM metric_512")}
        assert keys == {f"{KEY}_619", f"{KEY}_620"}
    finally:
        s.close()


def test_ttl_expiry_on_read_and_prune(store, clock):
    ttl = 2 * 3600
    t0 = int(clock.now) - int(clock.now) % SPAN
    store.submit([cw(KEY, t0, ttl=ttl), cw(KEY, t0, ttl=TTL)])  # same key, two archives' tables
    assert store.drain(10) == 0
    assert len(store.read(KEY, ttl, t0, t0 + SPAN, SPAN)) == 1

    clock.now = t0 + SPAN + ttl - 1  # last second of life
    assert len(store.read(KEY, ttl, t0, t0 + SPAN, SPAN)) == 1
    assert store.prune() == 0

    clock.now = t0 + SPAN + ttl
    assert store.read(KEY, ttl, t0, t0 + SPAN, SPAN) == []
    assert store.prune() == 1
    assert store.stats["pruned"] == 1
    assert len(store.read(KEY, TTL, t0, t0 + SPAN, SPAN)) == 1  # the long-lived table is untouched


def test_expired_write_is_skipped_counted_and_confirmed(store, clock):
    seen: list[ChunkWrite] = []
    store.set_on_saved(seen.extend)
    old = cw(KEY, int(clock.now) - TTL - 2 * SPAN)  # t0 + span + ttl < now
    fresh = cw(KEY, int(clock.now) - int(clock.now) % SPAN)
    store.submit([old, fresh])
    assert store.drain(10) == 0
    st = store.stats
    assert st["skipped_expired"] == 1 and st["saved"] == 1
    assert store.read(KEY, TTL, old.t0, old.t0 + SPAN, SPAN) == []
    # like Metrictank, a skipped chunk is reported so nobody tries to persist it again
    assert sorted(seen, key=lambda w: w.t0) == [old, fresh]


def test_on_saved_gets_exactly_the_written_chunks(store):
    seen: list[ChunkWrite] = []
    calls: list[str] = []

    def on_saved(ws):
        calls.append(threading.current_thread().name)
        seen.extend(ws)

    store.set_on_saved(on_saved)
    base = 1_500_000_000 - 1_500_000_000 % SPAN - 20 * SPAN
    writes = [cw(f"1.{i:032x}", base + (i % 5) * SPAN, org=1 + i % 3) for i in range(500)]
    for i in range(0, 500, 37):
        store.submit(writes[i : i + 37])
    assert store.drain(10) == 0
    assert len(seen) == len(writes)
    assert set(seen) == set(writes)
    assert all(name == "sqlite-store-writer" for name in calls)
    assert store.stats["saved"] == 500 and store.stats["skipped_expired"] == 0 and store.pending() == 0


def test_later_submission_of_same_chunk_wins(store):
    t0 = 1_500_000_000 - 1_500_000_000 % SPAN - SPAN
    for i in range(20):
        store.submit([cw(KEY, t0, data=blob(i)), cw(ROLLUP, t0, data=blob(100 + i), span=3600)])
    assert store.drain(10) == 0
    assert store.read(KEY, TTL, t0, t0 + 1, SPAN) == [(t0, blob(19))]
    assert store.read(ROLLUP, TTL, t0, t0 + 1, 3600) == [(t0, blob(119))]


def test_backpressure_blocks_submit_and_drain_reports_pending(tmp_path):
    s = SQLiteStore(
        tmp_path / "bp.db", write_queues=1, write_queue_size=2, batch_size=1, clock=Clock(1_500_000_000)
    )
    gate = threading.Event()
    s.set_on_saved(lambda ws: gate.wait(10))  # runs on the writer thread: stalls it
    base = 1_500_000_000
    done = threading.Event()

    def producer():
        s.submit([cw(f"1.{i:032x}", base) for i in range(10)])
        done.set()

    th = threading.Thread(target=producer)
    try:
        th.start()
        # writer holds 1 (stalled in on_saved), queue holds 2: the producer must be stuck
        assert not done.wait(0.5)
        assert s.stats["queue_depth"] == 2
        assert s.stats["queue_blocked_puts"] >= 1
        assert s.drain(0.2) == 10
        gate.set()
        assert done.wait(5)
        assert s.drain(5) == 0
        assert s.stats["saved"] == 10
    finally:
        gate.set()
        th.join(5)
        s.close()


def test_write_failure_retries_then_succeeds(store, tmp_path):
    t0 = 1_500_000_000 - 1_500_000_000 % SPAN - SPAN
    store.submit([cw(KEY, t0)])  # creates the table
    assert store.drain(5) == 0
    locker = sqlite3.connect(tmp_path / "chunks.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        store.submit([cw(KEY, t0 + SPAN)])
        deadline = time.monotonic() + 5
        while store.stats["retries"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.stats["write_errors"] >= 2 and store.stats["retries"] >= 2
        assert store.pending() == 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.drain(5) == 0
    assert [t for t, _ in store.read(KEY, TTL, t0, t0 + 2 * SPAN, SPAN)] == [t0, t0 + SPAN]


def test_close_gives_up_after_timeout_and_refuses_new_writes(tmp_path):
    s = SQLiteStore(
        tmp_path / "c.db", busy_timeout=0.05, retry_base=0.01, retry_max=0.05, clock=Clock(1_500_000_000)
    )
    t0 = 1_500_000_000 - 1_500_000_000 % SPAN
    s.submit([cw(KEY, t0)])
    assert s.drain(5) == 0
    locker = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        s.submit([cw(KEY, t0 + SPAN), cw(ROLLUP, t0, span=3600)])
        began = time.monotonic()
        s.close(timeout=0.3)
        assert time.monotonic() - began < 3
        assert s.stats["abandoned"] == 2
        assert s.pending() == 0
        with pytest.raises(StoreClosed):
            s.submit([cw(KEY, t0 + 2 * SPAN)])
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_read_many_and_unknown_tables(store):
    t0 = 1_500_000_000 - 1_500_000_000 % SPAN - SPAN
    store.submit([cw(KEY, t0), cw(ROLLUP, t0, span=3600, ttl=365 * 86400)])
    assert store.drain(5) == 0
    got = store.read_many([(KEY, TTL), (ROLLUP, 365 * 86400), ("1.ffff", TTL)], t0, t0 + 1, 3600)
    assert got[KEY] == [(t0, blob(t0))]
    assert got[ROLLUP] == [(t0, blob(t0))]
    assert got["1.ffff"] == []
    assert store.read(KEY, 3600, t0, t0 + 1, SPAN) == []  # metric_1 was never created


def test_reads_from_other_threads_while_writing(store):
    base = 1_500_000_000 - 1_500_000_000 % SPAN - 100 * SPAN
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                got = store.read(KEY, TTL, base, base + 100 * SPAN, SPAN)
                ts = [t for t, _ in got]
                assert ts == sorted(ts)
        except BaseException as e:  # surfaced below
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(100):
        store.submit([cw(KEY, base + i * SPAN)])
    assert store.drain(10) == 0
    stop.set()
    for r in readers:
        r.join(5)
    assert not errors
    assert len(store.read(KEY, TTL, base, base + 100 * SPAN, SPAN)) == 100


def test_open_store_factory(tmp_path):
    s = open_store("sqlite", path=tmp_path / "f.db")
    try:
        assert isinstance(s, SQLiteStore)
    finally:
        s.close()
    with pytest.raises(ValueError):
        open_store("bigtable")


def test_writer_survives_more_failed_attempts_than_a_float_exponent_allows(tmp_path, clock):
    """Writes are retried forever: after 1024 failures base * 2**attempt overflowed a float, the writer thread
    died of the OverflowError and the store never wrote again (a ~35 min outage at the default back-off)."""
    s = SQLiteStore(tmp_path / "chunks.db", clock=clock, retry_base=1e-7, retry_max=1e-7)
    real, failures = s._write, [1100]

    def flaky(batch):
        if failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        real(batch)

    s._write = flaky
    try:
        t0 = 1_500_000_000 - 1_500_000_000 % SPAN - SPAN
        s.submit([cw(KEY, t0)])
        assert s.drain(30) == 0
        assert failures[0] == 0 and s.stats["write_errors"] == 1100
        assert [t for t, _ in s.read(KEY, TTL, t0, t0 + SPAN, SPAN)] == [t0]
    finally:
        s.close(timeout=5)
