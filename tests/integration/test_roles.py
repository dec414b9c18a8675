"""Write and read roles on the real test bed: a write node ingests and persists but refuses queries; a read node
ingests the same partitions, keeps only its read window in memory, answers every query exactly from memory and
the store, and cannot be promoted, not even with force."""

from __future__ import annotations

import httpx
import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import InstanceProc, SimProducer, sim_start
from .reliability import (
    check_render,
    check_sqlite,
    consumed_through,
    metric_values,
    scrape,
    topic_highs,
    wait,
    wait_saved_through,
)

pytestmark = pytest.mark.integration

PARTS = 2
N_SERIES = 12
SIM_SECONDS = 900  # 15 one-minute raw chunks; the reader keeps 2 of them (read-window 60 s)


def _ring_chunks(url: str) -> float:
    return sum(metric_values(scrape(url), "metrictank_tank_chunks_in_ring").values())


def test_write_node_persists_read_node_answers_from_memory_and_store(tmp_path, kafka_bootstrap, new_topic):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="roles", interval=1)
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=200)
    prod.step_to(T + SIM_SECONDS)
    t_end = prod.stop()
    db = tmp_path / "chunks.db"

    def node(name: str, role: str, **cluster) -> InstanceProc:
        return InstanceProc(
            tmp_path / name,
            name,
            {
                "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
                "kafka-cluster": {"brokers": kafka_bootstrap, "topic": persist, "offset": "oldest"},
                "cluster": {"role": role, "warm-up-period": "0s", "max-priority": 10, **cluster},
                "store": {"backend": "sqlite"},
                "sqlite": {"path": str(db)},
            },
            token="tok",
        )

    w = node("mt-write", "write", **{"primary-node": True})
    r = node("mt-read", "read", **{"read-window": "60s"})
    try:
        w.start()
        r.start()
        highs = topic_highs(kafka_bootstrap, topic)
        for n in (w, r):
            wait(lambda n=n: consumed_through(n.url, highs), 90, f"{n.name} caught up", n)
        wait_saved_through(w, t_end, 90)
        assert w.node()["role"] == "write" and r.node()["role"] == "read"

        # the writer wrote every completed chunk exactly, and refuses queries with a pointer to the readers
        check_sqlite(db, ss, T, t_end).assert_exact()
        resp = httpx.get(f"{w.url}/render", params={"target": ss.names[0]}, timeout=10)
        assert resp.status_code == 404 and "read node" in resp.json()["error"]

        # the reader holds about 2 raw chunks per series where the writer holds 6 (numchunks of the schema)
        rw, rr = _ring_chunks(w.url), _ring_chunks(r.url)
        assert 0 < rr < rw, (rr, rw)
        # ...and still answers the whole range exactly: memory for the newest, the store for the rest
        check_render(r.url, ss, range(N_SERIES), T, t_end).assert_exact()

        # a read node cannot become primary, not even with force; the writer stays the only writer
        for force in (False, True):
            resp = r.post_node(token="tok", primary=True, force=force)
            assert resp.status_code == 409, resp.text
            assert "read node" in resp.text
        assert r.node()["primary"] is False and w.node()["primary"] is True
        assert r.node()["chunksQueued"] == 0
    finally:
        r.kill9()
        w.kill9()
