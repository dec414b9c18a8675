"""Issue 15: a series whose only MetricData is older than a restart's replay window still ingests every point.

Producers of the compact MetricPoint formats send a series' MetricData only now and then. A node that restarts
replays Kafka from `offset`; before the index in the store, the series of such a replay were unknown and all
their points dropped (`metricpoint.unknown`). Now the first run writes their definitions to `metric_idx`, the
restarted node loads them before consuming, and every replayed point is kept.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from metrictank.fakemetrics import Producer, SeriesSet, values_for

from .helpers import Running, instance_config, wait_for

PARTS = 4
N = 24


def _read(inst, ss: SeriesSet, i: int, start: int, end: int):
    row = inst.index.row_of(ss.ids[i])
    assert row is not None, f"series {ss.names[i]} not in the index"
    ts, vals, _ = inst.tank.read(row, 0, None, start, end)
    return np.asarray(ts, np.int64), np.asarray(vals)


@pytest.fixture(params=["sqlite", "cassandra"])
def backend(request, tmp_path):
    """(store sections for the config, reader of the metric_idx rows as {id: (partition, lastupdate)})."""
    if request.param == "sqlite":

        def rows_sqlite() -> dict[str, tuple[int, int]]:
            conn = sqlite3.connect(tmp_path / "chunks.db")
            return {
                i: (p, lu) for i, p, lu in conn.execute("SELECT id, partition, lastupdate FROM metric_idx")
            }

        return {}, rows_sqlite
    hosts = request.getfixturevalue("cassandra_hosts")
    session = request.getfixturevalue("cassandra_session")
    ks = request.getfixturevalue("new_keyspace")()
    sections = {
        "store": {"backend": "cassandra", "drain-timeout": "10s"},
        "cassandra": {"addrs": hosts, "keyspace": ks, "create-keyspace": True, "timeout": "5s"},
    }

    def rows_cassandra() -> dict[str, tuple[int, int]]:
        return {
            r[0]: (r[1], r[2])
            for r in session.execute(f"SELECT id, partition, lastupdate FROM {ks}.metric_idx")
        }

    return sections, rows_cassandra


def test_series_known_only_from_an_old_metricdata_ingests_after_restart(
    tmp_path, kafka_bootstrap, new_topic, backend
):
    store_sections, stored_rows = backend
    topic = new_topic(PARTS)
    ss = SeriesSet.make(N, PARTS, prefix="idx.restart")
    now = int(time.time())
    old = now - now % 600 - 3 * 3600  # the only MetricData: 3 h ago, outside the restart's 1 h replay
    recent = now - now % 600 - 1800  # MetricPoints only: inside the replay window
    prod = Producer(kafka_bootstrap, topic)
    prod.send_metricdata(ss, old)
    for t in range(old + 10, old + 300, 10):
        prod.send_points(ss, t, message_ts_ms=t * 1000)
    for t in range(recent, recent + 600, 10):
        prod.send_points(ss, t, message_ts_ms=t * 1000)
    assert prod.flush(30) == 0
    first_total = N * (1 + 29 + 60)
    recent_total = N * 60

    # first run: the whole log; the definitions go to the store's metric_idx
    cfg = instance_config(tmp_path, "mt-idx", kafka_bootstrap, topic, offset="oldest", store=store_sections)
    with Running(cfg) as inst:
        wait_for(lambda: inst.tank.points_added >= first_total, 60, "first run ingested")
        assert inst.handler.unknown_points == 0

    # restart: the same node replays only the last hour, which has no MetricData at all
    cfg = instance_config(tmp_path, "mt-idx", kafka_bootstrap, topic, offset="1h", store=store_sections)
    with Running(cfg) as inst:
        wait_for(lambda: inst.handler.messages >= recent_total, 60, "replay consumed")
        wait_for(lambda: inst.tank.points_added >= recent_total, 10, "replayed points in the tank")
        time.sleep(0.5)
        assert inst.handler.unknown_points == 0
        assert inst.tank.points_added == recent_total
        with inst.lock:
            for i in range(N):
                ts, vals = _read(inst, ss, i, recent - 10, recent + 600)
                ets = np.arange(recent, recent + 600, 10, dtype=np.int64)
                np.testing.assert_array_equal(ts, ets)
                np.testing.assert_array_equal(vals, values_for("walk", np.full(len(ets), i), ets))
        # the series' definitions as the store had them, now with the newer data's lastupdate in memory
        d = inst.index.get(inst.index.row_of(ss.ids[0]))
        assert (d.name, d.partition) == (ss.names[0], int(ss.partitions[0]))
        assert d.lastupdate >= recent + 590

    # what the restart loaded: one metric_idx row per series, in its Kafka partition
    stored = stored_rows()
    assert set(stored) == set(ss.ids)
    assert all(stored[ss.ids[i]][0] == int(ss.partitions[i]) for i in range(N))
