"""Whole-batch consumption of the data topics: a consume() that returns flat buffers, not a Message per point.

confluent_kafka's `consume()` builds one Python `Message` per Kafka message with the GIL held, and the caller
then reads and frees each: at 100k+ series that was about 60% of the main thread (docs/benchmarks.md). The C
extension `_rdbatch` runs librdkafka's own batch call, copies the payloads into one buffer and frees the
messages with the GIL released; Python sees a handful of objects per batch. A reader thread (`Prefetcher`) reads
ahead (`[kafka-mdm-in] read-ahead-mb`), so that work runs on the second core while the main loop ingests earlier batches.

librdkafka is the copy confluent_kafka loaded (its functions are looked up through confluent_kafka's extension);
topic metadata and time-based offset lookups, which are neither hot nor shared with consumption, stay on a
confluent_kafka client. `[kafka-mdm-in] batch-consumer = false` goes back to confluent_kafka's consume().
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)

__all__ = ["available", "PackedMessages", "BatchConsumer", "Prefetcher", "batch_bytes"]

_loaded: str | None = None
_load_error: str | None = None


def available() -> str | None:
    """librdkafka's version when whole-batch consumption can be used here, else None (the reason is logged
    once): the extension was not built, or librdkafka could not be found through confluent_kafka."""
    global _loaded, _load_error
    if _loaded is not None or _load_error is not None:
        return _loaded
    try:
        from confluent_kafka import cimpl

        from metrictank.input import _rdbatch

        _loaded = _rdbatch.load(cimpl.__file__)
    except (ImportError, OSError, AttributeError) as e:
        _load_error = f"{type(e).__name__}: {e}"
        log.warning("whole-batch Kafka consumption unavailable (%s); using confluent_kafka's consume()", e)
    return _loaded


@dataclass(slots=True)
class PackedMessages:
    """One batch of data messages as flat arrays, in arrival order.

    `payloads` holds every message's value back to back (a tombstone is empty); message i is
    `payloads[starts[i] : starts[i] + lengths[i]]`. A Sequence of bytes as far as the decoder is concerned
    (`len`, indexing), without a Python object per message until one is asked for.
    """

    payloads: bytes
    lengths: np.ndarray  # int32
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    timestamps: np.ndarray  # int64, ms; -1 when unknown
    n_errors: int = 0
    errors: tuple[tuple[int, int, int, str], ...] = ()  # (code, partition, offset, text), at most 16
    # (partition, last offset in this batch) per partition present; None when too many partitions to keep
    last: list[tuple[int, int]] | None = None
    _starts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            s = np.zeros(len(self.lengths), np.int64)
            np.cumsum(self.lengths[:-1], out=s[1:])
            self._starts = s
        return self._starts

    def __getitem__(self, i: int) -> bytes:
        s = int(self.starts[i])
        return self.payloads[s : s + int(self.lengths[i])]

    def tolist(self) -> list[bytes]:
        """One bytes object per message (for the rare batches the vectorised decoder does not take whole)."""
        p, ends = self.payloads, (self.starts + self.lengths).tolist()
        return [p[s:e] for s, e in zip(self.starts.tolist(), ends, strict=True)]

    @classmethod
    def empty(cls) -> PackedMessages:
        e32, e64 = np.empty(0, np.int32), np.empty(0, np.int64)
        return cls(b"", e32, e32, e64, e64, last=[])


def batch_bytes(b: PackedMessages) -> int:
    """Memory a queued batch holds: its payloads and its per-message arrays."""
    return len(b.payloads) + b.lengths.nbytes + b.partitions.nbytes + b.offsets.nbytes + b.timestamps.nbytes


class BatchConsumer:
    """The subset of confluent_kafka.Consumer that DataConsumer and the fetch-stall watchdog use, over one
    `_rdbatch` handle, plus `consume_packed`. Metadata and offsets_for_times go to a confluent_kafka
    Consumer of its own (never assigned, so it fetches nothing)."""

    def __init__(self, config: dict) -> None:
        if available() is None:
            raise RuntimeError(f"whole-batch consumption unavailable: {_load_error}")
        from metrictank.input import _rdbatch

        self._meta = Consumer({**config, "client.id": f"{config.get('client.id', 'mt')}-meta"})
        self._bc = _rdbatch.BatchConsumer(config)

    # -- what stays on confluent_kafka
    def list_topics(self, *args, **kwargs):
        return self._meta.list_topics(*args, **kwargs)

    def offsets_for_times(self, *args, **kwargs):
        return self._meta.offsets_for_times(*args, **kwargs)

    # -- the consuming handle
    def assign(self, tps: Sequence[TopicPartition]) -> None:
        self._bc.assign([(tp.topic, tp.partition, tp.offset) for tp in tps])

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        self._bc.resume([(tp.topic, tp.partition) for tp in tps])

    def position(self, tps: Sequence[TopicPartition]) -> list[TopicPartition]:
        offs = self._bc.position([(tp.topic, tp.partition) for tp in tps])
        return [TopicPartition(tp.topic, tp.partition, o) for tp, o in zip(tps, offs, strict=True)]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if cached:
            return self._bc.watermarks(tp.topic, tp.partition, -1)
        ms = 10_000 if timeout is None else max(0, int(timeout * 1000))
        return self._bc.watermarks(tp.topic, tp.partition, ms)

    def consume_packed(self, max_messages: int, timeout: float) -> PackedMessages:
        payloads, lens, parts, offs, ts, n_err, errs, last = self._bc.consume(
            max(1, int(max_messages)), max(0, int(timeout * 1000))
        )
        return PackedMessages(
            payloads,
            np.frombuffer(lens, np.int32),
            np.frombuffer(parts, np.int32),
            np.frombuffer(offs, np.int64),
            np.frombuffer(ts, np.int64),
            n_err,
            tuple(errs),
            last,
        )

    def client_errors(self) -> tuple[int, list[tuple[int, str]]]:
        """Errors the client reported outside any message (all brokers down, transport): (total, recent)."""
        return self._bc.errors()

    def close(self) -> None:
        try:
            self._bc.close()
        finally:
            self._meta.close()


class Prefetcher:
    """Reads batches ahead from a thread of its own, so the copy and the release of the client's messages run
    (GIL released) while the main loop works on earlier batches.

    How far ahead: always `depth` batches, and more while what is queued stays under `max_bytes` (payloads
    plus the four per-message arrays, ~25 bytes a message). A burst the main loop is slow on (new series:
    a MetricData costs 20-50 times a point) then does not idle the second core: the reader keeps going, and
    the loop works through the queued batches at its own pace afterwards. The queue is bounded in memory,
    and nothing read ahead is committed, so nothing is lost when it is dropped.

    Only the reader thread calls `consume_packed`; `get` is for the one consuming thread. A failing call is
    counted in `errors`, logged (at most every 10 s) and retried a second later: ingest must not end on a
    client error, and a broker that stays away shows as one that does not answer (BrokerProbe). `stop`
    returns once the reader has left the handle, so the handle may be closed afterwards; batches read ahead
    are discarded then."""

    def __init__(
        self, consumer: BatchConsumer, size: int, depth: int = 2, timeout: float = 0.1, max_bytes: int = 0
    ) -> None:
        self._consumer = consumer
        self.size = size  # messages per batch; the owner may change it between batches
        self._timeout = timeout
        self._depth = max(1, depth)
        self.max_bytes = max(0, max_bytes)
        self._q: deque[tuple[PackedMessages, int]] = deque()
        self._cv = threading.Condition()
        self.queued_bytes = 0  # what the queued batches hold (see `batch_bytes`)
        self.errors = 0  # consume calls that failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-reader", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Batches read ahead and not taken yet."""
        return len(self._q)

    def _run(self) -> None:
        logged = 0.0
        while not self._stop.is_set():
            if not self._wait_for_room():
                return
            try:
                b = self._consumer.consume_packed(self.size, self._timeout)
            except Exception as e:  # noqa: BLE001 - counted and retried, see the class docstring
                self.errors += 1
                if time.monotonic() - logged > 10:
                    logged = time.monotonic()
                    log.error("kafka reader: consume failed (%s: %s); retrying", type(e).__name__, e)
                self._stop.wait(1.0)
                continue
            if len(b) or b.n_errors:
                nb = batch_bytes(b)
                with self._cv:
                    self._q.append((b, nb))
                    self.queued_bytes += nb
                    self._cv.notify_all()

    def _has_room(self) -> bool:
        return len(self._q) < self._depth or self.queued_bytes < self.max_bytes

    def _wait_for_room(self) -> bool:
        with self._cv:
            while not self._has_room():
                if self._stop.is_set():
                    return False
                self._cv.wait(0.1)
        return not self._stop.is_set()

    def get(self, timeout: float) -> PackedMessages:
        """The next batch, or an empty one after `timeout` seconds."""
        with self._cv:
            if not self._q and timeout > 0:
                self._cv.wait_for(lambda: bool(self._q), timeout)
            if not self._q:
                return PackedMessages.empty()
            b, nb = self._q.popleft()
            self.queued_bytes -= nb
            self._cv.notify_all()
            return b

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading; True once the reader thread has ended."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()
