"""The admin HTTP API: Metrictank's `/node`, `/`, `/priority`, `/cluster`, plus health, readiness and metrics.

`POST /node primary=true` is checked: promotion is refused (409, every failing reason listed) unless the
data-complete promotion wait is 0, the persist backlog is consumed, priority <= max-priority and no reachable peer
sharing a partition is primary. `force=true` overrides and is logged. Demotion stops queuing writes, drains the
write queue and returns once the persist messages are sent, or says what is left after the timeout.

With `[http] admin-token` set, POST endpoints need `Authorization: Bearer <token>`, compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

__all__ = ["AdminBackend", "admin_router", "parse_go_bool"]

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_go_bool(value: Any) -> bool:
    """Go's strconv.ParseBool, which Metrictank uses for `primary`; JSON booleans are accepted too."""
    if isinstance(value, bool):
        return value
    s = str(value)
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"cannot parse {s!r} as a boolean (use true or false)")


class AdminBackend(Protocol):
    """What the admin API needs from the instance."""

    admin_token: str

    def node_json(self) -> dict: ...
    def is_ready(self) -> bool: ...
    def priority_json(self) -> dict: ...
    def cluster_json(self) -> dict: ...
    def promote(self, force: bool) -> tuple[bool, list[str]]: ...
    def demote(self) -> tuple[bool, str]: ...
    def metrics_text(self) -> bytes: ...


async def _fields(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if "application/json" in ctype:
        try:
            data = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the decoder's stack
            raise _BadRequest("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _BadRequest("JSON body must be an object")
        return data
    form = await request.form()
    out: dict[str, Any] = dict(form)
    out.update({k: v for k, v in request.query_params.items() if k not in out})
    return out


class _BadRequest(Exception):
    pass


def _unauthorized() -> Response:
    return PlainTextResponse("unauthorized: send Authorization: Bearer <admin-token>", status_code=401)


def _no_membership() -> Response:
    return JSONResponse({"error": "membership is off: set [cluster] membership-topic"}, status_code=404)


def admin_router(backend: AdminBackend) -> APIRouter:
    r = APIRouter()

    def authorized(request: Request) -> bool:
        token = backend.admin_token
        if not token:
            return True
        # RFC 7235: the scheme is case-insensitive (`bearer` from curl scripts and proxies must work); the
        # token itself is compared in constant time so its length and content do not leak through timing
        scheme, _, got = request.headers.get("authorization", "").partition(" ")
        ok = hmac.compare_digest(got.encode(), token.encode())
        return scheme.lower() == "bearer" and ok

    def ready_answer() -> Response:
        if backend.is_ready():
            return PlainTextResponse("OK")
        reason = getattr(backend, "not_ready_reason", None)
        return PlainTextResponse(reason() if reason else "node not ready", status_code=503)

    @r.get("/", response_class=PlainTextResponse)
    async def index() -> Response:
        return ready_answer()

    # Liveness and readiness answer on the event loop itself (they read a flag): they must not queue behind
    # renders or a demotion's drain in the worker threads, or probes would fail exactly when a node is busy.
    @r.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "OK"

    @r.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> Response:
        return ready_answer()

    @r.get("/node")
    def get_node() -> dict:
        return backend.node_json()

    @r.post("/node")
    async def post_node(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        try:
            fields = await _fields(request)
        except _BadRequest as e:
            return PlainTextResponse(str(e), status_code=400)
        if "primary" not in fields:
            return PlainTextResponse("missing field: primary", status_code=422)
        try:
            primary = parse_go_bool(fields["primary"])
            force = parse_go_bool(fields.get("force", False))
        except ValueError as e:
            return PlainTextResponse(str(e), status_code=400)
        # promote (peer calls) and demote (a drain of up to drain-timeout) block: run them in a worker thread so
        # the event loop keeps answering probes, /metrics, renders and peers meanwhile
        if primary:
            ok, reasons = await run_in_threadpool(backend.promote, force)
            if not ok:
                return JSONResponse({"error": "promotion refused", "reasons": reasons}, status_code=409)
            return PlainTextResponse("OK")
        drained, detail = await run_in_threadpool(backend.demote)
        return PlainTextResponse("OK" if drained else f"OK (demoted; {detail})")

    @r.get("/priority")
    def priority() -> dict:
        return backend.priority_json()

    @r.get("/cluster")
    def cluster() -> dict:
        return backend.cluster_json()

    @r.get("/cluster/members")
    def members() -> Response:
        m = getattr(backend, "membership", None)
        if m is None:
            return _no_membership()
        return JSONResponse({"self": backend.name, "activeColor": m.active_color, "members": m.table()})

    @r.delete("/cluster/members/{name}")
    def remove_member(name: str, request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        m = getattr(backend, "membership", None)
        if m is None:
            return _no_membership()
        if name == backend.name:
            return JSONResponse({"error": f"{name} is this node: remove a member from another node"}, 409)
        if not m.remove(name):
            return JSONResponse({"error": f"no member {name!r} in this node's table"}, status_code=404)
        return PlainTextResponse("OK")

    @r.get("/cluster/color")
    def get_color() -> Response:
        m = getattr(backend, "membership", None)
        if m is None:
            return _no_membership()
        return JSONResponse({"active": m.active_color})

    @r.post("/cluster/color")
    async def set_color(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        m = getattr(backend, "membership", None)
        if m is None:
            return _no_membership()
        try:
            fields = await _fields(request)
        except _BadRequest as e:
            return PlainTextResponse(str(e), status_code=400)
        color = fields.get("color")
        if not isinstance(color, str) or color not in ("", "a", "b"):
            return PlainTextResponse("color: want a, b or empty (no active color)", status_code=400)
        await run_in_threadpool(m.set_color, color)
        return PlainTextResponse("OK")

    @r.get("/metrics")
    def metrics() -> Response:
        return Response(backend.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return r
