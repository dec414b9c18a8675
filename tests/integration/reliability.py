"""Shared pieces of the reliability suite (tests/integration/test_reliability_*.py): exact read-back of every
produced point, positive "caught up" conditions, and the figures each scenario records.

Figures go, one JSON object per line, to the file named by `METRICTANK_RELIABILITY_REPORT`, by default
`build/reliability-report.jsonl` in the repository (gitignored). `python -m tests.integration.reliability_report`
(or `make reliability`, which also runs the scenarios) turns the newest line of each scenario into
docs/reliability.md. A file rather than pytest's junit properties because the figures must outlive the run
that produced them and be comparable across runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from metrictank.fakemetrics import SeriesSet, values_for

from .cluster import SPAN, InstanceProc, expected_chunk, read_chunks

REPO = Path(__file__).resolve().parents[2]


def report_path() -> Path:
    env = os.environ.get("METRICTANK_RELIABILITY_REPORT")
    return Path(env) if env else REPO / "build" / "reliability-report.jsonl"


def record(scenario: str, **figures) -> dict:
    """Append one scenario's figures (with the time and the commit-independent facts of the run) and print
    them, so a failing CI log still shows how far the scenario got."""
    row = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=_jsonable) + "\n")
    print(f"reliability {scenario}: {json.dumps(row, default=_jsonable)}")
    return row


def _jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(type(v).__name__)


@dataclass
class Exactness:
    """Point-level comparison of what the store holds with what was produced.

    lost: produced points absent from their chunk (or from a missing chunk); duplicated: a timestamp stored
    twice in one chunk; wrong: a stored point whose value differs, or a timestamp never produced;
    partial_chunks: chunks present with fewer points than produced for them (an overwrite by a node that had
    not seen the chunk's start would show as one)."""

    chunks: int = 0
    points_expected: int = 0
    points_read: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    partial_chunks: int = 0
    missing_chunks: int = 0
    examples: list[str] = field(default_factory=list)

    def compare(self, label: str, expected: tuple[np.ndarray, np.ndarray], got) -> None:
        ets, evals = expected
        self.chunks += 1
        self.points_expected += len(ets)
        if got is None:
            self.missing_chunks += 1
            self.lost += len(ets)
            self._example(f"{label}: chunk missing")
            return
        ts, vals = got
        self.points_read += len(ts)
        uniq, first_idx, counts = np.unique(ts, return_index=True, return_counts=True)
        dup = int((counts - 1).sum())
        exp = dict(zip(ets.tolist(), evals.tolist(), strict=True))
        lost = len(set(exp) - set(uniq.tolist()))
        wrong = 0
        for t, v in zip(uniq.tolist(), vals[first_idx].tolist(), strict=True):
            if t not in exp or exp[t] != v:
                wrong += 1
        self.duplicated += dup
        self.lost += lost
        self.wrong += wrong
        if lost and len(uniq) > 0:
            self.partial_chunks += 1
        if dup or lost or wrong:
            self._example(f"{label}: lost {lost} duplicated {dup} wrong {wrong}")

    def _example(self, s: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(s)

    def assert_exact(self) -> None:
        assert self.points_expected > 0, "nothing was checked"
        assert (self.lost, self.duplicated, self.wrong, self.partial_chunks) == (0, 0, 0, 0), (
            f"{self.figures()} e.g. {self.examples}"
        )
        assert self.points_read == self.points_expected

    def figures(self) -> dict:
        return {
            "chunks_checked": self.chunks,
            "points_checked": self.points_expected,
            "points_read": self.points_read,
            "points_lost": self.lost,
            "points_duplicated": self.duplicated,
            "points_wrong": self.wrong,
            "partial_chunks": self.partial_chunks,
            "missing_chunks": self.missing_chunks,
        }


def completed_t0s(first_ts: int, t_end: int) -> list[int]:
    """Chunk starts of every chunk that completed, given points for every second in [first_ts, t_end)."""
    last_ts = t_end - 1
    open_t0 = last_ts - last_ts % SPAN
    return list(range(first_ts - first_ts % SPAN, open_t0, SPAN))


def last_completed_t0(t_end: int) -> int:
    """The start of the newest completed chunk, given points for every second before `t_end`."""
    last_ts = t_end - 1
    return last_ts - last_ts % SPAN - SPAN


def wait_saved_through(
    proc: InstanceProc, t_end: int, timeout: float, what: str = "every completed chunk saved"
) -> float:
    """Wait until `proc` has no write pending and has saved every chunk completed before `t_end`."""
    last = last_completed_t0(t_end)
    return wait(
        lambda: (n := proc.node())["pendingWrites"] == 0 and n["savedMarks"]["newestSavedT0"] >= last,
        timeout,
        what,
        proc,
    )


def check_cassandra(session, ks: str, ss: SeriesSet, first_ts: int, t_end: int) -> Exactness:
    """Every point of every series in every completed chunk, read back from Cassandra."""
    ex = Exactness()
    t0s = completed_t0s(first_ts, t_end)
    for i in range(len(ss)):
        chunks = read_chunks(session, ks, ss.ids[i], t0s)
        for t0 in t0s:
            ex.compare(f"{ss.names[i]}@{t0}", expected_chunk(ss, i, t0, first_ts, t_end - 1), chunks.get(t0))
    return ex


def check_sqlite(path: Path, ss: SeriesSet, first_ts: int, t_end: int) -> Exactness:
    """As check_cassandra, from a SQLite chunk database (the same table and row-key layout)."""
    import sqlite3

    from metrictank.chunk import decode_chunk
    from metrictank.schema import row_key, table_for_ttl

    from .cluster import RAW_TTL

    table = table_for_ttl(RAW_TTL)[0]
    ex = Exactness()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        for i in range(len(ss)):
            for t0 in completed_t0s(first_ts, t_end):
                row = conn.execute(
                    f"SELECT data FROM {table} WHERE key = ? AND ts = ?", (row_key(ss.ids[i], t0), t0)
                ).fetchone()
                got = None
                if row is not None:
                    ts, vals = decode_chunk(t0, row[0])
                    got = (np.asarray(ts, np.int64), np.asarray(vals))
                ex.compare(f"{ss.names[i]}@{t0}", expected_chunk(ss, i, t0, first_ts, t_end - 1), got)
    finally:
        conn.close()
    return ex


def check_render(
    url: str, ss: SeriesSet, indices: Sequence[int], first_ts: int, t_end: int, ex: Exactness | None = None
) -> Exactness:
    """The same points through `/render` (raw resolution; the series must have interval 1): what a user reads,
    from memory and store together."""
    ex = ex or Exactness()
    last_ts = t_end - 1
    for i in indices:
        r = httpx.get(
            f"{url}/render",
            params={
                "target": ss.names[i],
                "from": str(first_ts - 1),  # graphite: from exclusive, until inclusive
                "until": str(last_ts),
                "format": "json",
                "maxDataPoints": str(10**7),
            },
            timeout=60,
        )
        r.raise_for_status()
        series = r.json()
        assert len(series) == 1, f"{ss.names[i]}: {len(series)} series"
        pts = [(int(t), v) for v, t in series[0]["datapoints"] if v is not None]
        ts = np.asarray([t for t, _ in pts], np.int64)
        vals = np.asarray([v for _, v in pts], np.float64)
        ets = np.arange(first_ts, last_ts + 1, dtype=np.int64)
        ex.compare(f"render {ss.names[i]}", (ets, values_for("walk", np.full(len(ets), i), ets)), (ts, vals))
    return ex


# --- /metrics and positive "caught up" conditions ----------------------------------------------------------------
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one metric family from the text exposition: label string ("" without labels) -> value."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) == name:
            out[m.group(2) or ""] = float(m.group(3))
    return out


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def topic_highs(kafka: str, topic: str) -> dict[int, int]:
    """High watermarks of every partition of a topic, asked of the broker by a client of our own."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {"bootstrap.servers": kafka, "group.id": "reliability-watermarks", "enable.auto.commit": False}
    )
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()


def consumed_through(url: str, highs: dict[int, int]) -> bool:
    """The instance's data consumer has read up to these high watermarks (its `partition.offset` gauge is the
    last offset read, set by the main loop after the batches before it were ingested and their writes planned)."""
    offs = metric_values(scrape(url), "metrictank_input_kafka_mdm_partition_offset")
    got = {int(re.search(r'partition="(\d+)"', k).group(1)): int(v) for k, v in offs.items()}
    return all(h == 0 or got.get(p, -1) + 1 >= h for p, h in highs.items())


def wait(cond: Callable[[], bool], timeout: float, what: str, proc: InstanceProc | None = None) -> float:
    """Wait for a positive condition; returns the seconds it took. Connection errors count as "not yet"."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return time.monotonic() - t0
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}"
        + (f"\n{diagnose(proc)}\n{proc.tail()}" if proc else "")
    )


_DIAG = re.compile(
    r"^metrictank_(cluster_notifier|store_|tank_persist|input_kafka_mdm_partition|cluster_lease|cluster_self)"
)


def diagnose(proc: InstanceProc) -> str:
    """What a failed wait needs to be understood: the node's view and its persist, store and lag figures."""
    try:
        n = proc.node()
        keep = (
            "state",
            "primary",
            "priority",
            "pendingWrites",
            "chunksQueued",
            "savedMarks",
            "failover",
            "mainLoopStalledSeconds",
            "brokerReachable",
        )
        lines = [f"node: { {k: n.get(k) for k in keep} }"]
        lines += [ln for ln in scrape(proc.url).splitlines() if _DIAG.match(ln)]
        return "\n".join(lines)
    except Exception as e:  # noqa: BLE001 - diagnostics only
        return f"(no diagnostics: {e!r})"


def announced_chunks(kafka: str, topic: str) -> set[tuple[str, int]]:
    """Every (amkey, t0) announced on a persist topic so far: the chunks whose save is known durable, read
    by a consumer of our own up to the high watermarks of the moment."""
    from confluent_kafka import Consumer, TopicPartition

    from metrictank.schema.persist import decode_persist

    highs = topic_highs(kafka, topic)
    c = Consumer(
        {"bootstrap.servers": kafka, "group.id": "reliability-announced", "enable.auto.commit": False}
    )
    out: set[tuple[str, int]] = set()
    try:
        c.assign([TopicPartition(topic, p, 0) for p in highs])
        todo = {p for p, h in highs.items() if h > 0}
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                if m.error():
                    continue
                _instance, saved = decode_persist(m.value())
                out.update(saved)
                if m.offset() + 1 >= highs[m.partition()]:
                    todo.discard(m.partition())
        assert not todo, f"persist topic partitions {todo} not read to their end"
    finally:
        c.close()
    return out
