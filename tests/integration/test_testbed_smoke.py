"""The test bed gives us the Kafka and Cassandra behaviour metrictank relies on.

Kafka: explicit partitions, producer-set timestamps, watermarks and offsets_for_times (how metrictank
finds where to resume consuming). Cassandra: blobs written with a TTL through prepared statements (how
chunks are persisted), read back with TTL(data).
"""

from __future__ import annotations

import time
import uuid

import confluent_kafka
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

PARTITIONS = 8
# partition -> number of messages; some partitions stay empty on purpose.
LAYOUT = {0: 5, 3: 2, 7: 9}
BASE_MS = 1_700_000_000_000
STEP_MS = 10_000


def _ts(partition: int, i: int) -> int:
    return BASE_MS + partition * 1_000 + i * STEP_MS


@pytest.fixture(scope="module")
def filled_topic(new_topic, kafka_bootstrap: str) -> str:
    topic = new_topic(partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "linger.ms": 5})
    errors: list = []
    for p, n in LAYOUT.items():
        for i in range(n):
            producer.produce(
                topic,
                key=f"k{p}-{i}".encode(),
                value=f"p{p}-m{i}".encode(),
                partition=p,
                timestamp=_ts(p, i),
                on_delivery=lambda err, _msg: errors.append(err) if err else None,
            )
    assert producer.flush(30) == 0
    assert errors == []
    return topic


@pytest.fixture()
def consumer(kafka_bootstrap: str):
    # A group id is required by librdkafka, but nothing is committed: partitions are assigned by hand.
    c = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    yield c
    c.close()


def test_topic_has_requested_partitions(kafka_admin, filled_topic: str) -> None:
    md = kafka_admin.list_topics(topic=filled_topic, timeout=10).topics[filled_topic]
    assert sorted(md.partitions) == list(range(PARTITIONS))


def test_messages_come_back_per_partition_with_timestamps(filled_topic: str, consumer) -> None:
    consumer.assign([TopicPartition(filled_topic, p, 0) for p in LAYOUT])
    want = sum(LAYOUT.values())
    got: dict[int, list] = {p: [] for p in LAYOUT}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < want and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=100, timeout=1.0):
            assert msg.error() is None, msg.error()
            got[msg.partition()].append((msg.offset(), msg.key(), msg.value(), msg.timestamp()))
    for p, n in LAYOUT.items():
        assert got[p] == [
            (
                i,
                f"k{p}-{i}".encode(),
                f"p{p}-m{i}".encode(),
                (confluent_kafka.TIMESTAMP_CREATE_TIME, _ts(p, i)),
            )
            for i in range(n)
        ]


def test_watermarks(filled_topic: str, consumer) -> None:
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(filled_topic, p), timeout=10)
        assert (low, high) == (0, LAYOUT.get(p, 0)), f"partition {p}"


def test_offsets_for_times(filled_topic: str, consumer) -> None:
    p, n = 7, LAYOUT[7]
    queries = {
        _ts(p, 0) - 1: 0,  # before everything -> first message
        _ts(p, 4): 4,  # exact timestamp -> that message
        _ts(p, 4) + 1: 5,  # between two messages -> the next one
        _ts(p, n - 1): n - 1,
        _ts(p, n - 1) + 1: confluent_kafka.OFFSET_END,  # in the future -> end (-1)
    }
    # One lookup per request: ListOffsets answers a partition once, however often it is asked.
    got = {}
    for ts in queries:
        (tp,) = consumer.offsets_for_times([TopicPartition(filled_topic, p, ts)], timeout=10)
        assert tp.error is None
        got[ts] = tp.offset
    assert got == queries
    assert confluent_kafka.OFFSET_END == -1


def test_kafka_version_is_4x(kafka_admin, testbed_versions: dict[str, str]) -> None:
    cluster = kafka_admin.describe_cluster(request_timeout=10).result(timeout=15)
    version = testbed_versions.get("kafka")
    print(f"kafka {version}: cluster id {cluster.cluster_id}, {len(cluster.nodes)} broker(s)")
    assert len(cluster.nodes) == 1
    assert version, "Kafka version unknown (set METRICTANK_TEST_KAFKA_VERSION for external servers)"
    assert version.split(".")[0] == "4"


def test_cassandra_version_is_5_0(cassandra_session) -> None:
    version = cassandra_session.execute("SELECT release_version FROM system.local").one()[0]
    print(f"cassandra {version}")
    assert version.startswith("5.0.")


def test_cassandra_blob_with_ttl_roundtrip(cassandra_session, new_keyspace) -> None:
    ks = new_keyspace()
    table = f"{ks}.metric_1"
    cassandra_session.execute(
        f"CREATE TABLE {table} (key ascii, ts int, data blob, PRIMARY KEY (key, ts))"
        " WITH CLUSTERING ORDER BY (ts DESC)"
    )
    insert = cassandra_session.prepare(f"INSERT INTO {table} (key, ts, data) VALUES (?, ?, ?) USING TTL ?")
    select = cassandra_session.prepare(f"SELECT ts, data, TTL(data) FROM {table} WHERE key = ? AND ts >= ?")
    ttl = 3600
    blobs = {1_700_000_000 + 600 * i: bytes([0, 255, i, 0]) * (i + 1) for i in range(3)}
    for ts, data in blobs.items():
        cassandra_session.execute(insert, ("1.abc_1700000000", ts, data, ttl))

    rows = list(cassandra_session.execute(select, ("1.abc_1700000000", 0)))
    assert [(r.ts, r.data) for r in rows] == sorted(blobs.items(), reverse=True)
    for r in rows:
        assert ttl - 120 < r.ttl_data <= ttl
    assert list(cassandra_session.execute(select, ("other-key", 0))) == []
