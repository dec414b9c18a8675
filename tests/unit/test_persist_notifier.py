"""PersistNotifier during a Kafka outage: bounded blocking, a coalesced backlog, re-sent failed deliveries.

The notifier runs on the store's writer thread. It used to retry `BufferError` forever, so a full librdkafka
queue stalled every chunk write and every drain for the whole outage.
"""

from __future__ import annotations

import threading
import time

from metrictank.cluster.persist import PersistNotifier
from metrictank.schema import decode_persist

K = [f"1.{i:032x}" for i in range(10)]


class FakeMsg:
    def __init__(self, partition: int, value: bytes) -> None:
        self._p, self._v = partition, value

    def partition(self) -> int:
        return self._p

    def value(self) -> bytes:
        return self._v


class FakeProducer:
    """A producer whose local queue is full while `full` is set; `fail_next` fails the next delivery."""

    def __init__(self, _cfg: dict) -> None:
        self.full = False
        self.fail_next = 0
        self.sent: list[tuple[int, bytes]] = []
        self._queue: list[tuple[int, bytes, object]] = []

    def produce(self, topic: str, payload: bytes, partition: int, on_delivery) -> None:
        if self.full:
            raise BufferError("Local: Queue full")
        self._queue.append((partition, payload, on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        if self.full:
            time.sleep(min(timeout, 0.01))
            return 0
        q, self._queue = self._queue, []
        for partition, payload, cb in q:
            if self.fail_next:
                self.fail_next -= 1
                cb("Local: Message timed out", FakeMsg(partition, payload))
            else:
                self.sent.append((partition, payload))
                cb(None, FakeMsg(partition, payload))
        return len(q)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll(timeout)
        return len(self._queue)

    def __len__(self) -> int:
        return len(self._queue)


def _notifier() -> tuple[PersistNotifier, FakeProducer]:
    holder: list[FakeProducer] = []

    def factory(cfg: dict) -> FakeProducer:
        holder.append(FakeProducer(cfg))
        return holder[0]

    n = PersistNotifier("unused:1", "persist", "mt1", producer_factory=factory)
    n.max_block = 0.05  # (an attribute, not a constructor argument, so the test also runs on the old code)
    return n, holder[0]


def _marks(sent: list[tuple[int, bytes]]) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for partition, payload in sent:
        for key, t0 in decode_persist(payload)[1]:
            out[(partition, key)] = max(t0, out.get((partition, key), -1))
    return out


def test_notify_does_not_block_while_kafka_queue_is_full() -> None:
    n, p = _notifier()
    p.full = True
    done = threading.Event()

    def writer() -> None:  # the store's writer thread during an outage
        for t0 in range(60, 60 * 50, 60):
            n.notify([(K[0], t0, 0), (K[1], t0, 3)])
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t0 = time.monotonic()
    t.start()
    assert done.wait(5), "notify blocked on a full producer queue"
    assert time.monotonic() - t0 < 2.0
    assert n.messages_deferred >= 2
    assert n.backlog_chunks == 2  # coalesced: one mark per (partition, key)
    assert n.flush(0.2) > 0  # still unsent while Kafka is away

    p.full = False
    assert n.pump() == 0
    assert n.flush(1) == 0
    assert _marks(p.sent) == {(0, K[0]): 60 * 49, (3, K[1]): 60 * 49}


def test_failed_delivery_is_sent_again() -> None:
    n, p = _notifier()
    p.fail_next = 1
    n.notify([(K[2], 600, 1), (K[3], 600, 1)])  # one message, whose delivery fails
    assert n.errors == 1
    assert p.sent == []
    assert n.flush(1) == 0
    assert _marks(p.sent) == {(1, K[2]): 600, (1, K[3]): 600}


def test_normal_path_publishes_immediately() -> None:
    n, p = _notifier()
    n.notify([(K[i], 60, i % 2) for i in range(6)])
    assert n.messages_published == 2 and n.chunks_published == 6 and n.messages_deferred == 0
    assert n.backlog_chunks == 0
    assert len(p.sent) == 2


def test_parse_trust() -> None:
    import pytest

    from metrictank.cluster.persist import parse_trust

    assert parse_trust("") == (set(), [])
    assert parse_trust(" mt-a , mt-go-*, re:metrictank-\\d+ ,,") == (
        {"mt-a"},
        ["mt-go-*", "re:metrictank-\\d+"],
    )
    with pytest.raises(ValueError):
        parse_trust("re:(")


def test_pending_marks_are_bounded() -> None:
    from metrictank.cluster.persist import PendingMarks

    pm = PendingMarks(max_series=2)
    pm.add(K[0], 60)
    pm.add(K[0] + "_sum_600", 600)  # same series: no new entry
    pm.add(K[1], 60)
    pm.add(K[2], 60)  # a third series: dropped
    pm.add(K[0], 30)  # lower t0: ignored
    assert len(pm) == 2 and pm.dropped == 1
    assert sorted(pm.pop([K[0], K[2]])) == [(K[0], 60), (K[0] + "_sum_600", 600)]


def test_pump_never_waits_for_a_notifier_busy_elsewhere():
    """The main loop pumps every second; a store thread (notify) or a demotion (flush) may hold the notifier for
    a while during a Kafka outage: the main loop must not wait for it."""
    n = PersistNotifier("b", "t", "mt1", producer_factory=FakeProducer)
    n._producer.full = True
    n.notify([(K[0], 600, 0)])  # deferred: the backlog is not empty
    held = threading.Event()
    release = threading.Event()

    def hold():
        with n._lock:
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    started = time.monotonic()
    left = n.pump(max_block=2.0)
    took = time.monotonic() - started
    release.set()
    t.join()
    assert left == 1
    assert took < 1.0, f"pump waited {took:.2f}s for the lock"


# --- the listener's table of writers ---------------------------------------------------------------------------
class _Meta:
    def __init__(self, parts: int) -> None:
        part = type("P", (), {})()
        self.topics = {
            "persist": type("T", (), {"error": None, "partitions": dict.fromkeys(range(parts), part)})()
        }


class _Msg:
    def __init__(self, value: bytes, partition: int = 0, offset: int = 0) -> None:
        self._v, self._p, self._o = value, partition, offset

    def error(self):
        return None

    def value(self) -> bytes:
        return self._v

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def topic(self) -> str:
        return "persist"


class _FakeConsumer:
    def __init__(self, _cfg: dict) -> None:
        self.batches: list[list[_Msg]] = []

    def list_topics(self, topic, timeout=None):
        return _Meta(1)

    def assign(self, tps) -> None:
        pass

    def consume(self, num_messages=1, timeout=0):
        return self.batches.pop(0) if self.batches else []


def test_the_writers_table_stays_bounded_whatever_names_the_topic_carries():
    from metrictank.cluster.persist import _MAX_WRITERS, PersistListener
    from metrictank.schema import encode_persist

    applied: list = []
    li = PersistListener("b", "persist", [0], "oldest", applied.extend, "mt1", consumer_factory=_FakeConsumer)
    msgs = [_Msg(encode_persist(f"intruder-{i}", [(K[0], 600)]), 0, i) for i in range(_MAX_WRITERS + 500)]
    li._consumer.batches = [msgs[i : i + 200] for i in range(0, len(msgs), 200)]
    while li._consumer.batches:
        li.poll()
    assert len(li.writers) == _MAX_WRITERS
    assert f"intruder-{_MAX_WRITERS + 499}" in li.writers  # the newest names are kept


class _StalledConsumer(_FakeConsumer):
    """Hands over nothing although the broker holds persist messages beyond the position."""

    def __init__(self, _cfg: dict) -> None:
        super().__init__(_cfg)
        self.positions = {0: 7}
        self.high = 12
        self.assigned: list = []

    def assign(self, tps) -> None:
        self.assigned.append([(tp.partition, tp.offset) for tp in tps])

    def unassign(self) -> None:
        pass

    def resume(self, tps) -> None:
        pass

    def position(self, tps):
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return (0, self.high)


def test_listener_restarts_a_stalled_fetcher_at_its_position():
    from metrictank.cluster.persist import PersistListener

    li = PersistListener("b", "persist", [0], "oldest", list, "mt1", consumer_factory=_StalledConsumer)
    c = li._consumer
    c.assigned.clear()
    t0 = li._last_data
    assert not li.check_stall(now=t0 + 5)  # too early
    assert li.check_stall(now=t0 + 11)
    assert c.assigned == [[(0, 7)]] and li.fetch_restarts == 1  # at the position: nothing lost or repeated
    c.positions[0] = 12  # caught up: nothing to restart
    assert not li.check_stall(now=t0 + 30)
    assert li.fetch_restarts == 1
    li.stall_after = None
    c.positions[0] = 3
    assert not li.check_stall(now=t0 + 100)
