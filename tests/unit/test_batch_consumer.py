"""The batch consumer's pieces that need no broker: packed batches as the decoder sees them, and the C handle's
behaviour against an address where no broker answers (real librdkafka: its error callback must never call into
Python, and nothing may raise out of a consume)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.input.batch_consumer import BatchConsumer, PackedMessages, Prefetcher, available
from metrictank.input.kafka import DataConsumer, consumer_config
from metrictank.schema import classify_and_decode
from metrictank.schema.points import FORMAT_METRIC_POINT, FORMAT_METRIC_POINT_ARRAY


def packed(values: list[bytes]) -> PackedMessages:
    n = len(values)
    return PackedMessages(
        b"".join(values),
        np.array([len(v) for v in values], np.int32),
        np.zeros(n, np.int32),
        np.arange(n, dtype=np.int64),
        np.full(n, -1, np.int64),
    )


def test_librdkafka_is_found_through_confluent_kafka():
    version = available()
    assert version and version[0].isdigit()


def test_packed_messages_index_like_a_list():
    values = [b"abc", b"", b"\x02" * 33, b"z"]
    p = packed(values)
    assert len(p) == 4
    assert [p[i] for i in range(4)] == values
    assert p.tolist() == values
    assert p.starts.tolist() == [0, 3, 3, 36]
    e = PackedMessages.empty()
    assert len(e) == 0 and e.tolist() == [] and e.last == []


_point = st.binary(min_size=32, max_size=32).map(lambda b: bytes([FORMAT_METRIC_POINT]) + b)
_array = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3).map(
    lambda bs: bytes([FORMAT_METRIC_POINT_ARRAY, FORMAT_METRIC_POINT]) + b"".join(bs)
)
_payload = st.one_of(_point, _point, _array, st.binary(max_size=40), st.just(b""))


@settings(max_examples=150, deadline=None)
@given(st.lists(_payload, min_size=1, max_size=40))
def test_packed_batches_decode_exactly_as_lists(values):
    a = classify_and_decode(values, 7)
    b = classify_and_decode(packed(values), 7)
    assert a.errors == b.errors
    assert a.n_messages == b.n_messages
    for f in a.points.dtype.names:  # field by field: the record's 4 padding bytes carry nothing
        assert a.points[f].tobytes() == b.points[f].tobytes(), f
    assert [(i, m) for i, m in a.metricdata] == [(i, m) for i, m in b.metricdata]
    assert [(i, c) for i, c in a.control] == [(i, c) for i, c in b.control]


def test_homogeneous_packed_batch_takes_the_buffer_whole():
    vals = [bytes([FORMAT_METRIC_POINT]) + bytes(range(i, i + 32)) for i in range(1, 50)]
    d = classify_and_decode(packed(vals), 0)
    assert len(d.points) == 49 and not d.errors
    assert d.points["msg_index"].tolist() == list(range(49))


def _dead_broker_config() -> dict:
    # port 1 on the loopback: connections are refused at once, so the client reports errors quickly
    cfg = consumer_config("127.0.0.1:1", client_id="dead")
    cfg.update({"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50, "log_level": 0})
    return cfg


def test_errors_of_an_unreachable_broker_are_counted_never_raised():
    c = BatchConsumer(_dead_broker_config())
    try:
        c.assign([])
        deadline = time.monotonic() + 10
        total = 0
        while time.monotonic() < deadline and total == 0:
            b = c.consume_packed(100, 0.2)  # serves the error events: must not call into Python
            assert len(b) == 0
            total, recent = c.client_errors()
        assert total > 0, "no client error reported for a refused connection"
    finally:
        c.close()


def test_bad_option_names_the_key():
    cfg = _dead_broker_config()
    cfg["no.such.option"] = "1"
    with pytest.raises(Exception, match="no.such.option"):
        BatchConsumer(cfg)


def test_consume_bounds_and_closed_handle():
    c = BatchConsumer(_dead_broker_config())
    with pytest.raises(ValueError, match="max_messages"):
        c._bc.consume(0, 10)
    c.close()
    c.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        c.consume_packed(10, 0.01)


def test_close_refused_while_another_thread_is_inside_the_handle():
    """Freeing the handle under a running consume would crash the process: close() refuses instead, and
    succeeds once the reader has stopped."""
    c = BatchConsumer(_dead_broker_config())
    reader = Prefetcher(c, 10, timeout=0.5)
    try:
        time.sleep(0.2)  # the reader is (almost always) inside consume now
        refused = 0
        for _ in range(20):
            try:
                c._bc.close()
            except RuntimeError as e:
                assert "another thread" in str(e)
                refused += 1
                continue
            break
        assert refused > 0, "close() was never refused while the reader was consuming"
    finally:
        assert reader.stop()
        c.close()
        assert c._bc.closed


def test_data_consumer_falls_back_to_confluent_kafka_when_told_or_injected():
    class _Fake:
        def __init__(self, cfg):
            pass

        def list_topics(self, topic=None, timeout=None):
            from types import SimpleNamespace

            return SimpleNamespace(topics={"mdm": SimpleNamespace(error=None, partitions={0: None})})

        def close(self):
            pass

    d = DataConsumer("x:1", ["mdm"], None, "oldest", consumer_factory=_Fake)
    assert not d.packed
    d.close()
