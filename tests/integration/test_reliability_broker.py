"""Reliability scenario 4: broker faults.

A primary ingests from a Kafka of this module's own (never the shared bed's), data and persist topics alike, with
a producer running throughout. The broker is frozen with SIGSTOP for ~30 s (a hung broker), thawed, then stopped
and restarted on the same data directory. Readiness must reflect the outage (`GET /node` state NodeNotReady
once the broker has not answered for `[kafka-mdm-in] broker-unreachable-timeout`), ingest must resume, and every
produced point of every completed chunk must be in the store exactly.

The producer (librdkafka, idempotent, 300 s message timeout) buffers and retries through both faults; a message
it failed to deliver would show up here as lost points.
"""

from __future__ import annotations

import threading
import time

import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import SPAN, InstanceProc, SimProducer, sim_start
from .reliability import (
    check_render,
    check_sqlite,
    consumed_through,
    record,
    topic_highs,
    wait,
    wait_saved_through,
)

pytestmark = pytest.mark.integration

PARTS = 2
N_SERIES = 20
FREEZE_SECONDS = 30.0
UNREACHABLE_TIMEOUT = 4.0


class StateWatch:
    """Polls `GET /node` in the background and records every state seen (a restart is too short to poll from
    the test's own thread while it waits for the broker)."""

    def __init__(self, proc: InstanceProc) -> None:
        self.proc = proc
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append((time.monotonic(), self.proc.node()["state"]))
            except Exception:  # noqa: BLE001, S110 - the node is busy: keep polling
                pass
            self._stop.wait(0.25)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._t.join(10)
        return self.seen


def test_broker_frozen_then_restarted_readiness_and_no_loss(tmp_path, private_kafka):
    kafka = private_kafka.kafka
    topic, persist = private_kafka.new_topic(PARTS), private_kafka.new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="rel.broker", interval=1)
    T = sim_start()
    # not idempotent: librdkafka's idempotent producer stalled for minutes after the freeze in CI runs (the node
    # had read everything the broker held; the broker held nothing new); order is kept by one request in flight
    prod = SimProducer(kafka, topic, ss, T, rate=20, idempotent=False)
    prod.step_to(T + 2 * SPAN)
    db = tmp_path / "chunks.db"
    a = InstanceProc(
        tmp_path / "a",
        "mt-broker",
        {
            "kafka-mdm-in": {
                "brokers": kafka,
                "topics": topic,
                "offset": "oldest",
                "broker-unreachable-timeout": f"{UNREACHABLE_TIMEOUT:.0f}s",
            },
            "kafka-cluster": {"topic": persist, "offset": "oldest", "backlog-process-timeout": "30s"},
            "cluster": {"primary-node": True, "warm-up-period": "0s", "max-priority": 10},
            "store": {"backend": "sqlite", "drain-timeout": "30s"},
            "sqlite": {"path": str(db)},
        },
    )
    try:
        a.start()
        prod.run_background()
        wait(lambda: a.node()["state"] == "NodeReady", 60, "ready", a)
        wait(lambda: a.node()["savedMarks"]["newestSavedT0"] >= T + 2 * SPAN, 60, "first saves", a)

        # 1. frozen
        private_kafka.freeze("kafka")
        t_freeze = time.monotonic()
        try:
            not_ready_after = wait(
                lambda: a.node()["state"] == "NodeNotReady", 60, "not ready while frozen", a
            )
            assert not_ready_after >= UNREACHABLE_TIMEOUT - 0.5, not_ready_after
            while time.monotonic() - t_freeze < FREEZE_SECONDS:
                n = a.node()
                assert n["state"] == "NodeNotReady" and n["brokerReachable"] is False, n["state"]
                time.sleep(1)
        finally:
            private_kafka.thaw("kafka")
        t_thaw = time.monotonic()
        ready_after_thaw = wait(lambda: a.node()["state"] == "NodeReady", 120, "ready after the thaw", a)
        t_before = prod.t
        wait(
            lambda: a.node()["savedMarks"]["newestSavedT0"] >= t_before - t_before % SPAN,
            120,
            "saving again",
            a,
        )

        # 2. stopped and restarted on the same data directory
        watch = StateWatch(a)
        t_stop = time.monotonic()
        kafka_restart_s = private_kafka.restart("kafka")
        ready_after_restart = wait(
            lambda: a.node()["state"] == "NodeReady", 120, "ready after the restart", a
        )
        seen = watch.stop()
        not_ready_during_restart = any(s == "NodeNotReady" for t, s in seen if t >= t_stop)

        t_end = prod.stop()
        highs = topic_highs(kafka, topic)
        wait(lambda: consumed_through(a.url, highs), 120, "caught up", a)
        wait_saved_through(a, t_end, 120)
        ex = check_sqlite(db, ss, T, t_end)
        check_render(a.url, ss, [0, N_SERIES - 1], T, t_end, ex)
        record(
            "broker-faults",
            series=N_SERIES,
            frozen_seconds=round(t_thaw - t_freeze, 1),
            broker_unreachable_timeout=UNREACHABLE_TIMEOUT,
            not_ready_seconds_after_freeze=round(not_ready_after, 2),
            ready_seconds_after_thaw=round(ready_after_thaw, 2),
            kafka_restart_seconds=round(kafka_restart_s, 1),
            not_ready_seen_during_restart=not_ready_during_restart,
            ready_seconds_after_restart=round(ready_after_restart, 2),
            sim_seconds=t_end - T,
            **ex.figures(),
        )
        ex.assert_exact()
    finally:
        prod.stop()
        a.kill9()
