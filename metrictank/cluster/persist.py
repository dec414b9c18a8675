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

The topic is input from the network: the listener validates every entry (AMKey, uint32 t0), skips bad ones
individually, counts drops by reason and never lets anything it read raise; a trust policy decides whose
announcements may raise saved marks. The notifier never blocks the store's writer thread for long during a
Kafka outage: what it cannot hand over is kept (coalesced) and sent later.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from metrictank.cluster.readwindow import SaveAge
from metrictank.input.kafka import FetchStallWatch, consumer_config, start_offsets, start_position
from metrictank.schema import DecodeError, decode_persist, encode_persist
from metrictank.schema.persist import decode_persist_items
from metrictank.stats import Stats, by_label

log = logging.getLogger(__name__)

__all__ = [
    "PersistNotifier",
    "PersistListener",
    "PendingMarks",
    "UNDECODABLE",
    "max_future_for",
    "parse_trust",
]

# Instance names other nodes announced: they come from the topic, so the tables keyed by them are bounded.
_MAX_WRITERS = 1000
# Keep one persist message well below Kafka's default 1 MB message limit.
_MAX_CHUNKS_PER_MESSAGE = 2000


class PersistNotifier:
    """Produces persist messages for saved chunks (called from the store's I/O thread).

    Never blocks its caller for long: when librdkafka's local queue is full (a Kafka outage), a message that
    cannot be handed over within `max_block` seconds is kept in a local backlog instead of being retried in a
    loop (that loop used to stall the store's writer thread, and with it every drain, for the whole outage).
    The backlog is coalesced per (partition, AMKey) to the highest t0 -- saved marks are high-water marks, so
    the newest announcement of a key carries everything the older ones did -- which bounds it by the number
    of series instead of the length of the outage. It goes out on the next `notify`, `pump` or `flush`.
    Messages whose delivery fails (e.g. `message.timeout.ms` expired) are put back into the backlog too.
    """

    def __init__(
        self,
        brokers: str,
        topic: str,
        instance: str,
        producer_factory: Callable[[dict], Producer] = Producer,
        *,
        max_block: float = 0.1,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self.topic = topic
        self.instance = instance
        self.max_block = max_block
        self.epoch = epoch  # this writer's primary lease epoch, carried in every message (0: none)
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
        self.messages_published = 0  # handed to the producer
        self.chunks_published = 0
        self.errors = 0  # delivery failures (their chunks are re-queued) and refused produce calls
        self.messages_deferred = 0  # messages kept in the backlog because the local queue was full
        self.messages_dropped = 0  # messages the producer refused outright (e.g. unknown partition)
        self._lock = threading.RLock()
        self._unsent: dict[int, dict[str, int]] = {}  # partition -> amkey -> highest t0 not yet handed over
        self._failed: deque[tuple[int, bytes]] = deque()  # (partition, payload) of failed deliveries

    def register_stats(self, stats: Stats) -> None:
        stats.counter(
            "cluster.notifier.kafka.messages-published",
            "persist messages sent",
            lambda: self.messages_published,
        )
        stats.counter(
            "cluster.notifier.kafka.delivery-errors",
            "persist messages the broker did not acknowledge (sent again)",
            lambda: self.errors,
        )
        stats.counter(
            "cluster.notifier.kafka.messages-deferred",
            "persist messages kept for later because the producer queue was full",
            lambda: self.messages_deferred,
        )
        stats.counter(
            "cluster.notifier.kafka.messages-dropped",
            "persist messages the producer refused outright",
            lambda: self.messages_dropped,
        )
        stats.gauge(
            "cluster.notifier.kafka.backlog-chunks",
            "saved chunks not announced yet (broker unreachable or producer queue full)",
            lambda: self.backlog_chunks,
        )

    def _delivered(self, err, msg) -> None:
        """librdkafka callback (inside poll/flush, any thread): a lost message goes back to the backlog."""
        if err is not None:
            self.errors += 1
            log.error("persist message not delivered (will be re-sent): %s", err)
            try:
                self._failed.append((msg.partition(), msg.value()))
            except Exception:  # noqa: BLE001 - a callback must not raise into librdkafka
                log.exception("persist message could not be re-queued")

    def notify(self, saved: Iterable[tuple[str, int, int]]) -> None:
        """`saved` holds (amkey, t0, data partition) of chunks just written."""
        by_partition: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for amkey, t0, partition in saved:
            by_partition[partition].append((amkey, t0))
        with self._lock:
            self._requeue_failed()
            if self._unsent:
                # already in trouble: no blocking; try the backlog once, then queue behind it
                self._pump_locked(time.monotonic())
            deadline = time.monotonic() + self.max_block
            for partition, chunks in by_partition.items():
                for i in range(0, len(chunks), _MAX_CHUNKS_PER_MESSAGE):
                    part = chunks[i : i + _MAX_CHUNKS_PER_MESSAGE]
                    if self._unsent or not self._produce(partition, part, deadline):
                        self.messages_deferred += 1
                        self._merge(partition, part)
        self._poll(0)

    def pump(self, max_block: float = 0.0) -> int:
        """Send what the backlog holds, blocking at most `max_block` seconds; returns the chunks still unsent.

        Call it periodically (the instance's main loop): without new saves nothing else retries the backlog.
        """
        if not self._unsent and not self._failed:
            self._poll(0)
            return 0
        # The main loop calls this: it must never wait for the store's thread (notify) or a demotion (flush)
        # that holds the lock; whoever holds it is sending the backlog anyway.
        if not self._lock.acquire(blocking=False):
            return self.backlog_chunks
        try:
            self._requeue_failed()
            self._pump_locked(time.monotonic() + max_block)
        finally:
            self._lock.release()
        self._poll(0)
        return self.backlog_chunks

    def flush(self, timeout: float = 10.0) -> int:
        """Send the backlog and wait until every message is acknowledged, for at most `timeout` seconds.

        Returns how many messages are still outstanding: in the producer, or unsent in the backlog.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._lock:  # in slices: notify (the store's writer) must not wait for the whole flush
                self._requeue_failed()
                self._pump_locked(min(deadline, time.monotonic() + self.max_block))
            left = max(0.0, deadline - time.monotonic())
            try:
                outstanding = self._producer.flush(min(left, 0.5))
            except Exception as e:  # noqa: BLE001
                log.warning("persist producer flush failed: %r", e)
                outstanding = len(self._producer)
            with self._lock:
                self._requeue_failed()
                unsent = self.backlog_messages
            if (outstanding == 0 and unsent == 0) or time.monotonic() >= deadline:
                return outstanding + unsent

    @property
    def backlog_chunks(self) -> int:
        """Saved marks waiting in the local backlog (not handed to the producer yet)."""
        return sum(len(m) for m in list(self._unsent.values()))

    @property
    def backlog_messages(self) -> int:
        """The backlog in messages, as `flush` counts it."""
        n = sum(-(-len(m) // _MAX_CHUNKS_PER_MESSAGE) for m in list(self._unsent.values()))
        return n + len(self._failed)

    # -- internals (under self._lock) ----------------------------------------------------------------
    def _poll(self, timeout: float) -> None:
        try:
            self._producer.poll(timeout)
        except Exception as e:  # noqa: BLE001 - a broken producer must not kill the store's writer
            log.warning("persist producer poll failed: %r", e)

    def _produce(self, partition: int, part: list[tuple[str, int]], deadline: float) -> bool:
        """Hand one message to the producer; False (nothing sent) when its queue stays full past `deadline`."""
        payload = encode_persist(self.instance, part, self.epoch() if self.epoch is not None else 0)
        while True:
            try:
                self._producer.produce(self.topic, payload, partition=partition, on_delivery=self._delivered)
            except BufferError:  # local queue full: let it drain, but only until the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._poll(min(left, 0.05))
                continue
            except KafkaException as e:  # refused for good (unknown partition, fatal producer state)
                self.errors += 1
                self.messages_dropped += 1
                log.error("persist message for partition %d refused by the producer: %s", partition, e)
                return True
            self.messages_published += 1
            self.chunks_published += len(part)
            return True

    def _merge(self, partition: int, part: Iterable[tuple[str, int]]) -> None:
        marks = self._unsent.setdefault(partition, {})
        for amkey, t0 in part:
            if t0 > marks.get(amkey, -1):
                marks[amkey] = t0

    def _requeue_failed(self) -> None:
        while self._failed:
            partition, payload = self._failed.popleft()
            try:
                _instance, chunks = decode_persist(payload)
            except DecodeError:  # cannot happen for our own payloads; do not loop on it
                continue
            self._merge(partition, chunks)

    def _pump_locked(self, deadline: float) -> bool:
        """Send backlog messages until done (True) or the producer's queue stays full past `deadline`."""
        for partition in list(self._unsent):
            marks = self._unsent[partition]
            items = list(marks.items())
            for i in range(0, len(items), _MAX_CHUNKS_PER_MESSAGE):
                part = items[i : i + _MAX_CHUNKS_PER_MESSAGE]
                if not self._produce(partition, part, deadline):
                    for amkey, _t0 in items[:i]:
                        del marks[amkey]
                    return False
            del self._unsent[partition]
        return True


class PendingMarks:
    """Saved marks for series that are not in memory yet, applied when they appear.

    `max_series` bounds the memory a producer announcing keys of series this node never sees can take;
    marks beyond it are dropped and counted in `dropped` (harmless: such a chunk is at worst rewritten).
    """

    def __init__(self, max_series: int | None = None) -> None:
        self._by_id: dict[str, dict[str, int]] = {}
        self.max_series = max_series
        self.dropped = 0

    def add(self, amkey: str, t0: int) -> None:
        series_id = amkey.split("_", 1)[0]
        marks = self._by_id.get(series_id)
        if marks is None:
            if self.max_series is not None and len(self._by_id) >= self.max_series:
                self.dropped += 1
                return
            marks = self._by_id[series_id] = {}
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


#: Reasons of `PersistListener.decode_errors_by_reason` (whole messages) that mean "could not be decoded".
UNDECODABLE = ("empty", "unknown-version", "invalid-json")


def max_future_for(raw_ttls: Iterable[int], max_chunkspan: int, tolerance_pct: int = 10) -> float:
    """A sane `max_future` for PersistListener: the tank accepts points up to `tolerance_pct`% of the raw TTL
    ahead of the wall clock, so no legitimate chunk can start later than that (plus one chunkspan)."""
    ttls = list(raw_ttls)
    return float(max(ttls, default=0) * tolerance_pct // 100 + max(0, max_chunkspan))


def parse_trust(spec: str) -> tuple[set[str], list[str]]:
    """`[kafka-cluster] trusted-instances` into (exact names, patterns) for PersistListener.

    Entries with glob characters (`*?[`) or a `re:` prefix are patterns; the others exact names. A bad regex
    raises ValueError (a configuration error, reported at startup rather than ignored).
    """
    names: set[str] = set()
    patterns: list[str] = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as e:
                raise ValueError(f"trusted-instances: bad regex {item!r}: {e}") from None
            patterns.append(item)
        elif any(c in item for c in "*?["):
            patterns.append(item)
        else:
            names.add(item)
    return names, patterns


class PersistListener(FetchStallWatch):
    """Consumes persist messages and hands (amkey, t0) pairs to `apply`.

    Nothing read from the topic can raise out of `poll`: a persist message is input from the network, and a
    single bad one used to crash every node (and crash-loop them while the topic held it). Whole messages
    that cannot be used are counted per reason in `decode_errors_by_reason`; single chunk entries that are
    skipped (as Go skips an unparseable key) in `chunks_dropped_by_reason`. An exception raised by `apply`
    is logged with the message offset and counted as `apply-error`; the other marks are still applied.

    Trust policy (`trusted_instances`, `trust_patterns`; off when both are unset): saved marks are high-water
    marks, so an announcement from an instance that is not part of the cluster could make the primary skip
    writing every earlier chunk of a series. Only announcements of trusted instances (this node, the names
    given, names set by `set_known`, names matching a glob or `re:<regex>` pattern) raise marks; the others
    are ignored and counted (`untrusted-instance`). Their marks are held back (up to `quarantine_max`) and
    applied if the instance becomes trusted later, e.g. once a peer's name is learned from its `/node`.
    Untrusted writers still appear in `writers`/`recent_writers`: a foreign writer on our partitions is
    exactly what split-brain detection must see. `max_future` (seconds, None = off) drops marks whose t0 lies
    further in the future than any chunk this cluster can have written (see `max_future_for`).
    """

    def __init__(
        self,
        brokers: str,
        topic: str,
        partitions: Sequence[int] | None,
        offset: str,
        apply: Callable[[list[tuple[str, int]]], None],
        instance: str = "mt",
        consumer_factory: Callable[[dict], Consumer] = Consumer,
        *,
        trusted_instances: Iterable[str] | None = None,
        trust_patterns: Sequence[str] = (),
        max_future: float | None = None,
        quarantine_max: int = 500_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.apply = apply
        self.instance = instance
        # other instances that announced writes (trusted or not): name -> partition -> monotonic time last seen
        self.writers: dict[str, dict[int, float]] = {}
        self.foreign_chunks = 0
        self.max_epoch: dict[int, int] = {}  # partition -> highest lease epoch announced by a trusted writer
        self.max_future = max_future
        self.quarantine_max = quarantine_max
        self._clock = clock
        self._policy = trusted_instances is not None or bool(trust_patterns)
        self._base_trusted = frozenset(trusted_instances or ()) | {instance}
        self._known: frozenset[str] = frozenset()
        self._patterns = [_compile_pattern(p) for p in trust_patterns]
        self._trust_cache: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, int]] = {}  # untrusted instance -> amkey -> highest t0
        self._held_count = 0
        self._released: list[tuple[str, int]] = []
        # untrusted instances seen: name -> [monotonic last seen, messages, chunks]
        self.untrusted_writers: dict[str, list[float]] = {}
        self.messages_received = 0
        self.chunks_received = 0
        self.decode_errors_by_reason: dict[str, int] = {}
        self.chunks_dropped_by_reason: dict[str, int] = {}
        self.backlog_seconds: float | None = None
        # how long trusted writers take to announce raw chunks (cluster/readwindow.py)
        self.save_age = SaveAge()
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
        self.stall_after = 10.0  # seconds without messages before the fetchers are checked (None: never)
        self._last_data = time.monotonic()

    def _recent_save_age(self) -> float:
        age = self.save_age.recent_max(self._clock(), 600)
        return -1.0 if age is None else age

    # -- trust ------------------------------------------------------------------------------------------
    @property
    def decode_errors(self) -> int:
        """Messages that could not be decoded at all (the sum of the `UNDECODABLE` reasons)."""
        return sum(self.decode_errors_by_reason.get(r, 0) for r in UNDECODABLE)

    def register_stats(self, stats: Stats) -> None:
        stats.gauge(
            "cluster.persist.save_age_seconds",
            "largest time from a raw chunk's t0 to its persist announcement in the last 10 minutes (what a read "
            "node must hold in memory; -1: no announcement)",
            self._recent_save_age,
        )
        stats.counter(
            "cluster.notifier.all.messages-received",
            "persist messages received",
            lambda: self.messages_received,
        )
        stats.counter(
            "cluster.notifier.foreign_chunks",
            "saved chunks announced by other instances",
            lambda: self.foreign_chunks,
        )
        stats.counter(
            "cluster.notifier.all.messages-dropped",
            "persist messages dropped whole, by reason",
            lambda: by_label(self.decode_errors_by_reason),
            ("reason",),
        )
        stats.counter(
            "cluster.notifier.all.chunks-dropped",
            "saved-chunk entries of persist messages dropped, by reason",
            lambda: by_label(self.chunks_dropped_by_reason),
            ("reason",),
        )
        stats.counter(
            "cluster.notifier.fetch_restarts",
            "times the persist topic's fetchers were restarted: unread messages but none arriving",
            lambda: self.fetch_restarts,
        )
        stats.gauge(
            "cluster.notifier.untrusted-instances",
            "instances whose persist messages are not trusted to raise saved marks",
            lambda: len(self.untrusted_writers),
        )

    def set_known(self, names: Iterable[str]) -> None:
        """Replace the runtime-learned trusted names (peers' instance names); thread-safe.

        Marks held back from an instance that becomes trusted are applied by the next `poll`.
        """
        known = frozenset(n for n in names if isinstance(n, str))
        with self._lock:
            self._known = known
            self._trust_cache.clear()
            for name in [n for n in self._held if self._trusted_locked(n)]:
                marks = self._held.pop(name)
                self._held_count -= len(marks)
                self._released.extend(marks.items())
                log.info("persist: %s is trusted now; applying %d held saved marks", name, len(marks))

    def is_trusted(self, name: str) -> bool:
        with self._lock:
            return self._trusted_locked(name)

    def _trusted_locked(self, name: str) -> bool:
        if not self._policy:
            return True
        t = self._trust_cache.get(name)
        if t is None:
            t = name in self._base_trusted or name in self._known or any(p(name) for p in self._patterns)
            if len(self._trust_cache) < 10_000:
                self._trust_cache[name] = t
        return t

    def untrusted_json(self) -> dict[str, dict]:
        """Untrusted instances seen, for GET /node: name -> secondsAgo, messages, chunks, heldMarks."""
        now = time.monotonic()
        with self._lock:
            return {
                name: {
                    "secondsAgo": round(now - seen, 1),
                    "messages": int(msgs),
                    "chunks": int(chunks),
                    "heldMarks": len(self._held.get(name, ())),
                }
                for name, (seen, msgs, chunks) in self.untrusted_writers.items()
            }

    # -- consuming --------------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0, max_messages: int = 5000) -> int:
        """Apply what is available; returns the number of messages read. Never raises for what it reads."""
        try:
            msgs = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - a consumer hiccup is not worth a crash either
            log.warning("persist topic: consume failed: %r", e)
            return 0
        if msgs:
            self._last_data = time.monotonic()
        else:
            self.check_stall()
        saved: list[tuple[str, int]] = []
        origins: list[tuple[int, int, int]] = []  # (partition, offset, first index in saved)
        with self._lock:
            if self._released:
                origins.append((-1, -1, 0))
                saved.extend(self._released)
                self._released = []
        n = 0
        now = time.monotonic()
        wall = self._clock()
        for m in msgs:
            if m.error() is not None:
                continue
            n += 1
            try:
                self._take(m, saved, origins, now, wall)
            except Exception:  # noqa: BLE001 - a bug of ours must not turn one message into a crash loop
                self._drop_message("internal-error", m, "unexpected error", exc_info=True)
        self.messages_received += n
        if saved:
            self._apply(saved, origins)
        return n

    def check_stall(self, now: float | None = None) -> bool:
        """Restart fetching when no persist message arrived for `stall_after` seconds although the topic holds
        unread ones: a stalled fetcher (seen after a broker was frozen) would otherwise leave this node's saved
        marks, and its split-brain detection, frozen for good while it looks healthy."""
        now = time.monotonic() if now is None else now
        if self.stall_after is None:
            return False
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        return self._check_stall(
            self._consumer, tps, self._first_to_read, self.stall_after, now, f"persist topic {self.topic}"
        )

    def _first_to_read(self, _topic: str, partition: int, low: int, high: int) -> int:
        return start_position(self._start.get(partition, OFFSET_END), low, high)

    def _take(self, m, saved: list, origins: list, now: float, wall: float) -> None:
        """Decode one message and append its usable marks to `saved`."""
        value = m.value()
        try:
            batch = decode_persist_items(value if value is not None else b"")
        except DecodeError as e:
            self._drop_message(e.reason, m, e.detail)
            return
        instance, chunks = batch.instance, batch.saved
        for reason, k in batch.rejected.items():
            self._drop_chunks(reason, k, m)
        if instance != self.instance:
            self._note_writer(instance, m.partition(), now)
            self.foreign_chunks += len(chunks)
        if self.max_future is not None and chunks:
            limit = wall + self.max_future
            ok = [c for c in chunks if c[1] <= limit]
            if len(ok) != len(chunks):
                self._drop_chunks("future-t0", len(chunks) - len(ok), m)
                chunks = ok
        with self._lock:
            trusted = self._trusted_locked(instance)
            if not trusted:
                self._hold(instance, chunks, now)
        if not trusted:
            self._drop_message("untrusted-instance", m, f"instance {instance!r}", level=logging.DEBUG)
            self._drop_chunks("untrusted-instance", len(chunks), None)
            return
        if batch.epoch and chunks:
            # Trusted writers only: a lower epoch than one already seen on this partition is a holder that lost
            # the lease announcing late; its marks are dropped (at worst the chunk is written again).
            p = m.partition()
            if batch.epoch < self.max_epoch.get(p, 0):
                self._drop_chunks("stale-epoch", len(chunks), m)
                return
            self.max_epoch[p] = batch.epoch
        self.chunks_received += len(chunks)
        if chunks:
            kind, ts_ms = m.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and ts_ms > 0:
                self.save_age.add(ts_ms / 1000.0, chunks, now=wall)
            origins.append((m.partition(), m.offset(), len(saved)))
            saved.extend(chunks)

    def _note_writer(self, instance: str, partition: int, now: float) -> None:
        """Remember who announced writes where (split-brain detection, GET /node). Names come from the topic, so
        the table is bounded: past `_MAX_WRITERS` names the one silent longest is forgotten."""
        seen = self.writers.get(instance)
        if seen is None:
            if len(self.writers) >= _MAX_WRITERS:
                stalest = min(self.writers, key=lambda n: max(self.writers[n].values()))
                del self.writers[stalest]
            seen = self.writers[instance] = {}
        seen[partition] = now

    def _hold(self, instance: str, chunks: list[tuple[str, int]], now: float) -> None:
        """Keep an untrusted instance's marks (highest t0 per key) in case it becomes trusted; under lock."""
        seen = self.untrusted_writers.get(instance)
        if seen is None:
            if len(self.untrusted_writers) >= _MAX_WRITERS:  # names are attacker-chosen: bound the table
                return
            seen = self.untrusted_writers[instance] = [now, 0, 0]
            log.warning(
                "persist: ignoring saved marks from %r, which is not a trusted instance "
                "(see [kafka-cluster] trusted-instances)",
                instance,
            )
        seen[0] = now
        seen[1] += 1
        seen[2] += len(chunks)
        held = self._held.setdefault(instance, {})
        for amkey, t0 in chunks:
            old = held.get(amkey)
            if old is None:
                if self._held_count >= self.quarantine_max:
                    self.chunks_dropped_by_reason["quarantine-full"] = (
                        self.chunks_dropped_by_reason.get("quarantine-full", 0) + 1
                    )
                    continue
                self._held_count += 1
                held[amkey] = t0
            elif t0 > old:
                held[amkey] = t0
        if not held:
            del self._held[instance]

    def _apply(self, saved: list[tuple[str, int]], origins: list[tuple[int, int, int]]) -> None:
        """`apply` everything; if it raises, apply mark by mark so only the marks that fail are lost."""
        try:
            self.apply(saved)
            return
        except Exception as e:  # noqa: BLE001
            log.warning(
                "persist: applying %d saved marks failed (%r); applying them one by one", len(saved), e
            )
        bounds = [o[2] for o in origins[1:]] + [len(saved)]
        for (partition, offset, lo), hi in zip(origins, bounds, strict=True):
            failed = 0
            for i in range(lo, hi):
                try:
                    self.apply([saved[i]])
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    if failed == 1:
                        log.error(
                            "persist: saved mark %r from %s[%d]@%d cannot be applied: %r",
                            saved[i],
                            self.topic,
                            partition,
                            offset,
                            e,
                        )
            if failed:
                _bump(self.decode_errors_by_reason, "apply-error", 1)
                _bump(self.chunks_dropped_by_reason, "apply-error", failed)

    def _drop_message(
        self, reason: str, m, detail: str, level: int = logging.WARNING, exc_info=False
    ) -> None:
        n = _bump(self.decode_errors_by_reason, reason, 1)
        if (
            n <= 10 or n & (n - 1) == 0
        ):  # the first ten, then at powers of two: a flood must not flood the log
            log.log(
                level,
                "persist: dropped message at %s[%d]@%d (%s, #%d): %.200s",
                m.topic(),
                m.partition(),
                m.offset(),
                reason,
                n,
                detail,
                exc_info=exc_info,
            )

    def _drop_chunks(self, reason: str, k: int, m) -> None:
        if k <= 0:
            return
        n = _bump(self.chunks_dropped_by_reason, reason, k)
        if m is not None and (n - k < 10 or (n & (n - 1)) == 0):
            log.warning(
                "persist: skipped %d saved chunk(s) (%s) of message %s[%d]@%d",
                k,
                reason,
                m.topic(),
                m.partition(),
                m.offset(),
            )

    def recent_writers(self, partitions: Sequence[int], within: float) -> dict[str, tuple[list[int], float]]:
        """Other instances (trusted or not) that announced writes on these partitions within `within` seconds:
        name -> (partitions, seconds since the last announcement)."""
        now = time.monotonic()
        mine = set(partitions)
        out = {}
        for name, seen in list(self.writers.items()):
            seen = dict(seen)  # one C-level copy: the main loop may add a partition meanwhile
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


def _bump(d: dict[str, int], key: str, n: int) -> int:
    v = d.get(key, 0) + n
    d[key] = v
    return v


def _compile_pattern(p: str) -> Callable[[str], bool]:
    """A trust pattern: `re:<regex>` (full match) or a shell glob (`mt-*`), case-sensitive."""
    if p.startswith("re:"):
        rx = re.compile(p[3:])
        return lambda name: rx.fullmatch(name) is not None
    return lambda name: fnmatchcase(name, p)
