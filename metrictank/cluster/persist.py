"""Persist notifications on the `metricpersist` topic: announce our writes, learn everyone's.

Each successful chunk write is announced in Metrictank's format (`0x01` + JSON) on the persist partition equal to
the series' data partition, so a Metrictank node reading only its own partitions sees it. Several saved chunks of
one partition share a message (Metrictank's readers accept that), which keeps a chunkspan boundary burst from
turning into hundreds of thousands of tiny Kafka messages.

Every node applies every message, its own included, to raise its saved marks. At startup the topic is read up to
the high watermarks seen at startup *before* data consumption starts (Metrictank issue 485), and that wait ends as
soon as it is caught up instead of always lasting the timeout (issue 1316).

Marks for series not yet in memory (a restart: the index is rebuilt from the data topic, after the persist backlog)
are kept by series id and applied when the series appears, so a restarted primary never rewrites what it saved.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from metrictank.input.kafka import consumer_config, start_offsets
from metrictank.schema import DecodeError, decode_persist, encode_persist

log = logging.getLogger(__name__)

__all__ = ["PersistNotifier", "PersistListener", "PendingMarks"]

# Keep one persist message well below Kafka's default 1 MB message limit.
_MAX_CHUNKS_PER_MESSAGE = 2000


class PersistNotifier:
    """Produces persist messages for saved chunks (called from the store's I/O thread)."""

    def __init__(
        self, brokers: str, topic: str, instance: str, producer_factory: Callable[[dict], Producer] = Producer
    ) -> None:
        self.topic = topic
        self.instance = instance
        self._producer = producer_factory(
            {
                "bootstrap.servers": brokers,
                "client.id": f"{instance}-persist",
                "linger.ms": 5,
                "compression.type": "snappy",
                "acks": "all",
                "enable.idempotence": True,
                "log_level": 3,
            }
        )
        self.messages_published = 0
        self.chunks_published = 0
        self.errors = 0

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.errors += 1
            log.error("persist message not delivered: %s", err)

    def notify(self, saved: Iterable[tuple[str, int, int]]) -> None:
        """`saved` holds (amkey, t0, data partition) of chunks just written."""
        by_partition: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for amkey, t0, partition in saved:
            by_partition[partition].append((amkey, t0))
        for partition, chunks in by_partition.items():
            for i in range(0, len(chunks), _MAX_CHUNKS_PER_MESSAGE):
                part = chunks[i : i + _MAX_CHUNKS_PER_MESSAGE]
                payload = encode_persist(self.instance, part)
                while True:
                    try:
                        self._producer.produce(
                            self.topic, payload, partition=partition, on_delivery=self._delivered
                        )
                        break
                    except BufferError:  # local queue full: let it drain
                        self._producer.poll(0.1)
                self.messages_published += 1
                self.chunks_published += len(part)
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait until every message is acknowledged; returns how many are still outstanding."""
        return self._producer.flush(timeout)


class PendingMarks:
    """Saved marks for series that are not in memory yet, applied when they appear."""

    def __init__(self) -> None:
        self._by_id: dict[str, dict[str, int]] = {}

    def add(self, amkey: str, t0: int) -> None:
        series_id = amkey.split("_", 1)[0]
        marks = self._by_id.setdefault(series_id, {})
        if t0 > marks.get(amkey, -1):
            marks[amkey] = t0

    def pop(self, series_ids: Iterable[str]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for sid in series_ids:
            marks = self._by_id.pop(sid, None)
            if marks:
                out.extend(marks.items())
        return out

    def __len__(self) -> int:
        return len(self._by_id)


class PersistListener:
    """Consumes persist messages and hands (amkey, t0) pairs to `apply`."""

    def __init__(
        self,
        brokers: str,
        topic: str,
        partitions: Sequence[int] | None,
        offset: str,
        apply: Callable[[list[tuple[str, int]]], None],
        instance: str = "mt",
        consumer_factory: Callable[[dict], Consumer] = Consumer,
    ) -> None:
        self.topic = topic
        self.apply = apply
        self.instance = instance
        # other instances that announced writes: name -> partition -> monotonic time last seen
        self.writers: dict[str, dict[int, float]] = {}
        self.foreign_chunks = 0
        self._consumer = consumer_factory(consumer_config(brokers, client_id=f"{instance}-persist-in"))
        md = self._consumer.list_topics(topic, timeout=10)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise RuntimeError(f"persist topic {topic!r} is not available: {tmd.error if tmd else 'missing'}")
        all_parts = sorted(tmd.partitions)
        self.partitions = all_parts if partitions is None else [p for p in partitions if p in tmd.partitions]
        missing = [] if partitions is None else [p for p in partitions if p not in tmd.partitions]
        if missing:
            log.warning(
                "persist topic %s lacks partitions %s: notifications for them cannot be read", topic, missing
            )
        tps = start_offsets(self._consumer, [topic], self.partitions, offset)
        self._start = {tp.partition: tp.offset for tp in tps}
        self._consumer.assign(tps)
        self.messages_received = 0
        self.chunks_received = 0
        self.decode_errors = 0
        self.backlog_seconds: float | None = None

    def poll(self, timeout: float = 0.0, max_messages: int = 5000) -> int:
        """Apply what is available; returns the number of messages read."""
        msgs = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        saved: list[tuple[str, int]] = []
        n = 0
        now = time.monotonic()
        for m in msgs:
            if m.error() is not None:
                continue
            n += 1
            try:
                instance, chunks = decode_persist(m.value())
            except DecodeError as e:
                self.decode_errors += 1
                log.warning("bad persist message at %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), e)
                continue
            saved.extend(chunks)
            if instance != self.instance:
                seen = self.writers.setdefault(instance, {})
                seen[m.partition()] = now
                self.foreign_chunks += len(chunks)
        self.messages_received += n
        self.chunks_received += len(saved)
        if saved:
            self.apply(saved)
        return n

    def recent_writers(self, partitions: Sequence[int], within: float) -> dict[str, tuple[list[int], float]]:
        """Other instances that announced writes on these partitions within `within` seconds:
        name -> (partitions, seconds since the last announcement)."""
        now = time.monotonic()
        mine = set(partitions)
        out = {}
        for name, seen in self.writers.items():
            parts = sorted(p for p, t in seen.items() if p in mine and now - t <= within)
            if parts:
                out[name] = (parts, now - max(seen[p] for p in parts))
        return out

    def consume_backlog(self, timeout: float) -> bool:
        """Read up to the high watermarks seen now; True when caught up, False after `timeout` (with a warning)."""
        t = time.monotonic()
        targets: dict[int, int] = {}
        for p in self.partitions:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            targets[p] = high
        while True:
            self.poll(timeout=0.2)
            positions = self._consumer.position([TopicPartition(self.topic, p) for p in self.partitions])
            behind = []
            for tp in positions:
                target = targets[tp.partition]
                pos = tp.offset
                if pos < 0:  # nothing read yet: behind only if there is something from the start offset on
                    start = self._start[tp.partition]
                    if start == OFFSET_END:
                        continue
                    if start == OFFSET_BEGINNING:
                        start, _ = self._consumer.get_watermark_offsets(tp, timeout=5)
                    if target > start:
                        behind.append(tp.partition)
                elif pos < target:
                    behind.append(tp.partition)
            if not behind:
                self.backlog_seconds = time.monotonic() - t
                log.info(
                    "persist backlog applied in %.2fs (%d messages)",
                    self.backlog_seconds,
                    self.messages_received,
                )
                return True
            if time.monotonic() - t > timeout:
                self.backlog_seconds = time.monotonic() - t
                log.warning(
                    "persist backlog not fully read after %.0fs (partitions %s behind); starting anyway",
                    timeout,
                    behind,
                )
                return False

    def close(self) -> None:
        try:
            self._consumer.close()
        except Exception:  # noqa: BLE001
            pass
