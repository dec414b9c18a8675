"""`metrictank fakemetrics` against the test bed's Kafka: what lands in the topic decodes with the project's own
decoder, every series sits in the partition Metrictank's partitioner gives it, and nothing is lost or extra."""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import numpy as np
import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from metrictank.cli import main
from metrictank.fakemetrics import values_for
from metrictank.schema import classify_and_decode, decode_metricdata, partition, series_id

PARTS = 4


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), env={k: None for k in os.environ if k.startswith("MT_")})


def consume_all(brokers: str, topic: str, partitions: int) -> dict[int, list[tuple[bytes, int]]]:
    """Every message of the topic, per partition: (value, timestamp ms)."""
    c = Consumer(
        {"bootstrap.servers": brokers, "group.id": "unused", "enable.auto.commit": False, "log_level": 3}
    )
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        }
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions) if ends[p] > 0])
        out: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
        pos = dict.fromkeys(range(partitions), 0)
        while any(pos[p] < ends[p] for p in range(partitions)):
            for m in c.consume(10000, timeout=5):
                assert m.error() is None, m.error()
                out[m.partition()].append((m.value(), m.timestamp()[1]))
                pos[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


@pytest.mark.parametrize("array_size", [1, 50])
def test_backfill_lands_decodable_and_partitioned(kafka_bootstrap, new_topic, array_size):
    topic = new_topic(PARTS)
    start, end, interval, n = 1_700_000_000, 1_700_003_600, 10, 100
    r = _cli(
        "fakemetrics", "backfill", "--brokers", kafka_bootstrap, "--topic", topic,  # partitions: looked up
        "--series", str(n), "--interval", str(interval), "--from", str(start), "--to", str(end),
        "--array-size", str(array_size), "--prefix", "it.fake", "--tag", "env=test",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    names = {series_id(1, f"it.fake.{i}", "ms", "gauge", interval, ["env=test"]): i for i in range(n)}
    got = consume_all(kafka_bootstrap, topic, PARTS)
    assert set(got) == set(range(PARTS))  # 100 series spread over every partition

    points: Counter[str] = Counter()
    metricdata = 0
    for p, msgs in got.items():
        batch = classify_and_decode([v for v, _ in msgs], 0)
        assert batch.n_errors == 0
        for i, md in batch.metricdata:
            assert md == decode_metricdata(msgs[i][0])
            assert md.id in names and md.tags == ["env=test"] and md.time == start
            assert partition("bySeries", 1, md.name, md.tags, PARTS) == p
            assert msgs[i][1] == start * 1000  # Kafka timestamp = data timestamp
            metricdata += 1
        pts = batch.points
        keys = np.stack([pts["k0"], pts["k1"]], axis=1).astype("<u8")
        for row, t, v in zip(keys, pts["time"].tolist(), pts["value"].tolist(), strict=True):
            sid = "1." + row.tobytes().hex()
            i = names[sid]
            assert partition("bySeries", 1, f"it.fake.{i}", ["env=test"], PARTS) == p
            assert v == values_for("walk", np.array([i]), np.array([t]))[0]
            points[sid] += 1
        if array_size > 1:
            assert all(len(v) > 33 for v, _ in msgs if v[0] == 0x05)
    assert metricdata == n
    steps = len(range(start + interval, end, interval))
    assert points == dict.fromkeys(names, steps)


def test_feed_then_stop(kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    r = _cli(
        "fakemetrics", "feed", "--brokers", kafka_bootstrap, "--topic", topic, "--series", "10",
        "--interval", "1", "--duration", "2500ms", "--array-size", "3",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    got = consume_all(kafka_bootstrap, topic, PARTS)
    decoded = [classify_and_decode([v for v, _ in msgs], 0) for msgs in got.values()]
    assert sum(len(b.metricdata) for b in decoded) == 10  # MetricData first ...
    ts = sorted({int(t) for b in decoded for t in b.points["time"]})
    assert ts and sum(len(b.points) for b in decoded) == 10 * len(ts)  # ... then points for every series


def test_unknown_topic_is_reported(kafka_bootstrap):
    r = _cli(
        "fakemetrics", "backfill", "--brokers", kafka_bootstrap, "--topic", "no-such-topic-xyz", "--quiet"
    )
    assert r.exit_code == 3
    assert "no-such-topic-xyz" in r.output
