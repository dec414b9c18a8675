"""Reliability scenario 2: restart during replay.

A lone primary is killed with SIGKILL under load, restarted, killed again while it replays the data topic, and
restarted again. What it had saved (and announced) before the first kill must not be written again: the
Cassandra `writetime(data)` of those chunks is compared before and after. Nothing produced may be lost: every
point of every completed chunk is read back. Time to ready (persist backlog consumed, data consumption started)
and time to catch up (read up to the high watermarks recorded after the producer stopped) are reported.
"""

from __future__ import annotations

import time

import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import SPAN, InstanceProc, SimProducer, sim_start
from .reliability import (
    announced_chunks,
    check_cassandra,
    check_render,
    consumed_through,
    record,
    topic_highs,
    wait,
    wait_saved_through,
)
from .test_cluster_e2e import _writetimes as writetimes

pytestmark = pytest.mark.integration

PARTS = 4
N_SERIES = 100


def test_kill_restart_kill_during_replay_rewrites_nothing_loses_nothing(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, persist, ks = new_topic(PARTS), new_topic(PARTS), new_keyspace()
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="rel.restart", interval=1)
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=25)
    # a long backlog, so that the replay takes long enough to be interrupted
    prod.step_to(T + 40 * SPAN)
    sections = {
        "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
        "kafka-cluster": {"topic": persist, "offset": "oldest", "backlog-process-timeout": "30s"},
        "cluster": {"primary-node": True, "warm-up-period": "0s"},
        "store": {"backend": "cassandra", "drain-timeout": "30s"},
        "cassandra": {"addrs": cassandra_hosts, "keyspace": ks, "create-keyspace": True, "timeout": "5s"},
    }
    a = InstanceProc(tmp_path / "a", "mt-restart", sections)
    try:
        a.start()
        prod.run_background()
        wait(lambda: a.node()["savedMarks"]["newestSavedT0"] >= T + 40 * SPAN, 120, "first run saving", a)
        a.kill9()
        # the chunks whose save was announced before the kill: a restart must never write them again
        announced = announced_chunks(kafka_bootstrap, persist)
        first_t0 = T - T % SPAN
        raw = {
            (i, t0)
            for i in range(len(ss))
            for t0 in range(first_t0, T + 60 * SPAN, SPAN)
            if (ss.ids[i], t0) in announced
        }
        wt_before = {
            k: w
            for k, w in writetimes(cassandra_session, ks, ss, sorted({t for _, t in raw})).items()
            if k in raw
        }
        assert len(wt_before) == len(raw) >= len(ss) * 25, (len(wt_before), len(raw))

        # restart, and kill again in the middle of the data replay
        t_restart = time.monotonic()
        a.start(wait=False)
        a.wait_consuming(60)

        def replaying() -> bool:
            rp = a.node()["replay"]
            return bool(rp) and sum(p["behind"] for p in rp.values()) > 0

        wait(replaying, 30, "the replay under way", a)
        behind_at_kill = sum(p["behind"] for p in a.node()["replay"].values())
        a.kill9()
        second_kill_after = time.monotonic() - t_restart

        # the final restart: time to ready and to catch up
        t_restart = time.monotonic()
        a.start(wait=False)
        ready_s = wait(
            lambda: a.node()["persistBacklogDone"] and a.node()["state"] == "NodeReady", 120, "ready", a
        )
        t_end = prod.stop()
        highs = topic_highs(kafka_bootstrap, topic)
        wait(lambda: consumed_through(a.url, highs), 120, "caught up", a)
        catch_up_s = time.monotonic() - t_restart
        wait_saved_through(a, t_end, 60)
        wt_after = writetimes(cassandra_session, ks, ss, sorted({t for _, t in raw}))
        rewritten = sorted(k for k, w in wt_before.items() if wt_after.get(k) != w)
        ex = check_cassandra(cassandra_session, ks, ss, T, t_end)
        check_render(a.url, ss, [0, N_SERIES - 1], T, t_end, ex)
        record(
            "restart-during-replay",
            series=N_SERIES,
            chunks_saved_before_kill=len(wt_before),
            chunks_rewritten=len(rewritten),
            replay_messages_behind_at_second_kill=behind_at_kill,
            second_kill_seconds_after_restart=round(second_kill_after, 2),
            restart_to_ready_seconds=round(ready_s, 2),
            restart_to_caught_up_seconds=round(catch_up_s, 2),
            sim_seconds=t_end - T,
            **ex.figures(),
        )
        assert not rewritten, (
            f"{len(rewritten)} chunks saved before the kill were written again: {rewritten[:5]}"
        )
        ex.assert_exact()
    finally:
        prod.stop()
        a.kill9()
