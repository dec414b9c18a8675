"""Property: whatever a client sends to the Graphite API - random targets built from every registered function,
random globs, times and tag expressions, or plain garbage - the answer is a status below 500, within a deadline.

The client re-raises any exception that escapes an endpoint, and the last-resort handler answers a genuine bug
with a 500, so both kinds of failure fail this test."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrictank.query.functions import FUNCTIONS
from metrictank.query.http import graphite_router
from metrictank.query.limits import QueryLimits
from metrictank.query.source import StaticSource

NOW = 1_700_000_040
DEADLINE = 3.0  # seconds per request, generous for a loaded 2-core machine; real answers take milliseconds

_N = 6 * 60
_SRC = StaticSource(
    {
        1: {
            "servers.web1.cpu": (NOW - 6 * 3600 + 60, 60, np.arange(_N, dtype=float)),
            "servers.web2.cpu": (NOW - 6 * 3600 + 60, 60, np.full(_N, 2.0)),
            "servers.db1.mem": (NOW - 6 * 3600 + 60, 60, np.where(np.arange(_N) % 7, 1.0, np.nan)),
            "fine.a": (NOW - 3600 + 10, 10, np.random.default_rng(1).normal(size=360)),
            "cpu;dc=eu;host=a": (NOW - 6 * 3600 + 60, 60, np.ones(_N)),
            "cpu;dc=us;host=b": (NOW - 6 * 3600 + 60, 60, np.full(_N, 3.0)),
        },
        -1: {"public.metric": (NOW - 6 * 3600 + 60, 60, np.ones(_N))},
    }
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    # small limits so that the fuzzer reaches them; a short timeout so that a slow path shows as a 503, not a hang
    limits = QueryLimits(
        max_points_per_req_soft=20_000, max_points_per_req_hard=200_000, query_timeout=DEADLINE
    )
    app.include_router(graphite_router(lambda: _SRC, clock=lambda: NOW, limits=limits))
    return TestClient(app)  # raise_server_exceptions=True: an escaped exception fails the test


GLOB_CHARS = "ab.*?[]!{},-^$\\;=~é1"
globs = st.one_of(
    st.sampled_from(["servers.*.cpu", "servers.web{1,2}.cpu", "*.*", "servers.[a-z]*[0-9].*", "fine.?", "*"]),
    st.text(alphabet=GLOB_CHARS, max_size=24),
    st.builds(
        lambda a, n: a * n, st.sampled_from(["[", "{", "[!", "*?", "{a,", "}", "\\"]), st.integers(1, 3000)
    ),
)
strings = st.one_of(
    st.sampled_from(
        ["1h", "-5min", "sum", "avg", "max", "x", "(a)\\1", "(.*.*)*!", "\\1", "name=~.*", "dc=eu"]
    ),
    st.text(max_size=12),
)
numbers = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False),
    st.sampled_from(["inf", "None", "true", "1e400"]),
)


def _lit(v: object) -> str:
    if isinstance(v, str) and v not in ("inf", "None", "true", "1e400"):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


targets = st.recursive(
    st.one_of(globs, st.builds(lambda e: f"seriesByTag({_lit(e)})", strings)),
    lambda inner: st.builds(
        lambda f, args: f"{f}({','.join(args)})",
        st.sampled_from(sorted(FUNCTIONS)),
        st.lists(st.one_of(inner, strings.map(_lit), numbers.map(str)), max_size=4),
    ),
    max_leaves=6,
)
times = st.one_of(
    st.sampled_from(
        [
            "-1h",
            "-6h",
            "now",
            "-100y",
            "now-5min",
            "00:00_20231114",
            "20231114",
            "midnight",
            "yesterday",
            "-1",
        ]
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.text(alphabet="0123456789-+:_nowyhmsdaef ", max_size=16),
    st.text(max_size=8),
)
tag_exprs = st.one_of(
    st.builds(
        lambda k, op, v: k + op + v,
        st.sampled_from(["name", "dc", "host", "", "__tag", "a;b"]),
        st.sampled_from(["=", "!=", "=~", "!=~", "^=", "==", "~"]),
        strings,
    ),
    st.text(max_size=16),
)


def _call(client: TestClient, method: str, path: str, data: dict) -> None:
    t = time.perf_counter()
    if method == "GET":
        r = client.get(path, params=data)
    else:
        r = client.post(path, data=data)
    took = time.perf_counter() - t
    assert r.status_code < 500 or r.status_code == 503 and "query-timeout" in r.text, (
        path,
        data,
        r.text[:300],
    )
    assert took < DEADLINE + 1.0, (path, data, took)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    ts=st.lists(targets, min_size=1, max_size=3),
    frm=st.one_of(st.none(), times),
    until=st.one_of(st.none(), times),
    mdp=st.one_of(st.none(), st.integers(-5, 10**9).map(str), st.text(max_size=5)),
    fmt=st.sampled_from(["json", "csv", "msgpack", "pickle", "xml"]),
)
def test_render_never_fails(client, ts, frm, until, mdp, fmt) -> None:
    data: dict = {"target": ts, "format": fmt}
    for k, v in (("from", frm), ("until", until), ("maxDataPoints", mdp)):
        if v is not None:
            data[k] = v
    _call(client, "POST", "/render", data)


@FUZZ
@given(
    query=globs, frm=st.one_of(st.none(), times), fmt=st.sampled_from(["treejson", "completer", "json", "x"])
)
def test_find_never_fails(client, query, frm, fmt) -> None:
    data = {"query": query, "format": fmt}
    if frm is not None:
        data["from"] = frm
    _call(client, "POST", "/metrics/find", data)


@FUZZ
@given(queries=st.lists(globs, min_size=1, max_size=3), group=st.booleans())
def test_expand_never_fails(client, queries, group) -> None:
    _call(client, "POST", "/metrics/expand", {"query": queries, "groupByExpr": str(group).lower()})


@FUZZ
@given(exprs=st.lists(tag_exprs, min_size=1, max_size=3), frm=st.one_of(st.none(), times))
def test_find_series_never_fails(client, exprs, frm) -> None:
    data: dict = {"expr": exprs}
    if frm is not None:
        data["from"] = frm
    _call(client, "POST", "/tags/findSeries", data)
