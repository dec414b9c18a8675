"""The data broker unreachable: a node must say so (not ready, priority unknown, promotion refused) instead of
staying NodeReady with priority 0 on stale lag figures, and ingest must resume exactly when the broker returns.
The broker is a private one of this module, frozen with SIGSTOP (a hung broker: connections stay open, nothing
answers), so the shared test bed is never disturbed."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from metrictank.fakemetrics import Producer, SeriesSet, values_for

from .helpers import Running, free_port, instance_config, wait_for

pytestmark = pytest.mark.integration


def test_unreachable_broker_makes_the_node_not_ready_and_ingest_resumes(tmp_path, private_kafka):
    kafka = private_kafka.kafka
    topic = private_kafka.new_topic(2)
    ss = SeriesSet.make(10, 2, prefix="faults.broker")
    now = int(time.time())
    start = now - now % 600 - 1200
    prod = Producer(kafka, topic)
    first = prod.backfill(ss, start, start + 600)
    assert prod.flush(30) == 0
    port = free_port()
    cfg = instance_config(
        tmp_path,
        "mt-broker",
        kafka,
        topic,
        port=port,
        extra={"kafka-mdm-in": {"broker-unreachable-timeout": "4s"}, "cluster": {"max-priority": 10}},
    )
    base = f"http://127.0.0.1:{port}"
    with Running(cfg, serve_http=True) as inst:
        wait_for(lambda: inst.handler.messages >= first, 60, "the first backlog consumed")
        wait_for(inst.is_ready, 30, "ready")
        assert httpx.get(f"{base}/readyz").status_code == 200

        # the timeout counts from the brokers' last answer (a fetch or a probe, every 2 s), which on a loaded
        # machine can be a while before the freeze
        stale = inst.consumer.probe.unreachable_for()
        private_kafka.freeze("kafka")
        frozen_at = time.monotonic()
        try:
            wait_for(lambda: not inst.is_ready(), 30, "not ready while the broker is frozen")
            took = time.monotonic() - frozen_at
            assert took + stale >= 3.5, (
                f"not ready {took:.1f}s after the freeze, {took + stale:.1f}s after the brokers last answered: "
                "before the configured 4s"
            )
            node = httpx.get(f"{base}/node", timeout=10).json()
            assert node["state"] == "NodeNotReady"
            assert node["priority"] == 10000
            assert node["brokerReachable"] is False
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 503
            r = httpx.post(f"{base}/node", data={"primary": "true"}, timeout=30)
            assert r.status_code == 409
            assert any("broker is unreachable" in x for x in r.json()["reasons"])
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert "metrictank_input_kafka_mdm_broker_probe_failures_total" in metrics
            print(f"broker frozen: node not ready after {took:.1f}s (timeout 4s)")
        finally:
            private_kafka.thaw("kafka")

        thawed_at = time.monotonic()
        wait_for(inst.is_ready, 60, "ready again after the broker returned")
        print(f"ready again {time.monotonic() - thawed_at:.1f}s after the broker returned")
        second = prod.backfill(ss, start + 600, start + 1200)
        assert prod.flush(30) == 0
        wait_for(lambda: inst.handler.messages >= first + second, 60, "the second part consumed")
        # every point of both parts, exactly
        ts_all = np.arange(start, start + 1200, 10, dtype=np.int64)
        with inst.lock:
            for i in range(len(ss)):
                row = inst.index.row_of(ss.ids[i])
                ts, vals, _ = inst.tank.read(row, 0, None, start, start + 1200)
                np.testing.assert_array_equal(np.asarray(ts, np.int64), ts_all)
                np.testing.assert_array_equal(vals, values_for("walk", np.full(len(ts_all), i), ts_all))
