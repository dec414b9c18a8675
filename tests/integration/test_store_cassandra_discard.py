"""discard_pending and the write counters of the Cassandra store, against the test bed's real Cassandra.

The outage is simulated on the store object only (a request timeout of a microsecond: every write times out
client-side and is retried), never by stopping the shared server. A client-side timeout leaves the outcome
unknown (the server may still apply the write), so "no stale writer" is checked as: no request is sent after
the discard, and nothing is announced.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from metrictank.store import ChunkWrite
from metrictank.store.cassandra import CassandraStore

TTL = 365 * 86400
SPAN = 600
KEYS = [f"5.{i:032x}" for i in range(1, 9)]


def cw(amkey: str, t0: int) -> ChunkWrite:
    return ChunkWrite(amkey, 5, t0, SPAN, TTL, b"\x02\x0b" + t0.to_bytes(4, "big") * 30, 0)


def now_t0() -> int:
    now = int(time.time())
    return now - now % SPAN


@pytest.fixture
def store(cassandra_hosts, cassandra_session):
    ks = f"mtdiscard_{uuid.uuid4().hex[:10]}"
    s = CassandraStore(
        cassandra_hosts,
        keyspace=ks,
        ttls=[TTL],
        timeout=20.0,
        write_concurrency=4,  # some writes on the wire or retrying, the others held or queued
        retry_base=0.02,
        retry_max=0.1,
    )
    saved: list[ChunkWrite] = []
    s.set_on_saved(saved.extend)
    s.saved = saved  # type: ignore[attr-defined]
    yield s
    s.close(timeout=30)
    with contextlib.suppress(Exception):
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)


@pytest.mark.timeout(180)
def test_discard_during_outage_then_store_returns(store):
    t0 = now_t0() - 10 * SPAN
    store.submit([cw(KEYS[0], t0 - SPAN)])
    assert store.drain(60) == 0  # table and statement ready
    store.saved.clear()

    store.timeout = 1e-6  # the outage: every request times out
    pending = [
        cw(k, t0 + i * SPAN) for k in KEYS for i in range(3)
    ]  # 3 chunks per key: held behind each other
    try:
        store.submit(pending)
        deadline = time.monotonic() + 30
        while store.write_retries < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.write_retries >= 4
        assert store.drain(0.3) == len(pending)  # the demotion's drain times out
        dropped = store.discard_pending(timeout=10)
        # what was on the wire gives up at its next failure, the rest is dropped at once
        assert store.drain(10) == 0
        assert store.writes_dropped == len(pending) >= dropped > 0
        requests = store.stats["requests"]
    finally:
        store.timeout = 20.0  # the store is back

    time.sleep(1.0)  # a stale writer would write now
    assert store.stats["requests"] == requests
    assert store.saved == []
    assert store.stats["retrying"] == store.stats["held"] == store.stats["inflight"] == 0
    assert store.write_errors_by_reason.get("timeout", 0) >= 4
    assert store.write_errors == sum(store.write_errors_by_reason.values())

    store.submit([cw(KEYS[1], t0 + 5 * SPAN)])  # later writes are not affected
    assert store.drain(60) == 0
    assert [w.t0 for w in store.saved] == [t0 + 5 * SPAN]
    assert store.chunks_written == 2
