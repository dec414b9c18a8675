"""Cluster-aware queries between two real instances fed by real Kafka: node A consumes partitions 0,1 and node B
2,3 of one topic, each the other's peer. A query on either node returns every series with its exact values;
once B is gone, a query on A that needs B's partitions is a 503 naming them, not a silently partial answer."""

from __future__ import annotations

import contextlib
import time

import httpx
import numpy as np

from metrictank.fakemetrics import Producer, SeriesSet, values_for

from .helpers import Running, free_port, instance_config, wait_for

PARTS = 4
NSERIES = 40


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/node", timeout=2).json()["state"] == "NodeReady"
    except httpx.HTTPError:
        return False


def test_render_and_find_span_both_shard_groups(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    ss = SeriesSet.make(NSERIES, PARTS, prefix="cq.s")
    assert {0, 1} & set(ss.partitions.tolist()) and {2, 3} & set(ss.partitions.tolist())
    now = int(time.time())
    end = now - now % 600
    start = end - 3600
    prod = Producer(kafka_bootstrap, topic)
    sent = prod.backfill(ss, start, end)
    assert prod.flush(30) == 0
    on_a = int(np.isin(ss.partitions, [0, 1]).sum())

    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    cfg_a = instance_config(
        tmp_path / "a",
        "mt-a",
        kafka_bootstrap,
        topic,
        primary=True,
        partitions="0,1",
        port=port_a,
        extra={"cluster": {"peers": url_b}},
    )
    cfg_b = instance_config(
        tmp_path / "b",
        "mt-b",
        kafka_bootstrap,
        topic,
        primary=True,
        partitions="2,3",
        port=port_b,
        extra={"cluster": {"peers": url_a}},
    )
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Running(cfg_a, serve_http=True))
        b_stack = stack.enter_context(contextlib.ExitStack())  # closed on its own to stop node B early
        b = b_stack.enter_context(Running(cfg_b, serve_http=True))
        per_series = sent // NSERIES
        for inst, n, what in ((a, on_a, "A (partitions 0,1)"), (b, NSERIES - on_a, "B (partitions 2,3)")):
            try:
                wait_for(lambda inst=inst, n=n: inst.tank.points_added >= n * per_series, 60, f"node {what}")
            except AssertionError as e:
                tr = inst.consumer.tracker
                raise AssertionError(
                    f"{e}: {inst.tank.points_added}/{n * per_series} points, {inst.batches} batches, "
                    f"first offsets {tr.first_offset}, last offsets {tr.last_offset}"
                ) from None
        assert len(a.index) == on_a and len(b.index) == NSERIES - on_a  # each holds its own shard only
        wait_for(lambda: _ready(url_a) and _ready(url_b), 30, "both nodes ready")

        ts = np.arange(start, end, 10)
        want = {f"cq.s.{i}": values_for("walk", np.full(len(ts), i), ts) for i in range(NSERIES)}
        params = {"from": str(start - 1), "until": str(end - 1), "maxDataPoints": "0"}
        for url in (url_a, url_b):  # either node answers for the whole cluster
            r = httpx.post(f"{url}/render", data={"target": "cq.s.*", **params}, timeout=30)
            assert r.status_code == 200, r.text
            got = {s["target"]: s["datapoints"] for s in r.json()}
            assert sorted(got) == sorted(want)
            for name, dps in got.items():
                assert [t for _v, t in dps] == ts.tolist()
                np.testing.assert_array_equal(np.array([v for v, _t in dps], dtype=float), want[name])

        r = httpx.get(f"{url_a}/render", params={"target": "sumSeries(cq.s.*)", **params}, timeout=30)
        assert r.status_code == 200, r.text
        total = np.sum(list(want.values()), axis=0)
        np.testing.assert_allclose(np.array([v for v, _t in r.json()[0]["datapoints"]], dtype=float), total)

        r = httpx.get(f"{url_a}/metrics/find", params={"query": "cq.s.*"}, timeout=30)
        assert r.status_code == 200, r.text
        assert sorted(n["text"] for n in r.json()) == sorted(str(i) for i in range(NSERIES))
        r = httpx.get(f"{url_a}/metrics/find", params={"query": "cq.*"}, timeout=30)
        assert [n["id"] for n in r.json()] == ["cq.s"]  # the branch both nodes have, once

        # the internal routes answer from local data only: no loops, no double counting
        r = httpx.get(f"{url_a}/metrics/index.json", timeout=30)
        assert r.json() == sorted(want)

        b_stack.close()  # node B stops: partitions 2 and 3 have no replica left
        r = httpx.get(f"{url_a}/render", params={"target": "sumSeries(cq.s.*)", **params}, timeout=30)
        assert r.status_code == 503, r.text
        assert "partitions 2, 3" in r.text
        r = httpx.get(f"{url_a}/metrics/find", params={"query": "cq.s.*"}, timeout=30)
        assert r.status_code == 503 and "partitions 2, 3" in r.text
        # the admin API is unaffected
        assert httpx.get(f"{url_a}/node", timeout=5).status_code == 200
