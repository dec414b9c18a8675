"""With real Kafka: the batch consumer hands over exactly what confluent_kafka's consume() does.

Every message of a topic holding points, empty payloads, tombstones, keys and odd sizes on 4 partitions, read
from the start, from an offset and after re-assignment, must arrive with the same payload, partition, offset and
timestamp through both readers; DataConsumer must produce the same batches content (and the same first offsets,
lag and positions) on both; an out-of-range start is an error event that is counted, never raised.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from metrictank.input.batch_consumer import BatchConsumer, Prefetcher
from metrictank.input.kafka import DataConsumer, consumer_config

from .helpers import wait_for

PARTS = 4


def _fill(kafka_bootstrap: str, topic: str) -> dict[int, list[tuple[bytes | None, int]]]:
    """Per partition: (value, timestamp ms) in offset order."""
    # idempotent: retries of a batch (a topic just created) keep the order within a partition
    prod = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    sent: dict[int, list[tuple[bytes | None, int]]] = {p: [] for p in range(PARTS)}
    base = 1_700_000_000_000
    for i in range(4000):
        p = i % PARTS
        if i % 97 == 0:
            value = None  # a tombstone
        elif i % 53 == 0:
            value = b""
        elif i % 11 == 0:
            value = bytes(range(256)) * (1 + i % 5)  # bigger, binary
        else:
            value = b"\x02" + i.to_bytes(4, "little") * 8
        ts = base + i * 10
        prod.produce(topic, value=value, key=b"k%d" % i if i % 3 == 0 else None, partition=p, timestamp=ts)
        sent[p].append((value, ts))
    assert prod.flush(30) == 0
    return sent


def _read_confluent(kafka_bootstrap, topic, start: dict[int, int], total: int):
    c = Consumer(consumer_config(kafka_bootstrap, client_id="cmp-confluent"))
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < total and time.monotonic() < deadline:
        for m in c.consume(num_messages=500, timeout=0.5):
            assert m.error() is None
            got.append((m.partition(), m.offset(), m.value() or b"", m.timestamp()[1]))
    c.close()
    return got


def _read_packed(c: BatchConsumer, total: int):
    got = []
    deadline = time.monotonic() + 60
    while len(got) < total and time.monotonic() < deadline:
        b = c.consume_packed(333, 0.5)  # an odd size: batches cut across partitions and messages
        assert b.n_errors == 0, b.errors
        got += zip(b.partitions.tolist(), b.offsets.tolist(), b.tolist(), b.timestamps.tolist(), strict=True)
        # the last offset per partition of the batch is that of its last message of the partition
        last = {}
        for p, o in zip(b.partitions.tolist(), b.offsets.tolist(), strict=True):
            last[p] = o
        assert dict(b.last) == last
    return got


def _by_partition(rows):
    out: dict[int, list] = {}
    for p, o, v, ts in rows:
        out.setdefault(p, []).append((o, v, ts))
    return out


def test_every_message_arrives_as_confluent_kafka_delivers_it(kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    sent = _fill(kafka_bootstrap, topic)
    total = sum(map(len, sent.values()))

    c = BatchConsumer(consumer_config(kafka_bootstrap, client_id="cmp-batch"))
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10) == (0, len(sent[1]))
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTS)])
        packed = _read_packed(c, total)
        assert len(packed) == total
        # positions: the next offset of every partition, as the client reports it
        pos = c.position([TopicPartition(topic, p) for p in range(PARTS)])
        assert {tp.partition: tp.offset for tp in pos} == {p: len(v) for p, v in sent.items()}
        assert c.get_watermark_offsets(TopicPartition(topic, 2), cached=True)[1] == len(sent[2])

        # re-assigned mid-partition: reading resumes exactly there
        c.assign([TopicPartition(topic, 0, 250), TopicPartition(topic, 3, 999)])
        again = _read_packed(c, (len(sent[0]) - 250) + (len(sent[3]) - 999))
    finally:
        c.close()

    reference = _read_confluent(kafka_bootstrap, topic, {p: OFFSET_BEGINNING for p in range(PARTS)}, total)
    assert _by_partition(packed) == _by_partition(reference)
    # and both are what was sent: payloads (tombstones empty), offsets in order, the producer's timestamps
    for p, rows in _by_partition(packed).items():
        assert [o for o, _, _ in rows] == list(range(len(sent[p])))
        got, exp = [(v, ts) for _, v, ts in rows], [(v or b"", ts) for v, ts in sent[p]]
        bad = [
            (k, len(g[0]), g[1], len(e[0]), e[1])
            for k, (g, e) in enumerate(zip(got, exp, strict=True))
            if g != e
        ][:3]
        assert got == exp, (p, bad)
    again_ref = _read_confluent(kafka_bootstrap, topic, {0: 250, 3: 999}, len(again))
    assert _by_partition(again) == _by_partition(again_ref)


def test_data_consumer_batches_are_the_same_on_both_readers(kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    sent = _fill(kafka_bootstrap, topic)
    total = sum(map(len, sent.values()))

    def run(batch_consumer: bool):
        dc = DataConsumer(
            kafka_bootstrap,
            [topic],
            None,
            "oldest",
            batch_size=700,
            client_id="dc-cmp",
            batch_consumer=batch_consumer,
        )
        assert dc.packed == batch_consumer
        rows = []
        try:
            dc.start()
            deadline = time.monotonic() + 60
            while len(rows) < total and time.monotonic() < deadline:
                b = dc.poll(timeout=0.5)
                assert b.nbytes == sum(len(v) for v in b.values) or not batch_consumer
                rows += zip([b.partition_of(i) for i in range(len(b.values))], list(b.values), strict=True)
            # lag follows what was handed over, not what the read-ahead thread took
            wait_for(lambda: (dc.sample_lag(every=0) or True) and dc.lag.priority() == 0, 20, "lag 0")
            tracker = (dict(dc.tracker.first_offset), dict(dc.tracker.first_ts), dict(dc.tracker.last_offset))
        finally:
            dc.close()
        return rows, tracker

    packed_rows, packed_tracker = run(True)
    plain_rows, plain_tracker = run(False)
    assert len(packed_rows) == total

    def per_partition(rows):
        out: dict[int, list[bytes]] = {}
        for p, v in rows:
            out.setdefault(p, []).append(bytes(v))
        return out

    assert per_partition(packed_rows) == per_partition(plain_rows)
    assert packed_tracker == plain_tracker
    assert packed_tracker[2] == {p: len(v) - 1 for p, v in sent.items()}


def test_lag_counts_batches_read_ahead_but_not_handed_over(kafka_bootstrap, new_topic):
    """The read-ahead thread consumes before the main loop takes a batch: lag must still count those."""
    topic = new_topic(1)
    prod = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for _ in range(300):
        prod.produce(topic, value=b"\x02" + bytes(32), partition=0)
    assert prod.flush(30) == 0
    dc = DataConsumer(kafka_bootstrap, [topic], None, "oldest", batch_size=10, client_id="lag-ahead")
    try:
        dc.start()
        first = dc.poll(timeout=5)
        deadline = time.monotonic() + 20
        while not first.values and time.monotonic() < deadline:
            first = dc.poll(timeout=1)
        assert len(first.values) == 10
        # the reader has read further than the one batch handed over (its queue holds 2 more)
        wait_for(
            lambda: dc._consumer.position([TopicPartition(topic, 0)])[0].offset >= 30, 20, "the reader ahead"
        )
        dc.sample_lag(now=100.0)
        assert dc.tracker.last_offset[0] == 9
        assert dc.lag.lag(0) == 290
    finally:
        dc.close()


def test_out_of_range_start_is_counted_not_raised(kafka_bootstrap, new_topic):
    topic = new_topic(1)
    prod = Producer({"bootstrap.servers": kafka_bootstrap})
    prod.produce(topic, value=b"x", partition=0)
    assert prod.flush(30) == 0
    cfg = consumer_config(kafka_bootstrap, "auto.offset.reset=error", client_id="oor")
    c = BatchConsumer(cfg)
    reader = None
    try:
        c.assign([TopicPartition(topic, 0, 10_000)])
        reader = Prefetcher(c, 100)
        errors = []
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            b = reader.get(0.5)
            errors += b.errors
            assert len(b) == 0
        assert errors, "no error event for an offset beyond the log"
        code, partition, offset, text = errors[0]
        assert partition == 0 and code != 0 and text
        assert reader.errors == 0  # an error event is data about a partition, not a failed call
    finally:
        if reader is not None:
            assert reader.stop()
        c.close()


def test_read_ahead_is_bounded_in_bytes_and_loses_nothing(kafka_bootstrap, new_topic):
    """The reader runs ahead of a main loop that takes nothing, up to the configured bytes (two batches at
    least, one batch past the bound at most), stays there, and every message then arrives once, in order."""
    topic = new_topic(1)
    prod = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    n, size = 3000, 1000
    for i in range(n):
        prod.produce(topic, value=i.to_bytes(4, "big") + bytes(size - 4), partition=0)
    assert prod.flush(30) == 0
    bound = 200_000
    per_batch = 50 * (size + 24)  # payloads + lengths, partitions, offsets, timestamps
    dcs = {
        "bounded": DataConsumer(
            kafka_bootstrap, [topic], None, "oldest", batch_size=50, client_id="ra", read_ahead_bytes=bound
        ),
        "two batches": DataConsumer(
            kafka_bootstrap, [topic], None, "oldest", batch_size=50, client_id="ra0", read_ahead_bytes=0
        ),
    }
    try:
        for dc in dcs.values():
            dc.start()
        r, r0 = dcs["bounded"]._reader, dcs["two batches"]._reader
        wait_for(lambda: r.queued_bytes >= bound, 30, "the reader up to its bound")
        wait_for(lambda: r0.queued == 2, 30, "two batches ahead")
        time.sleep(1.0)  # it stays there
        assert bound <= r.queued_bytes <= bound + per_batch, r.queued_bytes
        assert r0.queued == 2 and r0.queued_bytes <= 2 * per_batch
        assert dcs["bounded"]._consumer.position([TopicPartition(topic, 0)])[0].offset < n
        for name, dc in dcs.items():
            got: list[int] = []
            deadline = time.monotonic() + 60
            while len(got) < n and time.monotonic() < deadline:
                got += [int.from_bytes(bytes(v[:4]), "big") for v in dc.poll(timeout=1).values]
            assert got == list(range(n)), name
        assert r.queued == 0 and r.queued_bytes == 0
    finally:
        for dc in dcs.values():
            dc.close()
