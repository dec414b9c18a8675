"""Ingest with real Kafka: what was produced is exactly what the tank holds (raw and rollups); start offsets;
partition subsets; bad messages next to good ones are counted and skipped while every good point is kept."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from metrictank.fakemetrics import Producer, SeriesSet, values_for
from metrictank.schema import MetricData, encode_metricdata, encode_metricpoint, series_id

from .helpers import Running, instance_config, wait_for
from .reliability import topic_highs

PARTS = 8


def _base(now: float | None = None) -> int:
    now = int(time.time() if now is None else now)
    return now - now % 3600 - 7200  # two hours ago, hour aligned: well inside the raw TTL


def _expected(ss: SeriesSet, i: int, start: int, end: int, interval: int = 10):
    ts = np.arange(start, end, interval, dtype=np.int64)
    return ts, values_for("walk", np.full(len(ts), i), ts)


def _read_raw(inst, ss: SeriesSet, i: int, start: int, end: int):
    row = inst.index.row_of(ss.ids[i])
    assert row is not None, f"series {ss.names[i]} not in the index"
    ts, vals, _oldest = inst.tank.read(row, 0, None, start, end)
    return np.asarray(ts, np.int64), np.asarray(vals)


@pytest.mark.parametrize("batch_consumer", [True, False], ids=["batch-consumer", "confluent-consume"])
def test_backlog_is_ingested_exactly_with_rollups(tmp_path, kafka_bootstrap, new_topic, batch_consumer):
    topic = new_topic(PARTS)
    ss = SeriesSet.make(40, PARTS, prefix="ingest.exact")
    start = _base()
    end = start + 3600
    prod = Producer(kafka_bootstrap, topic)
    sent = prod.backfill(ss, start, end)
    assert prod.flush(30) == 0
    assert sent == 40 * 360

    cfg = instance_config(
        tmp_path,
        "mt-ingest",
        kafka_bootstrap,
        topic,
        extra={"kafka-mdm-in": {"batch-consumer": batch_consumer}},
    )
    with Running(cfg) as inst:
        assert inst.consumer.packed == batch_consumer  # both readers stay proven end to end
        wait_for(lambda: inst.handler.messages >= sent, 60, "backlog consumed")
        wait_for(lambda: inst.tank.points_added >= sent, 10, "points in the tank")
        assert inst.handler.unknown_points == 0
        assert sum(inst.tank.discarded.values()) == 0
        with inst.lock:
            for i in range(len(ss)):
                ts, vals = _read_raw(inst, ss, i, start, end)
                ets, evals = _expected(ss, i, start, end)
                np.testing.assert_array_equal(ts, ets)
                np.testing.assert_array_equal(vals, evals)
                # rollup archive 1 (60 s buckets): every bucket that a later point closed
                row = inst.index.row_of(ss.ids[i])
                bucket = ets + 60 - ((ets - 1) % 60 + 1)
                for method, fn in (
                    ("max", np.max),
                    ("min", np.min),
                    ("sum", np.sum),
                    ("cnt", len),
                    ("lst", lambda a: a[-1]),
                ):
                    rts, rvals, _ = inst.tank.read(row, 1, method, start, end + 60)
                    rts = np.asarray(rts, np.int64)
                    assert len(rts) >= 58, (method, len(rts))
                    for b, v in zip(rts.tolist(), np.asarray(rvals).tolist(), strict=True):
                        sel = evals[bucket == b]
                        assert v == pytest.approx(float(fn(sel))), (method, b)
        # replay progress per partition is in GET /node: everything read, nothing behind
        wait_for(lambda: len(inst.node_json()["replay"]) == PARTS, 10, "replay progress")
        wait_for(lambda: all(r["behind"] == 0 for r in inst.node_json()["replay"].values()), 10, "caught up")
        assert all(r["done"] == 1.0 and r["eta"] == 0 for r in inst.node_json()["replay"].values())
        assert inst.node.partitions == list(range(PARTS))
        # the first offset of every partition was recorded, with its message timestamp
        assert set(inst.consumer.tracker.first_offset) == set(range(PARTS))
        assert all(abs(t - start) < 1 for t in inst.consumer.tracker.first_ts.values())


def test_offsets_newest_and_duration(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    ss = SeriesSet.make(16, PARTS, prefix="ingest.offsets")
    now = int(time.time())
    old = now - now % 600 - 3 * 3600
    recent = now - now % 600 - 1200
    prod = Producer(kafka_bootstrap, topic)
    prod.send_metricdata(ss, old)
    for t in range(old + 10, old + 600, 10):
        prod.send_points(ss, t, message_ts_ms=t * 1000)
    prod.send_metricdata(ss, recent)
    for t in range(recent + 10, recent + 600, 10):
        prod.send_points(ss, t, message_ts_ms=t * 1000)
    assert prod.flush(30) == 0
    total_recent = 16 * 60

    # a duration: only what was produced within the last hour
    with Running(instance_config(tmp_path / "dur", "mt-dur", kafka_bootstrap, topic, offset="1h")) as inst:
        highs = topic_highs(kafka_bootstrap, topic)
        wait_for(lambda: _read_to(inst, highs), 60, "the consumer read up to the high watermarks")
        assert inst.tank.points_added == total_recent  # nothing older than the hour
        with inst.lock:
            ts, vals = _read_raw(inst, ss, 3, old, now)
        ets, evals = _expected(ss, 3, recent, recent + 600)
        np.testing.assert_array_equal(ts, ets)
        np.testing.assert_array_equal(vals, evals)

    # newest: nothing of the backlog, only what comes after the start
    with Running(
        instance_config(tmp_path / "new", "mt-new", kafka_bootstrap, topic, offset="newest")
    ) as inst:
        # a positive condition before asserting absence: every partition's position is resolved to the
        # newest offset (a lag sample at the high watermark recorded after the backlog was produced)
        highs = topic_highs(kafka_bootstrap, topic)
        wait_for(
            lambda: _read_to(inst, highs, exact=True), 30, "the consumer positioned at the newest offsets"
        )
        assert inst.tank.points_added == 0
        later = recent + 600
        prod.send_metricdata(ss, later)
        for t in range(later + 10, later + 100, 10):
            prod.send_points(ss, t, message_ts_ms=t * 1000)
        assert prod.flush(30) == 0
        highs = topic_highs(kafka_bootstrap, topic)
        wait_for(lambda: _read_to(inst, highs), 30, "the consumer read up to the high watermarks")
        assert inst.tank.points_added == 16 * 10  # the new points, none of the backlog
        with inst.lock:
            ts, _ = _read_raw(inst, ss, 5, old, now + 3600)
        np.testing.assert_array_equal(ts, np.arange(later, later + 100, 10))


def _read_to(inst, highs: dict[int, int], exact: bool = False) -> bool:
    """Every partition's latest lag sample has the read position at (or past) the recorded high watermark
    (`exact`: a sample exists even for an empty partition, and its high watermark is the recorded one)."""
    samples = inst.consumer.lag.samples()
    if exact:
        return all(samples.get(p) and samples[p][-1][1:] == (h, h) for p, h in highs.items())
    return all(h == 0 or (samples.get(p) and samples[p][-1][2] >= h) for p, h in highs.items())


def test_partition_subset(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    ss = SeriesSet.make(64, PARTS, prefix="ingest.subset")
    start = _base()
    prod = Producer(kafka_bootstrap, topic)
    prod.backfill(ss, start, start + 300)
    assert prod.flush(30) == 0
    mine = {1, 6}
    expect = int(np.isin(ss.partitions, list(mine)).sum())
    assert 0 < expect < 64
    cfg = instance_config(tmp_path, "mt-sub", kafka_bootstrap, topic, partitions="1,6")
    with Running(cfg) as inst:
        highs = {p: h for p, h in topic_highs(kafka_bootstrap, topic).items() if p in mine}
        wait_for(lambda: _read_to(inst, highs), 60, "the subset read up to its high watermarks")
        assert inst.tank.points_added == expect * 30
        assert inst.node.partitions == [1, 6]
        for i in range(64):
            row = inst.index.row_of(ss.ids[i])
            assert (row is not None) == (int(ss.partitions[i]) in mine)


def test_bad_messages_are_counted_and_good_ones_kept(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    ss = SeriesSet.make(10, PARTS, prefix="ingest.bad")
    start = _base()
    end = start + 600
    prod = Producer(kafka_bootstrap, topic)
    prod.send_metricdata(ss, start)
    bad = [
        b"\x89\xff\x00garbage",  # not msgpack
        b"\x02" + b"\x00" * 20,  # MetricPoint with the wrong length
        b"\x05\x09" + b"\x00" * 40,  # array with an unknown sub-format
        encode_metricpoint(ss.ids[0], 1.0, start + 5, with_org=False),  # no org, and org-id is 0
        encode_metricpoint(
            series_id(1, "never.announced", "", "gauge", 10, []), 1.0, start + 5
        ),  # unknown series
        encode_metricdata(
            MetricData(
                id=series_id(1, "bad.mtype", "", "bogus", 10, []),
                org_id=1,
                name="bad.mtype",
                interval=10,
                value=1.0,
                unit="",
                time=start,
                mtype="bogus",
                tags=[],
            )
        ),
        b"\x00legacy",
        struct.pack("<B", 0x02) + b"\x01" * 16 + struct.pack("<dII", 1.0, 0, 1),  # time 0
    ]
    for t in range(start + 10, end, 10):
        prod.send_points(ss, t)
        if t == start + 300:
            for b in bad:
                prod._send(b, 0)
            # an array whose last point is cut short: the whole point before it must be kept
            body = encode_metricpoint(ss.ids[0], 0.0, 1).__len__()
            assert body == 33
            arr = (
                b"\x05\x02"
                + encode_metricpoint(series_id(1, "x.y", "", "gauge", 10, []), 2.0, start + 7)[1:]
                + b"\x01" * 5
            )
            prod._send(arr, 0)
    assert prod.flush(30) == 0
    good = 10 * 60
    with Running(instance_config(tmp_path, "mt-bad", kafka_bootstrap, topic)) as inst:
        wait_for(lambda: inst.tank.points_added >= good, 60, "good points")
        wait_for(lambda: inst.handler.messages >= 10 + 10 * 59 + len(bad) + 1, 30, "all messages")
        h = inst.handler
        assert inst.tank.points_added == good
        errs = dict(h.decode_errors)
        for reason in (
            "invalid-msgp",
            "invalid-length",
            "invalid-format",
            "no-org",
            "array-remainder",
            "invalid-time",
        ):
            assert errs.get(reason, 0) >= 1, (reason, errs)
        assert errs.get("unsupported-format", 0) + errs.get("invalid-msgp", 0) >= 2
        assert h.metricdata_invalid["invalid-mtype"] == 1
        assert h.unknown_points == 2  # the unannounced series, and the one kept point of the cut array
        with inst.lock:
            for i in range(10):
                ts, vals = _read_raw(inst, ss, i, start, end)
                ets, evals = _expected(ss, i, start, end)
                np.testing.assert_array_equal(ts, ets)
                np.testing.assert_array_equal(vals, evals)
        metrics = inst.stats.render().decode()
        assert 'metrictank_input_kafka_mdm_metrics_decode_err_total{reason="no-org"}' in metrics
        assert "metrictank_input_kafka_mdm_metricpoint_received_total" in metrics
        assert "metrictank_tank_metrics_active 10.0" in metrics
