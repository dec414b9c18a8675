"""The graphite-web fallback (`[graphite] fallback-url`), against a real HTTP server standing in for graphite-web.

The stand-in is `http.server` on 127.0.0.1 in a thread; it records every request it gets (method, path, query,
form body) so the tests check what was forwarded, not only what came back. No Kafka or Cassandra: these are
unit tests in that sense, with real sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from metrictank.config import load_config
from metrictank.query.fallback import FallbackAborted, GraphiteFallback
from metrictank.query.functions import FUNCTIONS
from metrictank.query.http import graphite_router
from metrictank.query.limits import QueryLimits
from metrictank.query.source import StaticSource
from metrictank.stats import Stats

NOW = 1_700_000_040
UNKNOWN = "cactiStyle"  # a graphite-web function the engine does not implement (checked below)
BODY = b"".join(b"graphite-web line %d\n" % i for i in range(20_000))  # ~400 KB: several chunks on the wire


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)


class _GraphiteWeb(BaseHTTPRequestHandler):
    """Records the request; answers BODY as text/csv, or misbehaves when the target asks it to."""

    server: _Server

    def _answer(self, form: list[tuple[str, str]]) -> None:
        url = urlsplit(self.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        self.server.seen.append(Seen(self.command, url.path, query, form, dict(self.headers.items())))
        targets = " ".join(v for k, v in query + form if k == "target")
        if "slow" in targets:
            time.sleep(3)
        if "huge" in targets:
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(10 * len(BODY)))
            self.end_headers()
            return
        if "unsized" in targets:  # no Content-Length: the body runs until the connection closes (HTTP/1.0)
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            self.wfile.write(BODY)
            return
        status = 500 if "broken" in targets else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/csv" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer([])

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        self._answer(parse_qsl(self.rfile.read(n).decode(), keep_blank_values=True))

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]


@pytest.fixture
def graphite_web() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _GraphiteWeb)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(url: str, timeout: float = 10.0, max_size: int = 10 * len(BODY)) -> tuple[TestClient, Stats]:
    src = StaticSource({1: {"a.b.c": (NOW - 600, 60, np.ones(10))}})
    fallback = GraphiteFallback(url, max_response_size=max_size)
    stats = Stats()
    fallback.register_stats(stats)
    app = FastAPI()
    app.include_router(
        graphite_router(
            lambda: src, clock=lambda: NOW, limits=QueryLimits(query_timeout=timeout), fallback=fallback
        )
    )
    return TestClient(app), stats


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_the_stand_in_function_is_really_unimplemented() -> None:
    assert UNKNOWN not in FUNCTIONS


def test_get_is_forwarded_with_every_parameter_and_streamed_back(graphite_web: _Server) -> None:
    client, stats = _client(_url(graphite_web) + "/")  # a trailing slash does not double up
    params = [
        ("target", f"{UNKNOWN}(a.b.c)"),
        ("target", "a.b.*"),
        ("from", "-1h"),
        ("until", "now"),
        ("format", "csv"),
        ("maxDataPoints", "100"),
    ]
    r = client.get("/render?" + urlencode(params))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv"
    assert r.content == BODY
    (seen,) = graphite_web.seen
    assert (seen.method, seen.path) == ("GET", "/render")
    assert seen.query == params  # order and repeated targets kept
    snap = stats.snapshot()
    assert snap[f'metrictank_graphite_fallback_requests_total{{function="{UNKNOWN}"}}'] == 1


def test_grafana_post_form_is_forwarded_as_post_form(graphite_web: _Server) -> None:
    client, stats = _client(_url(graphite_web))
    form = [
        ("target", f"sumSeries({UNKNOWN}(a.b.c))"),
        ("target", "a.b.c"),
        ("from", "1699999000"),
        ("until", "1700000000"),
        ("format", "json"),
    ]
    for _ in range(2):
        r = client.post(
            "/render", content=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 200 and r.content == BODY
    assert [(s.method, s.path, s.query) for s in graphite_web.seen] == [("POST", "/render", [])] * 2
    assert graphite_web.seen[0].form == form
    assert stats.snapshot()[f'metrictank_graphite_fallback_requests_total{{function="{UNKNOWN}"}}'] == 2


def test_status_of_graphite_web_is_relayed(graphite_web: _Server) -> None:
    client, _ = _client(_url(graphite_web))
    r = client.get("/render", params={"target": f"{UNKNOWN}(broken.x)"})
    assert r.status_code == 500 and r.headers["content-type"] == "text/plain"


def test_implemented_functions_never_reach_the_fallback(graphite_web: _Server) -> None:
    client, stats = _client(_url(graphite_web))
    r = client.get("/render", params={"target": "sumSeries(a.b.c)", "from": "-10min", "until": "now"})
    assert r.status_code == 200 and r.json()[0]["target"] == "sumSeries(a.b.c)"
    r = client.get(
        "/render", params={"target": "sumSeries(a.b.c", "from": "-10min"}
    )  # a syntax error stays ours
    assert r.status_code == 400
    assert graphite_web.seen == []
    assert not any("fallback_requests" in k for k in stats.snapshot())


def test_off_by_default_unknown_function_is_400() -> None:
    client, _ = _client("")
    r = client.get("/render", params={"target": f"{UNKNOWN}(a.b.c)"})
    assert r.status_code == 400 and f'unknown function "{UNKNOWN}"' in r.text


def test_fallback_down_is_502_with_message() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client, stats = _client(f"http://127.0.0.1:{port}")
    r = client.get("/render", params={"target": f"{UNKNOWN}(a.b.c)"})
    assert r.status_code == 502
    assert UNKNOWN in r.text and "could not be reached" in r.text
    assert stats.snapshot()['metrictank_graphite_fallback_errors_total{reason="unreachable"}'] == 1


def test_fallback_past_query_timeout_is_504(graphite_web: _Server) -> None:
    client, stats = _client(_url(graphite_web), timeout=0.3)
    r = client.get("/render", params={"target": f"{UNKNOWN}(slow.x)"})
    assert r.status_code == 504 and "query-timeout" in r.text
    assert stats.snapshot()['metrictank_graphite_fallback_errors_total{reason="timeout"}'] == 1


def test_response_larger_than_the_bound_is_502(graphite_web: _Server) -> None:
    client, stats = _client(_url(graphite_web), max_size=len(BODY))
    r = client.get("/render", params={"target": f"{UNKNOWN}(huge.x)"})
    assert r.status_code == 502 and "fallback-max-response-size" in r.text
    assert stats.snapshot()['metrictank_graphite_fallback_errors_total{reason="too_large"}'] == 1


def test_body_growing_past_the_bound_is_cut_off(graphite_web: _Server) -> None:
    """No Content-Length to refuse up front: the relay stops at the bound and raises, so the server drops the
    connection rather than end a truncated body as if it were complete (TestClient re-raises it here)."""
    client, stats = _client(_url(graphite_web), max_size=len(BODY) // 2)
    with pytest.raises(FallbackAborted):
        client.get("/render", params={"target": f"{UNKNOWN}(unsized.x)"})
    assert stats.snapshot()['metrictank_graphite_fallback_errors_total{reason="too_large"}'] == 1
    client, _ = _client(_url(graphite_web))  # within the bound the same answer streams through whole
    r = client.get("/render", params={"target": f"{UNKNOWN}(unsized.x)"})
    assert r.status_code == 200 and r.content == BODY


def test_config_section(tmp_path) -> None:
    p = tmp_path / "mt.toml"
    p.write_text('[graphite]\nfallback-url = "http://graphite-web:8080"\n')
    fb = GraphiteFallback.from_config(load_config(p).graphite)
    assert fb.enabled and fb.url == "http://graphite-web:8080"
    p.write_text('[graphite]\nfallback-url = "graphite-web:8080"\n')
    with pytest.raises(ValueError, match="graphite.fallback-url"):
        load_config(p)
