"""Reliability scenario 1: repeated failover.

Three instance processes share the data and persist topics and the store. Again and again the primary is killed
with SIGKILL at a seeded random phase of the chunk (some kills deliberately while it has chunk writes queued), a
secondary is promoted through `POST /node primary=true` WITHOUT force, retrying on 409 the way an operator's
script would (bounded), and the dead node is restarted as a secondary. At the end every point of every series
in every completed chunk is read back from the store (and every point of a few series through /render) and
compared exactly: nothing lost, duplicated, wrong, and no chunk overwritten by a partial one.

Why the 409s are expected: right after the kill the dead primary's last persist messages are recent, so the
promotion check refuses for `[cluster] foreign-writer-window` (it may still be writing), and its primary lease
is held until it expires (`lease-duration` + `lease-margin`); a restarted node may be refused while it replays
(priority above max-priority). The operator loop must ride over all of them.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import SPAN, InstanceProc, SimProducer, sim_start
from .helpers import free_port
from .reliability import (
    check_cassandra,
    check_render,
    check_sqlite,
    consumed_through,
    record,
    topic_highs,
    wait,
    wait_saved_through,
)

pytestmark = pytest.mark.integration

PARTS = 4
N_SERIES = 40
RATE = 25.0  # simulated seconds per wall second: a chunk completes every 2.4 s
FAILOVERS = 10
SEED = 13
PROMOTE_ATTEMPTS = 60  # an operator script's bound: about a minute at one try per second
NAMES = ("mt-f0", "mt-f1", "mt-f2")


def sections(kafka: str, store: dict[str, dict], topic: str, persist: str, primary: bool, peers: str) -> dict:
    out = {
        "kafka-mdm-in": {"brokers": kafka, "topics": topic, "offset": "oldest"},
        "kafka-cluster": {"topic": persist, "offset": "oldest", "backlog-process-timeout": "30s"},
        "cluster": {
            "primary-node": primary,
            "warm-up-period": "0s",
            "peers": peers,
            "peer-timeout": "1s",
            "foreign-writer-window": "3s",
            # the dead primary's lease must expire before anyone may take over: short here, for a quick run
            "lease-duration": "4s",
            "lease-margin": "1s",
        },
    }
    out.update(store)
    return out


class Cluster:
    """Three nodes that are each other's peers; a node is (re)created with the role it restarts in."""

    def __init__(self, tmp: Path, kafka: str, store: dict[str, dict], topic: str, persist: str) -> None:
        self.tmp, self.kafka, self.store, self.topic, self.persist = tmp, kafka, store, topic, persist
        self.ports = {n: free_port() for n in NAMES}
        self.procs: dict[str, InstanceProc] = {}

    def make(self, name: str, primary: bool) -> InstanceProc:
        peers = ",".join(f"http://127.0.0.1:{p}" for n, p in self.ports.items() if n != name)
        proc = InstanceProc(
            self.tmp / name,
            name,
            sections(self.kafka, self.store, self.topic, self.persist, primary, peers),
            port=self.ports[name],
        )
        self.procs[name] = proc
        return proc

    def promote_one(self, candidates: list[str]) -> tuple[str, int, Counter]:
        """The operator's loop: try each candidate in turn, once a second, until one says 200; bounded."""
        refusals: Counter = Counter()
        for attempt in range(PROMOTE_ATTEMPTS):
            for name in candidates:
                try:
                    r = self.procs[name].post_node(primary=True)
                except Exception as e:  # noqa: BLE001 - a node still starting does not answer
                    refusals[f"unreachable: {type(e).__name__}"] += 1
                    continue
                if r.status_code == 200:
                    return name, attempt, refusals
                assert r.status_code == 409, f"{name}: {r.status_code} {r.text}"
                for reason in r.json()["reasons"]:
                    refusals[reason_kind(reason)] += 1
            time.sleep(1.0)
        raise AssertionError(f"no secondary accepted promotion after {PROMOTE_ATTEMPTS} rounds: {refusals}")

    def shutdown(self) -> None:
        for p in self.procs.values():
            p.kill9()


def reason_kind(reason: str) -> str:
    """A refusal reason without its figures, to count refusals by kind."""
    for key in (
        "lease is held",
        "announced chunk writes",
        "is primary for shared",
        "still has",
        "priority",
        "data-complete",
        "backlog",
        "unreachable",
    ):
        if key in reason:
            return key
    return reason[:40]


def test_repeated_failover_cassandra(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    ks = new_keyspace()
    store = {
        "store": {"backend": "cassandra", "drain-timeout": "30s"},
        "cassandra": {"addrs": cassandra_hosts, "keyspace": ks, "create-keyspace": True, "timeout": "5s"},
    }
    figures = run_failovers(tmp_path, kafka_bootstrap, store, new_topic)
    ex = check_cassandra(cassandra_session, ks, figures["ss"], figures["first_ts"], figures["t_end"])
    finish("failover-cassandra", figures, ex)


def test_repeated_failover_sqlite_shared_file(tmp_path, kafka_bootstrap, new_topic):
    """The same with the three nodes writing one SQLite database file (one host, several processes): SQLite's
    own locking must serialise the writers of a killed primary and of its successor without losing a chunk."""
    db = tmp_path / "shared-chunks.db"
    store = {"store": {"backend": "sqlite", "drain-timeout": "30s"}, "sqlite": {"path": str(db)}}
    figures = run_failovers(tmp_path, kafka_bootstrap, store, new_topic)
    ex = check_sqlite(db, figures["ss"], figures["first_ts"], figures["t_end"])
    finish("failover-sqlite", figures, ex, need_queued_kill=False)


def run_failovers(tmp_path: Path, kafka: str, store: dict[str, dict], new_topic) -> dict:
    """Drive the failovers; returns the figures and what the read-back needs. The cluster is left running
    only until the final primary saved every completed chunk."""
    rng = random.Random(SEED)
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="rel.failover", interval=1)
    T = sim_start()
    prod = SimProducer(kafka, topic, ss, T, rate=RATE)
    prod.step_to(T + 2 * SPAN + 10)
    cl = Cluster(tmp_path, kafka, store, topic, persist)
    promote_s: list[float] = []
    ready_s: list[float] = []
    attempts: list[int] = []
    refusals: Counter = Counter()
    queued_at_kill: list[int] = []
    phases: list[int] = []
    try:
        primary = NAMES[0]
        for n in NAMES:
            cl.make(n, n == primary).start()
        prod.run_background()
        wait(
            lambda: cl.procs[primary].node()["chunksQueued"] >= N_SERIES,
            60,
            "first writes",
            cl.procs[primary],
        )
        for k in range(FAILOVERS):
            p = cl.procs[primary]
            if k % 3 == 0:
                # right after a chunk boundary: killed the moment /node shows writes queued or in flight
                pending = kill_while_writing(p, timeout=15)
                phase = -1
                if pending == 0:  # never seen (SQLite commits a batch in a millisecond): kill at a boundary
                    boundary = T + ((prod.t - T) // SPAN + 1) * SPAN
                    wait(lambda b=boundary: prod.t >= b, 10, "a chunk boundary")
                    phase = (prod.t - T) % SPAN
                    p.kill9()
            else:
                phase = rng.randrange(SPAN)
                # the next time the producer passes this phase (polling a window could step over it under load)
                at = T + ((prod.t - T - phase) // SPAN + 1) * SPAN + phase
                wait(lambda at=at: prod.t >= at, 10, f"phase {phase}")
                phase = (prod.t - T) % SPAN
                try:
                    pending = p.node()["pendingWrites"]
                except httpx.HTTPError:  # unknown: counted as none
                    pending = 0
                p.kill9()
            t_kill = time.monotonic()
            phases.append(phase)
            queued_at_kill.append(pending)
            secondaries = [n for n in NAMES if n != primary]
            new, tries, why = cl.promote_one(secondaries)
            promote_s.append(time.monotonic() - t_kill)
            attempts.append(tries)
            refusals.update(why)
            dead = primary
            primary = new
            t_restart = time.monotonic()
            cl.make(dead, False).start(wait=False)
            cl.procs[dead].wait_consuming(60)
            ready_s.append(time.monotonic() - t_restart)
            print(
                f"failover {k + 1}: killed {dead} at phase {phase} with {pending} writes pending; "
                f"{primary} promoted after {promote_s[-1]:.1f}s ({tries} retries); {dead} back in {ready_s[-1]:.1f}s"
            )
            # let the new primary write a while: at least one chunk completes on it before the next kill
            t_promoted = prod.t
            wait(lambda t=t_promoted: prod.t >= t + SPAN + 5, 30, "a chunk after the promotion")
        t_end = prod.stop()
        final = cl.procs[primary]
        highs = topic_highs(kafka, topic)
        wait(lambda: consumed_through(final.url, highs), 60, "final primary caught up", final)
        wait_saved_through(final, t_end, 60, "final primary saved every completed chunk")
        render = check_render(final.url, ss, range(0, N_SERIES, 5), T, t_end)
        render.assert_exact()
        skipped = sum(pp.node()["chunksSkippedPartial"] for pp in cl.procs.values())
    finally:
        prod.stop()
        cl.shutdown()
    return {
        "ss": ss,
        "first_ts": T,
        "t_end": t_end,
        "failovers": FAILOVERS,
        "nodes": len(NAMES),
        "series": N_SERIES,
        "kill_phases": phases,
        "kills_with_queued_writes": sum(1 for q in queued_at_kill if q > 0),
        "writes_pending_at_kill": queued_at_kill,
        "promote_seconds": summary(promote_s),
        "promotion_retries": sum(attempts),
        "refusals_by_reason": dict(refusals),
        "restart_to_ready_seconds": summary(ready_s),
        "render_points_checked": render.points_expected,
        "chunks_skipped_partial": skipped,
        "sim_seconds": t_end - T,
    }


def kill_while_writing(p: InstanceProc, timeout: float = 30) -> int:
    """SIGKILL as soon as the node reports chunk writes queued or in flight; returns how many it reported, or 0
    (and the node is not killed) when it never reported any within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pending = p.node()["pendingWrites"]
        except httpx.HTTPError:  # busy for a moment on a loaded machine: look again
            continue
        if pending > 0:
            p.kill9()
            return pending
        time.sleep(0.01)
    return 0


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "min": round(min(xs), 2),
        "median": round(statistics.median(xs), 2),
        "max": round(max(xs), 2),
    }


def finish(scenario: str, figures: dict, ex, need_queued_kill: bool = True) -> None:
    out = {k: v for k, v in figures.items() if k not in ("ss", "first_ts", "t_end")}
    out.update(ex.figures())
    record(scenario, **out)
    ex.assert_exact()
    if need_queued_kill:  # Cassandra writes take long enough to be seen queued; SQLite's usually do not
        assert figures["kills_with_queued_writes"] >= 1
