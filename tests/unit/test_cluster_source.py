"""Cluster-aware queries over in-process nodes: each "node" is a real HTTP server (uvicorn on a free port) with
its `/node` and `/internal` routes over a StaticSource; the querying node's Graphite API reads through a
ClusterSource. Checks the merge, the choice of replica by readiness and priority, failover to the next replica
(on resolve and on fetch), and that a partition without a replica is a 503 naming it, never partial data."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import msgpack
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from metrictank.api import create_app
from metrictank.api.cluster_source import ClusterSource, RemoteKey
from metrictank.api.internal import pack_series, unpack_series
from metrictank.query.errors import QueryError
from metrictank.query.http import graphite_router
from metrictank.query.series import Series
from metrictank.query.source import StaticSource

T0 = 1_700_000_000 - 1_700_000_000 % 600
N = 60  # points per series, 10 s apart


def _values(seed: int) -> np.ndarray:
    v = np.round(np.sin(np.arange(N) / 7 + seed) * 100 + seed, 3)
    v[seed % N] = np.nan  # a gap, which must survive the wire as a gap
    return v


def _data(names: list[str], seed0: int) -> dict[str, tuple[int, int, np.ndarray]]:
    return {n: (T0, 10, _values(seed0 + i)) for i, n in enumerate(names)}


A_NAMES = ["app.a.cpu", "app.a.mem", "app.shared.x", "tagged;dc=eu;host=a"]
B_NAMES = ["app.b.cpu", "app.b.mem", "app.shared.y", "tagged;dc=us;host=b"]
A_DATA = _data(A_NAMES, 1)
B_DATA = _data(B_NAMES, 11)
ALL = {**A_DATA, **B_DATA}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeNode:
    """What the admin routes need: only `/node` matters here (state, priority, partitions)."""

    admin_token = ""

    def __init__(self, name: str, partitions: list[int], priority: int = 0, ready: bool = True) -> None:
        self.name = name
        self.partitions = partitions
        self.priority = priority
        self.ready = ready
        self.node_requests = 0

    def node_json(self) -> dict:
        self.node_requests += 1
        return {
            "name": self.name,
            "primary": False,
            "state": "NodeReady" if self.ready else "NodeNotReady",
            "priority": self.priority,
            "partitions": self.partitions,
        }

    def is_ready(self) -> bool:
        return self.ready

    def priority_json(self) -> dict:
        return {"priority": self.priority}

    def cluster_json(self) -> dict:
        return {}

    def promote(self, force: bool) -> tuple[bool, list[str]]:
        return False, ["test node"]

    def demote(self) -> tuple[bool, str]:
        return True, ""

    def metrics_text(self) -> bytes:
        return b""


class Server:
    """A node's app served by uvicorn in a thread; `stop()` makes it unreachable (connection refused)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(10)


class PeerNode:
    def __init__(self, name: str, partitions: list[int], data: dict, priority: int = 0, source=None) -> None:
        self.backend = FakeNode(name, partitions, priority)
        self.source = source if source is not None else StaticSource(data)
        self.server = Server(create_app(self.backend, local_source=lambda: self.source))
        self.url = self.server.url

    def fetched(self) -> list[str]:
        return [n for f in self.source.fetches for n in f[1]]


@pytest.fixture
def nodes():
    """B1 and B2: replicas of partitions 2,3 (B1 preferred: lower priority); A, the querying node, has 0,1."""
    b1 = PeerNode("b1", [2, 3], B_DATA, priority=0)
    b2 = PeerNode("b2", [2, 3], B_DATA, priority=5)
    made: list[ClusterSource] = []

    def cluster(peers=None, local=None, **kw) -> ClusterSource:
        kw.setdefault("refresh_interval", 0.0)
        cs = ClusterSource(
            local if local is not None else StaticSource(A_DATA),
            [0, 1],
            4,
            [p.url for p in (peers if peers is not None else [b1, b2])],
            timeout=1.0,
            **kw,
        )
        made.append(cs)
        return cs

    yield b1, b2, cluster
    for cs in made:
        cs.close()
    b1.server.stop()
    b2.server.stop()


def _graphite(source) -> TestClient:
    app = FastAPI()
    app.include_router(graphite_router(lambda: source))
    return TestClient(app)


def _render(client: TestClient, target: str, **params) -> httpx.Response:
    return client.get(
        "/render",
        params={
            "target": target,
            "from": str(T0 - 1),
            "until": str(T0 + N * 10 - 1),
            "maxDataPoints": "0",
            **params,
        },
    )


def _points(doc: dict) -> np.ndarray:
    return np.array([np.nan if v is None else v for v, _t in doc["datapoints"]], dtype=float)


def test_render_merges_local_and_peer_series_exactly(nodes):
    b1, b2, cluster = nodes
    client = _graphite(cluster())
    r = _render(client, "app.*.*")
    assert r.status_code == 200, r.text
    body = {s["target"]: s for s in r.json()}
    assert sorted(body) == sorted(n for n in ALL if n.startswith("app."))
    for name, doc in body.items():
        np.testing.assert_array_equal(_points(doc), ALL[name][2])
        assert [t for _v, t in doc["datapoints"]] == list(range(T0, T0 + N * 10, 10))

    r = _render(client, "sumSeries(app.*.cpu)")
    assert r.status_code == 200, r.text
    expect = np.nansum([A_DATA["app.a.cpu"][2], B_DATA["app.b.cpu"][2]], axis=0)
    np.testing.assert_allclose(_points(r.json()[0]), expect)

    r = _render(client, "seriesByTag('name=tagged')")
    assert sorted(s["target"] for s in r.json()) == ["tagged;dc=eu;host=a", "tagged;dc=us;host=b"]
    # B1 (lower priority) served the peer part; its replica was not asked
    assert set(b1.fetched()) == {"app.b.cpu", "app.b.mem", "app.shared.y", "tagged;dc=us;host=b"}
    assert b2.fetched() == []


def test_names_and_tags_merge_without_duplicates(nodes):
    _b1, _b2, cluster = nodes
    client = _graphite(cluster())
    r = client.get("/metrics/find", params={"query": "app.*"})
    assert r.status_code == 200, r.text
    assert [n["text"] for n in r.json()] == ["a", "b", "shared"]  # "shared" exists on both: listed once
    r = client.get("/metrics/find", params={"query": "app.shared.*"})
    assert [n["id"] for n in r.json()] == ["app.shared.x", "app.shared.y"]
    assert client.get("/metrics/index.json").json() == sorted(ALL)
    r = client.post("/metrics/expand", data={"query": "app.*.cpu"})
    assert r.json() == {"results": ["app.a.cpu", "app.b.cpu"]}
    assert [t["tag"] for t in client.get("/tags").json()] == ["dc", "host", "name"]
    vals = client.get("/tags/name").json()["values"]
    assert {v["value"]: v["count"] for v in vals}["tagged"] == 2  # one series on each node
    r = client.get("/tags/autoComplete/values", params={"tag": "dc"})
    assert r.json() == ["eu", "us"]
    r = client.get("/tags/autoComplete/tags", params={"expr": "name=tagged", "tagPrefix": "h"})
    assert r.json() == ["host"]


def test_org_is_passed_to_peers(nodes):
    b1, _b2, cluster = nodes
    b1.source = StaticSource({2: {"org2.only": (T0, 10, _values(3))}, -1: {"pub.lic": (T0, 10, _values(4))}})
    cs = cluster(peers=[b1])
    assert [r.name for r in cs.resolve(2, "*.*")] == ["org2.only", "pub.lic"]
    assert [r.name for r in cs.resolve(1, "*.*")] == ["pub.lic"]


def test_next_replica_when_the_preferred_one_is_down(nodes):
    b1, b2, cluster = nodes
    cs = cluster(refresh_interval=60.0)
    assert {r.key.peer for r in cs.resolve(1, "app.b.*")} == {b1.url}  # B1 known ready (cached)
    b1.server.stop()  # dies: the query that finds out goes on with B2
    client = _graphite(cs)
    r = _render(client, "app.b.*")
    assert r.status_code == 200, r.text
    assert sorted(s["target"] for s in r.json()) == ["app.b.cpu", "app.b.mem"]
    assert set(b2.fetched()) == {"app.b.cpu", "app.b.mem"}
    assert cs.peer_failures == 1
    # a fresh node that sees B1 down from the start goes to B2 directly
    cs2 = cluster()
    assert {r.key.peer for r in cs2.resolve(1, "app.b.*")} == {b2.url} and cs2.peer_failures == 0


def test_next_replica_when_the_preferred_one_errors(nodes):
    b1, b2, cluster = nodes

    class Broken(StaticSource):
        def resolve(self, org, pattern):
            raise RuntimeError("disk on fire")

    b1.source = Broken(B_DATA)
    cs = cluster()
    assert [r.name for r in cs.resolve(1, "app.b.*")] == ["app.b.cpu", "app.b.mem"]
    assert all(r.key.peer == b2.url for r in cs.resolve(1, "app.b.*"))


def test_fetch_fails_over_by_name_when_the_resolving_peer_dies(nodes):
    b1, b2, cluster = nodes
    cs = cluster()
    refs = cs.resolve(1, "app.*.cpu") + cs.resolve_tags(1, ["dc=us"])
    assert {r.key.peer for r in refs if isinstance(r.key, RemoteKey)} == {b1.url}
    b1.server.stop()
    got = cs.fetch(1, refs, T0, T0 + N * 10, 0, None)
    assert [s.target for s in got] == [r.name for r in refs]
    for s in got:
        np.testing.assert_array_equal(s.values, ALL[s.target][2])
    assert set(b2.fetched()) == {"app.b.cpu", "tagged;dc=us;host=b"}


def test_priority_and_readiness_choose_the_replica(nodes):
    b1, b2, cluster = nodes
    cs = cluster()
    b1.backend.priority = 10  # now lagging more than B2
    cs.fetch(1, cs.resolve(1, "app.b.cpu"), T0, T0 + 600, 0, None)
    assert b2.fetched() == ["app.b.cpu"] and b1.fetched() == []
    b1.backend.priority = 0
    b1.backend.ready = False  # not ready: never asked, whatever its priority
    cs.fetch(1, cs.resolve(1, "app.b.mem"), T0, T0 + 600, 0, None)
    assert b2.fetched() == ["app.b.cpu", "app.b.mem"] and b1.fetched() == []


def test_no_replica_is_a_503_naming_the_partitions(nodes):
    b1, b2, cluster = nodes
    client = _graphite(cluster())
    b1.server.stop()
    b2.backend.ready = False
    for r in (_render(client, "app.*.cpu"), client.get("/metrics/find", params={"query": "app.*"})):
        assert r.status_code == 503
        assert "partitions 2, 3" in r.text
    b2.server.stop()
    r = _render(client, "sumSeries(app.*.cpu)")
    assert r.status_code == 503 and "partitions 2, 3" in r.text


def test_partitions_split_across_groups_are_each_served(nodes):
    b1, _b2, cluster = nodes
    c = PeerNode("c", [3], {"app.c.cpu": (T0, 10, _values(30))})
    b1.backend.partitions = [2]
    try:
        cs = cluster(peers=[b1, c])
        names = [r.name for r in cs.resolve(1, "app.*.cpu")]
        assert names == ["app.a.cpu", "app.b.cpu", "app.c.cpu"]
        c.server.stop()  # partition 3 has no other replica
        with pytest.raises(QueryError) as e:
            cs.resolve(1, "app.*.cpu")
        assert e.value.status == 503 and "partitions 3:" in e.value.message
    finally:
        c.server.stop()


def test_a_peer_query_error_is_reported_not_failed_over(nodes):
    b1, b2, cluster = nodes

    class Strict(StaticSource):
        def tags(self, org, filter):
            raise QueryError("filter not supported here", status=422)

    b1.source = Strict(B_DATA)
    cs = cluster()
    with pytest.raises(QueryError) as e:
        cs.tags(1, None)
    assert e.value.status == 422 and "filter not supported" in e.value.message
    assert cs.peer_failures == 0


def test_peer_state_is_cached_and_a_failed_peer_left_out_until_refresh(nodes):
    b1, b2, cluster = nodes
    now = [0.0]
    cs = cluster(refresh_interval=2.0, clock=lambda: now[0])
    for _ in range(3):
        cs.resolve(1, "app.b.*")
    assert b1.backend.node_requests == 1 and b2.backend.node_requests == 1

    class Flaky(StaticSource):
        fail = True

        def resolve(self, org, pattern):
            if Flaky.fail:
                raise RuntimeError("transient")
            return super().resolve(org, pattern)

    b1.source = Flaky(B_DATA)
    assert {r.key.peer for r in cs.resolve(1, "app.b.*")} == {b2.url}
    Flaky.fail = False
    assert {r.key.peer for r in cs.resolve(1, "app.b.*")} == {b2.url}  # still left out
    now[0] = 2.5
    assert {r.key.peer for r in cs.resolve(1, "app.b.*")} == {b1.url}  # refreshed: back in


def test_no_remote_partitions_means_no_peer_requests(nodes):
    b1, b2, _cluster = nodes
    cs = ClusterSource(StaticSource(A_DATA), [0, 1, 2, 3], 4, [b1.url, b2.url], refresh_interval=0.0)
    try:
        assert [r.name for r in cs.resolve(1, "app.a.*")] == ["app.a.cpu", "app.a.mem"]
        assert cs.peer_requests == 0
    finally:
        cs.close()


def test_internal_routes_answer_from_the_local_source_only(nodes):
    b1, _b2, cluster = nodes
    # node A serves its Graphite API through the cluster source but its internal routes from its local data
    a_local = StaticSource(A_DATA)
    app = create_app(FakeNode("a", [0, 1]), lambda: cluster(local=a_local), local_source=lambda: a_local)
    client = TestClient(app)
    r = client.post(
        "/internal/resolve",
        content=msgpack.packb({"pattern": "app.*.cpu"}),
        headers={"Content-Type": "application/x-msgpack"},
    )
    assert r.status_code == 200
    assert msgpack.unpackb(r.content)["names"] == ["app.a.cpu"]
    assert _render(client, "app.*.cpu").status_code == 200
    assert len(_render(client, "app.*.cpu").json()) == 2
    assert client.post("/internal/nosuch", content=msgpack.packb({})).status_code == 404
    assert client.post("/internal/find", content=b"\xc1").status_code == 400


def test_series_wire_format_round_trips_gaps_and_lengths():
    series = [
        Series("a", "a", {}, 10, 10, np.array([1.5, np.nan, -3.25])),
        Series("b;x=y", "b;x=y", {}, 60, 60, np.array([], dtype=float), "sum"),
        Series("c", "c", {}, 0, 1, np.arange(1000, dtype=float)),
    ]
    body = pack_series(series)
    assert body.endswith(np.concatenate([s.values for s in series]).astype("<f8").tobytes())  # one raw blob
    back = unpack_series(body)
    for s, b in zip(series, back, strict=True):
        assert (b.target, b.start, b.step, b.consolidator) == (s.target, s.start, s.step, s.consolidator)
        np.testing.assert_array_equal(b.values, s.values)
    back[0].values[0] = 99.0  # writable, and the views do not overlap
    assert back[1].values.size == 0 and back[2].values[0] == 0.0
    assert unpack_series(pack_series([])) == []
    for bad in (body[:-3], b"nope" + body[4:], body[:6]):
        with pytest.raises(ValueError):
            unpack_series(bad)


def test_fetch_keeps_ref_order_and_skips_nothing_it_resolved(nodes):
    _b1, _b2, cluster = nodes
    cs = cluster()
    refs = cs.resolve(1, "app.*.*")
    refs = refs[::-1]
    got = cs.fetch(1, refs, T0, T0 + N * 10, 0, None)
    assert [s.target for s in got] == [r.name for r in refs]
    assert all(isinstance(r.key, RemoteKey) == r.name.startswith(("app.b", "app.shared.y")) for r in refs)


def test_from_and_last_update_cross_the_wire(nodes):
    """find and findSeries with `from` filter on the peers too, and a peer's series carry their lastTs."""
    b1, _b2, cluster = nodes
    b1.source = StaticSource({1: {**B_DATA, "app.b.old": (T0 - 3 * 86400, 10, _values(5))}})
    client = _graphite(cluster(peers=[b1]))
    since = str(T0 - 86400)
    ids = [n["id"] for n in client.get("/metrics/find", params={"query": "app.b.*"}).json()]
    assert ids == ["app.b.cpu", "app.b.mem", "app.b.old"]
    ids = [n["id"] for n in client.get("/metrics/find", params={"query": "app.b.*", "from": since}).json()]
    assert ids == ["app.b.cpu", "app.b.mem"]
    r = client.get("/tags/findSeries", params={"expr": "name=tagged", "from": since, "format": "lastts-json"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "series": [
            {"lastTs": T0 + (N - 1) * 10, "val": "tagged;dc=eu;host=a"},
            {"lastTs": T0 + (N - 1) * 10, "val": "tagged;dc=us;host=b"},
        ]
    }
    r = client.get("/tags/terms", params={"expr": "name=tagged", "tags": "dc"})
    assert r.json() == {"totalSeries": 2, "terms": {"dc": {"eu": 1, "us": 1}}}


def test_a_slow_peer_refresh_does_not_hold_up_other_queries():
    """One caller refreshes the peer table (asking every peer, up to the timeout); the others answer from the
    table they have instead of waiting behind it; a peer answering something that is not a node is not ready."""
    import threading
    import time as _time

    from metrictank.api.cluster_source import ReadyPeer

    cs = ClusterSource(StaticSource(A_DATA), [0, 1], 4, ["http://a", "http://b"], refresh_interval=0.0)
    fast = ReadyPeer("http://a", 0, frozenset({2, 3}))
    cs._node = lambda url: fast if url == "http://a" else None  # type: ignore[method-assign]
    assert cs.ready_peers() == [fast]
    slow_started = threading.Event()

    def slow(url):
        slow_started.set()
        _time.sleep(1.5)
        return fast if url == "http://a" else None

    cs._node = slow  # type: ignore[method-assign]
    t = threading.Thread(target=cs.ready_peers)
    t.start()
    slow_started.wait(5)
    t0 = _time.monotonic()
    assert cs.ready_peers() == [fast]  # the table it had
    assert _time.monotonic() - t0 < 0.5
    t.join()
    cs.close()


def test_a_peer_answering_a_non_object_is_not_ready():
    class Client:
        def get(self, url, timeout=None):
            class R:
                def raise_for_status(self):
                    pass

                def json(self):
                    return [1, 2]

            return R()

        def close(self):
            pass

    cs = ClusterSource(StaticSource(A_DATA), [0, 1], 4, ["http://x"], client=Client())
    assert cs.ready_peers() == []
    cs.close()


def test_internal_routes_answer_400_for_patterns_past_their_limits():
    """A peer's request is input too: a pattern past the glob limits (the index raises PatternError, a
    ValueError, as InstanceSource over a MemoryIndex does) is a 400 from /internal, not a 500."""
    import msgpack
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from metrictank.api.internal import internal_router
    from metrictank.index import MemoryIndex

    class IndexSource(StaticSource):
        def __init__(self) -> None:
            super().__init__(A_DATA)
            self.index = MemoryIndex()

        def find(self, org, pattern, from_ts=0):
            return self.index.find(org, pattern, from_ts)

    app = FastAPI()
    app.include_router(internal_router(lambda: IndexSource()))
    c = TestClient(app, raise_server_exceptions=False)
    for body in ({"pattern": "a" * 40_000}, {"pattern": "x." + "{a,b}" * 16}, {"pattern": 7}):
        r = c.post("/internal/find", content=msgpack.packb(body))
        assert r.status_code == 400, (body, r.status_code, r.content[:200])


def _dribbling_peer(partitions: list[int], seconds: float) -> Server:
    """A ready peer (real HTTP server) whose /internal answers arrive a byte every 0.2 s for `seconds`: each
    read is quick, so no read timeout ever fires, but the whole answer takes as long as the peer likes."""
    import asyncio

    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/node")
    def node() -> dict:
        return {
            "name": "slow",
            "primary": False,
            "state": "NodeReady",
            "priority": 0,
            "partitions": partitions,
        }

    @app.post("/internal/{op}")
    async def internal(op: str) -> StreamingResponse:
        async def dribble():
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                yield b" "
                await asyncio.sleep(0.2)

        return StreamingResponse(dribble(), media_type="application/x-msgpack")

    return Server(app)


def test_a_dribbling_peer_is_abandoned_at_the_render_deadline():
    from metrictank.query.limits import QueryLimits

    peer = _dribbling_peer([2, 3], seconds=20)
    cs = ClusterSource(StaticSource(A_DATA), [0, 1], 4, [peer.url], timeout=1.0, query_timeout=2.0)
    app = FastAPI()
    app.include_router(graphite_router(lambda: cs, limits=QueryLimits(query_timeout=2.0)))
    try:
        t0 = time.monotonic()
        r = _render(TestClient(app), "app.*.cpu")
        took = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert "timed out" in r.text
        assert took < 5.0, f"the render waited {took:.1f}s for a peer past its 2 s deadline"
        assert cs.peer_timeouts == 1 and cs.peer_failures == 0  # slow is not failed: not marked down
        # outside a render (find), the fan-out is held to query-timeout as a whole
        t0 = time.monotonic()
        with pytest.raises(QueryError) as e:
            cs.find(1, "app.*")
        assert e.value.status == 503 and time.monotonic() - t0 < 5.0
    finally:
        cs.close()
        peer.stop()
