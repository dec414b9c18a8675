"""The index in the store (SQLite backend) and the update policy that feeds it.

What an operator relies on: definitions written by ingest are loaded back (per partition, in bounded
batches, lastupdate bumped as Metrictank does, stale rows left out), a live series is rewritten at most once per
update-interval, a full write queue drops (and counts) updates without ever blocking ingest and they are
retried, pruning deletes only stale rows of the given partitions, and a restored series' MetricPoints are
accepted after a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from metrictank.index import DefBatch, MemoryIndex
from metrictank.input.handler import IngestHandler
from metrictank.retention import Aggregations, Schemas
from metrictank.schema import (
    ControlMsg,
    MetricData,
    encode_control,
    encode_metricdata,
    encode_metricpoint,
    parse_mkey,
    series_id,
)
from metrictank.schema import MetricDefinition as ControlMetricDefinition
from metrictank.stats import Stats
from metrictank.store.index import IndexUpdater, SQLiteIndexStore
from metrictank.tank import Tank

NOW = 1_700_000_000


def _defs(n: int, part_of=lambda i: i % 4, lastupdate: int = NOW - 100, prefix: str = "a.b") -> DefBatch:
    rows = []
    for i in range(n):
        tags = ["dc=x", f"host=h{i}"] if i % 2 else []
        name = f"{prefix}.s{i}"
        sid = series_id(1, name, "ms", "gauge", 10, tags)
        rows.append((sid, 1, part_of(i), name, 10, "ms", "gauge", tuple(tags), lastupdate + i))
    return DefBatch.from_rows(rows)


def _as_set(b: DefBatch) -> set[tuple]:
    return set(b.rows())


def _load_all(store: SQLiteIndexStore, parts, now: int = NOW, **kw) -> DefBatch:
    got = list(store.load(parts, now=now, **kw))
    return DefBatch.from_rows([r for b in got for r in b.rows()])


@pytest.fixture
def store(tmp_path):
    s = SQLiteIndexStore(tmp_path / "idx.db", write_queue_size=1000, clock=lambda: NOW)
    yield s
    s.close(5)


def test_written_definitions_load_back_column_for_column(store, tmp_path):
    defs = _defs(20)
    assert store.update(defs) == 20
    assert store.drain(5) == 0
    got = _load_all(store, range(4))
    assert _as_set(got) == _as_set(defs)
    # the table has Metrictank's columns and key; tags are a JSON array of the sorted tags
    conn = sqlite3.connect(tmp_path / "idx.db")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(metric_idx)")]
    assert cols == ["id", "orgid", "partition", "name", "interval", "unit", "mtype", "tags", "lastupdate"]
    pk = sorted((r[5], r[1]) for r in conn.execute("PRAGMA table_info(metric_idx)") if r[5])
    assert [c for _, c in pk] == ["partition", "id"]
    tags = dict(conn.execute("SELECT name, tags FROM metric_idx"))
    assert json.loads(tags["a.b.s1"]) == ["dc=x", "host=h1"]
    assert json.loads(tags["a.b.s0"]) == []


def test_load_only_asked_partitions_in_bounded_batches(store):
    store.update(_defs(40))
    store.drain(5)
    batches = list(store.load([1, 3], now=NOW, batch_size=4))
    assert all(0 < len(b) <= 4 for b in batches)
    parts = np.concatenate([b.partitions for b in batches])
    assert sorted(set(parts.tolist())) == [1, 3]
    assert len(parts) == 20
    # concurrency gives the same definitions
    conc = list(store.load([0, 1, 2, 3], now=NOW, batch_size=3, concurrency=3))
    assert sum(len(b) for b in conc) == 40


def test_load_bumps_lastupdate_and_skips_stale(store):
    store.update(_defs(1, lastupdate=NOW - 7200))  # 2h old
    store.update(_defs(1, lastupdate=NOW - 60, prefix="fresh"))
    store.drain(5)
    # bumped by the update interval, capped at now (Metrictank's load)
    got = {n: lu for n, lu in zip(*_cols(_load_all(store, [0], update_interval=3600)), strict=True)}
    assert got == {"a.b.s0": NOW - 3600, "fresh.s0": NOW}
    # max-stale 1h: the 2h-old row (bumped by 30 min only) is left out, and counted
    got = _load_all(store, [0], max_stale=3600, update_interval=1800)
    assert got.names == ["fresh.s0"]
    assert store.load_stale == 1


def _cols(b: DefBatch):
    return b.names, b.lastupdates.tolist()


def test_unparsable_ids_are_skipped_and_counted(store, tmp_path):
    store.update(_defs(2))
    store.drain(5)
    conn = sqlite3.connect(tmp_path / "idx.db")
    conn.execute("INSERT INTO metric_idx VALUES ('garbage', 1, 0, 'x', 10, '', 'gauge', '[]', ?)", (NOW,))
    conn.commit()
    got = _load_all(store, [0, 1])
    assert len(got) == 2 and "garbage" not in got.ids
    assert store.load_invalid == 1


def test_prune_deletes_only_stale_rows_of_the_given_partitions(store):
    store.update(_defs(8, lastupdate=NOW - 10_000))  # partitions 0..3, two each
    store.update(_defs(4, lastupdate=NOW, prefix="live"))
    store.drain(5)
    assert store.prune(NOW - 5000, partitions=[0, 1]) == 4
    left = _load_all(store, range(4))
    assert len(left) == 8
    assert {n for n, p in zip(left.names, left.partitions.tolist(), strict=True) if p in (0, 1)} == {
        "live.s0",
        "live.s1",
    }
    assert store.prune(NOW - 5000) == 4  # all partitions
    assert sorted(_load_all(store, range(4)).names) == ["live.s0", "live.s1", "live.s2", "live.s3"]


class _Blocked(SQLiteIndexStore):
    """A store whose writer waits until released: a store outage, as ingest sees it."""

    def __init__(self, *a, **kw) -> None:
        self.release = threading.Event()
        super().__init__(*a, **kw)

    def _write(self, rows):
        self.release.wait(10)
        super()._write(rows)


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    s = _Blocked(tmp_path / "idx.db", write_queue_size=10, clock=lambda: NOW)
    try:
        stats = Stats()
        s.register_stats(stats)
        assert s.update(_defs(4)) == 4
        assert s.drain(0.3) == 4  # blocked writer
        assert s.update(_defs(8, prefix="more")) == 6  # room for 6 of 8: never waits
        assert s.update(_defs(3, prefix="none")) == 0
        assert s.save_skipped == 2 + 3
        assert stats.snapshot()["metrictank_idx_cassandra_save_skipped_total"] == 5
        s.release.set()
        assert s.drain(5) == 0
        assert len(_load_all(s, range(4))) == 10
    finally:
        s.release.set()
        s.close(5)


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _index_with(defs: DefBatch) -> tuple[MemoryIndex, np.ndarray]:
    idx = MemoryIndex()
    rows, _ = idx.add_many(
        defs.ids,
        defs.orgs,
        defs.names,
        defs.intervals,
        defs.units,
        defs.mtypes,
        defs.tags,
        defs.partitions,
        defs.lastupdates,
    )
    return idx, np.asarray(rows, np.int64)


def _stored(store) -> dict[str, tuple[int, int]]:
    """id -> (partition, lastupdate) as stored (no bump, no cap)."""
    return {i: (p, lu) for i, p, lu in zip(*_id_cols(_load_all(store, range(8), now=2**31)), strict=True)}


def _id_cols(b: DefBatch):
    return b.ids, b.partitions.tolist(), b.lastupdates.tolist()


def test_updater_writes_new_at_once_and_live_once_per_interval(store):
    clock = _Clock(NOW)
    defs = _defs(6)
    idx, rows = _index_with(defs)
    up = IndexUpdater(store, idx, update_interval=3600, clock=clock)
    assert up.seen(rows[:0], new_rows=rows) == 6
    store.drain(5)
    assert _as_set(_load_all(store, range(4))) == _as_set(defs)
    # data within the interval: no rewrite
    idx.touch(rows, np.full(6, NOW + 60))
    clock.t = NOW + 1800
    assert up.seen(rows) == 0
    # past the interval: rewritten with the newer lastupdate
    clock.t = NOW + 3601
    assert up.seen(np.concatenate([rows, rows])) == 6
    store.drain(5)
    assert {lu for _p, lu in _stored(store).values()} == {NOW + 60}


def test_updater_retries_dropped_updates_when_seen_again(tmp_path):
    s = _Blocked(tmp_path / "idx.db", write_queue_size=3, clock=lambda: NOW)
    try:
        defs = _defs(5)
        idx, rows = _index_with(defs)
        up = IndexUpdater(s, idx, update_interval=3600, clock=lambda: NOW)
        assert up.seen(rows[:0], new_rows=rows) == 3
        assert s.save_skipped == 2
        s.release.set()
        assert s.drain(5) == 0
        # the two dropped ones are still due (their save was not advanced); the three written are not
        assert up.seen(rows) == 2
        assert s.drain(5) == 0
        assert len(_stored(s)) == 5
        assert up.seen(rows) == 0
    finally:
        s.release.set()
        s.close(5)


def test_updater_deletes_the_old_row_when_a_series_moves_partition(store):
    defs = _defs(2)
    idx, rows = _index_with(defs)
    up = IndexUpdater(store, idx, update_interval=0, clock=lambda: NOW)
    up.seen(rows[:0], new_rows=rows)
    store.drain(5)
    d = idx.get(int(rows[0]))
    idx.add(d.id, d.org, d.name, d.interval, d.unit, d.mtype, d.tags, 7, d.lastupdate)
    up.seen(rows[:1])
    store.drain(5)
    stored = _stored(store)
    assert stored[d.id][0] == 7
    assert len(stored) == 2  # the partition-0 row of the moved series is gone


def _md(name: str, ts: int, value: float = 1.0) -> MetricData:
    return MetricData(
        id=series_id(1, name, "", "gauge", 10, []),
        org_id=1,
        name=name,
        interval=10,
        value=value,
        unit="",
        time=ts,
        mtype="gauge",
        tags=[],
    )


def _node(store) -> tuple[IngestHandler, MemoryIndex]:
    index = MemoryIndex()
    tank = Tank(Schemas.load(None), Aggregations.load(None), clock=lambda: NOW, row_of_id=index.row_of)
    h = IngestHandler(index, tank)
    h.on_definitions = IndexUpdater(store, index, update_interval=3600, clock=lambda: NOW)
    return h, index


def test_restored_series_accepts_metricpoints_after_restart(store):
    md = _md("only.metricdata.once", NOW - 50)
    h1, _ = _node(store)
    assert h1.process([encode_metricdata(md)], lambda i: 2) == 1
    store.drain(5)
    # a restarted node that replays only MetricPoints of that series
    points = [encode_metricpoint(md.id, float(v), NOW - 40 + 10 * v) for v in range(3)]
    cold, _ = _node(store)
    cold.process(points, lambda i: 2)
    assert cold.unknown_points == 3  # without the index in the store: dropped
    h2, index2 = _node(store)
    assert h2.restore_series(store.load([2], now=NOW, update_interval=3600)) == 1
    assert h2.process(points, lambda i: 2) == 3
    assert h2.unknown_points == 0
    row = index2.row_of(md.id)
    assert row is not None
    ts, vals, _ = h2.tank.read(row, 0, None, NOW - 100, NOW + 100)
    assert list(np.asarray(ts)) == [NOW - 40, NOW - 30, NOW - 20]
    # a restored series is not rewritten at once: it counts as saved at its loaded lastupdate
    assert store.pending() == 0 and store.inserts_ok == 1


def test_control_remove_deletes_the_row(store):
    """A delete control message (op 0) removes the series from memory and its row from the store."""
    md = _md("to.be.removed", NOW - 50)
    keep = _md("to.be.kept", NOW - 50)
    h, index = _node(store)
    h.process([encode_metricdata(md), encode_metricdata(keep)], lambda i: 0)
    store.drain(5)
    assert len(_stored(store)) == 2
    d = ControlMetricDefinition(parse_mkey(md.id), 1, md.name, 10, "", "gauge", [], NOW - 50, 0)
    h.process([encode_control(ControlMsg([d], 0))], lambda i: 0)
    store.drain(5)
    assert index.row_of(md.id) is None
    assert list(_stored(store)) == [keep.id]


class _Flaky(SQLiteIndexStore):
    """A store whose partition scans fail after `fail_after` rows, `failures` times: a read timeout mid-load."""

    def __init__(self, *a, failures: int = 1, fail_after: int = 3, **kw) -> None:
        self.failures = failures
        self.fail_after = fail_after
        self.scans = 0
        super().__init__(*a, **kw)

    def _scan(self, partition, batch_size):
        self.scans += 1
        sent = 0
        for raw in super()._scan(partition, batch_size):
            for r in raw:
                if self.failures and sent == self.fail_after:
                    self.failures -= 1
                    raise TimeoutError("read timed out")
                sent += 1
                yield [r]


def test_load_retries_a_partition_without_handing_rows_twice(tmp_path):
    s = _Flaky(tmp_path / "idx.db", failures=2, fail_after=3, clock=lambda: NOW, retry_base=0.001)
    try:
        s.update(_defs(10, part_of=lambda i: 0))
        s.drain(5)
        got = _load_all(s, [0], retries=3)
        assert sorted(got.names) == sorted(f"a.b.s{i}" for i in range(10))
        assert len(got.ids) == len(set(got.ids)) == 10
        assert s.scans == 3
    finally:
        s.close(5)


def test_load_fails_loudly_after_the_retries(tmp_path):
    s = _Flaky(tmp_path / "idx.db", failures=5, fail_after=0, clock=lambda: NOW, retry_base=0.001)
    try:
        s.update(_defs(2, part_of=lambda i: 0))
        s.drain(5)
        with pytest.raises(RuntimeError, match="loading partition 0 failed"):
            _load_all(s, [0], retries=2)
    finally:
        s.close(5)


def test_update_returns_at_once_while_the_writer_is_stuck(tmp_path):
    s = _Blocked(tmp_path / "idx.db", write_queue_size=100_000, clock=lambda: NOW)
    try:
        s.update(_defs(1))
        t0 = time.monotonic()
        for k in range(20):
            s.update(_defs(50, prefix=f"burst{k}"))
        assert time.monotonic() - t0 < 2.0
        assert s.pending() == 1 + 20 * 50
    finally:
        s.release.set()
        s.close(5)


def test_pruning_thread_deletes_stale_rows_of_its_partitions(tmp_path):
    clock = _Clock(NOW)
    s = SQLiteIndexStore(tmp_path / "idx.db", clock=clock)
    try:
        s.update(_defs(4, lastupdate=NOW - 5000))  # partitions 0..3
        s.update(_defs(4, lastupdate=NOW, prefix="live"))
        s.drain(5)
        s.start_pruning([0, 1], max_stale=1000, interval=0.05)
        deadline = time.monotonic() + 5
        while s.pruned < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.pruned == 2
        assert sorted(_stored(s).values()) == sorted(
            [(2, NOW - 5000 + 2), (3, NOW - 5000 + 3)] + [(p, NOW + p) for p in range(4)]
        )
    finally:
        s.close(5)


def test_cassandra_idx_options():
    from metrictank.config import ConfigError, load_config

    c = load_config(None, env={}).cassandra_idx
    assert (c.enabled, c.update_cassandra_index, c.update_interval, c.write_queue_size) == (
        True,
        True,
        10800.0,
        100000,
    )
    assert (c.max_stale, c.prune_interval, c.init_load_concurrency, c.init_load_retries) == (
        0.0,
        10800.0,
        1,
        3,
    )
    assert c.table == "metric_idx"
    env = {"MT_CASSANDRA_IDX_UPDATE_INTERVAL": "30m", "MT_CASSANDRA_IDX_MAX_STALE": "30d"}
    c = load_config(None, env=env).cassandra_idx
    assert (c.update_interval, c.max_stale) == (1800.0, 30 * 86400.0)
    with pytest.raises(ConfigError, match="cassandra-idx.table"):
        load_config(None, env={"MT_CASSANDRA_IDX_TABLE": "x; DROP TABLE y"})
    with pytest.raises(ConfigError, match="cassandra-idx.write-queue-size"):
        load_config(None, env={"MT_CASSANDRA_IDX_WRITE_QUEUE_SIZE": "0"})


_GOOD_ID = series_id(1, "hostile.neighbour", "", "gauge", 10, [])


def _hostile(label: str, **col) -> tuple:
    """A row of partition 0 with one column replaced (as SQL text, so SQLite stores exactly that)."""
    row = {
        "id": f"'{series_id(1, label, '', 'gauge', 10, [])}'",
        "orgid": "1",
        "partition": "0",
        "name": f"'{label}'",
        "interval": "10",
        "unit": "''",
        "mtype": "'gauge'",
        "tags": "'[]'",
        "lastupdate": str(NOW),
    }
    row.update(col)
    return pytest.param(tuple(row.values()), id=label)


@pytest.mark.parametrize(
    "row",
    [
        _hostile("tags.not.json", tags="'not json'"),
        _hostile("tags.a.number", tags="'5'"),
        _hostile("tags.an.object", tags="'{\"a\": 1}'"),
        _hostile("tags.of.ints", tags="'[1, 2]'"),
        _hostile("tags.no.equals", tags="'[\"noeq\"]'"),
        _hostile("tags.deep", tags="'" + "[" * 100_000 + "'"),
        _hostile("interval.text", interval="'abc'"),
        _hostile("interval.zero", interval="0"),
        _hostile("interval.negative", interval="-5"),
        _hostile("interval.int32", interval=str(2**31)),
        _hostile("lastupdate.text", lastupdate="'x'"),
        _hostile("lastupdate.real", lastupdate="1.5"),
        _hostile("orgid.text", orgid="'x'"),
        _hostile("orgid.huge", orgid=str(2**40)),
        _hostile("name.empty", name="''"),
        _hostile("name.dots", name="'a..b.'"),
        _hostile("name.not.utf8", name="CAST(x'61ff62' AS TEXT)"),
        _hostile("id.int", id="12345"),
        _hostile("id.blob", id="x'00ff'"),
        _hostile("unit.blob", unit="x'00ff'"),
    ],
)
def test_corrupt_rows_are_skipped_and_counted_not_fatal(tmp_path, row):
    """A corrupt or hostile metric_idx row is skipped and counted (load_skipped{reason=invalid}); its neighbours
    load, and the start-up neither fails nor loses the rows read with it."""
    s = SQLiteIndexStore(tmp_path / "idx.db", clock=lambda: NOW, retry_base=0.001)
    try:
        conn = sqlite3.connect(tmp_path / "idx.db")
        good = (_GOOD_ID, 1, 0, "hostile.neighbour", 10, "", "gauge", "[]", NOW)
        conn.execute("INSERT INTO metric_idx VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", good)
        conn.execute(f"INSERT INTO metric_idx VALUES ({', '.join(row)})")
        conn.commit()
        conn.close()
        h, index = _node(s)
        assert h.restore_series(s.load([0], now=NOW)) == 1
        assert index.row_of(_GOOD_ID) is not None
        assert (s.loaded, s.load_invalid) == (1, 1)
    finally:
        s.close(5)


class _PrepareFailsOnce(SQLiteIndexStore):
    def __init__(self, *a, **kw) -> None:
        self.failed = False
        super().__init__(*a, **kw)

    def _prepare(self, raw, now, bump, cutoff):
        if not self.failed:
            self.failed = True
            raise RuntimeError("boom")
        return super()._prepare(raw, now, bump, cutoff)


def test_a_batch_that_fails_to_prepare_is_read_again_not_lost(tmp_path):
    s = _PrepareFailsOnce(tmp_path / "idx.db", clock=lambda: NOW, retry_base=0.001)
    try:
        s.update(_defs(6, part_of=lambda i: 0))
        s.drain(5)
        got = _load_all(s, [0], batch_size=4)
        assert sorted(got.names) == sorted(f"a.b.s{i}" for i in range(6))
    finally:
        s.close(5)


class _FailsFirst(SQLiteIndexStore):
    """A store whose first `failures` writes fail: an outage longer than the back-off's float range."""

    def __init__(self, *a, failures: int, **kw) -> None:
        self.failures = failures
        super().__init__(*a, **kw)

    def _write(self, rows):
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        super()._write(rows)


def test_writer_survives_more_failed_attempts_than_a_float_exponent_allows(tmp_path):
    """After 1024 failures base * 2**attempt overflowed a float: the writer thread died and the index store
    never wrote again."""
    s = _FailsFirst(tmp_path / "idx.db", failures=1100, clock=lambda: NOW, retry_base=1e-7, retry_max=1e-7)
    try:
        s.update(_defs(2))
        assert s.drain(30) == 0
        assert (s.failures, s.insert_errors, s.inserts_ok) == (0, 1100, 2)
    finally:
        s.close(5)


def test_control_archive_moves_the_row_to_the_archive_table(store, tmp_path):
    """An archive control message (op 1) removes the series from memory and moves its row, stamped with
    archived_at, to metric_idx_archive (Metrictank's ArchiveDefs); the other rows stay."""
    md = _md("to.be.archived", NOW - 50)
    keep = _md("to.be.kept", NOW - 50)
    h, index = _node(store)
    h.process([encode_metricdata(md), encode_metricdata(keep)], lambda i: 0)
    store.drain(5)
    d = ControlMetricDefinition(parse_mkey(md.id), 1, md.name, 10, "", "gauge", [], NOW - 50, 0)
    h.process([encode_control(ControlMsg([d], 1))], lambda i: 0)
    store.drain(5)
    assert index.row_of(md.id) is None
    assert list(_stored(store)) == [keep.id]
    conn = sqlite3.connect(tmp_path / "idx.db")
    got = conn.execute(
        "SELECT id, partition, name, lastupdate, archived_at FROM metric_idx_archive"
    ).fetchall()
    assert got == [(md.id, 0, md.name, NOW - 50, NOW)]
    assert store.archived_ok == 1
