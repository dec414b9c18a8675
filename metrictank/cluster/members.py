"""Live membership and the active read color, on a compacted Kafka topic of the cluster's own.

Every instance announces itself (name, URL, role, color, partitions, state, priority, primary, lease epoch) every
`heartbeat` seconds under its name as the message key; compaction keeps the newest announcement of each, so a
node that starts reads the whole cluster from the beginning of the topic. Members are *alive* while their last
heartbeat is younger than 3 heartbeats, *suspect* until 10, then *gone*; `remove` writes a tombstone (a null
value) for a member that will not return. The active read color is one more key (`__color__`). Not `metricpersist`:
Metrictank nodes read that topic, and nothing of ours but persist messages belongs there.

Everything read here is input from every instance (and whoever else can write the topic): a message that is not a
well-formed announcement is counted by reason and skipped, the table is bounded, and nothing read can raise out of
the thread that reads it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from metrictank.input.kafka import consumer_config
from metrictank.stats import Stats, by_label

__all__ = ["COLOR_KEY", "Membership", "parse_announcement"]

log = logging.getLogger(__name__)

COLOR_KEY = "__color__"
ROLES = ("all", "write", "read")
COLORS = ("", "a", "b")
MAX_MEMBERS = 10_000
MAX_VALUE = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,256}")


class BadAnnouncement(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_announcement(key: bytes | None, value: bytes | None) -> tuple[str, dict[str, Any] | None]:
    """(key, the validated announcement, or None for a tombstone); BadAnnouncement(reason) otherwise."""
    if key is None:
        raise BadAnnouncement("no-key")
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAnnouncement("bad-key") from None
    if name != COLOR_KEY and not _NAME.fullmatch(name):
        raise BadAnnouncement("bad-key")
    if value is None:
        return name, None
    if len(value) > MAX_VALUE:
        raise BadAnnouncement("too-large")
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        raise BadAnnouncement("invalid-json") from None
    if not isinstance(doc, dict):
        raise BadAnnouncement("not-an-object")
    if name == COLOR_KEY:
        active = doc.get("active")
        if active not in COLORS:
            raise BadAnnouncement("bad-color")
        return name, {"active": active, "by": str(doc.get("by", ""))[:256]}
    url = doc.get("url")
    parts = doc.get("partitions")
    ok = (
        doc.get("name") == name
        and isinstance(url, str)
        and len(url) <= 2048
        and url.startswith(("http://", "https://"))
        and doc.get("role") in ROLES
        and doc.get("color", "") in COLORS
        and isinstance(parts, list)
        and len(parts) <= 65536
        and all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1 << 31 for p in parts)
        and isinstance(doc.get("ts"), int | float)
    )
    if not ok:
        raise BadAnnouncement("bad-fields")
    prio = doc.get("priority", 0)
    epoch = doc.get("epoch", 0)
    return name, {
        "name": name,
        "url": url,
        "role": doc["role"],
        "color": doc.get("color", ""),
        "partitions": sorted(set(parts)),
        "state": str(doc.get("state", ""))[:64],
        "priority": int(prio) if isinstance(prio, int | float) and abs(prio) < 1 << 31 else 0,
        "primary": doc.get("primary") is True,
        "epoch": int(epoch) if isinstance(epoch, int) and 0 <= epoch < 1 << 62 else 0,
        "ts": float(doc["ts"]),
    }


class Membership:
    """This node's heartbeat and its view of every member (one thread owns the consumer)."""

    def __init__(
        self,
        brokers: str,
        topic: str,
        name: str,
        me: Callable[[], dict[str, Any]],
        heartbeat: float = 2.0,
        consumer_factory: Callable[[dict], Consumer] = Consumer,
        producer_factory: Callable[[dict], Producer] = Producer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.name = name
        self.heartbeat = heartbeat
        self._me = me
        self._clock = clock
        self._brokers = brokers
        self._consumer = consumer_factory(consumer_config(brokers, client_id=f"{name}-members"))
        self._producer = producer_factory({"bootstrap.servers": brokers, "client.id": f"{name}-members-out"})
        self._lock = threading.Lock()
        self._members: dict[str, dict[str, Any]] = {}
        self._seen_at: dict[str, float] = {}  # name -> local wall time of its last heartbeat read
        self.active_color = ""
        self.dropped: dict[str, int] = {}
        self.announcements = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backlog_read = False  # start() read the topic up to its high watermarks

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, backlog_timeout: float = 10.0) -> None:
        """Read the topic's backlog (members and the active color) before returning, then hand the consumer to
        the membership thread. The backlog is read here, on the caller's thread and before that thread exists,
        because librdkafka's consume() called from two threads at once on one consumer stalled both for tens of
        seconds: a node started next to others then sat in its start-up with its HTTP API not ready."""
        md = self._consumer.list_topics(self.topic, timeout=10)
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise RuntimeError(
                f"membership topic {self.topic!r} is not available: {tmd.error if tmd else 'missing'} "
                "(create it compacted: cleanup.policy=compact)"
            )
        tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in tmd.partitions]
        self._consumer.assign(tps)
        self.backlog_read = self._read_backlog(tps, backlog_timeout)
        self._announce()
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def _read_backlog(self, tps: list[TopicPartition], timeout: float) -> bool:
        """Consume until every partition's position reaches the high watermark it had when this began (False:
        the timeout came first; the thread reads the rest, and the node starts with what it has)."""
        deadline = time.monotonic() + timeout
        highs: dict[int, int] = {}
        for tp in tps:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=max(0.1, deadline - time.monotonic())
                )
            except Exception as e:  # noqa: BLE001 - informative: the thread keeps reading
                log.warning("membership: no high watermark for %s[%d]: %s", tp.topic, tp.partition, e)
                return False
            if high > 0:
                highs[tp.partition] = high
        while highs:
            self.poll(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            try:
                positions = self._consumer.position([TopicPartition(self.topic, p) for p in highs])
            except Exception:  # noqa: BLE001
                positions = []
            for tp in positions:
                if tp.offset >= highs.get(tp.partition, 0):
                    highs.pop(tp.partition, None)
            if highs and time.monotonic() >= deadline:
                log.warning(
                    "membership: the backlog of %s was not read within %.0fs; starting with %d members known",
                    self.topic,
                    timeout,
                    len(self._members),
                )
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        try:
            self._producer.flush(5)
        finally:
            self._consumer.close()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while not self._stop.is_set():
            try:
                self.poll(timeout=min(0.5, max(0.0, next_beat - time.monotonic())))
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat
                    self._announce()
            except Exception:  # noqa: BLE001 - membership is informative: never let its thread die
                log.exception("membership: step failed; continuing")
                self._stop.wait(1.0)

    # --- writing -----------------------------------------------------------------------------------------------
    def _announce(self) -> None:
        doc = {**self._me(), "name": self.name, "ts": self._clock()}
        self._producer.produce(self.topic, json.dumps(doc).encode(), key=self.name.encode())
        self._producer.poll(0)
        self.announcements += 1

    def remove(self, name: str) -> bool:
        """Tombstone a member that will not return (False: unknown here, or this node itself)."""
        with self._lock:
            known = name in self._members
        if not known or name == self.name:
            return False
        self._producer.produce(self.topic, None, key=name.encode())
        self._producer.flush(10)
        with self._lock:  # at once here; every other node when it reads the tombstone
            self._members.pop(name, None)
            self._seen_at.pop(name, None)
        return True

    def set_color(self, color: str) -> None:
        if color not in COLORS:
            raise ValueError(f"color {color!r}: want a, b or empty (no color active: every reader serves)")
        doc = {"active": color, "by": self.name, "ts": self._clock()}
        self._producer.produce(self.topic, json.dumps(doc).encode(), key=COLOR_KEY.encode())
        self._producer.flush(10)
        self.active_color = color

    # --- reading -----------------------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        msgs = self._consumer.consume(num_messages=1000, timeout=timeout)
        n = 0
        now = self._clock()
        for m in msgs:
            if m.error() is not None:
                continue
            try:
                name, doc = parse_announcement(m.key(), m.value())
            except BadAnnouncement as e:
                self.dropped[e.reason] = self.dropped.get(e.reason, 0) + 1
                continue
            n += 1
            if name == COLOR_KEY:
                self.active_color = doc["active"] if doc else ""
                continue
            with self._lock:
                if doc is None:
                    self._members.pop(name, None)
                    self._seen_at.pop(name, None)
                elif name in self._members or len(self._members) < MAX_MEMBERS:
                    self._members[name] = doc
                    # age by the reader's clock from the sender's stamp, never younger than now (a backlog
                    # read at start-up carries old heartbeats, which must not look alive)
                    self._seen_at[name] = min(doc["ts"], now)
                else:
                    self.dropped["table-full"] = self.dropped.get("table-full", 0) + 1
        return n

    def _state(self, age: float) -> str:
        if age < 3 * self.heartbeat:
            return "alive"
        return "suspect" if age < 10 * self.heartbeat else "gone"

    def table(self) -> list[dict[str, Any]]:
        now = self._clock()
        with self._lock:
            rows = [(doc, now - self._seen_at[n]) for n, doc in self._members.items()]
        out = []
        for doc, age in sorted(rows, key=lambda r: r[0]["name"]):
            row = {k: v for k, v in doc.items() if k != "ts"}
            row["member"] = self._state(age)
            row["heartbeatAge"] = round(max(0.0, age), 1)
            out.append(row)
        return out

    def peer_urls(self) -> list[str]:
        """URLs of the other members that are alive: the peers of a node without a static peer list."""
        return [m["url"] for m in self.table() if m["name"] != self.name and m["member"] == "alive"]

    def register_stats(self, stats: Stats) -> None:
        stats.gauge(
            "cluster.members",
            "members by state (alive, suspect, gone) as this node sees them",
            lambda: by_label(_count(m["member"] for m in self.table())),
            ("state",),
        )
        stats.counter(
            "cluster.members.dropped",
            "membership messages dropped, by reason",
            lambda: by_label(self.dropped),
            ("reason",),
        )


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {"alive": 0, "suspect": 0, "gone": 0}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out
