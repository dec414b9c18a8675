"""Hostile or malformed Graphite requests: each gets a 4xx naming what is wrong, never a 500, a dropped
connection, a stalled process or gigabytes of memory (the query side of "blast radius")."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from metrictank.query.http import graphite_router
from metrictank.query.source import StaticSource

NOW = 1_700_000_040
START = NOW - 6 * 3600


@pytest.fixture
def src() -> StaticSource:
    n = 6 * 60
    return StaticSource(
        {
            "servers.web1.cpu": (START + 60, 60, np.arange(n, dtype=float)),
            "servers.web2.cpu": (START + 60, 60, np.full(n, 2.0)),
            "cpu;dc=eu;host=a": (START + 60, 60, np.ones(n)),
            "abcdefghijklmnop;k=v": (
                START + 60,
                60,
                np.ones(n),
            ),  # 16 characters: seconds for `(.*.*)*!` on re
        }
    )


@pytest.fixture
def client(src) -> TestClient:
    app = FastAPI()
    app.include_router(graphite_router(lambda: src, clock=lambda: NOW))
    return TestClient(app, raise_server_exceptions=False)


# --- jsonp -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cb", ["cb", "jQuery3_1.handlers.$x", "_a$", "a" * 128])
def test_jsonp_accepts_identifier_paths(client, cb) -> None:
    r = client.get("/render", params={"target": "servers.web1.cpu", "from": "-2min", "jsonp": cb})
    assert r.status_code == 200
    assert r.text.startswith(cb + "([") and r.text.endswith(")")
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "cb",
    [
        "alert(1);x",
        "<script>",
        "a.b(",
        "1abc",
        "a..b",
        "a.",
        "a b",
        "a\nb",
        "a" * 129,
        "\u00e9t\u00e9",
    ],
)
@pytest.mark.parametrize("path", ["/render", "/metrics/find", "/metrics/expand", "/metrics/index.json"])
def test_jsonp_rejects_anything_but_an_identifier_path(client, cb, path) -> None:
    params = {"target": "servers.web1.cpu", "query": "servers.*", "jsonp": cb}
    r = client.get(path, params=params)
    assert r.status_code == 400
    assert "jsonp" in r.text
    assert not r.headers["content-type"].startswith("text/javascript")


def test_json_answers_say_nosniff(client) -> None:
    for path, params in [
        ("/render", {"target": "servers.web1.cpu", "from": "-2min"}),
        ("/metrics/find", {"query": "servers.*"}),
        ("/render", {"target": "nosuchfunc(a)"}),
    ]:
        r = client.get(path, params=params)
        assert r.headers["x-content-type-options"] == "nosniff", path


# --- globs past a limit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/metrics/find", {"query": "servers." + "{a,b}" * 16}, "more than 10000 alternatives"),
        ("/metrics/expand", {"query": "servers." + "{a,b}" * 16}, "more than 10000 alternatives"),
        ("/metrics/find", {"query": "[" * 40_000}, "longer than the limit"),
        ("/metrics/find", {"query": "{" * 12 + "a" + "}" * 12}, "deeper than the limit"),
        ("/render", {"target": "sumSeries(" + "{a,b}." * 16 + "x)"}, "more than 10000 alternatives"),
    ],
)
def test_glob_past_a_limit_is_400(client, path, params, says) -> None:
    r = client.post(path, data=params)  # a form body, as Grafana sends: no URL length limit on the way
    assert r.status_code == 400, r.text
    assert says in r.text


def test_open_bracket_runs_are_literal_and_fast(client) -> None:
    import time

    t = time.perf_counter()
    r = client.get("/metrics/find", params={"query": "servers." + "[" * 20_000})
    assert r.status_code == 200 and r.json() == []
    assert time.perf_counter() - t < 2.0


# --- user regexes run on RE2 -----------------------------------------------------------------------------------

EVIL = "(.*.*)*!"  # exponential on a backtracking engine: ~10 s for a 15-character name with Python's re


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/tags/findSeries", {"expr": f"name=~{EVIL}"}),
        ("/tags/findSeries", {"expr": ["k=v", f"name!=~{EVIL}"]}),
        ("/render", {"target": f"seriesByTag('name=~{EVIL}')"}),
        ("/render", {"target": f"grep(seriesByTag('k=v'), '{EVIL}')"}),
        ("/render", {"target": f"exclude(seriesByTag('k=v'), '{EVIL}')"}),
        ("/render", {"target": f"aliasSub(seriesByTag('k=v'), '{EVIL}', 'x')"}),
        ("/tags", {"filter": EVIL}),
        ("/tags/k", {"filter": EVIL}),
        ("/tags/autoComplete/tags", {"expr": f"name=~{EVIL}"}),
    ],
)
def test_catastrophic_regexes_answer_fast(client, path, params) -> None:
    import time

    t = time.perf_counter()
    r = client.get(path, params={"from": "-5min", **params})
    assert r.status_code == 200, r.text
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize(
    ("path", "params", "names"),
    [
        ("/tags/findSeries", {"expr": r"name=~(a)\1"}, "tag expression"),
        ("/render", {"target": r"seriesByTag('name=~(?=a)')"}, "tag expression"),
        ("/render", {"target": r"grep(servers.*.cpu, '(?<=a)b')"}, "regular expression argument"),
        ("/tags", {"filter": r"(a)\1"}, "filter"),
        ("/tags/k", {"filter": "a(?!b)"}, "filter"),
    ],
)
def test_backreferences_and_lookaround_are_400_saying_so(client, path, params, names) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    assert "backreferences and lookaround are not supported" in r.text
    assert names in r.text


def test_alias_sub_group_references_keep_working(client) -> None:
    r = client.get(
        "/render",
        params={"target": r"aliasSub(servers.*.cpu, '^servers\.(\w+)\.(\w+)$', '\2 of \1')", "from": "-2min"},
    )
    assert r.status_code == 200, r.text
    assert [d["target"] for d in r.json()] == ["cpu of web1", "cpu of web2"]
    r = client.get("/render", params={"target": r"aliasSub(servers.*.cpu, 'web', '\3')", "from": "-2min"})
    assert r.status_code == 400 and "aliasSub" in r.text


# --- malformed parameters: 400 naming the parameter, never a 500 -----------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "99999999999999999999",
        "now+1000y",
        "-1" + "0" * 5000 + "s",
        "1" * 5000,
        "\u00b2",
        "-",
        "20240230",
        "00:00_99991231",
    ],
)
@pytest.mark.parametrize("param", ["from", "until"])
def test_bad_times_are_400_naming_the_parameter(client, param, value) -> None:
    other = {"until": "now"} if param == "from" else {"from": "-1h"}
    r = client.post("/render", data={"target": "servers.web1.cpu", param: value, **other})
    assert r.status_code == 400, r.text
    assert param in r.text


@pytest.mark.parametrize(
    "value",
    [
        "-100y",
        "00:00_19000101",
        "-60y",
        "0",
        "19700101",
        "-10000000y",
        "-99999999999999999999",
        "-1" + "0" * 200 + "s",
    ],
)
def test_times_before_the_epoch_read_as_the_epoch(client, value) -> None:
    """No data is older than 1970 (timestamps are unsigned 32-bit, as in Metrictank): `from=-100y` means "all of
    it". Here that is 28 million points at 60 s, which the point limit refuses before anything is allocated."""
    from metrictank.query.timeparse import parse_time

    assert parse_time(value, NOW) == 0
    r = client.post("/render", data={"target": "servers.web1.cpu", "from": value, "until": "now"})
    assert r.status_code == 400, r.text
    assert "max-points-per-req-hard (20000000)" in r.text
    r = client.post("/render", data={"target": "servers.web1.cpu", "from": value, "until": str(3600)})
    assert r.status_code == 200, r.text
    assert all(v is None for v, _t in r.json()[0]["datapoints"])  # the epoch's first hour: no data


@pytest.mark.parametrize(
    "target",
    [
        "sumSeries(" * 1000 + "servers.*.cpu" + ")" * 1000,
        "sumSeries(" * 1000,
        "servers.*.cpu" + "|scale(1)" * 2000,
        "group(" * 60 + "scale(" * 60 + "servers.*.cpu" + ", 1)" * 60 + ")" * 60,
    ],
)
def test_deep_nesting_is_400(client, target) -> None:
    r = client.post("/render", data={"target": target})
    assert r.status_code == 400, r.text
    assert "nest" in r.text


def test_nesting_within_the_limit_works(client) -> None:
    r = client.post(
        "/render", data={"target": "scale(" * 99 + "servers.web1.cpu" + ", 1)" * 99, "from": "-2min"}
    )
    assert r.status_code == 200, r.text
    r = client.post("/render", data={"target": "[" * 2000 + "(" * 2000})
    assert r.status_code == 400 and "unexpected character" in r.text


def test_huge_integer_literal_is_400(client) -> None:
    r = client.post("/render", data={"target": f"scale(servers.*.cpu, {'9' * 5000})"})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("tz", ["a" * 5000, "../../etc/passwd", "\x00", "Europe/Nowhere"])
def test_bad_time_zone_is_400(client, tz) -> None:
    r = client.post("/render", data={"target": "servers.web1.cpu", "tz": tz})
    assert r.status_code == 400 and "time zone" in r.text


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"maxDataPoints": "9" * 5000}, "maxDataPoints"),
        ({"maxDataPoints": "-5"}, "maxDataPoints"),
        ({"maxDataPoints": "1e5"}, "maxDataPoints"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_render_parameters_name_themselves(client, params, name) -> None:
    r = client.post("/render", data={"target": "servers.web1.cpu", **params})
    assert r.status_code == 400 and name in r.text, r.text


def test_broken_multipart_body_is_400(client) -> None:
    r = client.post(
        "/render",
        content=b'--xx\r\nContent-Disposition: form-data; name="target"\r\n\r\nservers.web1.cpu',
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert 400 <= r.status_code < 500


def test_a_genuine_bug_is_a_logged_500_answer_not_a_dropped_connection(src, caplog) -> None:
    class Broken(StaticSource):
        def find(self, org, pattern, from_ts=0):
            raise RuntimeError("boom")

    app = FastAPI()
    app.include_router(graphite_router(lambda: Broken(src.data), clock=lambda: NOW))
    c = TestClient(app)  # raise_server_exceptions: an exception escaping the endpoint would fail the test
    r = c.get("/metrics/find", params={"query": "*"})
    assert r.status_code == 500 and "internal error" in r.text and "boom" not in r.text
    assert "boom" in caplog.text


# --- query limits ----------------------------------------------------------------------------------------------

from metrictank.query.limits import QueryLimits  # noqa: E402


def _limited(src: StaticSource, **limits) -> TestClient:
    app = FastAPI()
    app.include_router(graphite_router(lambda: src, clock=lambda: NOW, limits=QueryLimits(**limits)))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def fine() -> StaticSource:
    """Ten series at 10 s over the last 6 hours: 2160 points each."""
    n = 6 * 360
    return StaticSource(
        {f"fine.s{i}": (NOW - 6 * 3600 + 10, 10, np.arange(n, dtype=float)) for i in range(10)}
    )


def test_limits_default_to_the_config_defaults() -> None:
    from metrictank.config import load_config

    assert QueryLimits.from_config(load_config(env={}).http) == QueryLimits()
    assert QueryLimits.from_config({}) == QueryLimits()
    got = QueryLimits.from_config({"max-series-per-req": 5, "query-timeout": 2.5})
    assert got.max_series_per_req == 5 and got.query_timeout == 2.5


@pytest.mark.parametrize("mdp", ["0", "", None])
def test_max_data_points_zero_or_absent_is_the_default_not_unlimited(fine, mdp) -> None:
    c = _limited(fine)
    data = {"target": "fine.s0", "from": "-6h"}
    if mdp is not None:
        data["maxDataPoints"] = mdp
    r = c.post("/render", data=data)
    assert r.status_code == 200
    assert 0 < len(r.json()[0]["datapoints"]) <= 800


def test_series_limit_is_400_before_any_fetch(fine) -> None:
    c = _limited(fine, max_series_per_req=12)
    r = c.post("/render", data={"target": ["fine.*", "sumSeries(fine.s{1,2,3})"], "from": "-1h"})
    assert r.status_code == 400
    assert "max-series-per-req" in r.text and "12" in r.text
    assert fine.fetches == []


def test_hard_point_limit_is_400_with_the_figure_before_any_fetch(fine) -> None:
    c = _limited(fine, max_points_per_req_soft=1000, max_points_per_req_hard=5000)
    r = c.post("/render", data={"target": "fine.*", "from": "-6h", "maxDataPoints": "100000000"})
    assert r.status_code == 400
    assert "21600 points" in r.text and "max-points-per-req-hard (5000)" in r.text
    assert fine.fetches == []


def test_hard_point_limit_counts_fetches_known_only_while_evaluating(fine) -> None:
    # movingAverage over a point count re-reads its input with an earlier start once it knows the step
    c = _limited(fine, max_points_per_req_soft=10**9, max_points_per_req_hard=4000)
    r = c.post("/render", data={"target": "movingAverage(fine.s0, 1000)", "from": "-5h"})
    assert r.status_code == 400 and "max-points-per-req-hard (4000)" in r.text


class _CountingEstimates(StaticSource):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.estimates = 0

    def estimate_points(self, *a, **kw) -> int:
        self.estimates += 1
        return super().estimate_points(*a, **kw)


def test_planned_fetches_are_estimated_once_and_still_charged(fine) -> None:
    src = _CountingEstimates(fine.data)
    c = _limited(src, max_points_per_req_soft=10**9, max_points_per_req_hard=4000)
    # two planned fetches of 360 points each: estimated when planned, charged from that estimate when fetched
    r = c.post("/render", data={"target": ["fine.s0", "fine.s1"], "from": "-1h"})
    assert r.status_code == 200 and src.estimates == 2
    # a fetch only known while evaluating is estimated when it runs, and still charged against the budget
    r = c.post("/render", data={"target": "movingAverage(fine.s0, 1000)", "from": "-5h"})
    assert r.status_code == 400 and "max-points-per-req-hard (4000)" in r.text
    assert src.estimates == 4


def test_soft_point_limit_consolidates_harder(fine) -> None:
    c = _limited(fine, max_points_per_req_soft=1000, max_points_per_req_hard=10**6)
    r = c.post("/render", data={"target": "fine.*", "from": "-6h", "maxDataPoints": "100000000"})
    assert r.status_code == 200
    doc = r.json()
    assert len(doc) == 10
    assert all(len(d["datapoints"]) <= 100 for d in doc)  # 1000 points / 10 series
    assert (
        fine.fetches[0][4] == 100
    )  # the source was asked for 100 per series: a coarser archive if it has one
    # under the soft limit nothing changes
    r = c.post("/render", data={"target": "fine.s0", "from": "-1h", "maxDataPoints": "1000"})
    assert len(r.json()[0]["datapoints"]) == 360


def test_local_full_resolution_is_still_held_to_the_point_budget(fine) -> None:
    c = _limited(fine, max_points_per_req_soft=1000, max_points_per_req_hard=10**6)
    r = c.post("/render", data={"target": "fine.*", "from": "-6h", "local": "1"})
    assert r.status_code == 200 and all(len(d["datapoints"]) <= 100 for d in r.json())


def test_target_length_and_nesting_limits_are_configurable(fine) -> None:
    c = _limited(fine, max_target_length=20, max_nesting_depth=2)
    r = c.post("/render", data={"target": "fine.s0" + "|scale(1)" * 3})
    assert r.status_code == 400 and "max-target-length" in r.text and "20" in r.text
    r = c.post("/render", data={"target": "scale(scale(scale(fine.s0,1),1),1)"})
    assert r.status_code == 400 and "max-target-length" in r.text
    c = _limited(fine, max_nesting_depth=2)
    r = c.post("/render", data={"target": "scale(scale(scale(fine.s0,1),1),1)"})
    assert r.status_code == 400 and "max-nesting-depth" in r.text
    r = c.post("/render", data={"target": "scale(scale(fine.s0,1),1)", "from": "-1min"})
    assert r.status_code == 200


def test_query_timeout_answers_503_and_abandons_the_work(fine) -> None:
    import time

    from metrictank.query.limits import check_deadline

    class Slow(StaticSource):
        def fetch(self, org, refs, start, end, max_data_points, consolidate_by):
            out = []
            for (
                ref
            ) in refs:  # a storage read per series, checking the deadline between them as the real ones do
                check_deadline()
                time.sleep(0.05)
                out += super().fetch(org, [ref], start, end, max_data_points, consolidate_by)
            return out

    slow = Slow(fine.data)
    c = _limited(slow, query_timeout=0.3)
    t = time.perf_counter()
    r = c.post("/render", data={"target": [f"fine.s{i}" for i in range(10)] * 1 + ["fine.*"], "from": "-1h"})
    took = time.perf_counter() - t
    assert r.status_code == 503
    assert "query-timeout" in r.text
    assert took < 1.5
    assert len(slow.fetches) < 10  # abandoned: the remaining reads were never made
