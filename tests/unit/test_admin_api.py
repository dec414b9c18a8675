"""Admin API semantics (Metrictank-compatible /node, /, /priority; checked promotion; token), over a fake backend.

The end-to-end tests prove the same endpoints on real instances; these pin the HTTP contract exactly.
"""

import pytest
from fastapi.testclient import TestClient

from metrictank.api import create_app
from metrictank.api.admin import parse_go_bool


class FakeBackend:
    def __init__(self, token: str = ""):
        self.admin_token = token
        self.primary = False
        self.ready = True
        self.refuse: list[str] = []
        self.forced = False
        self.demoted = 0

    def node_json(self):
        return {
            "name": "mt1",
            "primary": self.primary,
            "state": "NodeReady" if self.ready else "NodeNotReady",
        }

    def is_ready(self):
        return self.ready

    def priority_json(self):
        return {"priority": 3}

    def cluster_json(self):
        return {"name": "c", "self": self.node_json(), "peers": []}

    def promote(self, force):
        if self.refuse and not force:
            return False, list(self.refuse)
        self.forced = force and bool(self.refuse)
        self.primary = True
        return True, []

    def demote(self):
        self.primary = False
        self.demoted += 1
        return True, ""

    def metrics_text(self):
        return b"metrictank_cluster_self_promotion_wait 0.0\n"


@pytest.fixture
def be():
    return FakeBackend()


@pytest.fixture
def client(be):
    return TestClient(create_app(be))


def test_root_ready_and_not(client, be):
    assert client.get("/").text == "OK"
    be.ready = False
    r = client.get("/")
    assert r.status_code == 503 and r.text == "node not ready"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("value", ["true", "1", "t", "T", "TRUE", "True"])
def test_promote_form(client, be, value):
    r = client.post("/node", data={"primary": value})
    assert r.status_code == 200 and r.text == "OK"
    assert be.primary


def test_promote_json_and_demote(client, be):
    assert client.post("/node", json={"primary": True}).status_code == 200
    assert be.primary
    r = client.post("/node", json={"primary": "false"})
    assert r.status_code == 200 and r.text == "OK"
    assert not be.primary and be.demoted == 1


def test_unparsable_is_400_missing_is_422(client):
    r = client.post("/node", data={"primary": "maybe"})
    assert r.status_code == 400 and "maybe" in r.text
    assert client.post("/node", data={"other": "1"}).status_code == 422
    assert client.post("/node", content=b"{", headers={"content-type": "application/json"}).status_code == 400


def test_refused_promotion_lists_every_reason_and_force_overrides(client, be):
    be.refuse = ["data-complete promotion wait is 300s", "priority 50 is above max-priority 10"]
    r = client.post("/node", data={"primary": "true"})
    assert r.status_code == 409
    assert r.json()["reasons"] == be.refuse
    assert not be.primary
    r = client.post("/node", data={"primary": "true", "force": "true"})
    assert r.status_code == 200 and be.primary and be.forced


def test_token_required_for_post_only():
    be = FakeBackend(token="s3cret")
    c = TestClient(create_app(be))
    assert c.get("/node").status_code == 200
    assert c.post("/node", data={"primary": "true"}).status_code == 401
    assert (
        c.post("/node", data={"primary": "true"}, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert not be.primary
    r = c.post("/node", data={"primary": "true"}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and be.primary


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme):
    """RFC 7235: the auth scheme is case-insensitive (curl scripts and proxies send `bearer`); the token is not."""
    be = FakeBackend(token="s3cret")
    c = TestClient(create_app(be))
    ok = c.post("/node", data={"primary": "true"}, headers={"Authorization": f"{scheme} s3cret"})
    assert ok.status_code == 200 and be.primary
    bad = c.post("/node", data={"primary": "false"}, headers={"Authorization": f"{scheme} S3CRET"})
    assert bad.status_code == 401
    for header in ("s3cret", "Basic s3cret", "Bearers3cret", f"{scheme}  s3cret x"):
        assert (
            c.post("/node", data={"primary": "false"}, headers={"Authorization": header}).status_code == 401
        )
    assert be.primary


def test_metrics_and_priority(client):
    assert "promotion_wait" in client.get("/metrics").text
    assert client.get("/priority").json() == {"priority": 3}


def test_go_bool():
    assert parse_go_bool("T") is True and parse_go_bool("0") is False and parse_go_bool(True) is True
    with pytest.raises(ValueError):
        parse_go_bool("yes")


def test_post_node_with_absurdly_nested_json_is_400(client):
    r = client.post("/node", content=b"[" * 200_000, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.text
