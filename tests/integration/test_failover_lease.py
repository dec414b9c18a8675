"""Automatic failover on the primary lease (Cassandra lightweight transactions), against real Kafka and Cassandra
with instance processes: repeated kill -9 of the primary with nobody acting, a primary paused past its lease, and
a candidate that cannot reach a live primary. Every produced point of every completed chunk is read back."""

from __future__ import annotations

import os
import random
import re
import signal
import time

import httpx
import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import SPAN, InstanceProc, SimProducer, sim_start, wait_until
from .helpers import free_port
from .reliability import record, wait_saved_through
from .test_cluster_e2e import _verify_store

pytestmark = pytest.mark.integration

PARTS = 2
LEASE, MARGIN = 4.0, 1.0


def _sections(
    kafka, cassandra, ks, topic, persist, peers: str, failover: str = "auto", primary: bool = False
):
    return {
        "kafka-mdm-in": {"brokers": kafka, "topics": topic, "offset": "oldest"},
        "kafka-cluster": {"topic": persist, "offset": "oldest", "backlog-process-timeout": "30s"},
        "cluster": {
            "primary-node": primary,
            "warm-up-period": "0s",
            "peers": peers,
            "peer-timeout": "1s",
            "foreign-writer-window": "2s",
            "failover": failover,
            "lease-duration": f"{LEASE}s",
            "lease-margin": f"{MARGIN}s",
            "failover-hold-off": "0s",
        },
        "store": {"backend": "cassandra", "drain-timeout": "10s"},
        "cassandra": {"addrs": cassandra, "keyspace": ks, "create-keyspace": True, "timeout": "5s"},
    }


def _nodes(
    tmp_path, kafka, cassandra, ks, topic, persist, names=("mt-a", "mt-b"), **kw
) -> list[InstanceProc]:
    ports = [free_port() for _ in names]
    out = []
    for i, name in enumerate(names):
        peers = ",".join(f"http://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i)
        out.append(
            InstanceProc(
                tmp_path / name,
                name,
                _sections(kafka, cassandra, ks, topic, persist, peers, **kw),
                port=ports[i],
            )
        )
    return out


def _primary(nodes: list[InstanceProc]) -> list[InstanceProc]:
    out = []
    for n in nodes:
        if n.proc is None or n.proc.poll() is not None:
            continue
        try:
            if n.node()["primary"]:
                out.append(n)
        except httpx.HTTPError:
            pass
    return out


def _all_saved_and_exact(
    prim: InstanceProc, session, ks: str, ss: SeriesSet, first_ts: int, t_end: int
) -> dict:
    """Wait until the primary saved every completed chunk, then read every produced point back from the store."""
    wait_saved_through(prim, t_end, 90)
    figures = _verify_store(session, ks, ss, first_ts, t_end)
    assert figures["points_read_back"] == figures["points_produced"]
    return figures


def _metric(n: InstanceProc, name: str) -> float:
    text = httpx.get(f"{n.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{name}(\{{|\s)", line):
            total += float(line.split()[-1])
    return total


def test_repeated_kill9_of_the_primary_fails_over_without_anyone_acting(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace, record_property
):
    rounds = int(os.environ.get("METRICTANK_FAILOVER_ROUNDS", "10"))
    rng = random.Random(14)
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(10, PARTS, prefix="lease.kill9")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=20)
    prod.step_to(T + 90)
    nodes = _nodes(tmp_path, kafka_bootstrap, cassandra_hosts, ks, topic, persist)
    takeovers: list[float] = []
    try:
        for n in nodes:
            n.start()
        prod.run_background()
        wait_until(lambda: len(_primary(nodes)) == 1, 30, "one node took the lease")
        for r in range(rounds):
            (prim,) = _primary(nodes)
            other = next(n for n in nodes if n is not prim)
            # a random phase of the chunk, often while writes of the last boundary are still queued
            phase = rng.randrange(0, SPAN)
            at = T + ((prod.t - T - phase) // SPAN + 1) * SPAN + phase  # the next time the producer passes it
            wait_until(lambda at=at: prod.t >= at, 10, f"phase {phase}")
            prim.kill9()
            killed = time.monotonic()
            wait_until(
                lambda o=other: o.node()["primary"], LEASE + MARGIN + 5 + 10, f"round {r}: takeover", other
            )
            took = time.monotonic() - killed
            takeovers.append(took)
            assert took <= LEASE + MARGIN + 5 + 5, f"round {r}: takeover took {took:.1f}s"
            prim.start()  # back as a secondary (it waits for its persist backlog): the lease is the other's
            assert len(_primary(nodes)) == 1
        t_end = prod.stop()
        (prim,) = _primary(nodes)
        figures = _all_saved_and_exact(prim, cassandra_session, ks, ss, T, t_end)
        figures.update(
            failovers=len(takeovers),
            takeover_max_s=round(max(takeovers), 1),
            takeover_median_s=round(sorted(takeovers)[len(takeovers) // 2], 1),
            epoch=prim.node()["failover"]["lease"]["epoch"],
        )
        assert figures["epoch"] >= rounds + 1
        for k, v in figures.items():
            record_property(k, v)
        record("automatic-failover", lease_seconds=LEASE, margin_seconds=MARGIN, points_lost=0, **figures)
    finally:
        prod.stop()
        for n in nodes:
            n.kill9()


def test_paused_primary_wakes_up_fenced_writes_nothing_and_demotes_itself(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(10, PARTS, prefix="lease.sigstop")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=20)
    prod.step_to(T + 90)
    nodes = _nodes(tmp_path, kafka_bootstrap, cassandra_hosts, ks, topic, persist)
    try:
        for n in nodes:
            n.start()
        prod.run_background()
        wait_until(lambda: len(_primary(nodes)) == 1, 30, "one node took the lease")
        (prim,) = _primary(nodes)
        other = next(n for n in nodes if n is not prim)
        wait_until(lambda: prim.node()["chunksQueued"] > 0, 60, "the primary writing", prim)
        prim.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        try:
            wait_until(
                lambda: other.node()["primary"], LEASE + MARGIN + 15, "takeover of the paused primary", other
            )
            took_over = time.monotonic() - paused
            # let a chunk boundary pass while it is paused: the old primary has chunks to write when it wakes
            t_boundary = prod.t + SPAN - (prod.t - T) % SPAN + 5
            wait_until(lambda: prod.t >= t_boundary, 30, "a chunk boundary during the pause")
        finally:
            prim.proc.send_signal(signal.SIGCONT)
        # it wakes up: it must find out it lost the lease and step down without writing
        wait_until(lambda: not prim.node()["primary"], 15, "the paused primary demoted itself", prim)
        saved_at_wake = _metric(prim, "metrictank_store_chunk_operations_save_ok_total")
        wait_until(lambda: prod.t > t_boundary + SPAN, 30, "another chunk boundary")
        assert _metric(prim, "metrictank_store_chunk_operations_save_ok_total") == saved_at_wake
        assert _metric(prim, "metrictank_cluster_lease_losses_total") >= 1
        figures = _all_saved_and_exact(other, cassandra_session, ks, ss, T, prod.stop())
        assert len(_primary(nodes)) == 1
        record(
            "split-brain-attempts",
            case="paused primary",
            takeover_seconds=round(took_over, 1),
            old_primary_writes_after_wake=0,
            points_lost=0,
            **figures,
        )
    finally:
        prod.stop()
        for n in nodes:
            n.kill9()


def test_a_live_primary_unreachable_from_the_candidate_is_not_replaced_without_force(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    """The candidate's peer URL for the primary is a blackhole (nothing listens there): peer checks cannot see
    the primary, but the lease can. Promotion is refused across chunk boundaries; force steals the lease and the
    old primary steps down at its next renewal, so there is never a second writer for long."""
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(4, PARTS, prefix="lease.blackhole")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=20)
    prod.step_to(T + 90)
    blackhole = f"http://127.0.0.1:{free_port()}"
    pa = free_port()
    a = InstanceProc(
        tmp_path / "a",
        "mt-a",
        _sections(kafka_bootstrap, cassandra_hosts, ks, topic, persist, "", failover="manual", primary=True),
        port=pa,
    )
    b = InstanceProc(
        tmp_path / "b",
        "mt-b",
        _sections(kafka_bootstrap, cassandra_hosts, ks, topic, persist, blackhole, failover="manual"),
    )
    try:
        a.start()
        b.start()
        prod.run_background()
        wait_until(lambda: a.node()["failover"]["lease"]["valid"], 20, "a holds the lease", a)
        deadline = time.monotonic() + 2.5 * SPAN / prod.rate + 2  # across at least two chunk boundaries
        refusals = 0
        while time.monotonic() < deadline:
            r = b.post_node(primary=True)
            assert r.status_code == 409, r.text
            assert any("lease is held by mt-a" in x for x in r.json()["reasons"]), r.json()
            refusals += 1
            time.sleep(0.5)
        assert b.node()["primary"] is False and refusals >= 5
        r = b.post_node(primary=True, force=True)
        assert r.status_code == 200, r.text
        forced = time.monotonic()
        wait_until(lambda: not a.node()["primary"], LEASE + 2, "the old primary stepped down", a)
        stepped_down = time.monotonic() - forced
        assert b.node()["failover"]["lease"]["epoch"] == 2
        figures = _all_saved_and_exact(b, cassandra_session, ks, ss, T, prod.stop())
        record(
            "split-brain-attempts",
            case="blackholed peer",
            refusals_without_force=refusals,
            old_primary_stepped_down_seconds=round(stepped_down, 1),
            points_lost=0,
            **figures,
        )
    finally:
        prod.stop()
        a.kill9()
        b.kill9()
