"""Freed heap goes back to the OS while ingesting: after enough payload, not per batch and not when idle."""

import pytest
from confluent_kafka import Message

from metrictank.heap import HeapTrimmer, trim
from metrictank.input.kafka import DataConsumer

from .test_fetch_stall import FakeConsumer as StallFake


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _trimmer(clock, calls, **kw):
    return HeapTrimmer(trim_fn=lambda: calls.append(clock.t), clock=clock, **kw)


def test_trims_after_enough_payload_at_most_once_per_interval():
    clock, calls = Clock(), []
    h = _trimmer(clock, calls, min_bytes=100, min_interval=1.0)
    clock.t += 5
    assert not h.consumed(60)  # not enough payload yet, however long it has been
    assert h.consumed(60)
    assert calls == [105.0] and h.trims == 1
    clock.t += 0.5
    assert not h.consumed(10_000)  # enough payload, too soon
    clock.t += 0.6
    assert h.consumed(0)  # the payload counted while it was too soon still counts
    assert calls == [105.0, 106.1] and h.trims == 2
    clock.t += 60
    assert not h.consumed(99)  # idle or slow: no trim for time alone
    assert h.seconds >= 0


def test_explicit_trim_resets_the_budget():
    clock, calls = Clock(), []
    h = _trimmer(clock, calls, min_bytes=100, min_interval=0.0)
    h.consumed(90)
    h.now()
    assert not h.consumed(90)  # counted from the explicit trim
    assert h.trims == 1 and calls == [100.0]


def test_bad_policy_is_refused():
    with pytest.raises(ValueError):
        HeapTrimmer(min_bytes=-1)


def test_the_real_trim_runs():
    trim()  # glibc: malloc_trim(0); elsewhere a no-op - either way no error


def _msg(value: bytes, partition: int, offset: int) -> Message:
    return Message(
        topic="mdm", partition=partition, offset=offset, value=value, timestamp=(1, 1_700_000_000_000)
    )


class FakeConsumer(StallFake):
    def __init__(self, batches):
        super().__init__({0: 0, 1: 0}, {0: (0, 50), 1: (0, 50)})
        self.batches = list(batches)

    def consume(self, num_messages, timeout):
        return self.batches.pop(0) if self.batches else []


def test_batches_carry_their_payload_size():
    msgs = [_msg(b"x" * 28, 0, i) for i in range(50)] + [_msg(b"y" * 2808, 1, i) for i in range(50)]
    c = DataConsumer("x:1", ["mdm"], None, "oldest", consumer_factory=lambda cfg: FakeConsumer([msgs]))
    b = c.poll(0)
    exact = sum(len(m.value()) for m in msgs)
    assert len(b.values) == 100
    assert 0.5 * exact <= b.nbytes <= 1.5 * exact  # estimated from a sample, in the right range
    assert c.poll(0).nbytes == 0
