"""Pieces shared by the stores: queue choice, bounded queues, read bounds, CQL text."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from metrictank.schema import ROW_KEY_BUCKET
from metrictank.store import ChunkWrite, StoreClosed, cql, queue_index
from metrictank.store.base import read_bounds
from metrictank.store.cassandra import parse_addrs
from metrictank.store.queues import WriteQueues

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"
KEY = "1.0dd2132bf7bcb5dcbde9786f9eea621b"


def cw(amkey: str, org: int = 1, t0: int = 0) -> ChunkWrite:
    return ChunkWrite(amkey, org, t0, 600, 3600, b"\x02\x0b", 0)


def test_queue_index_is_metrictanks_rule_and_keeps_rollups_with_their_series():
    # Metrictank: (org + sum of the 16 md5 bytes) % queues
    md5 = bytes.fromhex(KEY.split(".")[1])
    assert queue_index(KEY, 1, 10) == (1 + sum(md5)) % 10
    for arch in ("_sum_600", "_cnt_600", "_max_3600", "_lst_21600"):
        assert queue_index(KEY + arch, 1, 10) == queue_index(KEY, 1, 10)
    assert queue_index(KEY, 2, 10) == (queue_index(KEY, 1, 10) + 1) % 10
    spread = {queue_index(f"1.{i:032x}", 1, 10) for i in range(200)}
    assert spread == set(range(10))
    assert 0 <= queue_index("not-an-id", 1, 10) < 10  # foreign keys still get a stable queue


def test_queues_keep_order_per_queue_and_block_when_full():
    q = WriteQueues(3, 4)
    writes = [cw(f"1.{i:032x}", t0=i) for i in range(12)]
    by_queue: dict[int, list[ChunkWrite]] = {}
    for w in writes:
        by_queue.setdefault(queue_index(w.amkey, w.org, 3), []).append(w)
    fits = [w for ws in by_queue.values() for w in ws[:4]]
    q.put_many(fits)
    taken = q.take(100)
    assert sorted(taken, key=lambda w: w.t0) == sorted(fits, key=lambda w: w.t0)
    for ws in by_queue.values():  # per queue, FIFO
        sub = [w for w in taken if w in ws]
        assert sub == ws[: len(sub)]

    full = WriteQueues(1, 2)
    full.put_many([cw(KEY, t0=1), cw(KEY, t0=2)])
    finished = threading.Event()
    th = threading.Thread(target=lambda: (full.put_many([cw(KEY, t0=3)]), finished.set()))
    th.start()
    assert not finished.wait(0.3)
    assert [w.t0 for w in full.take(1)] == [1]
    assert finished.wait(2)
    assert [w.t0 for w in full.take(10)] == [2, 3]
    th.join()


def test_queue_close_wakes_blocked_producer_with_count_of_accepted():
    q = WriteQueues(1, 1)
    q.put_many([cw(KEY, t0=1)])
    errs: list[StoreClosed] = []

    def producer():
        try:
            q.put_many([cw(KEY, t0=2), cw(KEY, t0=3)])
        except StoreClosed as e:
            errs.append(e)

    th = threading.Thread(target=producer)
    th.start()
    th.join(0.2)
    left = q.close()
    th.join(2)
    assert [w.t0 for w in left] == [1]
    assert len(errs) == 1 and errs[0].accepted == 0


def test_read_bounds_include_the_chunk_that_began_before_start():
    start = 620 * ROW_KEY_BUCKET + 5000
    assert read_bounds(start, 600) == start - 600
    # never before start's own bucket: spans divide 28 days, so the chunk holding start is in it
    assert read_bounds(620 * ROW_KEY_BUCKET + 10, 3600) == 620 * ROW_KEY_BUCKET
    assert read_bounds(start, 0) == 620 * ROW_KEY_BUCKET  # span unknown: whole first bucket


def test_cql_table_matches_golden_table_names_and_windows():
    for line in GOLDEN.read_text().splitlines():
        v = json.loads(line)
        if v["type"] != "cassandra_table":
            continue
        ddl = cql.create_table("metrictank", v["table"], v["window_hours"])
        assert f"metrictank.{v['table']} (key ascii, ts int, data blob, PRIMARY KEY (key, ts))" in ddl
        assert f"'compaction_window_size': '{v['window_hours']}'" in ddl
        assert f"gc_grace_seconds = {v['window_hours'] * 3600}" in ddl
        assert "CLUSTERING ORDER BY (ts DESC)" in ddl


def test_replication_short_forms():
    assert cql.parse_replication("SimpleStrategy RF 1") == {
        "class": "SimpleStrategy",
        "replication_factor": "1",
    }
    assert cql.parse_replication("NetworkTopologyStrategy dc1:3, dc2:2") == {
        "class": "NetworkTopologyStrategy",
        "dc1": "3",
        "dc2": "2",
    }
    assert "'replication_factor': '3'" in cql.create_keyspace("mt", "SimpleStrategy 3")
    with pytest.raises(ValueError):
        cql.parse_replication("LocalStrategy")


def test_parse_addrs():
    assert parse_addrs("a:1,b, c:9043") == [("a", 1), ("b", 9042), ("c", 9043)]
    assert parse_addrs("[::1]:9000") == [("::1", 9000)]
    with pytest.raises(ValueError):
        parse_addrs(" , ")
