"""With real Kafka: a partition whose backlog librdkafka has fetched but not handed over yet is not caught up.

librdkafka learns a partition's high watermark from its fetch responses before the application consumes any of
its messages. The lag sample took such a partition as read up to that watermark, so a node could report itself
caught up (and ready) with a whole partition still to replay; a test that waited for the lag samples then saw
half of the points in the tank.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer, TopicPartition

from metrictank.input.kafka import DataConsumer

from .helpers import wait_for

BACKLOG = 200


@pytest.mark.parametrize("batch_consumer", [True, False], ids=["batch-consumer", "client-consume"])
def test_partition_not_handed_over_yet_keeps_its_whole_backlog_as_lag(
    kafka_bootstrap, new_topic, batch_consumer
):
    topic = new_topic(2)
    prod = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for p in (0, 1):
        for _ in range(BACKLOG):
            prod.produce(topic, value=b"x" * 20, partition=p)
    assert prod.flush(30) == 0

    # one message per consume() call: after the first call one partition has handed over nothing at all
    c = DataConsumer(
        kafka_bootstrap,
        [topic],
        None,
        "oldest",
        batch_size=1,
        client_id="lag-test",
        batch_consumer=batch_consumer,
    )
    assert c.packed == batch_consumer
    try:
        c.start()
        got = []
        wait_for(lambda: bool(got.extend(c.poll(timeout=0.2).partitions) or got), 30, "the first message")
        assert len(got) == 1
        unread = 1 - got[0]

        def fetched_both() -> bool:  # librdkafka has fetched (and so knows the high watermark of) both
            return all(
                c._consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1] == BACKLOG
                for p in (0, 1)
            )

        wait_for(fetched_both, 30, "both partitions' watermarks from the fetches")
        if c.packed:  # the reader thread reads ahead of the caller (read-ahead-mb): what was handed counts
            assert unread not in c._handed, (
                "the unread partition handed over a message; the test premise is gone"
            )
        else:
            positions = {
                tp.partition: tp.offset
                for tp in c._consumer.position([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            }
            assert positions[unread] < 0, (
                "the unread partition handed over a message; the test premise is gone"
            )

        c.sample_lag(now=1000.0)
        samples = c.lag.samples()
        assert samples[got[0]][-1][1:] == (BACKLOG, 1)
        assert samples[unread][-1][1:] == (BACKLOG, 0)  # nothing of it read: the whole backlog is lag
        assert c.lag.partition_priority(unread) > 0
    finally:
        c.close()
