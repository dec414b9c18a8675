"""PersistListener against the test bed's real Kafka: hostile persist messages and the trust policy.

Why real Kafka: the fault was one message on `metricpersist` crashing every node that read it. The proof is that a
real consumer reading a real topic full of such messages, interleaved with good ones, applies exactly the good
marks, counts every drop by reason, and never raises.
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from metrictank.cluster.persist import PersistListener
from metrictank.schema import encode_persist, parse_amkey

SID = [f"1.{i:032x}" for i in range(1, 6)]


def _produce(kafka: str, topic: str, messages: list[tuple[int, bytes]]) -> None:
    """Produce in order (one partition keeps its order), compressed so the 100k-chunk message fits."""
    p = Producer(
        {
            "bootstrap.servers": kafka,
            "compression.type": "gzip",
            "linger.ms": 0,
            "message.max.bytes": 20_000_000,  # the client checks the uncompressed size
            "log_level": 3,
        }
    )
    for partition, payload in messages:
        p.produce(topic, payload, partition=partition)
        p.poll(0)
    assert p.flush(30) == 0


class Recorder:
    """An `apply` that behaves like Instance._apply_saved: an unparseable key raises (ValueError)."""

    def __init__(self, poison: str | None = None) -> None:
        self.marks: list[tuple[str, int]] = []
        self.poison = poison

    def __call__(self, saved: list[tuple[str, int]]) -> None:
        for key, _t0 in saved:
            parse_amkey(key)  # raises DecodeError (a ValueError) for "zzz", as tank.slot_of did
            if key == self.poison:
                raise RuntimeError("tank refused this series")
        self.marks.extend(saved)


def _listener(kafka: str, topic: str, apply, **kw) -> PersistListener:
    return PersistListener(kafka, topic, None, "oldest", apply, "mt-self", **kw)


def _read_all(li: PersistListener, expected_messages: int) -> None:
    assert li.consume_backlog(60)
    deadline = time.monotonic() + 30
    while li.messages_received < expected_messages and time.monotonic() < deadline:
        li.poll(0.2)
    assert li.messages_received == expected_messages


@pytest.mark.timeout(180)
def test_hostile_messages_are_dropped_by_reason_and_good_marks_all_applied(
    kafka_bootstrap, new_topic
) -> None:
    topic = new_topic(partitions=2)
    big = [(f"2.{i % 1000:032x}", 60 * (i // 1000 + 1)) for i in range(100_000)]
    mixed = (
        b'\x01{"instance":"mt-a","saved_chunks":['
        + json.dumps({"key": SID[2], "t0": 120}).encode()
        + b',{"key":"zzz","t0":60},{"key":5,"t0":60},{"key":"'
        + SID[2].encode()
        + b'","t0":-1},{"key":"'
        + SID[2].encode()
        + b'","t0":1.5},7,{"key":"'
        + SID[2].encode()
        + b'_sum_7","t0":60},'
        + json.dumps({"key": SID[3] + "_sum_600", "t0": 600}).encode()
        + b"]}\n"
    )
    messages = [
        (0, encode_persist("mt-a", [(SID[0], 60)])),
        (0, b'\x01{"instance":"x","saved_chunks":[{"key":"zzz","t0":60}]}\n'),  # the message of the issue
        (0, encode_persist("mt-a", [(SID[1], 60), ("1.nothex", 60)])),
        (0, mixed),
        (0, b""),
        (0, b"\x02" + encode_persist("mt-a", [(SID[4], 60)])[1:]),  # unknown version
        (0, bytes.fromhex("82a86964656e74697479a3666f6fa474696d65cd0100")),  # msgpack
        (0, b"\x01" + b"[" * 900_000),  # 900 KB of "[": RecursionError in the JSON parser
        (0, b"\x01" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000),  # nested 100k deep
        (0, b'\x01{"instance":"mt-\xff\xfe","saved_chunks":[{"key":"1.\xc3\x28","t0":60}]}'),  # invalid UTF-8
        (0, encode_persist("mt-a", [("1." + "f" * 32, 60)])),  # apply raises for this one key only
        (1, encode_persist("mt-b", big)),  # 100k chunks in one message
        (0, encode_persist("mt-a", [(SID[4], 180)])),
    ]
    _produce(kafka_bootstrap, topic, messages)
    rec = Recorder(poison="1." + "f" * 32)
    li = _listener(kafka_bootstrap, topic, rec)
    try:
        _read_all(li, len(messages))  # must not raise
        p0 = [m for m in rec.marks if not m[0].startswith("2.")]
        assert p0 == [(SID[0], 60), (SID[1], 60), (SID[2], 120), (SID[3] + "_sum_600", 600), (SID[4], 180)]
        assert sorted(m for m in rec.marks if m[0].startswith("2.")) == sorted(big)
        assert li.decode_errors_by_reason == {
            "empty": 1,
            "unknown-version": 2,  # b"\x02..." and the msgpack map (0x82)
            "invalid-json": 2,  # the "[" flood and the 100k-deep nesting
            "apply-error": 1,
        }
        assert li.decode_errors == 5
        assert li.chunks_dropped_by_reason == {
            "invalid-key": 6,  # zzz (twice), 1.nothex, 5, _sum_7, the invalid-UTF-8 key
            "invalid-t0": 2,
            "invalid-item": 1,
            "apply-error": 1,
        }
        assert li.chunks_received == 5 + 1 + len(big)
    finally:
        li.close()


@pytest.mark.timeout(120)
def test_untrusted_instance_cannot_raise_marks_until_known(kafka_bootstrap, new_topic) -> None:
    topic = new_topic(partitions=1)
    now = int(time.time())
    soon = now // 60 * 60 + 3600  # an hour ahead (within max_future): only the trust policy stops it
    future = now // 60 * 60 + 30 * 86400  # a month ahead: would stop every earlier write of the series
    messages = [
        (0, encode_persist("intruder", [(SID[0], soon), (SID[1], 60)])),
        (0, encode_persist("mt-self", [(SID[0], 120)])),  # ourselves: always trusted
        (0, encode_persist("mt-peer", [(SID[1], 120)])),  # configured name
        (0, encode_persist("mt-go-7", [(SID[2], 120)])),  # glob pattern
        (0, encode_persist("metrictank-3", [(SID[3], 120)])),  # regex pattern
        (0, encode_persist("mt-peer", [(SID[4], future), (SID[4], 180)])),  # trusted, but t0 too far ahead
    ]
    _produce(kafka_bootstrap, topic, messages)
    rec = Recorder()
    li = _listener(
        kafka_bootstrap,
        topic,
        rec,
        trusted_instances={"mt-peer"},
        trust_patterns=["mt-go-*", r"re:metrictank-\d+"],
        max_future=86400.0,
    )
    try:
        _read_all(li, len(messages))
        assert rec.marks == [(SID[0], 120), (SID[1], 120), (SID[2], 120), (SID[3], 120), (SID[4], 180)]
        assert li.decode_errors_by_reason == {"untrusted-instance": 1}
        assert li.chunks_dropped_by_reason == {"untrusted-instance": 2, "future-t0": 1}
        assert li.is_trusted("mt-go-12") and not li.is_trusted("intruder")
        # the foreign writer stays visible to split-brain detection
        assert "intruder" in li.recent_writers([0], 60)
        seen = li.untrusted_json()
        assert seen["intruder"]["chunks"] == 2 and seen["intruder"]["heldMarks"] == 2

        # a peer's name learned at run time: what it announced before is applied by the next poll
        li.set_known(["intruder"])
        li.poll(0.1)
        assert rec.marks[-2:] == [(SID[0], soon), (SID[1], 60)]
        assert li.untrusted_json()["intruder"]["heldMarks"] == 0
    finally:
        li.close()
