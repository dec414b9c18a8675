"""The Graphite API of a running instance fed by real Kafka: a series that spans the store and memory is one
continuous series; find, tags, functions and rollup selection over real data."""

from __future__ import annotations

import time

import httpx
import numpy as np

from metrictank.fakemetrics import Producer, SeriesSet, values_for

from .helpers import Running, instance_config, wait_for

PARTS = 4
# memory holds only 2 chunks of 10 min: most of a 2-hour backlog must come from the store
SCHEMAS = """[default]
pattern = .*
retentions = 10s:1d:10min:2,1min:7d:1h:2
"""


def test_render_spans_store_and_memory(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    persist = new_topic(PARTS)
    ss = SeriesSet.make(20, PARTS, prefix="q.span", tags=["dc=eu"])
    now = int(time.time())
    start = now - now % 600 - 7200
    end = now - now % 600  # a whole number of chunks, all in the past
    prod = Producer(kafka_bootstrap, topic)
    sent = prod.backfill(ss, start, end)
    plain = SeriesSet.make(2, PARTS, prefix="q.plain")  # untagged: these are in the find tree
    sent += prod.backfill(plain, end - 600, end)
    assert prod.flush(30) == 0

    cfg = instance_config(tmp_path, "mt-q", kafka_bootstrap, topic, persist_topic=persist, primary=True)
    (tmp_path / "schemas.conf").write_text(SCHEMAS)
    with Running(cfg, serve_http=True) as inst:
        url = f"http://127.0.0.1:{inst.http_port}"
        wait_for(lambda: inst.tank.points_added >= sent, 60, "backlog")
        # chunks completed on the primary go to the store; wait until they are written and confirmed
        wait_for(lambda: inst.persister.queued >= 20 * 10 and inst.store.pending() == 0, 60, "chunks saved")
        assert inst.persister.skipped_partial == 0  # consumption began at the start of the log

        frm, until = start - 1, end - 1  # graphite: from exclusive, until inclusive -> [start, end)
        r = httpx.post(
            f"{url}/render",
            data={
                "target": "q.span.3;dc=eu",
                "from": str(frm),
                "until": str(until),
                "format": "json",
                "maxDataPoints": "100000",
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body) == 1
        dps = body[0]["datapoints"]
        ts = np.arange(start, end, 10)
        expect = values_for("walk", np.full(len(ts), 3), ts)
        assert [t for _v, t in dps] == ts.tolist()
        got = np.array([np.nan if v is None else v for v, _t in dps])
        # the first point of the series is the MetricData one; everything is there, store part included
        np.testing.assert_allclose(got, expect)
        # memory alone holds only the last 2 chunks
        row = inst.index.row_of(ss.ids[3])
        _t, _v, oldest = inst.tank.read(row, 0, None, start, end)
        assert oldest >= end - 1200

        # a function over a glob, and seriesByTag
        r = httpx.get(
            f"{url}/render",
            params={
                "target": "sumSeries(seriesByTag('dc=eu'))",
                "from": str(frm),
                "until": str(until),
                "maxDataPoints": "100000",
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        s = r.json()
        assert s[0]["target"].startswith("sumSeries(")
        allv = np.array([values_for("walk", np.full(len(ts), i), ts) for i in range(20)]).sum(axis=0)
        got = np.array([v for v, _t in s[0]["datapoints"]], dtype=float)
        np.testing.assert_allclose(got, allv, rtol=1e-9)

        # a coarse range picks the rollup archive (60 s) through maxDataPoints
        r = httpx.get(
            f"{url}/render",
            params={
                "target": "q.span.3;dc=eu",
                "from": str(frm),
                "until": str(until),
                "maxDataPoints": "150",
            },
            timeout=30,
        )
        dps = r.json()[0]["datapoints"]
        assert len(dps) <= 150
        steps = np.diff([t for _v, t in dps])
        assert set(steps.tolist()) <= {60, 120}

        # find, as Grafana's "Save & test" does, and tags
        r = httpx.get(f"{url}/metrics/find", params={"query": "*"})
        assert r.status_code == 200 and [n["text"] for n in r.json()] == ["q"]
        r = httpx.get(f"{url}/metrics/find", params={"query": "q.plain.*"})
        assert sorted(n["text"] for n in r.json()) == ["0", "1"] and all(n["leaf"] == 1 for n in r.json())
        r = httpx.get(f"{url}/tags/dc")
        assert r.status_code == 200 and "eu" in r.text
        # a series' last update follows its MetricPoints (only the first message was a MetricData)
        r = httpx.get(
            f"{url}/tags/findSeries", params={"expr": "dc=eu", "format": "lastts-json", "from": "-1d"}
        )
        assert r.status_code == 200, r.text
        series = r.json()["series"]
        assert len(series) == 20 and {d["lastTs"] for d in series} == {end - 10}
        r = httpx.get(f"{url}/tags/terms", params={"expr": "name=~q.span", "tags": "dc"})
        assert r.json() == {"totalSeries": 20, "terms": {"dc": {"eu": 20}}}
        # find with `from` leaves out series with nothing since then
        r = httpx.get(f"{url}/metrics/find", params={"query": "q.plain.*", "from": str(end - 60)})
        assert sorted(n["text"] for n in r.json()) == ["0", "1"]
        r = httpx.get(
            f"{url}/metrics/find",
            params={"query": "q.plain.*", "from": str(end + 1), "until": str(end + 9999)},
        )
        assert r.json() == []
        # bad requests are 400 with a message
        r = httpx.get(f"{url}/render", params={"target": "nosuchFunction(q.span.1)"})
        assert r.status_code == 400 and "nosuchFunction" in r.text
        r = httpx.get(f"{url}/render", params={"target": "q.span.1", "from": "-1h", "until": "-2h"})
        assert r.status_code == 400
