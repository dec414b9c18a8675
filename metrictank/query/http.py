"""Graphite HTTP API as a FastAPI router: what Grafana's Graphite data source (and graphite-web as a cluster
client) sends to Metrictank.

Parameters are read from the query string and, for POST, from a form-encoded or multipart body, merged (Grafana
sends /render as a POST form with repeated `target`). The caller's org comes from the `X-Org-Id` header
(default 1). User errors are 400 with a plain-text message (JSON `{"error": ...}` for the tag
autocomplete endpoints, whose graphite-web client expects that); rendering runs in the thread pool because it
is CPU-bound and the source may block on storage.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from metrictank.regex import PatternError, compile_user_regex

from .encode import render_csv, render_json, render_msgpack, render_pickle
from .engine import render, resolve_range
from .errors import QueryError, UnknownFunctionError
from .fallback import GraphiteFallback
from .functions import FUNCTIONS, dumps_functions, functions_json
from .limits import Deadline, QueryLimits
from .match import parse_tag_expr, parse_tag_query
from .series import tags_from_name
from .source import FindNode, SeriesSource
from .timeparse import parse_time

_Endpoint = Callable[..., Awaitable[Response]]
log = logging.getLogger(__name__)

DEFAULT_MAX_DATA_POINTS = 800  # Metrictank's default when the request has none
TAGDB_DEFAULT_LIMIT = 100

Params = dict[str, list[str]]


async def _params(request: Request) -> Params:
    out: Params = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            for k, v in form.multi_items():
                if isinstance(v, str):
                    out.setdefault(k, []).append(v)
        elif ctype.startswith("application/json"):
            body = await request.body()
            if body:
                try:
                    doc = json.loads(body)
                except ValueError as e:
                    raise QueryError(f"invalid JSON body: {e}") from None
                if not isinstance(doc, dict):
                    raise QueryError("JSON body must be an object")
                for k, v in doc.items():
                    vals = v if isinstance(v, list) else [v]
                    out.setdefault(k, []).extend(str(x) for x in vals)
    return out


def _one(p: Params, name: str, default: str | None = None) -> str | None:
    vals = p.get(name)
    return vals[-1] if vals else default


def _int(p: Params, name: str, default: int) -> int:
    raw = _one(p, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw!r}") from None


def _bool(p: Params, name: str) -> bool:
    return (_one(p, name) or "").lower() in ("1", "true", "yes", "on")


def _org(request: Request) -> int:
    raw = request.headers.get("x-org-id")
    if raw is None or raw == "":
        return 1
    try:
        return int(raw)
    except ValueError:
        raise QueryError(f"invalid X-Org-Id header {raw!r}") from None


def _tz(p: Params) -> tzinfo:
    name = _one(p, "tz")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"unknown time zone {name!r}") from None


def _json(doc: Any, jsonp: str | None = None) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return _maybe_jsonp(body, jsonp)


# a JavaScript identifier path (`cb`, `jQuery123.handlers.x`): the only thing a jsonp callback needs to be. Anything
# else reflected in front of our JSON as text/javascript would let a page that can choose the parameter run its
# own script in the context of whoever loads the URL.
_JSONP = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")
MAX_JSONP_LENGTH = 128


def _jsonp(p: Params) -> str | None:
    """The validated `jsonp` callback name, None when absent; QueryError (400) naming jsonp otherwise."""
    cb = _one(p, "jsonp")
    if not cb:
        return None
    if len(cb) > MAX_JSONP_LENGTH or not _JSONP.fullmatch(cb):
        raise QueryError(
            f"invalid jsonp: must be a JavaScript identifier or dotted path of identifiers "
            f"(letters, digits, _ and $, at most {MAX_JSONP_LENGTH} characters)"
        )
    return cb


def _maybe_jsonp(body: bytes, jsonp: str | None) -> Response:
    if jsonp:
        return Response(jsonp.encode() + b"(" + body + b")", media_type="text/javascript")
    return Response(body, media_type="application/json")


def _error(e: QueryError, as_json: bool = False) -> Response:
    if as_json:
        return JSONResponse({"error": e.message}, status_code=e.status)
    return PlainTextResponse(e.message, status_code=e.status)


def _query_errors_as_4xx(as_json: bool = False) -> Callable[[_Endpoint], _Endpoint]:
    """Endpoint decorator: a QueryError (bad parameter, bad query) becomes its status with the message, as
    plain text or (for the tag autocomplete endpoints, as graphite-web does) `{"error": ...}`.

    Other known user-caused errors are mapped too (a pattern past a limit, an unparsable request body); anything
    else is a bug: logged with its traceback and answered 500 here, as a response, so the client's keep-alive
    connection survives (an exception escaping the app makes the server drop it)."""

    def wrap(endpoint: _Endpoint) -> _Endpoint:
        @functools.wraps(endpoint)  # FastAPI reads the parameters from the wrapped signature
        async def answer(*args: Any, **kwargs: Any) -> Response:
            try:
                response = await endpoint(*args, **kwargs)
            except QueryError as e:
                response = _error(e, as_json)
            except PatternError as e:
                response = _error(QueryError(str(e)), as_json)
            except StarletteHTTPException as e:  # e.g. a malformed multipart body
                response = _error(QueryError(str(e.detail), e.status_code), as_json)
            except RecursionError:
                response = _error(QueryError("query nests too deeply to evaluate"), as_json)
            except Exception:  # noqa: BLE001 - last resort: a bug, but still an answer
                log.exception("unexpected error in %s", endpoint.__name__)
                response = _error(QueryError("internal error (logged on the server)", 500), as_json)
            # browsers must not sniff a JSON (or error) body into something executable
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

        return answer

    return wrap


def treejson(query: str, nodes: list[FindNode]) -> list[dict[str, Any]]:
    """graphite-web/Metrictank treejson: one entry per distinct node name, sorted by name."""
    seen: set[str] = set()
    out = []
    for n in sorted(nodes, key=lambda n: n.path.rsplit(".", 1)[-1]):
        name = n.path.split(";", 1)[0].rsplit(".", 1)[-1]
        if name in seen:
            continue
        seen.add(name)
        branch = 1 if n.has_children else 0
        out.append(
            {
                "allowChildren": branch,
                "expandable": branch,
                "leaf": 1 if n.leaf else 0,
                "id": n.path,
                "text": name,
                "context": {},
            }
        )
    return out


def completer(nodes: list[FindNode]) -> dict[str, list[dict[str, str]]]:
    """graphite-web's completer format: branches get a trailing dot so the UI can keep typing."""
    out = []
    for n in sorted(nodes, key=lambda n: n.path):
        name = n.path.split(";", 1)[0].rsplit(".", 1)[-1]
        out.append(
            {"path": n.path if n.leaf else n.path + ".", "name": name, "is_leaf": "1" if n.leaf else "0"}
        )
    return {"metrics": out}


_ENCODERS: dict[str, Callable[..., bytes]] = {
    "json": render_json,
    "csv": render_csv,
    "msgpack": render_msgpack,
    "pickle": render_pickle,
}
_MEDIA_TYPES = {"csv": "text/csv", "msgpack": "application/x-msgpack", "pickle": "application/pickle"}


def _render_body(encode: Callable[..., bytes], no_nulls: bool, *args: Any) -> bytes:
    """`render(*args)` encoded by `encode`, in the calling (worker) thread: the whole CPU-bound part of a
    /render in one call, so the request crosses to the thread pool once."""
    series = render(*args)
    if encode is render_json:
        return render_json(series, no_nulls)
    return encode(series)


def graphite_router(
    get_source: Callable[[], SeriesSource],
    clock: Callable[[], float] = time.time,
    limits: QueryLimits | None = None,
    fallback: GraphiteFallback | None = None,
) -> APIRouter:
    """The Graphite API routes, reading through `get_source()` (called per request); every render is held to
    `limits` (the `[http]` query limits; defaults when None). A render that calls a function the engine does not
    implement is forwarded to `fallback` (a graphite-web) when it is enabled, else answered 400."""
    router = APIRouter()
    limits = limits or QueryLimits()
    fallback = fallback or GraphiteFallback()

    @_query_errors_as_4xx()
    async def render_endpoint(request: Request) -> Response:
        p = await _params(request)
        targets = p.get("target", []) or p.get("target[]", [])
        if not targets or any(t.strip() == "" for t in targets):
            raise QueryError("missing target: the request needs at least one non-empty target parameter")
        fmt = (_one(p, "format") or "json").lower()
        if fmt not in ("json", "csv", "msgpack", "pickle"):
            raise QueryError(f"invalid format specified: {fmt!r} (supported: json, csv, msgpack, pickle)")
        jsonp = _jsonp(p)
        mdp = _int(p, "maxDataPoints", DEFAULT_MAX_DATA_POINTS)
        if mdp < 0:
            raise QueryError(f"invalid maxDataPoints {mdp}: must be positive (0 or absent means the default)")
        if mdp == 0:
            mdp = DEFAULT_MAX_DATA_POINTS  # not "unlimited": that was a way around every memory bound
        if _bool(p, "local"):
            mdp = 0  # graphite-web fetching for its own processing: full resolution, within the point budget
        tz = _tz(p)
        org = _org(request)
        now = int(clock())
        until = _one(p, "until") or _one(p, "to")
        source = get_source()
        deadline = Deadline(limits.query_timeout)
        encode = _ENCODERS[fmt]
        no_nulls = _bool(p, "noNullPoints")
        try:
            # one thread-pool hop for render and encoding together: each hop costs a thread handoff
            # (~0.1-0.2 ms measured here), a noticeable share of a one-series panel (~1.5 ms over HTTP)
            body = await run_in_threadpool(
                _render_body,
                encode,
                no_nulls,
                targets,
                _one(p, "from"),
                until,
                mdp,
                source,
                org,
                now,
                tz,
                limits,
                deadline,
            )
        except UnknownFunctionError as e:
            if not fallback.enabled:
                raise
            # validated before any data is read, so nothing was spent on the local attempt but the parse
            return await fallback.forward(
                request.method, p, e.function, limits.query_timeout, request.headers.get("accept-encoding")
            )
        if fmt == "json":
            return _maybe_jsonp(body, jsonp)
        return Response(body, media_type=_MEDIA_TYPES[fmt])

    # a plain Starlette route: /render reads its parameters itself, so FastAPI's per-request machinery
    # (dependency solving, endpoint wrapping) would only add time to the hottest endpoint (~0.05-0.2 ms measured)
    router.add_route("/render", render_endpoint, methods=["GET", "POST"])

    @router.api_route("/metrics/find", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def find_endpoint(request: Request) -> Response:
        p = await _params(request)
        query = _one(p, "query")
        if not query:
            raise QueryError("missing required parameter 'query'")
        jsonp = _jsonp(p)
        fmt = (_one(p, "format") or "treejson").lower()
        if fmt not in ("treejson", "json", "completer"):
            raise QueryError(f"invalid format specified: {fmt!r} (supported: treejson, json, completer)")
        now = int(clock())
        tz = _tz(p)
        f, u = _one(p, "from"), _one(p, "until") or _one(p, "to")
        from_ts = 0
        if f not in (None, "", "-1") or u not in (None, "", "-1"):
            start, _end = resolve_range(
                None if f in (None, "", "-1") else f, None if u in (None, "", "-1") else u, now, tz
            )
            if f not in (None, "", "-1"):
                from_ts = start  # series not updated since are left out, as Metrictank does
        org = _org(request)
        source = get_source()
        if fmt == "completer":
            query = query.replace("..", "*.")
            if not query.endswith("*"):
                query += "*"
        nodes = await run_in_threadpool(source.find, org, query, from_ts)
        if _bool(p, "leavesOnly"):
            nodes = [n for n in nodes if n.leaf]
        doc: Any = completer(nodes) if fmt == "completer" else treejson(query, nodes)
        return _json(doc, jsonp)

    @router.api_route("/metrics/expand", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def expand_endpoint(request: Request) -> Response:
        p = await _params(request)
        queries = [q for q in p.get("query", []) if q]
        if not queries:
            raise QueryError("missing required parameter 'query'")
        leaves_only = _bool(p, "leavesOnly")
        jsonp = _jsonp(p)
        org = _org(request)
        source = get_source()
        results: dict[str, list[str]] = {}
        for q in queries:
            nodes = await run_in_threadpool(source.find, org, q)
            results[q] = sorted({n.path for n in nodes if n.leaf or not leaves_only})
        if _bool(p, "groupByExpr"):
            doc: Any = {"results": results}
        else:
            doc = {"results": sorted({path for paths in results.values() for path in paths})}
        return _json(doc, jsonp)

    @router.get("/metrics/index.json")
    @_query_errors_as_4xx()
    async def index_endpoint(request: Request) -> Response:
        p = await _params(request)
        jsonp = _jsonp(p)
        org = _org(request)
        paths = await run_in_threadpool(get_source().all_paths, org)
        return _json(sorted(set(paths)), jsonp)

    @router.api_route("/tags", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def tags_endpoint(request: Request) -> Response:
        p = await _params(request)
        flt = _regex_param(p, "filter")
        tags = await run_in_threadpool(get_source().tags, _org(request), flt)
        return _json([{"tag": t} for t in tags])

    @router.api_route("/tags/autoComplete/tags", methods=["GET", "POST"])
    @_query_errors_as_4xx(as_json=True)
    async def autocomplete_tags_endpoint(request: Request) -> Response:
        p = await _params(request)
        exprs, limit, prefix = _autocomplete_args(p, "tagPrefix")
        out = await run_in_threadpool(get_source().autocomplete_tags, _org(request), prefix, exprs, limit)
        return _json(out)

    @router.api_route("/tags/autoComplete/values", methods=["GET", "POST"])
    @_query_errors_as_4xx(as_json=True)
    async def autocomplete_values_endpoint(request: Request) -> Response:
        p = await _params(request)
        tag = _one(p, "tag")
        if not tag:
            raise QueryError("missing required parameter 'tag'")
        exprs, limit, prefix = _autocomplete_args(p, "valuePrefix")
        out = await run_in_threadpool(
            get_source().autocomplete_tag_values, _org(request), tag, prefix, exprs, limit
        )
        return _json(out)

    @router.api_route("/tags/findSeries", methods=["GET", "POST"])
    @_query_errors_as_4xx(as_json=True)
    async def find_series_endpoint(request: Request) -> Response:
        p = await _params(request)
        exprs = _tag_exprs(p)
        fmt = (_one(p, "format") or "series-json").lower()
        if fmt not in ("series-json", "lastts-json"):
            raise QueryError(f"invalid format specified: {fmt!r} (supported: series-json, lastts-json)")
        limit = _limit(p, 0)
        from_ts = _from_ts(p, int(clock()), 86400)
        refs = await run_in_threadpool(get_source().resolve_tags, _org(request), exprs, from_ts)
        refs = sorted(refs, key=lambda r: r.name)
        warnings = []
        if limit and len(refs) > limit:
            refs = refs[:limit]
            warnings.append(f"Result set truncated to {limit} series (limit)")
        if fmt == "lastts-json":
            doc: Any = {"series": [{"lastTs": r.last_update, "val": r.name} for r in refs]}
            if warnings:
                doc["warnings"] = warnings
        elif _bool(p, "meta"):
            doc = {"series": [r.name for r in refs], "warnings": warnings}
        else:
            doc = [r.name for r in refs]
        return _json(doc)

    @router.api_route("/tags/terms", methods=["GET", "POST"])
    @_query_errors_as_4xx(as_json=True)
    async def terms_endpoint(request: Request) -> Response:
        p = await _params(request)
        exprs = _tag_exprs(p)
        keys = [t for t in p.get("tags", []) + p.get("tags[]", []) if t]
        refs = await run_in_threadpool(get_source().resolve_tags, _org(request), exprs)
        terms: dict[str, dict[str, int]] = {k: {} for k in keys}
        for r in refs:
            tags = tags_from_name(r.name)
            for k in keys:
                v = tags.get(k)
                if v is not None:
                    terms[k][v] = terms[k].get(v, 0) + 1
        return _json({"totalSeries": len(refs), "terms": terms})

    @router.api_route("/tags/{tag}", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def tag_details_endpoint(request: Request, tag: str) -> Response:
        p = await _params(request)
        flt = _regex_param(p, "filter")
        values = await run_in_threadpool(get_source().tag_values, _org(request), tag, flt)
        return _json({"tag": tag, "values": [{"count": values[v], "value": v} for v in sorted(values)]})

    @router.api_route("/functions", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def functions_endpoint(request: Request) -> Response:
        p = await _params(request)
        body = dumps_functions(functions_json(_one(p, "group"), _bool(p, "grouped")))
        return Response(body, media_type="application/json")

    @router.api_route("/functions/{name}", methods=["GET", "POST"])
    @_query_errors_as_4xx()
    async def function_endpoint(name: str) -> Response:
        fdef = FUNCTIONS.get(name)
        if fdef is None:
            raise QueryError(f"Function not found: {name}", 404)
        return Response(dumps_functions(fdef.to_json()), media_type="application/json")

    return router


def _autocomplete_args(p: Params, prefix_param: str) -> tuple[list[str], int, str]:
    """The narrowing tag expressions (normalised; none is fine), the limit and the prefix of an autocomplete."""
    exprs = [str(parse_tag_expr(e)) for e in p.get("expr", []) if e]
    limit = _limit(p, TAGDB_DEFAULT_LIMIT) or TAGDB_DEFAULT_LIMIT
    return exprs, limit, _one(p, prefix_param) or ""


def _limit(p: Params, default: int) -> int:
    """The `limit` parameter: 0 means the endpoint's default or none; a negative one would cut results from the
    end (a silently wrong answer), so it is refused."""
    limit = _int(p, "limit", default)
    if limit < 0:
        raise QueryError(f"invalid limit {limit}: must be 0 (no limit) or positive")
    return limit


def _tag_exprs(p: Params) -> list[str]:
    """The `expr` parameters (also `expr[]`), validated as a seriesByTag query: at least one must select."""
    exprs = [e for e in p.get("expr", []) + p.get("expr[]", []) if e]
    if not exprs:
        raise QueryError("missing required parameter 'expr': at least one tag expression")
    parse_tag_query(exprs)
    return exprs


def _from_ts(p: Params, now: int, default_ago: int) -> int:
    """The `from` parameter as epoch seconds (`now - default_ago` when absent; -1 or 0 means no lower bound)."""
    raw = _one(p, "from")
    if raw in (None, ""):
        return now - default_ago
    if raw in ("-1", "0"):
        return 0
    try:
        return parse_time(raw, now, _tz(p))
    except QueryError as e:
        raise QueryError(f"invalid from: {e}") from None


def _regex_param(p: Params, name: str) -> str | None:
    """A regex parameter (`filter`), validated as the source will compile it (RE2, bounded length)."""
    raw = _one(p, name)
    if not raw:
        return None
    try:
        compile_user_regex(raw, name)
    except PatternError as e:
        raise QueryError(str(e)) from None
    return raw
