"""A split deployment from `metrictank cluster plan` on the real test bed: 2 writers and 4 readers (replication 2)
over 4 partitions, each started as `run --config base.toml --config <fragment>`. Every query through any reader
returns exact data for every partition (its own from memory and the store, the others' from a reader of the
other group); the writers refuse queries; a reader killed, queries still complete from its replica."""

from __future__ import annotations

import httpx
import pytest

from metrictank.cluster.plan import constant_no_overlap
from metrictank.fakemetrics import SeriesSet

from .cluster import InstanceProc, SimProducer, sim_start
from .helpers import free_port
from .reliability import check_render, check_sqlite, consumed_through, topic_highs, wait, wait_saved_through

pytestmark = pytest.mark.integration

PARTS = 4
N_SERIES = 16
SIM_SECONDS = 600


def test_planned_writers_and_readers_answer_every_partition_exactly(tmp_path, kafka_bootstrap, new_topic):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="plan", interval=1)
    assert set(ss.partitions.tolist()) == set(range(PARTS))  # every partition has series
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=200)
    prod.step_to(T + SIM_SECONDS)
    t_end = prod.stop()
    db = tmp_path / "chunks.db"

    plan = constant_no_overlap(partitions=PARTS, writers=2, readers=4, replication=2)
    ports = {m.name: free_port() for m in plan.members}
    url_of = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    base = {
        "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
        "kafka-cluster": {"brokers": kafka_bootstrap, "topic": persist, "offset": "oldest"},
        "cluster": {"warm-up-period": "0s", "max-priority": 10, "read-window": "120s"},
        "store": {"backend": "sqlite"},
        "sqlite": {"path": str(db)},
    }
    procs = {
        m.name: InstanceProc(tmp_path / m.name, m.name, base, port=ports[m.name], fragment=m.toml(url_of))
        for m in plan.members
    }
    try:
        for p in procs.values():
            p.start(wait=False)
        for p in procs.values():
            p.wait_consuming(120)
        highs = topic_highs(kafka_bootstrap, topic)
        for m in plan.members:
            mine = {k: v for k, v in highs.items() if k in m.partitions}
            p = procs[m.name]
            wait(lambda p=p, mine=mine: consumed_through(p.url, mine), 120, f"{p.name} caught up", p)
        primaries = [m.name for m in plan.members if m.primary]
        assert [n for n, p in procs.items() if p.node()["primary"]] == primaries
        for n in primaries:
            wait_saved_through(procs[n], t_end, 120)
        check_sqlite(db, ss, T, t_end).assert_exact()

        readers = [m for m in plan.members if m.role == "read"]
        for m in readers:
            assert procs[m.name].node()["partitions"] == list(m.partitions)
            wait(
                lambda m=m: procs[m.name].node()["state"] == "NodeReady", 60, f"{m.name} ready", procs[m.name]
            )
        for m in readers:  # any reader answers every partition exactly
            check_render(procs[m.name].url, ss, range(N_SERIES), T, t_end).assert_exact()
        for m in plan.members:
            if m.role == "write":
                r = httpx.get(f"{procs[m.name].url}/render", params={"target": ss.names[0]}, timeout=10)
                assert r.status_code == 404 and "read node" in r.text

        # a reader of the second group dies: the first group's readers get those partitions from its replica
        dead, survivor = readers[2].name, readers[0].name
        procs[dead].kill9()
        check_render(procs[survivor].url, ss, range(N_SERIES), T, t_end).assert_exact()
    finally:
        for p in procs.values():
            p.kill9()
