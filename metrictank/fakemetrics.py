"""A load generator in the manner of Metrictank's mt-fakemetrics.

N series named `<prefix>.<i>` (optionally tagged), each first announced with a full MetricData message and then fed
compact MetricPoint (0x02) or MetricPointArray (0x05) messages, routed to partitions with Metrictank's partitioners.
Values follow realistic shapes (a 2-decimal random walk, an integer counter, a constant, noise) and are
deterministic for a seed, so a test can recompute exactly what was produced.

Everything per point is numpy; only the split into Kafka messages is per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from metrictank.schema import (
    POINT_DTYPE,
    MetricData,
    encode_metricdata,
    encode_metricpoint_array_np,
    encode_metricpoints_many,
    parse_mkey,
    partition_many,
    series_id,
)

__all__ = ["SeriesSet", "values_for", "Producer", "topic_partitions"]

SHAPES = ("walk", "counter", "constant", "noise")


@dataclass
class SeriesSet:
    """The series a generator produces: ids, routing words and partitions, all columnar."""

    names: list[str]
    ids: list[str]
    org: int
    interval: int
    tags: list[list[str]]
    mtype: str
    unit: str
    k0: np.ndarray
    k1: np.ndarray
    partitions: np.ndarray

    @classmethod
    def make(
        cls,
        n: int,
        partitions: int,
        prefix: str = "some.id.of.a.metric",
        org: int = 1,
        interval: int = 10,
        tags: list[str] | None = None,
        method: str = "bySeries",
        mtype: str = "gauge",
        unit: str = "ms",
        start: int = 0,
    ) -> SeriesSet:
        names = [f"{prefix}.{i}" for i in range(start, start + n)]
        tag_list = sorted(tags or [])
        ids = [series_id(org, name, unit, mtype, interval, tag_list) for name in names]
        words = np.array([parse_mkey(i).words for i in ids], dtype=np.uint64).reshape(n, 2)
        parts = partition_many(method, org, names, [tag_list] * n if tag_list else None, partitions)
        return cls(
            names,
            ids,
            org,
            interval,
            [tag_list] * n,
            mtype,
            unit,
            words[:, 0].copy(),
            words[:, 1].copy(),
            parts,
        )

    def __len__(self) -> int:
        return len(self.names)

    def metricdata(self, i: int, ts: int, value: float) -> bytes:
        md = MetricData(
            id=self.ids[i],
            org_id=self.org,
            name=self.names[i],
            interval=self.interval,
            value=float(value),
            unit=self.unit,
            time=int(ts),
            mtype=self.mtype,
            tags=list(self.tags[i]),
        )
        return encode_metricdata(md)


def values_for(shape: str, series: np.ndarray, ts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic values for (series index, timestamp) pairs: the same inputs give the same values."""
    s = series.astype(np.uint64)
    t = ts.astype(np.uint64)
    if shape == "constant":
        return (s % np.uint64(100)).astype(np.float64)
    if shape == "counter":
        return (t // np.uint64(10) * (s % np.uint64(7) + np.uint64(1))).astype(np.float64)
    # hash (series, ts, seed) into [0, 1)
    h = (s * np.uint64(0x9E3779B97F4A7C15)) ^ (t * np.uint64(0xBF58476D1CE4E5B9)) ^ np.uint64(seed)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    if shape == "noise":
        return u * 1000.0
    # "walk": a smooth 2-decimal signal that is a pure function of (series, ts)
    base = (s % np.uint64(1000)).astype(np.float64)
    return np.round(base + 10 * np.sin(t.astype(np.float64) / 600.0 + base) + u, 2)


def topic_partitions(brokers: str, topic: str, timeout: float = 10.0) -> int:
    """The partition count of an existing topic: producers must route with the count consumers see.

    Raises RuntimeError naming the topic when it does not exist or the brokers cannot be reached (rather than
    letting a broker with auto-creation make a topic of its default size).
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 3})
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception as e:  # KafkaException: brokers unreachable
        raise RuntimeError(f"cannot list topics on {brokers}: {e}") from None
    t = md.topics.get(topic)
    if t is None:
        raise RuntimeError(
            f"topic {topic!r} does not exist on {brokers}; create it or pass the partition count"
        )
    if t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic!r} on {brokers} is not usable: {t.error}")
    return len(t.partitions)


class Producer:
    """Writes a SeriesSet's messages to a Kafka topic."""

    def __init__(
        self,
        brokers: str,
        topic: str,
        kafka_producer_factory: Callable[[dict], object] | None = None,
        idempotent: bool = True,
    ) -> None:
        if kafka_producer_factory is None:
            from confluent_kafka import Producer as KafkaProducer

            kafka_producer_factory = KafkaProducer
        self.topic = topic
        # Idempotence keeps each partition in send order across retries. Without it librdkafka may retry a failed
        # batch (e.g. a fresh topic's leader not settled yet) behind later ones, and a tank then rightly drops the
        # earlier points as too old: a backfill would silently lose data.
        # idempotent=False: order kept by one request in flight per partition instead, retried for 10 minutes:
        # librdkafka's idempotent producer was seen to stall for minutes after its broker was frozen 30 s
        # (its requests timed out and it waits to reset its producer id), which a broker-fault test cannot use
        ordering = (
            {"enable.idempotence": True}
            if idempotent
            else {
                "enable.idempotence": False,
                "max.in.flight.requests.per.connection": 1,
                "message.timeout.ms": 600000,
            }
        )
        self._p = kafka_producer_factory(
            {
                "bootstrap.servers": brokers,
                **ordering,
                "acks": "all",
                "linger.ms": 20,
                "batch.num.messages": 100000,
                "batch.size": 4 * 1024 * 1024,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 1024 * 1024,
                "compression.type": "lz4",
                "log_level": 3,
            }
        )
        self.sent = 0

    def _send(self, value: bytes, partition: int, ts_ms: int | None = None) -> None:
        while True:
            try:
                if ts_ms is None:
                    self._p.produce(self.topic, value, partition=int(partition))
                else:
                    self._p.produce(self.topic, value, partition=int(partition), timestamp=int(ts_ms))
                break
            except BufferError:
                self._p.poll(0.05)
        self.sent += 1

    def send_metricdata(
        self, ss: SeriesSet, ts: int, shape: str = "walk", seed: int = 0, rows: np.ndarray | None = None
    ) -> None:
        rows = np.arange(len(ss)) if rows is None else rows
        vals = values_for(shape, rows, np.full(len(rows), ts), seed)
        for i, v in zip(rows.tolist(), vals.tolist(), strict=True):
            self._send(ss.metricdata(i, ts, v), ss.partitions[i], ts * 1000)
        self._p.poll(0)

    def send_points(
        self,
        ss: SeriesSet,
        ts: np.ndarray | int,
        shape: str = "walk",
        seed: int = 0,
        rows: np.ndarray | None = None,
        array_size: int = 1,
        message_ts_ms: int | None = None,
    ) -> int:
        """One point per series in `rows` at timestamp(s) `ts`; as single points or arrays of `array_size`."""
        rows = np.arange(len(ss)) if rows is None else np.asarray(rows)
        ts_arr = np.broadcast_to(np.asarray(ts, dtype=np.int64), rows.shape)
        pts = np.zeros(len(rows), dtype=POINT_DTYPE)
        pts["k0"] = ss.k0[rows]
        pts["k1"] = ss.k1[rows]
        pts["org"] = ss.org
        pts["time"] = ts_arr
        pts["value"] = values_for(shape, rows, ts_arr, seed)
        parts = ss.partitions[rows]
        if array_size <= 1:
            msgs = encode_metricpoints_many(pts)
            for m, p in zip(msgs, parts.tolist(), strict=True):
                self._send(m, p, message_ts_ms)
        else:
            order = np.argsort(parts, kind="stable")
            pts, parts = pts[order], parts[order]
            bounds = np.flatnonzero(np.diff(parts)) + 1
            for chunk, pchunk in zip(np.split(pts, bounds), np.split(parts, bounds), strict=True):
                for i in range(0, len(chunk), array_size):
                    self._send(
                        encode_metricpoint_array_np(chunk[i : i + array_size]), int(pchunk[0]), message_ts_ms
                    )
        self._p.poll(0)
        return len(rows)

    def backfill(
        self,
        ss: SeriesSet,
        start: int,
        end: int,
        shape: str = "walk",
        seed: int = 0,
        array_size: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Every series from `start` to `end` (exclusive) at its interval, MetricData first. Returns points sent."""
        self.send_metricdata(ss, start, shape, seed)
        sent = len(ss)
        steps = list(range(start + ss.interval, end, ss.interval))
        for k, t in enumerate(steps):
            sent += self.send_points(ss, t, shape, seed, array_size=array_size, message_ts_ms=t * 1000)
            if progress is not None:
                progress(k + 1, len(steps))
        return sent

    def feed(
        self,
        ss: SeriesSet,
        stop: Callable[[], bool],
        shape: str = "walk",
        seed: int = 0,
        resend_metricdata_every: int = 360,
        array_size: int = 1,
    ) -> Iterator[int]:
        """Real-time feed: one point per series per interval, aligned to the interval; yields each timestamp.

        Every `resend_metricdata_every` intervals the full MetricData goes out again instead of the compact
        points, as real producers do, so a node that restarted with an empty index learns the series again.
        """
        first = True
        k = 0
        while not stop():
            now = int(time.time())
            t = now - now % ss.interval
            if first or (resend_metricdata_every and k % resend_metricdata_every == 0):
                self.send_metricdata(ss, t, shape, seed)
                first = False
            else:
                self.send_points(ss, t, shape, seed, array_size=array_size)
            k += 1
            self.flush(10)
            yield t
            nxt = t + ss.interval
            while not stop() and time.time() < nxt:
                time.sleep(min(0.2, max(0.0, nxt - time.time())))

    def flush(self, timeout: float = 30.0) -> int:
        return self._p.flush(timeout)
