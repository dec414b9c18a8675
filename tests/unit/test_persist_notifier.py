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
