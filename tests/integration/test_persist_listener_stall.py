"""With real Kafka: a persist-topic fetcher that stops fetching is restarted, and the saved marks move again.

librdkafka has been seen to stop fetching an assigned partition while the broker holds messages for it; the data
consumer had a watchdog for that, the persist listener did not, so a node's saved marks (and its split-brain
detection) could stay frozen for good after a broker fault while the node looked healthy. The stall is made here
by pausing the listener's partition inside librdkafka, which stops its fetcher the same way.
"""

from __future__ import annotations

from confluent_kafka import Producer, TopicPartition

from metrictank.cluster.persist import PersistListener
from metrictank.schema import encode_persist

from .helpers import wait_for

KEY = "1.0123456789abcdef0123456789abcdef"


def test_stalled_persist_fetcher_is_restarted_and_marks_arrive(kafka_bootstrap, new_topic):
    topic = new_topic(1)
    prod = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    applied: list[tuple[str, int]] = []
    li = PersistListener(kafka_bootstrap, topic, [0], "oldest", applied.extend, "mt-a")
    li.stall_after = 1.0
    try:
        prod.produce(topic, encode_persist("mt-a", [(KEY, 600)]), partition=0)
        assert prod.flush(30) == 0
        wait_for(lambda: li.poll(0.1) >= 0 and (KEY, 600) in applied, 30, "the first mark")

        li._consumer.pause([TopicPartition(topic, 0)])  # the fetcher stops, as the stalled one did
        prod.produce(topic, encode_persist("mt-a", [(KEY, 1200)]), partition=0)
        assert prod.flush(30) == 0
        wait_for(lambda: li.poll(0.1) >= 0 and (KEY, 1200) in applied, 30, "the mark written while stalled")
        assert li.fetch_restarts >= 1
        # nothing repeated: the restart resumed at the position, past the first message
        assert applied.count((KEY, 600)) == 1
    finally:
        li.close()
