"""The index in the store against the real Cassandra of the test bed: Metrictank's `metric_idx` table and the
values Metrictank itself would write for a MetricData, loaded back; pruning.

Expected values, from Metrictank's source (docs/index.md): `schema.MetricDefinitionFromMetricData` copies Id,
OrgId, Name, Interval, Unit, Mtype and Tags and sets LastUpdate to the MetricData's Time; the memory index sets
Partition to the Kafka partition the message came from; `idx/cassandra/cassandra.go` (processWriteQueue)
binds `id` = Id.String() (`<org>.<32 hex>`), orgid, partition, name, interval, unit, mtype, tags (a Go
[]string into `set<text>`, so an untagged series has no set: null) and lastupdate.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from metrictank.index import MemoryIndex
from metrictank.input.handler import IngestHandler
from metrictank.retention import Aggregations, Schemas
from metrictank.schema import MetricData, encode_metricdata, series_id
from metrictank.store.index import CassandraIndexStore, IndexUpdater
from metrictank.tank import Tank

#: Metrictank's scripts/config/schema-idx-cassandra.toml `schema_table`: column -> (type, kind)
METRICTANK_COLUMNS = {
    "id": ("text", "clustering"),
    "orgid": ("int", "regular"),
    "partition": ("int", "partition_key"),
    "name": ("text", "regular"),
    "interval": ("int", "regular"),
    "unit": ("text", "regular"),
    "mtype": ("text", "regular"),
    "tags": ("set<text>", "regular"),
    "lastupdate": ("int", "regular"),
}


def _md(org: int, name: str, interval: int, unit: str, mtype: str, tags: list[str], ts: int) -> MetricData:
    return MetricData(
        id=series_id(org, name, unit, mtype, interval, tags),
        org_id=org,
        name=name,
        interval=interval,
        value=1.5,
        unit=unit,
        time=ts,
        mtype=mtype,
        tags=tags,
    )


@pytest.fixture
def idx_store(cassandra_session, new_keyspace):
    ks = new_keyspace()
    s = CassandraIndexStore(cassandra_session, ks, "metric_idx", timeout=30, write_queue_size=1000)
    yield s, ks
    s.close(10)


def test_metric_idx_has_metrictanks_schema(idx_store, cassandra_session):
    _s, ks = idx_store
    rows = cassandra_session.execute(
        "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
        (ks, "metric_idx"),
    )
    got = {r[0]: (r[1], r[2]) for r in rows}
    assert got == METRICTANK_COLUMNS
    opts = cassandra_session.execute(
        "SELECT compaction, compression FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (ks, "metric_idx"),
    ).one()
    assert opts[0]["class"].endswith("SizeTieredCompactionStrategy")
    assert opts[1]["class"].endswith("LZ4Compressor")


def test_rows_hold_metrictanks_values_and_load_back(idx_store, cassandra_session):
    store, ks = idx_store
    now = int(time.time())
    mds = [
        (_md(1, "web.requests", 10, "req/s", "rate", [], now - 30), 3),
        (_md(7, "cpu.usage", 60, "%", "gauge", ["host=a", "dc=eu", "dc=eu"], now - 90), 0),
        (_md(3, "org3.thing", 1, "", "counter", ["x=1"], now - 5), 5),
    ]
    index = MemoryIndex()
    tank = Tank(Schemas.load(None), Aggregations.load(None), row_of_id=index.row_of)
    handler = IngestHandler(index, tank, on_definitions=IndexUpdater(store, index, update_interval=10800))
    parts = [p for _md_, p in mds]
    assert handler.process([encode_metricdata(m) for m, _p in mds], lambda i: parts[i]) == 3
    assert store.drain(30) == 0
    assert store.inserts_ok == 3

    raw = {
        r[0]: tuple(r)
        for r in cassandra_session.execute(
            f"SELECT id, orgid, partition, name, interval, unit, mtype, tags, lastupdate FROM {ks}.metric_idx"
        )
    }
    assert len(raw) == 3
    for md, part in mds:
        rid, orgid, partition, name, interval, unit, mtype, tags, lastupdate = raw[md.id]
        assert rid == md.id and rid.startswith(f"{md.org_id}.") and len(rid.split(".")[1]) == 32
        assert orgid == md.org_id
        assert partition == part
        assert name == md.name
        assert interval == md.interval
        assert unit == md.unit
        assert mtype == md.mtype
        # set<text>: de-duplicated and sorted by Cassandra; an empty set is stored as null
        assert (set(tags) if tags else set()) == set(md.tags)
        if not md.tags:
            assert tags is None
        assert lastupdate == md.time

    # load: each partition's definitions, lastupdate bumped by update-interval and capped at now
    loaded = {}
    for b in store.load([0, 3, 5, 9], update_interval=60, now=now):
        for row in b.rows():
            loaded[row[0]] = row
    assert set(loaded) == {m.id for m, _p in mds}
    for md, part in mds:
        rid, org, p, name, iv, unit, mtype, tags, lu = loaded[md.id]
        assert (org, p, name, iv, unit, mtype) == (md.org_id, part, md.name, md.interval, md.unit, md.mtype)
        assert tags == tuple(sorted(set(md.tags)))
        assert lu == min(now, md.time + 60)
    assert list(store.load([1, 2], now=now)) == []


def test_paged_load_and_prune(idx_store):
    store, _ks = idx_store
    now = int(time.time())
    from metrictank.index import DefBatch

    rows = []
    for i in range(25):
        name = f"paged.s{i}"
        rows.append(
            (series_id(1, name, "", "gauge", 10, []), 1, i % 2, name, 10, "", "gauge", (), now - 1000 * i)
        )
    assert store.update(DefBatch.from_rows(rows)) == 25
    assert store.drain(30) == 0
    batches = list(store.load([0, 1], now=now, batch_size=4))
    assert all(0 < len(b) <= 4 for b in batches)
    assert sum(len(b) for b in batches) == 25
    # prune: rows older than 10 000 s (i > 10) of partition 0 only
    assert store.prune(now - 10_000, partitions=[0]) == len([i for i in range(11, 25) if i % 2 == 0])
    left = {n for b in store.load([0, 1], now=now) for n in b.names}
    assert left == {f"paged.s{i}" for i in range(25) if i <= 10 or i % 2 == 1}
    assert np.all(np.concatenate([b.lastupdates for b in store.load([0], now=now)]) >= now - 10_000)


def test_metric_idx_archive_exists_and_archiving_moves_rows(idx_store, cassandra_session):
    """Metrictank's nodes and tools stop at start-up without `metric_idx_archive` (schema_archive_table: the index
    columns plus `archived_at int`); archiving moves a row there and out of metric_idx."""
    s, ks = idx_store
    rows = cassandra_session.execute(
        "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
        (ks, "metric_idx_archive"),
    )
    assert {r[0]: (r[1], r[2]) for r in rows} == {**METRICTANK_COLUMNS, "archived_at": ("int", "regular")}
    now = int(time.time())
    defs = [
        (
            series_id(1, f"arch.s{i}", "ms", "gauge", 10, ["a=b"]),
            1,
            i,
            f"arch.s{i}",
            10,
            "ms",
            "gauge",
            ("a=b",),
            now,
        )
        for i in range(3)
    ]
    from metrictank.index import DefBatch

    assert s.update(DefBatch.from_rows(defs)) == 3
    assert s.drain(20) == 0
    assert s.archive(DefBatch.from_rows(defs[1:2]), now + 5)
    assert s.drain(20) == 0
    live = {r[0] for r in cassandra_session.execute(f"SELECT id FROM {ks}.metric_idx")}
    assert live == {defs[0][0], defs[2][0]}
    arch = list(
        cassandra_session.execute(
            f"SELECT id, partition, name, tags, lastupdate, archived_at FROM {ks}.metric_idx_archive"
        )
    )
    assert [tuple(r) for r in arch] == [(defs[1][0], 1, "arch.s1", {"a=b"}, now, now + 5)]
