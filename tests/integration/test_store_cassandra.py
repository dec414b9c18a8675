"""Cassandra chunk store against the real Cassandra of the test bed: schema, keys, TTLs, retries."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrictank.schema import ROW_KEY_BUCKET, row_key, table_for_ttl
from metrictank.store import ChunkWrite, StoreClosed, cql
from metrictank.store.cassandra import CassandraStore

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"
TTL = 365 * 86400  # long, so chunks from weeks ago are still alive
SPAN = 600
KEY = "1.0dd2132bf7bcb5dcbde9786f9eea621b"


def blob(i: int) -> bytes:
    return bytes([0x02, 11]) + (i & 0xFFFFFFFF).to_bytes(4, "big") * 60  # ~250 bytes, like a real chunk


def cw(amkey: str, t0: int, data: bytes | None = None, ttl: int = TTL, span: int = SPAN) -> ChunkWrite:
    return ChunkWrite(amkey, 1, t0, span, ttl, blob(t0) if data is None else data, 0)


def now_t0(span: int = SPAN) -> int:
    now = int(time.time())
    return now - now % span


@pytest.fixture(scope="module")
def keyspaces(cassandra_session) -> Iterator[list[str]]:
    """Names the stores create themselves (CREATE KEYSPACE is part of what is tested); dropped at the end."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(Exception):
            cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)


def fresh(keyspaces: list[str]) -> str:
    name = f"mtstore_{uuid.uuid4().hex[:10]}"
    keyspaces.append(name)
    return name


@pytest.fixture(scope="module")
def store(cassandra_hosts, keyspaces) -> Iterator[CassandraStore]:
    s = CassandraStore(cassandra_hosts, keyspace=fresh(keyspaces), ttls=[TTL, 3600], timeout=20.0)
    yield s
    s.close(timeout=30)


def test_schema_is_metrictanks(cassandra_hosts, cassandra_session, keyspaces):
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    tables = {v["ttl"]: (v["table"], v["window_hours"]) for v in golden if v["type"] == "cassandra_table"}
    assert tables, "golden vectors lack cassandra_table entries"
    ks = fresh(keyspaces)
    s = CassandraStore(cassandra_hosts, keyspace=ks, ttls=sorted(tables), timeout=20.0)
    try:
        assert s.table_names() == sorted(t for t, _ in tables.values())
    finally:
        s.close()

    krow = cassandra_session.execute(
        "SELECT replication, durable_writes FROM system_schema.keyspaces WHERE keyspace_name = %s", (ks,)
    ).one()
    assert dict(krow.replication) == {
        "class": "org.apache.cassandra.locator.SimpleStrategy",
        "replication_factor": "1",
    }
    assert krow.durable_writes is True

    for table, window in tables.values():
        t = cassandra_session.execute(
            "SELECT compaction, compression, gc_grace_seconds FROM system_schema.tables "
            "WHERE keyspace_name = %s AND table_name = %s",
            (ks, table),
        ).one()
        assert t is not None, table
        compaction = dict(t.compaction)
        assert compaction["class"] == "org.apache.cassandra.db.compaction.TimeWindowCompactionStrategy"
        assert compaction["compaction_window_unit"] == "HOURS"
        assert compaction["compaction_window_size"] == str(window)
        assert compaction["tombstone_threshold"] == "0.2"
        assert compaction["tombstone_compaction_interval"] == "86400"
        assert dict(t.compression)["class"] == "org.apache.cassandra.io.compress.LZ4Compressor"
        assert t.gc_grace_seconds == window * 3600

        cols = {
            r.column_name: (r.type, r.kind, r.clustering_order)
            for r in cassandra_session.execute(
                "SELECT column_name, type, kind, clustering_order FROM system_schema.columns "
                "WHERE keyspace_name = %s AND table_name = %s",
                (ks, table),
            )
        }
        assert cols == {
            "key": ("ascii", "partition_key", "none"),
            "ts": ("int", "clustering", "desc"),
            "data": ("blob", "regular", "none"),
        }


def test_writes_and_reads_across_a_bucket_boundary(store, cassandra_session):
    boundary = (int(time.time()) // ROW_KEY_BUCKET) * ROW_KEY_BUCKET  # the latest 28-day boundary
    amkey = KEY + "_sum_600"
    t0s = [boundary - 2 * SPAN, boundary - SPAN, boundary, boundary + SPAN]
    saved: list[ChunkWrite] = []
    store.set_on_saved(saved.extend)
    try:
        store.submit([cw(amkey, t) for t in t0s])
        assert store.drain(60) == 0
    finally:
        store.set_on_saved(None)
    assert sorted(w.t0 for w in saved) == t0s

    # rows sit exactly where a Metrictank node looks for them
    table = table_for_ttl(TTL)[0]
    for t in t0s:
        r = cassandra_session.execute(
            f"SELECT data FROM {store.keyspace}.{table} WHERE key = %s AND ts = %s", (row_key(amkey, t), t)
        ).one()
        assert r is not None and r.data == blob(t)
    assert row_key(amkey, boundary - SPAN).endswith(f"_{boundary // ROW_KEY_BUCKET - 1}")

    assert store.read(amkey, TTL, boundary - 2 * SPAN, boundary + 2 * SPAN, SPAN) == [
        (t, blob(t)) for t in t0s
    ]
    # start in the middle of the last chunk of the previous bucket: that chunk is included
    got = store.read(amkey, TTL, boundary - 1, boundary + 1, SPAN)
    assert [t for t, _ in got] == [boundary - SPAN, boundary]
    # end is exclusive on t0 (start minus max_span may bring one chunk before, which callers trim)
    got = [t for t, _ in store.read(amkey, TTL, boundary - SPAN, boundary, SPAN)]
    assert boundary - SPAN in got and boundary not in got


def test_ttl_is_relative_to_the_chunks_end(store, cassandra_session):
    t0 = now_t0() - 3 * SPAN
    amkey = KEY + "_max_600"
    store.submit([cw(amkey, t0)])
    before = int(time.time())
    assert store.drain(60) == 0
    table = table_for_ttl(TTL)[0]
    r = cassandra_session.execute(
        f"SELECT TTL(data) AS ttl FROM {store.keyspace}.{table} WHERE key = %s AND ts = %s",
        (row_key(amkey, t0), t0),
    ).one()
    expected = t0 + SPAN + TTL - before
    assert expected - 120 <= r.ttl <= expected + 5


def test_expired_write_is_skipped_and_counted(store, cassandra_session):
    ttl = 3600
    old = cw(KEY + "_min_600", now_t0() - 3 * 3600, ttl=ttl)  # t0 + span + ttl is in the past
    skipped0 = store.stats["skipped_expired"]
    seen: list[ChunkWrite] = []
    store.set_on_saved(seen.extend)
    try:
        store.submit([old])
        assert store.drain(30) == 0
    finally:
        store.set_on_saved(None)
    assert store.stats["skipped_expired"] == skipped0 + 1
    assert seen == [old]  # reported, like Metrictank, so nobody retries it
    table = table_for_ttl(ttl)[0]
    r = cassandra_session.execute(
        f"SELECT ts FROM {store.keyspace}.{table} WHERE key = %s", (row_key(old.amkey, old.t0),)
    ).one()
    assert r is None


def test_per_key_order_under_concurrency(store):
    """Confirmations for one AMKey come back in submission order, and the last write of a chunk wins."""
    base = now_t0() - 50 * SPAN
    keys = [f"1.{i:032x}" for i in range(40)]
    order: dict[str, list[bytes]] = {k: [] for k in keys}
    lock = threading.Lock()

    def on_saved(ws):
        with lock:
            for w in ws:
                order[w.amkey].append(w.data)

    store.set_on_saved(on_saved)
    try:
        expected: dict[str, list[bytes]] = {k: [] for k in keys}
        for rnd in range(25):
            batch = []
            for k in keys:
                data = blob(rnd * 1000 + int(k[-4:], 16))
                t0 = base + (rnd % 5) * SPAN  # rewrites of the same chunks, too
                batch.append(cw(k, t0, data=data))
                expected[k].append(data)
            store.submit(batch)
        assert store.drain(120) == 0
    finally:
        store.set_on_saved(None)
    assert order == expected
    got = store.read_many([(k, TTL) for k in keys], base, base + 5 * SPAN, SPAN)
    for k in keys:
        assert [d for _, d in got[k]] == expected[k][-5:]  # t0 order = rounds 20..24


def test_batches_stay_below_cassandras_warning_thresholds(store, caplog):
    caplog.set_level(logging.WARNING)
    base = now_t0() - 30 * SPAN
    batches0 = store.stats["batches"]
    store.submit([cw(f"2.{i:032x}", base + (i % 3) * SPAN) for i in range(3000)])
    assert store.drain(120) == 0
    assert store.stats["batches"] > batches0
    assert store.stats["batched_writes"] / store.stats["batches"] <= 10
    warnings = [r.getMessage() for r in caplog.records if "warning" in r.getMessage().lower()]
    assert not [w for w in warnings if "batch" in w.lower()], warnings


def test_read_many_and_tables_never_written(store):
    t0 = now_t0() - 10 * SPAN
    a, b = "3." + "a" * 32, "3." + "b" * 32 + "_cnt_600"
    store.submit([cw(a, t0), cw(b, t0), cw(b, t0 + SPAN)])
    assert store.drain(60) == 0
    got = store.read_many([(a, TTL), (b, TTL), ("3." + "c" * 32, TTL)], t0, t0 + 2 * SPAN, SPAN)
    assert got == {
        a: [(t0, blob(t0))],
        b: [(t0, blob(t0)), (t0 + SPAN, blob(t0 + SPAN))],
        "3." + "c" * 32: [],
    }
    assert store.read(a, 86400, t0, t0 + SPAN, SPAN) == []  # metric_16 does not exist


def test_retry_after_forced_timeouts(store):
    t0 = now_t0() - 5 * SPAN
    amkey = "4." + "d" * 32
    errors0, retries0 = store.stats["write_errors"], store.stats["retries"]
    store.timeout = 1e-6  # every request times out client-side
    try:
        store.submit([cw(amkey, t0)])
        deadline = time.monotonic() + 30
        while store.stats["retries"] < retries0 + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.stats["write_errors"] >= errors0 + 2
        assert store.pending() == 1
    finally:
        store.timeout = 20.0
    assert store.drain(60) == 0
    assert store.read(amkey, TTL, t0, t0 + SPAN, SPAN) == [(t0, blob(t0))]


def test_retry_while_table_is_gone_then_restored(cassandra_hosts, cassandra_session, keyspaces):
    ks = fresh(keyspaces)
    s = CassandraStore(cassandra_hosts, keyspace=ks, ttls=[TTL], timeout=10.0, retry_base=0.05, retry_max=0.5)
    table, window = table_for_ttl(TTL)
    try:
        t0 = now_t0() - 2 * SPAN
        s.submit([cw(KEY, t0)])
        assert s.drain(60) == 0
        cassandra_session.execute(f"DROP TABLE {ks}.{table}", timeout=60)
        s.submit([cw(KEY, t0 + SPAN)])
        deadline = time.monotonic() + 60
        while s.stats["retries"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.stats["write_errors"] >= 2 and s.pending() == 1
        cassandra_session.execute(cql.create_table(ks, table, window), timeout=60)
        assert s.drain(90) == 0
        assert s.read(KEY, TTL, t0 + SPAN, t0 + 2 * SPAN, SPAN) == [(t0 + SPAN, blob(t0 + SPAN))]
    finally:
        s.close(timeout=10)


def test_close_gives_up_on_unwritable_chunks(cassandra_hosts, cassandra_session, keyspaces):
    ks = fresh(keyspaces)
    table, window = table_for_ttl(TTL)
    cassandra_session.execute(cql.create_keyspace(ks), timeout=60)
    cassandra_session.execute(cql.create_table(ks, table, window), timeout=60)
    # schema owned by someone else: this store verifies it but must not recreate it
    s = CassandraStore(
        cassandra_hosts,
        keyspace=ks,
        ttls=[TTL],
        create_keyspace=False,
        timeout=10.0,
        retry_base=0.05,
        retry_max=0.2,
    )
    cassandra_session.execute(f"DROP TABLE {ks}.{table}", timeout=60)
    s.submit([cw(KEY, now_t0() - SPAN), cw(KEY, now_t0() - 2 * SPAN), cw(KEY + "_sum_600", now_t0() - SPAN)])
    began = time.monotonic()
    s.close(timeout=1.0)
    assert time.monotonic() - began < 20
    assert s.stats["abandoned"] == 3 and s.stats["saved"] == 0 and s.pending() == 0
    with pytest.raises(StoreClosed):
        s.submit([cw(KEY, now_t0())])


def test_without_create_keyspace_missing_tables_fail_fast(cassandra_hosts, keyspaces):
    ks = fresh(keyspaces)
    with pytest.raises(RuntimeError, match="lacks"):
        CassandraStore(cassandra_hosts, keyspace=ks, ttls=[TTL], create_keyspace=False, verify_timeout=0.5)


def test_small_queues_apply_backpressure_and_lose_nothing(cassandra_hosts, keyspaces):
    ks = fresh(keyspaces)
    s = CassandraStore(
        cassandra_hosts, keyspace=ks, ttls=[TTL], write_queues=2, write_queue_size=5, write_concurrency=20
    )
    threads: set[str] = set()
    saved: list[ChunkWrite] = []

    def on_saved(ws):
        threads.add(threading.current_thread().name)
        saved.extend(ws)

    s.set_on_saved(on_saved)
    try:
        t0 = now_t0() - SPAN
        writes = [cw(f"5.{i:032x}", t0) for i in range(600)]
        s.submit(writes)  # far more than 2 x 5 queued + 20 in flight: must block, not grow
        assert s.stats["queue_blocked_puts"] > 0
        assert s.stats["queue_depth"] <= 10
        assert s.drain(120) == 0
        assert sorted(saved, key=lambda w: w.amkey) == writes
        assert threads == {"cassandra-store-writer"}
        got = s.read_many([(w.amkey, TTL) for w in writes], t0, t0 + SPAN, SPAN)
        assert all(got[w.amkey] == [(t0, w.data)] for w in writes)
    finally:
        s.close()
