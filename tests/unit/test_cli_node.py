"""`metrictank node|cluster` against canned HTTP answers: the exit codes scripts rely on, and readable tables
(also for Metrictank Go nodes, which lack our extra fields). The real thing is tests/integration/test_cli_node.py."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner

from metrictank.cli import EXIT_REFUSED, EXIT_UNREACHABLE, main
from metrictank.cli.cluster import cluster_problems
from metrictank.cli.node import node_table

NODE = {
    "name": "mt2",
    "version": "metrictank-py-0.1.0",
    "primary": False,
    "primaryChange": "2024-01-01T00:00:00.000000000Z",
    "mode": "shard",
    "state": "NodeReady",
    "priority": 0,
    "started": "2024-01-01T00:00:00.000000000Z",
    "stateChange": "2024-01-01T00:01:00.000000000Z",
    "partitions": [0, 1, 2, 3, 5, 7],
    "apiPort": 6061,
    "apiScheme": "http",
    "updated": "2024-01-01T00:02:00.000000000Z",
    "promotionWait": 312.4,
    "dataCompletePromotionWait": 0.0,
    "persistBacklogDone": True,
    "pendingWrites": 0,
    "metricsActive": 1000,
    "partitionState": {str(p): {"lag": p * 10} for p in (0, 1, 2, 3, 5, 7)},
}
GO_NODE = {k: NODE[k] for k in ("name", "version", "primary", "state", "priority", "partitions", "started")}


class Canned:
    """Replaces httpx.get/post: answers by (method, path), records requests."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, dict, dict]] = []

    def _answer(self, method: str, url: str, data=None, headers=None) -> httpx.Response:
        path = "/" + url.split("/", 3)[3]
        self.requests.append((method, path, dict(data or {}), dict(headers or {})))
        a = self.answers.get((method, path))
        if a is None:
            raise httpx.ConnectError("connection refused")
        status, body = a(data, headers) if callable(a) else a
        content = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        return httpx.Response(status, content=content, request=httpx.Request(method, url))

    def get(self, url, timeout=None):
        return self._answer("GET", url)

    def post(self, url, data=None, headers=None, timeout=None):
        return self._answer("POST", url, data, headers)


@pytest.fixture
def canned(monkeypatch):
    def install(answers: dict) -> Canned:
        c = Canned(answers)
        monkeypatch.setattr(httpx, "get", c.get)
        monkeypatch.setattr(httpx, "post", c.post)
        return c

    return install


def _run(args):
    return CliRunner().invoke(main, args, env={"MT_ADMIN_TOKEN": None, "MT_HTTP_ADMIN_TOKEN": None})


def test_node_table_fields():
    t = node_table(NODE)
    for needle in (
        "role                secondary",
        "state               NodeReady",
        "priority            0",
        "promotion wait      312s",
        "data-complete wait  0s",
        "partitions          0-3,5,7",
        "lag (messages)      0:0 1:10 2:20 3:30 5:50 7:70",
        "persist backlog     consumed",
    ):
        assert needle in t, needle


def test_node_table_of_a_metrictank_go_node():
    t = node_table(GO_NODE)
    assert "promotion wait      -" in t and "data-complete wait  -" in t and "persist backlog     -" in t


def test_status_exit_code_follows_readiness(canned):
    canned({("GET", "/node"): (200, NODE)})
    r = _run(["node", "status", "--url", "http://n:6061"])
    assert r.exit_code == 0 and "NodeReady" in r.output
    canned({("GET", "/node"): (200, {**NODE, "state": "NodeNotReady"})})
    assert _run(["node", "status", "--url", "http://n:6061"]).exit_code == EXIT_REFUSED
    r = _run(["node", "status", "--url", "http://n:6061", "--json"])
    assert json.loads(r.stdout)["state"] == "NodeNotReady"
    canned({})
    assert _run(["node", "status", "--url", "http://n:6061"]).exit_code == EXIT_UNREACHABLE


def test_promote_refused_lists_reasons_then_force(canned):
    def post(data, _headers):
        if data.get("force") == "true":
            return 200, "OK"
        return 409, {"error": "promotion refused", "reasons": ["data-complete promotion wait is 300s", "x"]}

    c = canned({("POST", "/node"): post})
    r = _run(["node", "promote", "--url", "http://n:6061"])
    assert r.exit_code == EXIT_REFUSED
    assert "data-complete promotion wait is 300s" in r.output and "  - x" in r.output
    r = _run(["node", "promote", "--url", "http://n:6061", "--json"])
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["status"] == 409 and len(doc["reasons"]) == 2
    r = _run(["node", "promote", "--url", "http://n:6061", "--force"])
    assert r.exit_code == 0 and "promoted" in r.output
    assert c.requests[-1][2] == {"primary": "true", "force": "true"}


def test_promote_wait_retries_until_allowed(canned, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    answers = iter([(409, {"reasons": ["priority 50 is above max-priority 10"]})] * 3 + [(200, "OK")])
    c = canned({("POST", "/node"): lambda _d, _h: next(answers)})
    r = _run(["node", "promote", "--url", "http://n:6061", "--wait", "1m"])
    assert r.exit_code == 0, r.output
    assert len(c.requests) == 4
    assert r.output.count("priority 50") == 1  # reasons shown when they change, not on every retry


def test_token_is_sent_and_401_is_refusal(canned, tmp_path):
    def post(_data, headers):
        return (200, "OK") if headers.get("Authorization") == "Bearer t0k" else (401, "unauthorized")

    canned({("POST", "/node"): post})
    r = _run(["node", "demote", "--url", "http://n:6060"])
    assert r.exit_code == EXIT_REFUSED and "401" in r.output
    assert _run(["node", "demote", "--url", "http://n:6060", "--token", "t0k"]).exit_code == 0
    f = tmp_path / "token"
    f.write_text("t0k\n")
    assert _run(["node", "demote", "--url", "http://n:6060", "--token-file", str(f)]).exit_code == 0
    r = CliRunner().invoke(main, ["node", "demote", "--url", "http://n:6060"], env={"MT_ADMIN_TOKEN": "t0k"})
    assert r.exit_code == 0


def test_demote_not_drained_is_exit_1(canned):
    canned(
        {("POST", "/node"): (200, "OK (demoted; 12 chunk writes still queued and 0 persist messages unsent)")}
    )
    r = _run(["node", "demote", "--url", "http://n:6060"])
    assert r.exit_code == EXIT_REFUSED
    assert "12 chunk writes still queued" in r.output
    canned({("POST", "/node"): (500, "boom")})
    assert _run(["node", "demote", "--url", "http://n:6060"]).exit_code == EXIT_UNREACHABLE


def test_cluster_problems():
    a = {"name": "a", "primary": True, "partitions": [0, 1, 2, 3]}
    b = {"name": "b", "primary": False, "partitions": [0, 1, 2, 3]}
    assert cluster_problems([a, b]) == []
    both = cluster_problems([a, {**b, "primary": True}])
    assert len(both) == 1 and "0-3 have more than one primary: a, b" in both[0]
    none = cluster_problems([{**a, "primary": False}, b])
    assert len(none) == 1 and "no reachable primary" in none[0]
    # an unreachable primary cannot be counted on
    gone = cluster_problems([{**a, "reachable": False}, b])
    assert "no reachable primary" in gone[0]


def test_cluster_members_table(canned):
    lease = {"holder": "mt1", "epoch": 7, "valid": True}
    peer = {
        **NODE,
        "name": "mt1",
        "primary": True,
        "url": "http://mt1:6060",
        "reachable": True,
        "failover": {"mode": "auto", "fenced": False, "lease": lease},
    }
    me = {**NODE, "failover": {"mode": "auto", "lease": {**lease, "valid": False}}}
    down = {"url": "http://mt3:6060", "reachable": False, "state": "NodeUnreachable", "error": "ConnectError"}
    canned({("GET", "/cluster"): (200, {"name": "c", "self": me, "peers": [peer, down]})})
    r = _run(["cluster", "members", "--url", "http://mt2:6061"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "URL",
        "ROLE",
        "STATE",
        "PRIORITY",
        "DATA-WAIT",
        "LEASE",
        "PARTITIONS",
    ]
    assert lines[1].split()[:4] == ["mt2", "http://mt2:6061", "secondary", "NodeReady"]
    assert "mt1@7 " in lines[1]  # the holder and epoch as the secondary sees them
    assert lines[2].split()[:3] == ["mt1", "http://mt1:6060", "primary"]
    assert "mt1@7* " in lines[2]  # the holder itself, with a valid lease
    assert "NodeUnreachable" in lines[3]
    canned({("GET", "/cluster"): (200, {"name": "c", "self": NODE, "peers": []})})
    r = _run(["cluster", "members", "--url", "http://mt2:6061"])
    assert r.exit_code == EXIT_REFUSED and "no reachable primary" in r.output
