"""Hostile persist topics against whole instances (real Kafka): every replica reads `metricpersist` at once, so
one bad message used to crash-loop all of them (`ValueError: invalid series id` out of the main loop, again at
every restart while the topic kept it), and a well-formed announcement from an instance outside the cluster
silently stopped the primary from writing earlier chunks. Now both are counted and ignored, and the primary
writes every chunk."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer as KProducer

from metrictank.fakemetrics import Producer, SeriesSet
from metrictank.schema import encode_persist

from .helpers import Running, instance_config, wait_for

pytestmark = pytest.mark.integration

PARTS = 2
SERIES = 5


def _start() -> int:
    now = int(time.time())
    return now - now % 3600 - 7200


def test_bad_and_foreign_persist_messages_neither_crash_nor_stop_persistence(
    tmp_path, kafka_bootstrap, new_topic
):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(SERIES, PARTS, prefix="hostile.persist")
    start = _start()
    prod = Producer(kafka_bootstrap, topic)
    sent = prod.backfill(ss, start, start + 3600)
    assert prod.flush(30) == 0

    kp = KProducer({"bootstrap.servers": kafka_bootstrap})
    hostile = [
        b'\x01{"instance":"x","saved_chunks":[{"key":"zzz","t0":60}]}\n',  # the message from the issue
        b'\x01{"instance":"x","saved_chunks":[{"key":"1.nothex","t0":60},{"key":"","t0":-5}]}\n',
        b"\x01" + b"[" * 50_000,
        b"\x07garbage",
        b"",
    ]
    for p in range(PARTS):
        for msg in hostile:
            kp.produce(persist, msg, partition=p)
    # a well-formed announcement from an instance that is not part of the cluster: every series saved up to the
    # last chunk of the hour. Applied, it would make the primary skip every earlier chunk.
    for i in range(SERIES):
        part = int(ss.partitions[i])
        kp.produce(persist, encode_persist("intruder", [(ss.ids[i], start + 3000)]), partition=part)
    assert kp.flush(30) == 0

    cfg = instance_config(tmp_path, "mt-hostile", kafka_bootstrap, topic, persist_topic=persist, primary=True)
    with Running(cfg) as inst:
        wait_for(lambda: inst.handler.messages >= sent, 60, "the data consumed")
        li = inst.listener
        wait_for(
            lambda: li.messages_received >= PARTS * len(hostile) + SERIES, 30, "the persist backlog read"
        )
        # 5 complete raw chunks of 10 minutes per series in the hour (the 6th is still open): all written
        expected = SERIES * 5
        wait_for(lambda: inst.store.stats["saved"] >= expected, 60, f"{expected} chunks saved")
        assert inst.persister.skipped_partial == 0
        assert inst.batch_errors == 0 and not inst.loop.loop_errors
        assert li.chunks_dropped_by_reason.get("invalid-key", 0) >= 2 * PARTS
        assert li.chunks_dropped_by_reason.get("untrusted-instance", 0) >= SERIES
        for reason in ("empty", "unknown-version", "invalid-json"):
            assert li.decode_errors_by_reason.get(reason, 0) >= PARTS, (reason, li.decode_errors_by_reason)
        assert "intruder" in inst.node_json()["untrustedWriters"]
        metrics = inst.metrics_text().decode()
        assert 'metrictank_cluster_notifier_all_chunks_dropped_total{reason="invalid-key"}' in metrics
        # its own announcements were read back and applied: the saved marks of every series moved
        wait_for(lambda: inst.tank.saved_summary()["slotsSaved"] >= SERIES, 30, "own marks applied")

    # a restart reads the same backlog again (offset oldest): it starts and runs, no crash loop
    cfg2 = instance_config(
        tmp_path, "mt-hostile", kafka_bootstrap, topic, persist_topic=persist, primary=False
    )
    with Running(cfg2) as inst:
        wait_for(lambda: inst.handler.messages >= sent, 60, "the data consumed after the restart")
        assert inst.listener.chunks_dropped_by_reason.get("invalid-key", 0) >= 2 * PARTS
        assert inst.batch_errors == 0 and not inst.loop.loop_errors
