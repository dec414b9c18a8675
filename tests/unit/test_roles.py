"""Write and read roles (`[cluster] role`): a write node refuses queries with a pointer to the readers, a read
node keeps only its read window in memory, never takes a lease and cannot be promoted, and readers leave write
nodes out of a cluster query."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from metrictank.api import create_app
from metrictank.api.cluster_source import ClusterSource
from metrictank.query.source import StaticSource
from metrictank.retention import Schemas

from .test_cluster_source import A_DATA, FakeNode

SCHEMAS = """[fine]
pattern = ^fine\\.
retentions = 1s:1d:1min:30,1min:30d:1h:12
[few]
pattern = ^few\\.
retentions = 10s:1d:10min:2
"""


def test_read_window_cuts_numchunks_to_what_covers_it():
    s = Schemas.parse(SCHEMAS).with_memory_window(600)
    fine = s.match("fine.a", 1)[1].retentions
    assert [r.numchunks for r in fine] == [11, 2]  # 1 open + 10 closed 1-min chunks; 1h chunks: at least 2
    assert [r.chunkspan for r in fine] == [60, 3600]  # nothing else changes
    assert s.match("few.a", 10)[1].raw.numchunks == 2  # never below 2, never above what was configured
    default = s.match("other", 10)[1].retentions
    full = Schemas.parse(SCHEMAS).match("other", 10)[1].retentions
    assert all(a.numchunks <= b.numchunks for a, b in zip(default, full, strict=True))
    wide = Schemas.parse(SCHEMAS).with_memory_window(10 * 86400)
    assert [r.numchunks for r in wide.match("fine.a", 1)[1].retentions] == [30, 12]


def test_a_write_node_answers_queries_404_pointing_to_readers():
    msg = "w1 is a write node (cluster.role = write): it does not answer queries; ask a read node"
    client = TestClient(create_app(FakeNode("w1", [0]), None, queries_refused=msg))
    for method, path in [
        ("GET", "/render?target=a.b"),
        ("POST", "/render"),
        ("GET", "/metrics/find?query=*"),
        ("GET", "/metrics/expand?query=*"),
        ("GET", "/tags/autoComplete/tags"),
        ("GET", "/tags/name"),
        ("GET", "/functions"),
        ("POST", "/internal/fetch"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 404 and r.json() == {"error": msg}, (method, path, r.text)
    assert client.get("/node").status_code == 200  # the admin API stays


def test_readers_leave_write_nodes_out_of_a_cluster_query():
    answers = {
        "http://w": {"name": "w", "state": "NodeReady", "priority": 0, "partitions": [2, 3], "role": "write"},
        "http://r": {"name": "r", "state": "NodeReady", "priority": 5, "partitions": [2, 3], "role": "read"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[f"{request.url.scheme}://{request.url.host}"])

    cs = ClusterSource(
        StaticSource(A_DATA),
        [0, 1],
        4,
        ["http://w", "http://r"],
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    try:
        assert [p.url for p in cs.ready_peers()] == ["http://r"]
    finally:
        cs.close()
