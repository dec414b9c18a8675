"""Reliability scenario 9: scale-out faults, on a multi-node bed as production clusters run.

Three Kafka brokers (combined KRaft nodes, a 3-voter quorum) and a 3-node Cassandra ring of this module's own,
node i on loopback address 127.0.0.i. The data and persist topics are replicated 3 ways with
`min.insync.replicas=2`, the producers write with acks=all (idempotent); the keyspace is SimpleStrategy 3 and the
store writes and reads at QUORUM. A primary and a secondary are given all three brokers and all three Cassandra
contact points.

Under continuous ingest: the broker leading most partitions of the two topics is stopped (SIGTERM, a controlled
shutdown), then one Cassandra node (the seed, also the first contact point of every client); with both down the
primary is killed with SIGKILL and the secondary promoted through `POST /node primary=true`, retrying on 409 as an
operator's script would. Ingest goes on, the stopped broker and Cassandra node are started again on their data
directories and must rejoin (the broker back in every ISR), and at the end every point of every series in every
completed chunk is read back from Cassandra at QUORUM, and a subset through /render, and compared exactly.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from metrictank.fakemetrics import SeriesSet
from metrictank.testbed.cassandra import connect

from .cluster import SPAN, InstanceProc, SimProducer, sim_start
from .helpers import free_port
from .reliability import (
    check_cassandra,
    check_render,
    consumed_through,
    metric_values,
    record,
    scrape,
    topic_highs,
    wait,
    wait_saved_through,
)

pytestmark = [pytest.mark.integration, pytest.mark.multinode]

PARTS = 4
N_SERIES = 40
RATE = 25.0  # simulated seconds per wall second: a chunk completes every 2.4 s
KEYSPACE = "reliability_scale_out"
PROMOTE_ATTEMPTS = 60  # an operator script's bound: about a minute at one try per second
STOPPED_CASSANDRA = "cassandra-1"  # the seed, and the first contact point of every client
FAIL = "metrictank_store_chunk_operations_save_fail_total"
RETRIES = "metrictank_store_chunk_operations_retries_total"
PERSIST_ERRORS = "metrictank_cluster_notifier_kafka_delivery_errors_total"


def node_sections(bed, topic: str, persist: str, primary: bool, peer: str) -> dict:
    return {
        "kafka-mdm-in": {"brokers": bed.kafka, "topics": topic, "offset": "oldest"},
        "kafka-cluster": {
            "brokers": bed.kafka,
            "topic": persist,
            "offset": "oldest",
            "backlog-process-timeout": "30s",
        },
        "cluster": {
            "primary-node": primary,
            "warm-up-period": "0s",
            "peers": peer,
            "peer-timeout": "1s",
            "foreign-writer-window": "3s",
            "lease-duration": "4s",
            "lease-margin": "1s",
        },
        "store": {"backend": "cassandra", "drain-timeout": "30s"},
        "cassandra": {
            "addrs": bed.cassandra,
            "keyspace": KEYSPACE,
            "create-keyspace": True,
            "replication": "SimpleStrategy 3",
            "consistency": "quorum",
            "timeout": "5s",
        },
    }


def topic_layout(kafka: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, list[int], list[int]]]:
    """(topic, partition) -> (leader, replicas, in-sync replicas), from the brokers' metadata."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": kafka, "log_level": 2}).list_topics(timeout=10)
    return {
        (t, p): (pm.leader, sorted(pm.replicas), sorted(pm.isrs))
        for t in topics
        for p, pm in md.topics[t].partitions.items()
    }


def topic_min_isr(kafka: str, topic: str) -> str:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": kafka})  # alive until the answer is in
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    while True:
        try:
            return admin.describe_configs([res])[res].result(30)["min.insync.replicas"].value
        except KafkaException as e:
            # the broker asked may not have the new topic in its metadata cache yet (3 brokers, a loaded
            # machine: seen in CI); any other error, or one that lasts, fails the test
            if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def counters(url: str) -> dict[str, int]:
    """Failed chunk saves (by reason), their retries and undelivered persist messages, from /metrics."""
    text = scrape(url)
    fams = {name: metric_values(text, name) for name in (FAIL, RETRIES, PERSIST_ERRORS)}
    assert fams[RETRIES] and fams[PERSIST_ERRORS], f"metric families missing from {url}/metrics"
    out = {"store_retries": int(sum(fams[RETRIES].values()))}
    out["persist_delivery_errors"] = int(sum(fams[PERSIST_ERRORS].values()))
    for labels, v in fams[FAIL].items():
        reason = labels.split('"')[1] if '"' in labels else "all"
        out[f"save_fail_{reason}"] = int(v)
    return out


def reason_kind(reason: str) -> str:
    """A promotion refusal without its figures, to count refusals by kind."""
    for key in ("lease is held", "announced chunk writes", "priority", "backlog", "unreachable"):
        if key in reason:
            return key
    return reason[:40]


def kill_while_writing(p: InstanceProc, timeout: float = 15) -> int:
    """SIGKILL as soon as the node reports chunk writes queued or in flight (or after `timeout` regardless);
    returns how many it reported."""
    deadline = time.monotonic() + timeout
    pending = 0
    while time.monotonic() < deadline:
        try:
            pending = p.node()["pendingWrites"]
        except httpx.HTTPError:
            continue
        if pending > 0:
            break
        time.sleep(0.01)
    p.kill9()
    return pending


def promote(proc: InstanceProc) -> tuple[int, Counter]:
    """The operator's loop: once a second until 200, bounded; 409 refusals are counted, anything else fails."""
    refusals: Counter = Counter()
    for attempt in range(PROMOTE_ATTEMPTS):
        try:
            r = proc.post_node(primary=True)
        except httpx.HTTPError as e:
            refusals[f"unreachable: {type(e).__name__}"] += 1
        else:
            if r.status_code == 200:
                return attempt, refusals
            assert r.status_code == 409, f"{proc.name}: {r.status_code} {r.text}"
            for reason in r.json()["reasons"]:
                refusals[reason_kind(reason)] += 1
        time.sleep(1.0)
    raise AssertionError(
        f"{proc.name} not promoted after {PROMOTE_ATTEMPTS} tries: {refusals}\n{proc.tail()}"
    )


def answers(session, query: str) -> bool:
    """The query returns a row (Unavailable and timeouts while a coordinator still sees a replica down: not yet)."""
    try:
        return session.execute(query).one() is not None
    except Exception:  # noqa: BLE001 - any driver error means "not yet"; wait() reports the timeout
        return False


def saved_past(proc: InstanceProc, t0: int) -> bool:
    return proc.node()["savedMarks"]["newestSavedT0"] >= t0


def test_scale_out_faults(tmp_path: Path, private_cluster_bed) -> None:
    bed = private_cluster_bed
    t_test = time.monotonic()
    kafka_names, cassandra_names = bed.names("kafka"), bed.names("cassandra")
    assert len(kafka_names) == 3 and len(cassandra_names) == 3, bed.endpoints.nodes
    assert [bed.address(n).split(":")[0] for n in kafka_names] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [bed.address(n).split(":")[0] for n in cassandra_names] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

    topic = bed.new_topic(PARTS, replication_factor=3, config={"min.insync.replicas": "2"})
    persist = bed.new_topic(PARTS, replication_factor=3, config={"min.insync.replicas": "2"})
    assert topic_min_isr(bed.kafka, topic) == topic_min_isr(bed.kafka, persist) == "2"
    assert all(len(r) == 3 for _, r, _ in topic_layout(bed.kafka, [topic, persist]).values())

    ss = SeriesSet.make(N_SERIES, PARTS, prefix="rel.scaleout", interval=1)
    T = sim_start()
    prod = SimProducer(bed.kafka, topic, ss, T, rate=RATE)
    prod.step_to(T + 2 * SPAN + 10)
    ports = {"a": free_port(), "b": free_port()}
    a = InstanceProc(
        tmp_path / "a",
        "mt-scale-a",
        node_sections(bed, topic, persist, True, f"http://127.0.0.1:{ports['b']}"),
        port=ports["a"],
    )
    b = InstanceProc(
        tmp_path / "b",
        "mt-scale-b",
        node_sections(bed, topic, persist, False, f"http://127.0.0.1:{ports['a']}"),
        port=ports["b"],
    )
    session_cluster = None
    stopped: dict[str, str] = {}
    try:
        a.start()
        b.start()
        session_cluster, session = connect(
            bed.cassandra, timeout=30, request_timeout=60, consistency="quorum"
        )
        ks_rf = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (KEYSPACE,)
        ).one()
        assert ks_rf is not None and ks_rf.replication.get("replication_factor") == "3", ks_rf
        prod.run_background()
        wait(lambda: saved_past(a, T + SPAN), 60, "first saves", a)

        # 1. the broker leading most partitions of the two topics goes away (controlled shutdown)
        leaders = Counter(leader for leader, _, _ in topic_layout(bed.kafka, [topic, persist]).values())
        broker_id, led = leaders.most_common(1)[0]
        broker = f"kafka-{broker_id}"
        t0 = time.monotonic()
        bed.stop_server(broker)
        stopped[broker] = "stopped"
        broker_stop_s = time.monotonic() - t0
        at = prod.t
        wait(lambda: saved_past(a, at + SPAN), 60, "saves go on with a broker down", a)
        moved = {k: v for k, v in topic_layout(bed.kafka, [topic, persist]).items() if v[0] == broker_id}
        assert not moved, f"partitions still led by the stopped broker: {moved}"

        # 2. and a Cassandra node: writes and reads at QUORUM go on with 2 of 3 replicas
        t0 = time.monotonic()
        bed.stop_server(STOPPED_CASSANDRA)
        stopped[STOPPED_CASSANDRA] = "stopped"
        cassandra_stop_s = time.monotonic() - t0
        at = prod.t
        wait(lambda: saved_past(a, at + SPAN), 90, "saves go on with a Cassandra node down", a)

        # 3. the primary dies with both down, with chunk writes queued if it can be caught so; the secondary
        #    is promoted
        figures_a = counters(a.url)
        pending_at_kill = kill_while_writing(a)
        t_kill = time.monotonic()
        retries, refusals = promote(b)
        promote_s = time.monotonic() - t_kill
        at = prod.t
        wait(lambda: saved_past(b, at + SPAN), 90, "the promoted node saves with a broker and a node down", b)

        # 4. the stopped servers come back on their data directories and rejoin
        broker_restart_s = bed.start_server(broker)
        stopped[broker] = "restarted"
        isr_wait_s = wait(
            lambda: all(len(isr) == 3 for _, _, isr in topic_layout(bed.kafka, [topic, persist]).values()),
            120,
            f"{broker} back in every ISR",
        )
        cassandra_restart_s = bed.start_server(STOPPED_CASSANDRA)
        stopped[STOPPED_CASSANDRA] = "restarted"
        # the ring is whole again: a read at consistency ALL needs every replica to answer
        all_cluster, all_session = connect(bed.cassandra, timeout=30, request_timeout=30, consistency="all")
        try:
            all_replicas_s = wait(
                lambda: answers(all_session, f"SELECT holder FROM {KEYSPACE}.metrictank_lease LIMIT 1"),
                60,
                f"every replica answers once {STOPPED_CASSANDRA} is back",
            )
        finally:
            all_cluster.shutdown()
        at = prod.t
        wait(lambda: saved_past(b, at + SPAN), 90, "saves with every server back", b)

        t_end = prod.stop()
        highs = topic_highs(bed.kafka, topic)
        wait(lambda: consumed_through(b.url, highs), 90, "the new primary caught up", b)
        wait_saved_through(b, t_end, 120)
        figures_b = counters(b.url)
        ex = check_cassandra(session, KEYSPACE, ss, T, t_end)
        render = check_render(b.url, ss, range(0, N_SERIES, 5), T, t_end)
        record(
            "scale-out-faults",
            kafka_brokers=len(kafka_names),
            cassandra_nodes=len(cassandra_names),
            topic_replication_factor=3,
            min_insync_replicas=2,
            keyspace_replication="SimpleStrategy 3",
            consistency="quorum",
            series=N_SERIES,
            stopped_broker=broker,
            partitions_led_by_stopped_broker=led,
            stopped_cassandra_node=STOPPED_CASSANDRA,
            bed_start_seconds=bed.start_seconds,
            server_ready_seconds=dict(bed.endpoints.ready_seconds),
            broker_stop_seconds=round(broker_stop_s, 1),
            cassandra_stop_seconds=round(cassandra_stop_s, 1),
            writes_pending_at_kill=pending_at_kill,
            promote_seconds=round(promote_s, 2),
            promotion_retries=retries,
            refusals_by_reason=dict(refusals),
            broker_restart_seconds=round(broker_restart_s, 1),
            broker_back_in_isr_seconds=round(isr_wait_s, 1),
            cassandra_restart_seconds=round(cassandra_restart_s, 1),
            all_replicas_answer_seconds=round(all_replicas_s, 1),
            first_primary_counters=figures_a,
            new_primary_counters=figures_b,
            render_points_checked=render.points_expected,
            sim_seconds=t_end - T,
            test_seconds=round(time.monotonic() - t_test, 1),
            **ex.figures(),
        )
        ex.assert_exact()
        render.assert_exact()
    finally:
        prod.stop()
        a.kill9()
        b.kill9()
        if session_cluster is not None:
            session_cluster.shutdown()
