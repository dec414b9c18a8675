"""`metrictank fakemetrics backfill|feed` with an in-memory Kafka producer: the messages decode with the project's
own decoder, go to Metrictank's partitions, and carry the values the shapes define."""

from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np
import pytest
from click.testing import CliRunner

import metrictank.fakemetrics as fm
from metrictank.cli import fakemetrics as cli_fakemetrics
from metrictank.cli import main
from metrictank.schema import PARTITION_METHODS, classify_and_decode, partition, series_id


class FakeKafka:
    """Stands in for confluent_kafka.Producer: records (partition, value, timestamp)."""

    def __init__(self, conf: dict) -> None:
        self.conf = conf
        self.messages: list[tuple[int, bytes, int | None]] = []
        FakeKafka.last = self

    def produce(self, topic, value, partition, timestamp=None):
        self.messages.append((partition, value, timestamp))

    def poll(self, _t):
        return 0

    def flush(self, _t=None):
        return 0


@pytest.fixture
def fake_kafka(monkeypatch):
    monkeypatch.setattr(fm, "Producer", functools.partial(fm.Producer, kafka_producer_factory=FakeKafka))
    return FakeKafka


def _decode(messages):
    by_part = defaultdict(list)
    for p, v, _ts in messages:
        by_part[p].append(v)
    return {p: classify_and_decode(vals, 0) for p, vals in by_part.items()}


def test_cli_choices_match_the_library():
    assert cli_fakemetrics.SHAPES == fm.SHAPES
    assert cli_fakemetrics.PARTITIONERS == PARTITION_METHODS


@pytest.mark.parametrize("array_size", [1, 7])
def test_backfill_messages_decode_to_the_series(fake_kafka, array_size):
    args = [
        "fakemetrics", "backfill", "--brokers", "unused:9092", "--topic", "mdm", "--partitions", "4",
        "--series", "25", "--interval", "10", "--from", "1700000000", "--to", "1700000600",
        "--array-size", str(array_size), "--prefix", "fm.unit", "--shape", "counter", "--quiet",
    ]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    msgs = fake_kafka.last.messages
    ids = {series_id(1, f"fm.unit.{i}", "ms", "gauge", 10, []): i for i in range(25)}
    n_md = n_pts = 0
    for p, batch in _decode(msgs).items():
        assert batch.n_errors == 0
        for _i, md in batch.metricdata:
            assert md.id in ids and md.time == 1700000000 and md.interval == 10
            assert partition("bySeries", 1, md.name, [], 4) == p  # Metrictank's partitioner
            n_md += 1
        for k0, k1, t, v in zip(
            batch.points["k0"], batch.points["k1"], batch.points["time"], batch.points["value"], strict=True
        ):
            key = np.array([k0, k1], dtype="<u8").tobytes().hex()
            sid = f"1.{key}"
            assert sid in ids
            i = ids[sid]
            assert partition("bySeries", 1, f"fm.unit.{i}", [], 4) == p
            assert v == fm.values_for("counter", np.array([i]), np.array([t]))[0]
            n_pts += 1
    assert n_md == 25
    assert n_pts == 25 * 59  # (t0, t0 + 600) every 10 s after the MetricData
    if array_size == 1:
        assert len(msgs) == 25 * 60
    else:
        assert len(msgs) < 25 * 60  # arrays: fewer messages for the same points
    # message timestamps are the data timestamps (offset = "6h" finds them)
    assert min(ts for _p, _v, ts in msgs) == 1700000000 * 1000


def test_backfill_rejects_an_empty_range(fake_kafka):
    r = CliRunner().invoke(
        main, ["fakemetrics", "backfill", "--partitions", "2", "--from", "1700000600", "--to", "1700000000"]
    )
    assert r.exit_code == 2
    assert "--to" in r.output


def test_feed_for_a_duration(fake_kafka):
    r = CliRunner().invoke(
        main,
        ["fakemetrics", "feed", "--partitions", "3", "--series", "5", "--interval", "1", "--duration", "1500ms",
         "--partitioner", "bySeriesWithTags", "--tag", "dc=eu"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    decoded = _decode(fake_kafka.last.messages)
    mds = [md for b in decoded.values() for _i, md in b.metricdata]
    assert len(mds) == 5 and all(md.tags == ["dc=eu"] for md in mds)
    for p, b in decoded.items():
        for _i, md in b.metricdata:
            assert partition("bySeriesWithTags", 1, md.name, md.tags, 3) == p


def test_feed_rejects_a_bad_tag(fake_kafka):
    r = CliRunner().invoke(main, ["fakemetrics", "feed", "--partitions", "1", "--tag", "novalue"])
    assert r.exit_code == 2


def test_producer_keeps_partition_order_across_retries(fake_kafka):
    """A retried batch must not land behind later ones: the tank would drop its points as too old."""
    fm.Producer("unused:9092", "mdm")
    assert FakeKafka.last.conf["enable.idempotence"] is True
    assert FakeKafka.last.conf["acks"] == "all"
