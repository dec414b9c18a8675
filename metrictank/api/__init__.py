"""The instance's HTTP API: admin endpoints (Metrictank's `/node`, `/cluster`, ...) and the Graphite query API."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from metrictank import __version__
from metrictank.api.admin import AdminBackend, admin_router
from metrictank.api.body_limit import DEFAULT_MAX_REQUEST_BODY, BodyLimit
from metrictank.query.fallback import GraphiteFallback
from metrictank.query.limits import QueryLimits

__all__ = ["GraphiteFallback", "QueryLimits", "create_app", "refused_queries_router"]


def create_app(
    backend: AdminBackend,
    query_source=None,
    local_source=None,
    query_limits: QueryLimits | None = None,
    graphite_fallback: GraphiteFallback | None = None,
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY,
    queries_refused: str | None = None,
) -> FastAPI:
    """One FastAPI app per instance. `query_source` (a query.source.SeriesSource factory) mounts the Graphite API,
    held to `query_limits` (`QueryLimits.from_config(cfg.http)`; defaults when None), forwarding renders of
    unimplemented functions to `graphite_fallback` (`GraphiteFallback.from_config(cfg.graphite)`, made by the
    caller so that it can register the fallback's counters; off when None); bodies are bounded by `max_request_body`
    (413 past it); without `query_source`, `queries_refused` answers the Graphite paths 404 with its message
    (a write node); `local_source` (a factory
    of the node's own, never fanning-out source) mounts the `/internal` routes peers call for cluster queries."""
    app = FastAPI(title="metrictank-py", version=__version__, docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_request_body)  # every body, admin and queries alike
    app.include_router(admin_router(backend))
    if query_source is not None:
        from metrictank.query.http import graphite_router

        app.include_router(graphite_router(query_source, limits=query_limits, fallback=graphite_fallback))
    elif queries_refused is not None:  # a node that does not serve queries says so, and where to go
        app.include_router(refused_queries_router(queries_refused))
    if local_source is not None:
        from metrictank.api.internal import internal_router

        app.include_router(internal_router(local_source))
    return app


GRAPHITE_PATHS = (
    "/render",
    "/metrics/find",
    "/metrics/expand",
    "/metrics/index.json",
    "/tags",
    "/tags/{rest:path}",
    "/functions",
    "/functions/{rest:path}",
    "/internal/{rest:path}",
)


def refused_queries_router(message: str) -> APIRouter:
    """404 with `message` on every query path: a load balancer or a user pointed at a write node learns why."""
    router = APIRouter()

    async def refused() -> JSONResponse:
        return JSONResponse({"error": message}, status_code=404)

    for path in GRAPHITE_PATHS:
        router.add_api_route(path, refused, methods=["GET", "POST"], include_in_schema=False)
    return router
