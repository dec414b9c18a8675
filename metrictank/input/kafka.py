"""Kafka consumption for the data topics (`[kafka-mdm-in]`) and shared Kafka helpers.

Like Metrictank, an instance assigns its partitions itself: no consumer group, nothing committed, every instance
reads the same partitions. Messages are taken in large batches because the cost that matters in Python is per call
and per object: by default through `batch_consumer` (librdkafka's batch call in C, the payloads handed over as
one buffer, read ahead by a thread of its own), else through confluent_kafka's `consume(num_messages=N)`;
librdkafka is tuned so that its prefetch queue is always full when we ask.

Per partition the consumer keeps what safe promotion needs: the first offset it consumed and that message's
timestamp (a chunk that began before it was not seen from its start), and the lag samples from which Metrictank's
priority is derived.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from metrictank.config import parse_duration
from metrictank.input.batch_consumer import BatchConsumer, PackedMessages, Prefetcher, available
from metrictank.stats import Stats

log = logging.getLogger(__name__)

__all__ = [
    "consumer_config",
    "parse_partitions",
    "resolve_partitions",
    "start_offsets",
    "PartitionTracker",
    "LagMonitor",
    "DataConsumer",
    "Batch",
    "BrokerProbe",
]

_msg_value = Message.value
_msg_partition = Message.partition
_msg_offset = Message.offset
_msg_error = Message.error


def consumer_config(
    brokers: str, extra: str = "", fetch_max_wait: float = 0.1, client_id: str = "mt"
) -> dict:
    """librdkafka settings for throughput-oriented, group-less consumption.

    Fetches are kept small (4 MB per response, 512 KB per partition) and so is the prefetch queue: librdkafka
    checks its queue limits only between fetches, and one 64 MB response of small messages expands to several
    hundred MB of queued messages (~150 B of bookkeeping each), which stayed in the process's RSS. Small
    fetches also pipeline better: the fetcher thread decompresses one while the main thread consumes the
    previous one. `fetch.queue.backoff.ms` defaults to 1 s in recent librdkafka: when the prefetch queue is full
    the fetcher sleeps that long, which caps a fast consumer at the queue size per second; keep it short.
    """
    cfg = {
        "bootstrap.servers": brokers,
        "group.id": f"{client_id}-nogroup",  # required by the client; never joined (we assign), never committed
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": max(1, int(fetch_max_wait * 1000)),
        "fetch.min.bytes": 1,
        "fetch.max.bytes": 4 * 1024 * 1024,
        "max.partition.fetch.bytes": 512 * 1024,
        "queued.min.messages": 40000,
        "queued.max.messages.kbytes": 4 * 1024,
        "fetch.queue.backoff.ms": 10,
        "log_level": 3,
    }
    for item in filter(None, (s.strip() for s in extra.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"kafka option {item!r} is not key=value")
        cfg[key.strip()] = value.strip()
    return cfg


def parse_partitions(spec: str) -> list[int] | None:
    """`*` means every partition (None); otherwise a sorted list of partition numbers."""
    spec = spec.strip()
    if spec == "*":
        return None
    return sorted({int(p) for p in spec.split(",") if p.strip()})


def resolve_partitions(
    consumer: Consumer, topics: Sequence[str], wanted: list[int] | None, timeout: float = 10.0
) -> list[int]:
    """The partitions to consume, checked against the broker; all data topics must agree on the count."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while True:
        md = consumer.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        missing = [
            t
            for t in topics
            if t not in md.topics or md.topics[t].error is not None or not md.topics[t].partitions
        ]
        if not missing:
            counts = {t: len(md.topics[t].partitions) for t in topics}
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"kafka topics not available: {', '.join(missing)}")
        time.sleep(0.2)
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"data topics have different partition counts: {counts}")
    n = next(iter(counts.values()))
    if wanted is None:
        return list(range(n))
    bad = [p for p in wanted if p >= n]
    if bad:
        raise RuntimeError(f"kafka-mdm-in.partitions: {bad} do not exist (topics have {n} partitions)")
    return wanted


def start_offsets(
    consumer: Consumer,
    topics: Sequence[str],
    partitions: Sequence[int],
    offset: str,
    now: float | None = None,
    times: dict[int, float] | None = None,
) -> list[TopicPartition]:
    """TopicPartitions positioned at `oldest`, `newest` or `now - duration` (falling back to oldest); with
    `times` (offset auto: a warm start), each partition at the first message at or after its own time."""
    if times is None and offset == "oldest":
        return [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in partitions]
    if times is None and offset == "newest":
        return [TopicPartition(t, p, OFFSET_END) for t in topics for p in partitions]
    if times is None:
        ago = parse_duration(offset)
        at = (time.time() if now is None else now) - ago
        times = {p: at for p in partitions}
    query = [TopicPartition(t, p, int(times[p] * 1000)) for t in topics for p in partitions]
    try:
        found = consumer.offsets_for_times(query, timeout=10)
    except Exception as e:  # noqa: BLE001 - any lookup failure falls back, as Metrictank does
        log.warning("offset lookup for %s failed (%s); starting from oldest", offset, e)
        return [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in partitions]
    out = []
    for tp in found:
        if tp.error is not None:
            log.warning(
                "offset lookup for %s[%d] failed (%s); starting from oldest", tp.topic, tp.partition, tp.error
            )
            out.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        elif tp.offset < 0:  # no message at or after the time: start at the end
            out.append(TopicPartition(tp.topic, tp.partition, OFFSET_END))
        else:
            out.append(TopicPartition(tp.topic, tp.partition, tp.offset))
    return out


@dataclass
class PartitionTracker:
    """Per partition: the first offset consumed (and its message time) and the newest offset consumed."""

    partitions: list[int]
    first_offset: dict[int, int] = field(default_factory=dict)
    first_ts: dict[int, float] = field(default_factory=dict)  # seconds; message timestamp of first_offset
    log_start: dict[int, int] = field(default_factory=dict)  # low watermark when consumption began
    last_offset: dict[int, int] = field(default_factory=dict)

    @property
    def all_started(self) -> bool:
        return len(self.first_offset) == len(self.partitions)

    def observe_first(self, msgs: Sequence[Message]) -> list[int]:
        """Record first offsets for partitions seen for the first time; returns those partitions."""
        new = []
        for m in msgs:
            p = m.partition()
            if p not in self.first_offset and m.error() is None:
                self.first_offset[p] = m.offset()
                _, ts_ms = m.timestamp()
                self.first_ts[p] = ts_ms / 1000.0 if ts_ms > 0 else time.time()
                new.append(p)
                if self.all_started:
                    break
        return new

    def observe_first_packed(self, b: PackedMessages) -> list[int]:
        """`observe_first` for a packed batch (numpy over its partition column)."""
        parts, first = np.unique(b.partitions, return_index=True)
        new = []
        for p, i in zip(parts.tolist(), first.tolist(), strict=True):
            if p not in self.first_offset:
                self.first_offset[p] = int(b.offsets[i])
                ts_ms = int(b.timestamps[i])
                self.first_ts[p] = ts_ms / 1000.0 if ts_ms > 0 else time.time()
                new.append(p)
        return new

    def from_log_start(self, p: int) -> bool:
        """Consumption of p began at the very start of its log: nothing was missed."""
        return self.first_offset.get(p, -1) == 0 or (
            p in self.log_start and self.first_offset.get(p, -1) == self.log_start[p] == 0
        )


class LagMonitor:
    """Metrictank's priority: roughly the seconds of Kafka lag, from the last 10 one-second samples.

    Per partition lag = min over the samples of (high watermark - read offset); rate = growth of the high
    watermark per second over the samples; priority = lag / rate, lag itself when the rate is 0, and 10000
    while nothing is known.
    """

    UNKNOWN = 10000

    def __init__(self, partitions: Sequence[int], window: int = 10) -> None:
        self.partitions = list(partitions)
        self._samples: dict[int, deque[tuple[float, int, int]]] = {
            p: deque(maxlen=window) for p in self.partitions
        }

    def sample(self, p: int, now: float, high: int, read: int) -> None:
        """`read` is the next offset to read (last consumed + 1)."""
        self._samples[p].append((now, high, read))

    def samples(self) -> dict[int, list[tuple[float, int, int]]]:
        """The recent samples per partition: (time, high watermark, next offset to read)."""
        return {p: list(s) for p, s in self._samples.items()}

    def lag(self, p: int) -> int | None:
        s = self._samples.get(p)
        if not s:
            return None
        return max(0, min(h - r for _, h, r in s))

    def partition_priority(self, p: int) -> int:
        s = self._samples.get(p)
        if not s:
            return self.UNKNOWN
        lag = self.lag(p) or 0
        if len(s) < 2:
            return lag
        dt = s[-1][0] - s[0][0]
        rate = (s[-1][1] - s[0][1]) / dt if dt > 0 else 0.0
        if rate <= 0:
            return lag
        return int(lag / rate)

    def priority(self) -> int:
        if not self.partitions:
            return 0
        return max(self.partition_priority(p) for p in self.partitions)


@dataclass
class Batch:
    """One consume() call's worth of data messages: their payloads and partitions, in arrival order.

    `values` is a list of bytes (confluent_kafka's consume) or a PackedMessages (the batch consumer), which the
    decoder takes whole; `partitions` is then its int32 partition column."""

    values: Sequence[bytes]
    partitions: Sequence[int]
    errors: int = 0
    nbytes: int = 0  # payload bytes (estimated from a sample of the messages for a list)

    def partition_of(self, i: int) -> int:
        return int(self.partitions[i])

    @property
    def partition_source(self) -> Callable[[int], int] | np.ndarray:
        """What `IngestHandler.process` takes: the array of a packed batch as it is, else `partition_of`."""
        return self.partitions if isinstance(self.partitions, np.ndarray) else self.partition_of


class BrokerProbe:
    """Whether the data brokers answer, measured off the main loop.

    While data flows the brokers evidently answer. When nothing arrives, the cached watermarks and positions
    that lag sampling reads stay as they were, so an unreachable broker looks exactly like an idle topic with
    zero lag, and the node would stay ready (priority 0) while it misses everything. The probe asks the broker
    for the topic's metadata every `interval` seconds from its own thread (a blocking call with a timeout,
    so never on the main loop), and `unreachable_for` reports how long neither a fetch nor a probe succeeded.
    """

    def __init__(
        self,
        ask: Callable[[float], object],
        interval: float = 2.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.last_ok = clock()
        self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe()

    def probe(self) -> bool:
        try:
            self._ask(self.timeout)
        except Exception as e:  # noqa: BLE001 - any failure means the broker did not answer
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            return False
        self.last_ok = self.clock()
        return True

    def data_arrived(self) -> None:
        self.last_ok = self.clock()

    def unreachable_for(self) -> float:
        """Seconds since the brokers last answered (a fetch with data or a probe)."""
        return max(0.0, self.clock() - self.last_ok)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + self.interval + 1)


def start_position(start: int, low: int, high: int) -> int:
    """The offset a partition assigned at `start` (an offset, OFFSET_BEGINNING or OFFSET_END) is read from,
    given its watermarks."""
    return low if start == OFFSET_BEGINNING else high if start == OFFSET_END else start


def restart_stalled_fetchers(
    consumer: Consumer,
    tps: list[TopicPartition],
    first_to_read: Callable[[str, int, int, int], int],
    before: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Re-assign `tps` at their current positions when the broker holds messages beyond them; returns the
    partitions that were behind (none: nothing done, also when the broker does not answer).

    librdkafka has been seen to stop fetching for an assigned partition while the broker holds data for it (the
    consumer then waits in consume() for ever, here after a broker was frozen for a while). Re-assigning at the
    current positions restarts the fetchers without losing or repeating anything. `first_to_read(topic,
    partition, low, high)` gives the position of a partition that nothing was consumed from yet.
    """
    try:
        positions = consumer.position(tps)
    except Exception:  # noqa: BLE001
        return []
    restart, behind = [], []
    for tp in positions:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=2)
        except Exception:  # noqa: BLE001
            return []
        pos = tp.offset
        if pos < 0:
            pos = first_to_read(tp.topic, tp.partition, low, high)
        if high > pos:
            behind.append(tp.partition)
        restart.append(TopicPartition(tp.topic, tp.partition, pos))
    if behind:
        if before is not None:
            before(behind)  # logged first: should the client hang in what follows, the log says where
        consumer.resume(restart)  # a paused partition stays paused across any re-assignment
        consumer.assign(restart)
    return behind


class FetchStallWatch:
    """The fetch-stall watchdog's state and timing, for any consumer that owns a librdkafka Consumer: when
    nothing arrived for `after` seconds (checked at most that often), `restart_stalled_fetchers`, counted in
    `fetch_restarts`. The owner sets `_last_data` whenever messages arrive."""

    _last_data: float
    _last_stall_check: float = 0.0
    fetch_restarts: int = 0

    def _check_stall(
        self,
        consumer: Consumer,
        tps: list[TopicPartition],
        first_to_read: Callable[[str, int, int, int], int],
        after: float,
        now: float,
        what: str,
    ) -> bool:
        if now - self._last_data < after or now - self._last_stall_check < after:
            return False
        self._last_stall_check = now
        quiet = now - self._last_data

        def warn(behind: list[int]) -> None:
            log.warning(
                "%s: no messages for %.0fs although partitions %s have unread ones; restarting their fetchers",
                what,
                quiet,
                behind,
            )

        if not restart_stalled_fetchers(consumer, tps, first_to_read, warn):
            return False
        self.fetch_restarts += 1
        self._last_data = now
        return True


#: default read-ahead of the batch consumer (`[kafka-mdm-in] read-ahead-mb`)
READ_AHEAD_BYTES = 64 << 20


class DataConsumer(FetchStallWatch):
    """Consumes the data topics in large batches; owns partition tracking and lag sampling."""

    def __init__(
        self,
        brokers: str,
        topics: Sequence[str],
        partitions: list[int] | None,
        offset: str,
        batch_size: int = 20000,
        fetch_max_wait: float = 0.1,
        extra_options: str = "",
        client_id: str = "mt",
        consumer_factory: Callable[[dict], Consumer] | None = None,
        batch_bytes: int = 4 << 20,
        batch_consumer: bool = True,
        read_ahead_bytes: int = READ_AHEAD_BYTES,
    ) -> None:
        self.topics = list(topics)
        self.read_ahead_bytes = read_ahead_bytes
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self._avg_size = 0.0  # payload bytes per message, estimated from the previous batch
        cfg = consumer_config(brokers, extra_options, fetch_max_wait, client_id)
        # whole-batch consumption unless told otherwise, a test injects a client, or the extension is missing
        self.packed = consumer_factory is None and batch_consumer and available() is not None
        self._consumer = BatchConsumer(cfg) if self.packed else (consumer_factory or Consumer)(cfg)
        self._reader: Prefetcher | None = None
        # packed: the next offset per partition of what was handed to the caller (the reader reads ahead, so
        # the client's position counts batches still queued; lag must not). None: ask the client.
        self._handed: dict[int, int] | None = {} if self.packed else None
        self.client_errors = 0  # errors the batch consumer's client reported outside messages
        self.partitions = resolve_partitions(self._consumer, self.topics, partitions)
        # the whole topic's partition count: a cluster query must know which partitions other nodes serve
        md = self._consumer.list_topics(self.topics[0], timeout=10)
        self.total_partitions = len(md.topics[self.topics[0]].partitions)
        self.tracker = PartitionTracker(self.partitions)
        self.lag = LagMonitor(self.partitions)
        self.offset = offset
        self.transport_errors = 0
        self._last_sample = 0.0
        self._assigned = False
        self._start_offsets: dict[tuple[str, int], int] = {}
        self._last_data = time.monotonic()
        # a client of its own: metadata calls on the consumer's handle wait while another thread is in consume()
        self._probe_client = AdminClient(
            {"bootstrap.servers": brokers, "client.id": f"{client_id}-probe", "log_level": 0}
        )
        self.probe = BrokerProbe(lambda t: self._probe_client.list_topics(self.topics[0], timeout=t))

    def start(self, start_times: dict[int, float] | None = None) -> None:
        """Assign the partitions at their start offsets (called after the persist backlog is applied);
        `start_times` (unix seconds per partition) overrides `offset` (a warm start computes them)."""
        tps = start_offsets(self._consumer, self.topics, self.partitions, self.offset, times=start_times)
        for p in self.partitions:
            try:
                low, _high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topics[0], p), timeout=5
                )
                self.tracker.log_start[p] = low
            except Exception:  # noqa: BLE001 - only informative
                pass
        self._consumer.assign(tps)
        self._start_offsets = {(tp.topic, tp.partition): tp.offset for tp in tps}
        self._last_data = time.monotonic()
        self._assigned = True
        if self.packed:
            self._reader = Prefetcher(self._consumer, self._batch_messages(), max_bytes=self.read_ahead_bytes)
        self.probe.start()
        log.info(
            "consuming %s partitions %s from %s",
            ",".join(self.topics),
            self.partitions,
            {tp.partition: tp.offset for tp in tps} if start_times is not None else self.offset,
        )

    def poll(self, timeout: float = 0.1) -> Batch:
        """One batch of up to batch_size messages (possibly empty; fewer when messages are large).

        The client's Message objects are GC-tracked: thousands of them per call set off young-generation
        collections that traverse them (and promote them, so older collections traverse them again), which cost
        a quarter of the client's own time per message. Collection is therefore paused while they exist: the
        payloads and partitions are taken out and the Messages freed before it resumes, so they are never
        traversed. While paused (at most `timeout`, the GIL being released in consume()), other threads'
        allocations are only counted; the collection they are due happens right after.

        With the batch consumer there are no Message objects: the reader thread has the next batch ready as a
        few flat buffers.
        """
        if self._reader is not None:
            return self._poll_packed(timeout)
        if self.packed:  # not started: nothing is assigned yet
            time.sleep(timeout)
            return Batch(values=[], partitions=[])
        gc_was_enabled = gc.isenabled()
        if gc_was_enabled:
            gc.disable()
        try:
            msgs = self._consumer.consume(num_messages=self._batch_messages(), timeout=timeout)
            values = list(map(_msg_value, msgs))
            errors = 0
            if None in values:  # error events carry no value; they are rare, so scan only then
                good = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        good.append(m)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        errors += 1
                        log.warning("kafka consume error: %s", err)
                msgs = good
                values = [v if v is not None else b"" for v in map(_msg_value, msgs)]
            partitions = list(map(_msg_partition, msgs))
            if msgs and not self.tracker.all_started:
                self.tracker.observe_first(msgs)
            del msgs
        finally:
            if gc_was_enabled:
                gc.enable()
        self.transport_errors += errors
        if values:
            self._last_data = time.monotonic()
            self.probe.data_arrived()
            sample = values[:: max(1, len(values) // 8)]
            self._avg_size = sum(map(len, sample)) / len(sample)
        nbytes = int(len(values) * self._avg_size)
        return Batch(values=values, partitions=partitions, errors=errors, nbytes=nbytes)

    def _poll_packed(self, timeout: float) -> Batch:
        reader = self._reader
        reader.size = self._batch_messages()
        b = reader.get(timeout)
        if b.n_errors:
            self.transport_errors += b.n_errors
            for code, p, off, text in b.errors[:3]:
                log.warning("kafka consume error on partition %d at %d: %s (code %d)", p, off, text, code)
        if len(b):
            self._last_data = time.monotonic()
            self.probe.data_arrived()
            self._avg_size = len(b.payloads) / len(b)
            if not self.tracker.all_started:
                self.tracker.observe_first_packed(b)
            if b.last is None:
                self._handed = None
            elif self._handed is not None:
                for p, off in b.last:
                    self._handed[p] = off + 1
        return Batch(values=b, partitions=b.partitions, errors=b.n_errors, nbytes=len(b.payloads))

    def _batch_messages(self) -> int:
        """batch_size messages, or fewer when they are big (MetricPointArrays): at most about batch_bytes of
        payload per batch, because a batch's memory is several times its payload (the payload list, its
        joined copy, the decoded points), and RSS keeps its peak; cache-sized batches are also faster."""
        if self._avg_size <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, int(self.batch_bytes / self._avg_size)))

    def sample_lag(self, now: float | None = None, every: float = 1.0) -> None:
        """Take one lag sample per partition at most once a second (cheap: cached watermarks, positions)."""
        now = time.monotonic() if now is None else now
        if not self._assigned or now - self._last_sample < every:
            return
        self._last_sample = now
        if self.packed:
            self._client_errors()
        tps = [TopicPartition(self.topics[0], p) for p in self.partitions]
        if self._handed is not None:
            positions = [
                TopicPartition(tp.topic, tp.partition, self._handed.get(tp.partition, -1001)) for tp in tps
            ]
        else:
            try:
                positions = self._consumer.position(tps)
            except Exception:  # noqa: BLE001
                return
        for tp in positions:
            try:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except Exception:  # noqa: BLE001
                continue
            if high is None or high < 0:
                continue
            read = tp.offset
            if read < 0:  # nothing consumed yet
                if low is None or low < 0:  # the cached low watermark is not always known
                    low = self.tracker.log_start.get(tp.partition, 0)
                read = self._first_to_read(tp.topic, tp.partition, low, high)
            self.tracker.last_offset[tp.partition] = read - 1
            self.lag.sample(tp.partition, now, high, read)

    def _client_errors(self) -> None:
        """The batch consumer's client errors (all brokers down, transport) are counted and logged here, once
        a second, since its error callback cannot call into Python."""
        total, recent = self._consumer.client_errors()
        self.client_errors = total
        for code, text in recent[:3]:
            log.warning("kafka client error: %s (code %d)", text, code)

    def _first_to_read(self, topic: str, partition: int, low: int, high: int) -> int:
        """Where a partition that nothing was consumed from yet is read from: where consumption was asked to
        start. Not the high watermark: librdkafka knows a partition's high watermark from its fetches before it
        hands over the first message, and a backlog not yet handed over is not read (taking it as read made a
        node report itself caught up, and ready, with a whole partition still to replay)."""
        return start_position(self._start_offsets.get((topic, partition), OFFSET_END), low, high)

    def check_stall(self, after: float = 10.0, now: float | None = None) -> bool:
        """Restart fetching when nothing arrived for `after` seconds although the broker has unread messages
        (see `restart_stalled_fetchers`). Costs a watermark query per partition every `after` seconds, and only
        while no data arrives."""
        now = time.monotonic() if now is None else now
        if not self._assigned:
            return False
        tps = [TopicPartition(t, p) for t in self.topics for p in self.partitions]
        return self._check_stall(self._consumer, tps, self._first_to_read, after, now, ",".join(self.topics))

    def watermarks(self, timeout: float = 5.0) -> dict[int, tuple[int, int]]:
        """Low and high watermarks per partition from the broker."""
        out = {}
        for p in self.partitions:
            out[p] = self._consumer.get_watermark_offsets(TopicPartition(self.topics[0], p), timeout=timeout)
        return out

    def register_stats(self, stats: Stats) -> None:
        """Metrictank's per-partition `input.kafka-mdm.partition.*` figures, and the broker's reachability."""
        stats.gauge(
            "input.kafka-mdm.partition.lag",
            "messages behind the high watermark",
            lambda: [((p,), self.lag.lag(p) or 0) for p in self.partitions],
            ("partition",),
        )
        stats.gauge(
            "input.kafka-mdm.partition.priority",
            "per-partition priority",
            lambda: [((p,), self.lag.partition_priority(p)) for p in self.partitions],
            ("partition",),
        )
        stats.gauge(
            "input.kafka-mdm.partition.offset",
            "last offset consumed",
            lambda: [((p,), o) for p, o in list(self.tracker.last_offset.items())],
            ("partition",),
        )
        stats.counter(
            "input.kafka-mdm.fetch_restarts",
            "times fetching was restarted because no data arrived although the broker had some",
            lambda: self.fetch_restarts,
        )
        stats.counter(
            "input.kafka-mdm.transport_errors",
            "consume errors reported by the client",
            lambda: self.transport_errors,
        )
        stats.counter(
            "input.kafka-mdm.reader_errors",
            "batch consumer: consume calls of the reader thread that failed (retried after 1 s)",
            lambda: self._reader.errors if self._reader is not None else 0,
        )
        stats.gauge(
            "input.kafka-mdm.read_ahead_bytes",
            "batch consumer: bytes of batches read ahead and not ingested yet ([kafka-mdm-in] read-ahead-mb)",
            lambda: self._reader.queued_bytes if self._reader is not None else 0,
        )
        stats.gauge(
            "input.kafka-mdm.read_ahead_batches",
            "batch consumer: batches read ahead and not ingested yet",
            lambda: self._reader.queued if self._reader is not None else 0,
        )
        stats.counter(
            "input.kafka-mdm.client_errors",
            "errors the client reported outside messages (brokers down, transport), batch consumer only",
            lambda: self.client_errors,
        )
        stats.gauge(
            "input.kafka-mdm.broker_unreachable_seconds",
            "seconds since the data brokers last answered (a fetch with data or a metadata probe)",
            self.probe.unreachable_for,
        )
        stats.counter(
            "input.kafka-mdm.broker_probe_failures",
            "metadata probes the brokers did not answer",
            lambda: self.probe.failures,
        )

    def close(self) -> None:
        self.probe.stop()
        if self._reader is not None and not self._reader.stop():
            # the handle cannot be freed under the reader's call; the process is ending anyway
            log.warning("the kafka reader thread did not stop; leaving the consumer open")
            return
        try:
            self._consumer.close()
        except Exception:  # noqa: BLE001
            pass
