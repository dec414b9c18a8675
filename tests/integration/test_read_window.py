"""Issue 17: a read node sizes its memory from the writers' measured save delay (`[cluster] read-window = auto`).

Real time on the real bed: a write node (primary) saves 10-second raw chunks as data arrives and announces them;
a read node started later measures, from the persist backlog, how long after its t0 a raw chunk is announced
(chunkspan + the wait for the next chunk's first point + the write), keeps that plus the margin in memory instead
of the schema's 12 chunks, loses no chunk before its save (`tank.evicted_unsaved_chunks` stays 0), and answers
every query exactly from memory and the store.
"""

from __future__ import annotations

import threading
import time

import pytest

from metrictank.fakemetrics import Producer, SeriesSet

from .cluster import InstanceProc
from .reliability import check_render, consumed_through, metric_values, scrape, topic_highs, wait

pytestmark = pytest.mark.integration

PARTS = 2
N = 8
SCHEMAS = """[default]
pattern = .*
retentions = 1s:1d:10s:12
"""
MARGIN = 5


class RealTimeProducer:
    """One point per series per wall-clock second, stamped with that second (data time = message time)."""

    def __init__(self, kafka: str, topic: str, ss: SeriesSet) -> None:
        self.p = Producer(kafka, topic)
        self.ss = ss
        self.first = int(time.time())
        self.next = self.first
        self.p.send_metricdata(ss, self.first)
        self.next += 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = int(time.time())
            while self.next <= now:
                self.p.send_points(self.ss, self.next, message_ts_ms=self.next * 1000)
                self.next += 1
            self.p.flush(5)
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        self.p.flush(30)
        return self.next


def _per_series(url: str, family: str) -> float:
    return sum(metric_values(scrape(url), family).values()) / N


def test_read_window_auto_follows_the_measured_save_delay(tmp_path, kafka_bootstrap, new_topic):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(N, PARTS, prefix="readwindow", interval=1)
    schemas = tmp_path / "schemas.conf"
    schemas.write_text(SCHEMAS)
    db = tmp_path / "chunks.db"

    def node(name: str, role: str, **cluster) -> InstanceProc:
        return InstanceProc(
            tmp_path / name,
            name,
            {
                "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
                "kafka-cluster": {
                    "brokers": kafka_bootstrap,
                    "topic": persist,
                    "offset": "oldest",
                    "trusted-instances": "mt-write",  # only trusted announcements are measured
                },
                "cluster": {"role": role, "warm-up-period": "0s", "max-priority": 10, **cluster},
                "store": {"backend": "sqlite"},
                "sqlite": {"path": str(db)},
                "retention": {"schemas-file": str(schemas)},
            },
            token="tok",
        )

    w = node("mt-write", "write", **{"primary-node": True})
    r = node("mt-read", "read", **{"read-window-margin": f"{MARGIN}s"})  # read-window: auto (the default)
    prod = None
    try:
        # the writer first: its saves then follow the data as in production (a writer that starts late saves
        # its first chunks late, and the reader would rightly size itself for that)
        w.start()
        prod = RealTimeProducer(kafka_bootstrap, topic, ss)
        # three chunk boundaries: the persist backlog then holds announcements to measure
        wait(
            lambda: w.node()["savedMarks"]["slotsSaved"] >= N and time.time() - prod.first > 35,
            60,
            "saves",
            w,
        )
        r.start()
        rw = r.node()["readWindow"]
        assert rw["mode"] == "auto", rw
        age = rw["measuredSaveAge"]
        # a 10 s chunk is announced after its span, the next chunk's first point and the write: 10-30 s (a few
        # seconds on an idle machine; the bound leaves room for a loaded CI machine)
        assert 10 <= age <= 30, rw
        assert rw["seconds"] == pytest.approx(age + MARGIN, abs=0.2)

        time.sleep(30)  # more chunks complete, are saved, and leave the reader's shorter ring
        t_end = prod.stop()
        highs = topic_highs(kafka_bootstrap, topic)
        for n in (w, r):
            wait(lambda n=n: consumed_through(n.url, highs), 60, f"{n.name} caught up", n)

        # the reader holds what covers the window (at most ceil(window / 10) closed chunks), the writer the
        # schema's 11; no chunk left the reader before its save was announced
        held_r = _per_series(r.url, "metrictank_tank_chunks_in_ring")
        held_w = _per_series(w.url, "metrictank_tank_chunks_in_ring")
        assert held_r <= -(-rw["seconds"] // 10), (held_r, rw)
        assert held_w >= held_r + 2, (held_w, held_r)
        print(f"read window {rw}, closed chunks per series: reader {held_r:.1f}, writer {held_w:.1f}")
        assert _per_series(r.url, "metrictank_tank_evicted_unsaved_chunks_total") == 0
        assert r.node()["evictedUnsavedChunks"] == 0
        # and every point is there, from memory and the store
        check_render(r.url, ss, range(N), prod.first + 1, t_end).assert_exact()
    finally:
        if prod is not None:
            prod.stop()
        r.kill9()
        w.kill9()
