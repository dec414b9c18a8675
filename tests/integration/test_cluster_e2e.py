"""Primary/secondary end to end: separate instance processes, real Kafka and Cassandra, data produced continuously.

- steady state: only the primary writes; the secondary's saved marks follow;
- failover: kill -9 the primary in the middle of a chunk, promote the secondary through the API without force;
  every produced point of every completed chunk is then in Cassandra, and no chunk holds fewer points than were
  produced for it;
- planned handover: demote, promote another; nothing written twice;
- a restarted primary replaying Kafka rewrites nothing;
- a node started as primary in the middle of a chunk does not write that partial chunk (Metrictank issue 452);
- promotion refused with 409 and its reasons while checks fail; 401 without the admin token.
"""

from __future__ import annotations

import logging
import time

import httpx
import numpy as np

from metrictank.fakemetrics import SeriesSet
from metrictank.schema import row_key, table_for_ttl

from .cluster import (
    RAW_TTL,
    SPAN,
    InstanceProc,
    SimProducer,
    expected_chunk,
    read_chunks,
    sim_start,
    wait_until,
)
from .helpers import free_port
from .reliability import consumed_through, topic_highs, wait_saved_through

log = logging.getLogger(__name__)
PARTS = 4
TOKEN = "s3cret-token"


def _sections(
    kafka, cassandra, ks, topic, persist, primary, offset="oldest", peers="", persist_offset="oldest"
):
    return {
        "kafka-mdm-in": {"brokers": kafka, "topics": topic, "offset": offset},
        "kafka-cluster": {"topic": persist, "offset": persist_offset, "backlog-process-timeout": "30s"},
        "cluster": {
            "primary-node": primary,
            "warm-up-period": "0s",
            "peers": peers,
            "peer-timeout": "1s",
            "foreign-writer-window": "3s",
            # a killed primary's lease expires after lease-duration + lease-margin: short, for a quick failover
            "lease-duration": "4s",
            "lease-margin": "1s",
        },
        "store": {"backend": "cassandra", "drain-timeout": "30s"},
        "cassandra": {"addrs": cassandra, "keyspace": ks, "create-keyspace": True, "timeout": "5s"},
    }


def _pair(tmp_path, name_a, name_b, kafka, cassandra, ks, topic, persist, token_b=""):
    """A primary and a secondary that are each other's peer."""
    pa, pb = free_port(), free_port()
    a = InstanceProc(
        tmp_path / "a",
        name_a,
        _sections(kafka, cassandra, ks, topic, persist, True, peers=f"http://127.0.0.1:{pb}"),
        port=pa,
    )
    b = InstanceProc(
        tmp_path / "b",
        name_b,
        _sections(kafka, cassandra, ks, topic, persist, False, peers=f"http://127.0.0.1:{pa}"),
        token=token_b,
        port=pb,
    )
    return a, b


def _verify_store(session, ks, ss: SeriesSet, first_ts: int, t_end: int, t0_from: int | None = None):
    """Every chunk that completed (all but the open one) holds every produced point. Returns figures."""
    last_ts = t_end - 1
    open_t0 = last_ts - last_ts % SPAN
    first_t0 = first_ts - first_ts % SPAN if t0_from is None else t0_from
    t0s = list(range(first_t0, open_t0, SPAN))
    produced = read_back = 0
    missing = []
    for i in range(len(ss)):
        chunks = read_chunks(session, ks, ss.ids[i], t0s)
        for t0 in t0s:
            ets, evals = expected_chunk(ss, i, t0, first_ts, last_ts)
            produced += len(ets)
            got = chunks.get(t0)
            if got is None:
                missing.append((ss.names[i], t0))
                continue
            ts, vals = got
            read_back += len(ts)
            np.testing.assert_array_equal(ts, ets, err_msg=f"{ss.names[i]} chunk {t0}: points")
            np.testing.assert_array_equal(vals, evals, err_msg=f"{ss.names[i]} chunk {t0}: values")
    assert not missing, f"{len(missing)} completed chunks missing, e.g. {missing[:5]}"
    return {"chunks": len(t0s) * len(ss), "points_produced": produced, "points_read_back": read_back}


def _writetimes(session, ks, ss: SeriesSet, t0s: list[int]) -> dict[tuple[int, int], int]:
    table, _ = table_for_ttl(RAW_TTL)
    out = {}
    for i in range(len(ss)):
        for t0 in t0s:
            row = session.execute(
                f"SELECT writetime(data) AS w FROM {ks}.{table} WHERE key = %s AND ts = %s",
                (row_key(ss.ids[i], t0), t0),
            ).one()
            if row is not None:
                out[(i, t0)] = row.w
    return out


def test_steady_state_then_failover_after_kill9(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace, record_property
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(20, PARTS, prefix="e2e.failover")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=40)
    prod.step_to(T + 150)
    a, b = _pair(
        tmp_path, "mt-a", "mt-b", kafka_bootstrap, cassandra_hosts, ks, topic, persist, token_b=TOKEN
    )
    try:
        a.start()
        b.start()
        prod.run_background()
        # steady state: the primary writes, the secondary writes nothing and its marks follow
        wait_until(lambda: a.node()["chunksQueued"] >= 20 * 3, 60, "primary writing", a)
        wait_until(lambda: b.node()["savedMarks"]["newestSavedT0"] >= T + 120, 30, "secondary marks", b)
        nb = b.node()
        assert nb["chunksQueued"] == 0 and nb["primary"] is False
        lag_s = a.node()["savedMarks"]["newestSavedT0"] - nb["savedMarks"]["newestSavedT0"]
        assert lag_s <= 3 * SPAN, lag_s

        # promotion refused while the primary is alive (split brain), with the reason; 401 without token
        assert b.post_node(primary=True).status_code == 401
        r = b.post_node(token=TOKEN, primary=True)
        assert r.status_code == 409, r.text
        assert any("mt-a" in reason and "primary" in reason for reason in r.json()["reasons"]), r.json()
        assert b.node()["primary"] is False

        # kill -9 the primary in the middle of a chunk
        wait_until(lambda: 20 <= (prod.t - T) % SPAN <= 40, 10, "middle of a chunk")
        t_kill = prod.t
        a.kill9()
        # right after the kill, a's last persist messages are recent: it may still be writing, so b waits
        r = b.post_node(token=TOKEN, primary=True)
        if r.status_code == 409:
            assert any("mt-a announced chunk writes" in x for x in r.json()["reasons"]), r.json()
        # then the checks pass without force: a is unreachable and silent, b saw every chunk from its start
        deadline = time.monotonic() + 10
        while r.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            r = b.post_node(token=TOKEN, primary=True)
        assert r.status_code == 200 and r.text == "OK", r.text
        nb = b.node()
        assert nb["primary"] is True and nb["dataCompletePromotionWait"] == 0
        wait_until(lambda: prod.t > t_kill + 4 * SPAN, 30, "more data after failover")
        t_end = prod.stop()
        wait_saved_through(b, t_end, 60, "b saved every completed chunk")
        figures = _verify_store(cassandra_session, ks, ss, T, t_end)
        figures["chunks_skipped_partial"] = b.node()["chunksSkippedPartial"]
        assert figures["chunks_skipped_partial"] == 0
        assert figures["points_read_back"] == figures["points_produced"]
        for k, v in figures.items():
            record_property(k, v)
        print(f"failover figures: {figures}")
    finally:
        prod.stop()
        a.kill9()
        b.stop()


def test_planned_handover_writes_nothing_twice(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(10, PARTS, prefix="e2e.handover")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=40)
    prod.step_to(T + 100)
    a, b = _pair(tmp_path, "mt-ha", "mt-hb", kafka_bootstrap, cassandra_hosts, ks, topic, persist)
    try:
        a.start()
        b.start()
        prod.run_background()
        wait_until(lambda: a.node()["savedMarks"]["newestSavedT0"] >= T + 4 * SPAN, 60, "a writing", a)
        r = a.post_node(primary=False)  # returns once drained and persist messages are sent
        assert r.status_code == 200 and r.text == "OK", r.text
        handover_us = int(time.time() * 1e6)
        a_saved = a.node()["savedMarks"]["newestSavedT0"]
        wait_until(lambda: b.node()["savedMarks"]["newestSavedT0"] >= a_saved, 20, "b has a's marks", b)
        r = b.post_node(primary=True)
        assert r.status_code == 200, r.text
        wait_until(lambda: prod.t > a_saved + 5 * SPAN, 30, "data after handover")
        t_end = prod.stop()
        wait_saved_through(b, t_end, 60, "b saved")
        _verify_store(cassandra_session, ks, ss, T, t_end)
        # chunks a saved before the handover were not written again by b
        before = list(range(T - T % SPAN, a_saved + 1, SPAN))
        wt = _writetimes(cassandra_session, ks, ss, before)
        assert len(wt) == len(before) * len(ss)
        rewritten = [k for k, w in wt.items() if w > handover_us]
        assert not rewritten, f"{len(rewritten)} chunks written twice, e.g. {rewritten[:3]}"
        assert a.node()["chunksQueued"] > 0 and b.node()["chunksQueued"] > 0
    finally:
        prod.stop()
        a.stop()
        b.stop()


def test_restarted_primary_replay_rewrites_nothing(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(10, PARTS, prefix="e2e.restart")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T)
    prod.step_to(T + 5 * SPAN + 30)
    t_end = prod.stop()
    a = InstanceProc(
        tmp_path / "a", "mt-ra", _sections(kafka_bootstrap, cassandra_hosts, ks, topic, persist, True)
    )
    try:
        a.start()
        wait_until(
            lambda: (
                a.node()["savedMarks"]["newestSavedT0"] >= T + 4 * SPAN and a.node()["pendingWrites"] == 0
            ),
            60,
            "first run saved",
            a,
        )
        written = a.node()["chunksQueued"]
        assert written >= 10 * 5
        a.stop()
        restart_us = int(time.time() * 1e6)
        highs = topic_highs(kafka_bootstrap, topic)  # the producer stopped: the end of the replay
        a.start()
        # a positive condition before asserting that nothing was queued: the whole backlog was read (the
        # offset gauge moves after the batches before it were ingested and their writes planned)
        wait_until(lambda: consumed_through(a.url, highs), 60, "the whole backlog replayed", a)
        n = a.node()
        assert n["chunksQueued"] == 0, f"restarted primary queued {n['chunksQueued']} chunk writes again"
        t0s = list(range(T - T % SPAN, T + 5 * SPAN, SPAN))
        wt = _writetimes(cassandra_session, ks, ss, t0s)
        assert wt and all(w < restart_us for w in wt.values())
        _verify_store(cassandra_session, ks, ss, T, t_end)
    finally:
        a.stop()


def test_primary_started_mid_chunk_does_not_write_partial_chunk(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(10, PARTS, prefix="e2e.midchunk")
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T)
    X = T - T % SPAN + 3 * SPAN  # the chunk the second node will join in the middle of
    prod.step_to(X + SPAN + 30)  # X completes on the first primary
    a = InstanceProc(
        tmp_path / "a", "mt-ma", _sections(kafka_bootstrap, cassandra_hosts, ks, topic, persist, True)
    )
    try:
        a.start()
        wait_until(
            lambda: a.node()["savedMarks"]["newestSavedT0"] >= X and a.node()["pendingWrites"] == 0,
            60,
            "a saved X",
            a,
        )
    finally:
        a.stop()
    full = read_chunks(cassandra_session, ks, ss.ids[0], [X])[X]
    assert len(full[0]) == SPAN
    # a node that knows nothing of a's saves (persist offset newest) starts as primary at X+30
    ago = int(time.time()) - (X + 30)
    c = InstanceProc(
        tmp_path / "c",
        "mt-mc",
        _sections(
            kafka_bootstrap,
            cassandra_hosts,
            ks,
            topic,
            persist,
            True,
            offset=f"{ago}s",
            persist_offset="newest",
        ),
    )
    try:
        c.start()
        # the MetricData resent at X+30 lets c learn the series; then more data completes X on c
        prod.step_to(X + 4 * SPAN)
        t_end = prod.stop()
        wait_until(
            lambda: c.node()["chunksSkippedPartial"] >= 10 and c.node()["pendingWrites"] == 0,
            60,
            "c skipped",
            c,
        )
        n = c.node()
        assert n["partitionState"]["0"]["firstTimestamp"] >= X + 29
        # chunk X is still the complete one a wrote
        for i in range(len(ss)):
            ts, vals = read_chunks(cassandra_session, ks, ss.ids[i], [X])[X]
            ets, evals = expected_chunk(ss, i, X, T, t_end - 1)
            np.testing.assert_array_equal(ts, ets)
            np.testing.assert_array_equal(vals, evals)
        # and the chunks that c did see from their start are written by c
        wait_until(lambda: c.node()["chunksQueued"] >= 10, 30, "c writes complete chunks", c)
    finally:
        c.stop()


def test_unknown_writer_blocks_promotion_and_is_flagged_as_split_brain(
    tmp_path, kafka_bootstrap, cassandra_hosts, new_topic, new_keyspace
):
    from confluent_kafka import Producer

    from metrictank.schema import encode_persist

    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(4, PARTS, prefix="e2e.rogue")
    T = sim_start()
    SimProducer(kafka_bootstrap, topic, ss, T).step_to(T + 30)
    b = InstanceProc(
        tmp_path / "b", "mt-sb", _sections(kafka_bootstrap, cassandra_hosts, ks, topic, persist, False)
    )
    rogue = Producer({"bootstrap.servers": kafka_bootstrap})

    def rogue_write():
        rogue.produce(persist, encode_persist("rogue-mt", [(ss.ids[0], T)]), partition=0)
        rogue.flush(10)

    try:
        b.start()
        rogue_write()
        wait_until(lambda: "rogue-mt" in b.node()["otherWriters"], 10, "the rogue writer seen", b)
        r = b.post_node(primary=True)
        assert r.status_code == 409
        assert any("rogue-mt" in x and "[0]" in x for x in r.json()["reasons"]), r.json()
        # once the writer has been silent for the window, promotion is allowed
        wait_until(lambda: b.post_node(primary=True).status_code == 200, 15, "promotion after the window")
        # a primary that sees another writer on its partitions reports split brain
        rogue_write()
        metric = "metrictank_cluster_split_brain_seconds_total"

        def flagged():
            text = httpx.get(f"{b.url}/metrics", timeout=5).text
            return any(line.startswith(metric) and float(line.split()[-1]) >= 1 for line in text.splitlines())

        wait_until(flagged, 10, "split brain flagged", b)
    finally:
        b.stop()
