"""The Graphite HTTP API as Grafana's Graphite data source uses it."""

import json
import math
from urllib.parse import urlencode

import msgpack
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from metrictank.query.http import graphite_router
from metrictank.query.source import StaticSource

NOW = 1_700_000_040  # a multiple of 60
START = NOW - 6 * 3600  # data for the last 6 hours at 60 s


@pytest.fixture
def src() -> StaticSource:
    n = 6 * 60
    return StaticSource(
        {
            1: {
                "servers.web1.cpu": (START + 60, 60, np.arange(n, dtype=float)),
                "servers.web2.cpu": (START + 60, 60, np.full(n, 2.0)),
                "servers.web1.mem": (START + 60, 60, np.full(n, 7.5)),
                "cpu;dc=eu;host=a": (START + 60, 60, np.ones(n)),
                "cpu;dc=us;host=b": (START + 60, 60, np.full(n, 3.0)),
            },
            2: {"other.org.metric": (START + 60, 60, np.ones(n))},
            -1: {"public.metric": (START + 60, 60, np.ones(n))},
        }
    )


@pytest.fixture
def client(src) -> TestClient:
    app = FastAPI()
    app.include_router(graphite_router(lambda: src, clock=lambda: NOW))
    return TestClient(app)


def grafana_render(client, targets, **form) -> object:
    """The request Grafana's Graphite data source sends: a form-encoded POST body with repeated `target`."""
    body = urlencode([("target", t) for t in targets] + list(form.items()))
    return client.post("/render", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_grafana_post_form_relative_range(client) -> None:
    r = grafana_render(
        client,
        ["servers.*.cpu", "sumSeries(servers.*.cpu)"],
        **{"from": "-6h", "until": "now", "format": "json", "maxDataPoints": "1000"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert [d["target"] for d in doc] == ["servers.web1.cpu", "servers.web2.cpu", "sumSeries(servers.*.cpu)"]
    web1 = doc[0]["datapoints"]
    assert len(web1) == 360
    assert web1[0] == [0, START + 60] and web1[-1] == [359, NOW]
    assert doc[0]["tags"] == {"name": "servers.web1.cpu"}
    assert doc[2]["datapoints"][1] == [3, START + 120]


def test_grafana_absolute_range_and_max_data_points(client) -> None:
    r = grafana_render(
        client, ["servers.web1.cpu"], **{"from": str(NOW - 3600), "until": str(NOW), "maxDataPoints": "20"}
    )
    points = r.json()[0]["datapoints"]
    assert len(points) <= 20
    # 60 points of 60 s, aggNum 3 -> 3 minute buckets stamped on multiples of 180 s
    assert all(ts % 180 == 0 for _, ts in points)


def test_hhmm_yyyymmdd_times(client) -> None:
    r = client.get(
        "/render", params={"target": "servers.web1.mem", "from": "20:00_20231114", "until": "20:05_20231114"}
    )
    assert r.status_code == 200
    ts = [p[1] for p in r.json()[0]["datapoints"]]
    assert ts == [1699992060 + 60 * i for i in range(5)]  # (20:00, 20:05]


def test_nulls_for_missing_points(client) -> None:
    r = client.get(
        "/render", params={"target": "servers.web1.mem", "from": str(NOW - 60), "until": str(NOW + 120)}
    )
    assert [p[0] for p in r.json()[0]["datapoints"]] == [7.5, None, None]


def test_get_render_with_repeated_targets(client) -> None:
    r = client.get("/render?target=servers.web1.mem&target=servers.web2.cpu&from=-2min&until=now")
    assert [d["target"] for d in r.json()] == ["servers.web1.mem", "servers.web2.cpu"]


def test_save_and_test_find(client) -> None:
    r = client.get("/metrics/find", params={"query": "*"})
    assert r.status_code == 200
    doc = r.json()
    assert [n["text"] for n in doc] == ["public", "servers"]
    assert doc[1] == {
        "allowChildren": 1,
        "expandable": 1,
        "leaf": 0,
        "id": "servers",
        "text": "servers",
        "context": {},
    }


def test_find_leaves_and_time_range(client) -> None:
    doc = client.get(
        "/metrics/find", params={"query": "servers.web1.*", "from": "-6h", "until": "now"}
    ).json()
    assert [(n["id"], n["leaf"], n["expandable"]) for n in doc] == [
        ("servers.web1.cpu", 1, 0),
        ("servers.web1.mem", 1, 0),
    ]
    doc = client.post("/metrics/find", data={"query": "servers.{web1,web2}"}).json()
    assert [n["id"] for n in doc] == ["servers.web1", "servers.web2"]


def test_find_completer(client) -> None:
    doc = client.get("/metrics/find", params={"query": "servers.", "format": "completer"}).json()
    assert doc == {
        "metrics": [
            {"path": "servers.web1.", "name": "web1", "is_leaf": "0"},
            {"path": "servers.web2.", "name": "web2", "is_leaf": "0"},
        ]
    }


def test_expand_and_index(client) -> None:
    doc = client.get("/metrics/expand", params={"query": "servers.*.cpu"}).json()
    assert doc == {"results": ["servers.web1.cpu", "servers.web2.cpu"]}
    doc = client.get(
        "/metrics/expand", params=[("query", "servers.*"), ("query", "public.*"), ("groupByExpr", "1")]
    ).json()
    assert doc == {"results": {"servers.*": ["servers.web1", "servers.web2"], "public.*": ["public.metric"]}}
    idx = client.get("/metrics/index.json").json()
    assert "servers.web1.cpu" in idx and "public.metric" in idx and "other.org.metric" not in idx
    assert idx == sorted(idx)


def test_org_header_switches_tenant(client) -> None:
    r = client.get("/metrics/find", params={"query": "*"}, headers={"X-Org-Id": "2"})
    assert [n["text"] for n in r.json()] == ["other", "public"]
    r = client.get(
        "/render", params={"target": "other.org.metric", "from": "-2min"}, headers={"X-Org-Id": "2"}
    )
    assert len(r.json()) == 1
    r = client.get("/render", params={"target": "other.org.metric", "from": "-2min"})
    assert r.json() == []
    assert client.get("/render?target=a&from=-1h", headers={"X-Org-Id": "x"}).status_code == 400


def test_tags_endpoints(client) -> None:
    assert client.get("/tags").json() == [{"tag": "dc"}, {"tag": "host"}, {"tag": "name"}]
    assert client.get("/tags", params={"filter": "^d"}).json() == [{"tag": "dc"}]
    assert client.get("/tags/dc").json() == {
        "tag": "dc",
        "values": [{"count": 1, "value": "eu"}, {"count": 1, "value": "us"}],
    }
    assert client.get("/tags/autoComplete/tags", params={"expr": "name=cpu"}).json() == ["dc", "host"]
    assert client.get("/tags/autoComplete/tags", params={"tagPrefix": "h"}).json() == ["host"]
    r = client.get("/tags/autoComplete/values", params=[("tag", "host"), ("expr", "dc=us")])
    assert r.json() == ["b"]
    assert client.get("/tags/autoComplete/values", params={"tag": "dc", "valuePrefix": "e"}).json() == ["eu"]
    r = client.get("/tags/autoComplete/values")
    assert r.status_code == 400 and "tag" in r.json()["error"]


def test_autocomplete_refuses_a_negative_limit(client) -> None:
    """A negative limit used to cut results from the end of the list: a 200 with a silently wrong answer."""
    for path, params in (
        ("/tags/autoComplete/tags", {"limit": "-1"}),
        ("/tags/autoComplete/values", {"tag": "dc", "limit": "-5"}),
    ):
        r = client.get(path, params=params)
        assert r.status_code == 400, (path, r.text)
        assert "invalid limit" in r.json()["error"]
    assert client.get("/tags/autoComplete/tags", params={"limit": "1"}).json() == ["dc"]


def test_series_by_tag_render(client) -> None:
    r = grafana_render(client, ["groupByTags(seriesByTag('name=cpu'), 'sum', 'dc')"], **{"from": "-2min"})
    assert [(d["target"], d["tags"]) for d in r.json()] == [
        ("cpu;dc=eu", {"dc": "eu", "name": "cpu"}),
        ("cpu;dc=us", {"dc": "us", "name": "cpu"}),
    ]


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"target": "nosuch(servers.*)"}, 'unknown function "nosuch"'),
        ({"target": "servers.*", "from": "-1h", "until": "-2h"}, "must be before until"),
        ({"target": "servers.*", "from": "-1h", "until": "-1h"}, "must be before until"),
        ({"target": "servers.*", "from": "yesterdayish"}, "invalid time"),
        ({"target": "sumSeries(servers.*"}, "unbalanced parenthesis"),
        ({"target": "sumSeries(servers.*))"}, "unbalanced parenthesis"),
        ({"from": "-1h"}, "missing target"),
        ({"target": "servers.*", "format": "png"}, "invalid format"),
        ({"target": "servers.*", "maxDataPoints": "lots"}, "maxDataPoints must be an integer"),
        ({"target": "servers.*", "tz": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_requests_are_400_with_a_message(client, params, fragment) -> None:
    r = client.get("/render", params=params)
    assert r.status_code == 400
    assert fragment in r.text
    r = client.post("/render", data=params)
    assert r.status_code == 400 and fragment in r.text


def test_find_bad_requests(client) -> None:
    assert client.get("/metrics/find").status_code == 400
    assert client.get("/metrics/find", params={"query": "*", "from": "garbage"}).status_code == 400
    assert client.get("/metrics/expand").status_code == 400


def test_csv_output(client) -> None:
    r = client.get(
        "/render",
        params={"target": "servers.web1.mem", "from": str(NOW - 60), "until": str(NOW + 60), "format": "csv"},
    )
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text == "servers.web1.mem,2023-11-14 22:14:00,7.5\nservers.web1.mem,2023-11-14 22:15:00,\n"


def test_msgpack_output(client) -> None:
    r = client.get(
        "/render",
        params={
            "target": "servers.web1.mem",
            "from": str(NOW - 60),
            "until": str(NOW + 60),
            "format": "msgpack",
        },
    )
    doc = msgpack.unpackb(r.content)
    assert doc == [
        {
            "name": "servers.web1.mem",
            "start": NOW,
            "end": NOW + 120,
            "step": 60,
            "values": [7.5, None],
            "pathExpression": "servers.web1.mem",
        }
    ]


def test_jsonp(client) -> None:
    r = client.get("/render", params={"target": "servers.web1.mem", "from": "-1min", "jsonp": "cb"})
    assert r.text.startswith("cb([") and r.text.endswith(")")


def test_functions_listing(client) -> None:
    doc = client.get("/functions").json()
    for name in ("sumSeries", "aliasByNode", "movingAverage", "seriesByTag", "summarize", "timeShift"):
        assert doc[name]["name"] == name
    assert doc["summarize"]["params"][1] == {
        "name": "intervalString",
        "type": "interval",
        "required": True,
        "suggestions": ["10min", "1h", "1d"],
    }
    # groupByNode's callback: graphite-web's aggregation functions and the aggregating series functions
    callbacks = doc["groupByNode"]["params"][2]["options"]
    assert {"average", "sumSeries", "countSeries"} <= set(callbacks) and "asPercent" not in callbacks
    grouped = client.get("/functions", params={"grouped": "true"}).json()
    assert "sumSeries" in grouped["Combine"]
    assert client.get("/functions/scale").json()["group"] == "Transform"
    assert client.get("/functions/nosuch").status_code == 404
    r = client.get("/functions/nosuch")
    assert r.text == "Function not found: nosuch" and r.headers["content-type"].startswith("text/plain")


def test_functions_listing_writes_an_infinite_default_as_graphite_web_does(client) -> None:
    # graphite-web's encoder writes 1e9999, which JSON.parse (Grafana) reads as Infinity; a bare Infinity
    # token would not be JSON at all
    r = client.get("/functions/keepLastValue")
    assert r.headers["content-type"].startswith("application/json")
    assert '{"name":"limit","type":"intOrInf","default":1e9999}' in r.text
    assert r.json()["params"][1]["default"] == float("inf")
    assert "1e9999" in client.get("/functions", params={"group": "Transform"}).text


def test_json_numbers_are_plain_and_round_trip(src) -> None:
    values = np.array([0.1, 1 / 3, 1e-7, 123456789.0, -2.5, 1e20, math.nan])
    s = StaticSource({"v": (NOW - 60 * len(values) + 60, 60, values)})
    app = FastAPI()
    app.include_router(graphite_router(lambda: s, clock=lambda: NOW))
    r = TestClient(app).get(
        "/render",
        params={"target": "v", "from": str(NOW - 60 * len(values)), "until": str(NOW), "maxDataPoints": "0"},
    )
    assert "[0.1," in r.text and "[0.0000001," in r.text and "[123456789," in r.text
    assert "[100000000000000000000," in r.text and "e+" not in r.text
    got = [p[0] for p in json.loads(r.text)[0]["datapoints"]]
    assert got[:-1] == values[:-1].tolist() and got[-1] is None
