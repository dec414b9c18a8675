"""Series lookups Grafana and graphite-web make besides render: /tags/findSeries, /tags/terms, find with `from`
(series that stopped reporting drop out), and the noNullPoints and pickle render options."""

import pickle

import msgpack
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from metrictank.query.http import graphite_router
from metrictank.query.source import StaticSource

NOW = 1_700_000_040
DAY = 86400


@pytest.fixture
def client() -> TestClient:
    recent = np.arange(60, dtype=float)
    gappy = np.array([np.nan, 1.0, np.nan, 3.0] * 15)
    src = StaticSource(
        {
            1: {
                "disk.used;dc=dc1;rack=a1;server=web01": (NOW - 3600, 60, recent),
                "disk.used;dc=dc1;rack=a2;server=web02": (NOW - 3600, 60, recent),
                "disk.used;dc=dc1;rack=a1;server=web03": (NOW - 3600, 60, recent),
                "disk.used;dc=dc2;rack=b1;server=web04": (NOW - 3600, 60, recent),
                # stopped reporting two days ago
                "disk.used;dc=dc1;rack=a1;server=old01": (NOW - 2 * DAY - 3600, 60, recent),
                "app.live.requests": (NOW - 3600, 60, recent),
                "app.gone.requests": (NOW - 2 * DAY - 3600, 60, recent),
                "app.gappy.requests": (NOW - 3600, 60, gappy),
                "app.empty.requests": (NOW - 3600, 60, np.full(60, np.nan)),
                "srv.live": (NOW - 3600, 60, recent),
                "srv.gone": (NOW - 2 * DAY - 3600, 60, recent),
                "srv.gone.cpu": (NOW - 3600, 60, recent),  # a branch with a live child stays
            }
        }
    )
    app = FastAPI()
    app.include_router(graphite_router(lambda: src, clock=lambda: NOW))
    return TestClient(app)


def test_find_series_by_tags_is_graphite_compatible(client) -> None:
    r = client.get("/tags/findSeries", params=[("expr", "dc=dc1"), ("expr", "rack=a1")])
    assert r.status_code == 200
    # the default `from` is 24 hours ago: old01 stopped reporting two days ago
    assert r.json() == [
        "disk.used;dc=dc1;rack=a1;server=web01",
        "disk.used;dc=dc1;rack=a1;server=web03",
    ]
    r = client.post("/tags/findSeries", data={"expr": ["dc=dc1", "rack=a1"], "from": "-3d"})
    assert "disk.used;dc=dc1;rack=a1;server=old01" in r.json()


def test_find_series_limit_meta_and_last_ts(client) -> None:
    doc = client.get("/tags/findSeries", params={"expr": "name=disk.used", "limit": 2, "meta": "true"}).json()
    assert doc["series"] == ["disk.used;dc=dc1;rack=a1;server=web01", "disk.used;dc=dc1;rack=a1;server=web03"]
    assert doc["warnings"] and "truncated" in doc["warnings"][0]
    doc = client.get("/tags/findSeries", params={"expr": "server=web04", "format": "lastts-json"}).json()
    assert doc == {"series": [{"lastTs": NOW - 60, "val": "disk.used;dc=dc2;rack=b1;server=web04"}]}


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({}, "expr"),
        ({"expr": "dc!=x"}, "non-empty value"),
        ({"expr": "dc=~("}, "dc"),
        ({"expr": "dc=dc1", "format": "xml"}, "format"),
        ({"expr": "dc=dc1", "limit": "-1"}, "limit"),
        ({"expr": "dc=dc1", "limit": "many"}, "limit"),
        ({"expr": "dc=dc1", "from": "yesterday-ish"}, "from"),
    ],
)
def test_find_series_bad_requests_are_400(client, params, fragment) -> None:
    r = client.get("/tags/findSeries", params=params)
    assert r.status_code == 400
    assert fragment in r.text


def test_terms_counts_values_of_the_asked_tags(client) -> None:
    r = client.get("/tags/terms", params=[("expr", "name=disk.used"), ("tags", "rack"), ("tags", "dc")])
    assert r.status_code == 200
    assert r.json() == {
        "totalSeries": 5,
        "terms": {"rack": {"a1": 3, "a2": 1, "b1": 1}, "dc": {"dc1": 4, "dc2": 1}},
    }
    assert client.get("/tags/terms", params={"tags": "rack"}).status_code == 400


def test_find_with_from_leaves_out_series_that_stopped(client) -> None:
    def find(**params):
        return [
            (n["id"], n["leaf"])
            for n in client.get("/metrics/find", params={"query": "srv.*", **params}).json()
        ]

    assert find() == [("srv.gone", 1), ("srv.live", 1)]  # without `from`: everything the index holds
    # srv.gone's own points stopped two days ago: no longer a leaf, still a branch for srv.gone.cpu
    assert find(**{"from": "-1d", "until": "now"}) == [("srv.gone", 0), ("srv.live", 1)]
    assert find(**{"from": "-3d"}) == [("srv.gone", 1), ("srv.live", 1)]


def test_no_null_points_drops_nulls_and_empty_series(client) -> None:
    params = {"target": "app.{gappy,empty}.requests", "from": str(NOW - 300), "until": str(NOW)}
    doc = client.get("/render", params=params).json()
    assert [d["target"] for d in doc] == ["app.empty.requests", "app.gappy.requests"]
    assert [p[0] for p in doc[1]["datapoints"]] == [None, 1.0, None, 3.0, None]
    doc = client.get("/render", params={**params, "noNullPoints": "true"}).json()
    assert [d["target"] for d in doc] == ["app.gappy.requests"]
    assert doc[0]["datapoints"] == [[1.0, NOW - 180], [3.0, NOW - 60]]


def test_pickle_output_matches_msgpack(client) -> None:
    params = {"target": "app.gappy.requests", "from": str(NOW - 300), "until": str(NOW)}
    r = client.get("/render", params={**params, "format": "pickle"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pickle"
    doc = pickle.loads(r.content)  # noqa: S301 - our own output
    assert doc == msgpack.unpackb(client.get("/render", params={**params, "format": "msgpack"}).content)
    assert doc[0]["values"] == [None, 1.0, None, 3.0, None]
    assert doc[0]["step"] == 60 and doc[0]["pathExpression"] == "app.gappy.requests"
