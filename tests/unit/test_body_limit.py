"""Request bodies are bounded on every endpoint: a declared Content-Length over the limit and a chunked body that
grows past it are both a 413, and the process does not read them into memory."""

from __future__ import annotations

from fastapi.testclient import TestClient

from metrictank.api import create_app
from metrictank.query.source import StaticSource

from .test_admin_api import FakeBackend

LIMIT = 64 * 1024


def _client() -> TestClient:
    app = create_app(FakeBackend(), lambda: StaticSource({}), max_request_body=LIMIT)
    return TestClient(app)


def test_declared_length_over_the_limit_is_413_before_reading():
    c = _client()
    r = c.post(
        "/render",
        content=b"target=" + b"a" * (LIMIT + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    assert "max-request-body" in r.text
    r = c.post(
        "/node", content=b"{" + b" " * (2 * LIMIT) + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_chunked_body_past_the_limit_is_413():
    def chunks():
        for _ in range(64):
            yield b"x" * 4096  # 256 KiB in all, no Content-Length

    r = _client().post(
        "/render", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413


def test_bodies_within_the_limit_work_as_before():
    c = _client()
    r = c.post("/node", json={"primary": "true"})
    assert r.status_code == 200 and r.text == "OK"
    r = c.post("/render", data={"target": "nosuch.*", "format": "json"})
    assert r.status_code == 200 and r.json() == []


def test_chunked_body_past_the_limit_on_an_admin_endpoint_is_413():
    def chunks():
        for _ in range(64):
            yield b" " * 4096

    r = _client().post("/node", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
