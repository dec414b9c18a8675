"""The lease store itself frozen (a private Cassandra, SIGSTOP) for longer than the lease: the primary fences itself
(stops writing, keeps ingesting), nobody else takes over (nobody can reach the lease either), and when the store
returns the primary proves its lease again and writes what waited; every point is read back exactly."""

from __future__ import annotations

import time

import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import SimProducer, sim_start, wait_until
from .reliability import record
from .test_failover_lease import LEASE, _all_saved_and_exact, _metric, _nodes, _primary

pytestmark = pytest.mark.integration

PARTS = 2


def test_frozen_lease_store_fences_the_primary_and_nobody_takes_over(
    tmp_path, kafka_bootstrap, private_cassandra, new_topic
):
    from cassandra.cluster import Cluster

    cassandra = private_cassandra.cassandra
    host, port = cassandra.rsplit(":", 1)
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), "lease_freeze"
    ss = SeriesSet.make(6, PARTS, prefix="lease.storefreeze")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=20)
    prod.step_to(T + 90)
    nodes = _nodes(tmp_path, kafka_bootstrap, cassandra, ks, topic, persist)
    cluster = Cluster([host], port=int(port))
    try:
        for n in nodes:
            n.start()
        prod.run_background()
        wait_until(lambda: len(_primary(nodes)) == 1, 30, "one node took the lease")
        (prim,) = _primary(nodes)
        other = next(n for n in nodes if n is not prim)
        wait_until(lambda: prim.node()["chunksQueued"] > 0, 60, "the primary writing", prim)
        points_before = _metric(prim, "metrictank_tank_points_added_total")

        private_cassandra.freeze("cassandra")
        frozen_at = time.monotonic()
        try:
            wait_until(
                lambda: prim.node()["failover"]["fenced"], LEASE + 10, "the primary fenced itself", prim
            )
            fenced_after = time.monotonic() - frozen_at
            # stays frozen well past the lease: nobody takes over, the primary keeps ingesting
            while time.monotonic() - frozen_at < 3 * LEASE:
                assert other.node()["primary"] is False
                assert prim.node()["primary"] is True
                time.sleep(0.5)
            assert _metric(prim, "metrictank_tank_points_added_total") > points_before
            assert _metric(prim, "metrictank_cluster_lease_self_fencing_total") >= 1
        finally:
            private_cassandra.thaw("cassandra")
        wait_until(lambda: not prim.node()["failover"]["fenced"], 60, "the lease proven again", prim)
        assert len(_primary(nodes)) == 1 and prim.node()["primary"]
        session = cluster.connect()
        figures = _all_saved_and_exact(prim, session, ks, ss, T, prod.stop())
        epoch = prim.node()["failover"]["lease"]["epoch"]
        assert epoch == 1, f"the lease changed hands ({epoch})"
        record(
            "split-brain-attempts",
            case="lease store frozen",
            frozen_seconds=3 * LEASE,
            fenced_after_seconds=round(fenced_after, 1),
            lease_changed_hands=False,
            points_lost=0,
            **figures,
        )
    finally:
        prod.stop()
        for n in nodes:
            n.kill9()
        cluster.shutdown()
