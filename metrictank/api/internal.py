"""Routes peers call to answer a cluster query: the same questions as `SeriesSource`, answered from the
LOCAL source only.

A node that receives `/internal/...` never asks its own peers: the node that took the user's query already
chose which node serves which partitions, and answering from local data only is what keeps a query from
bouncing around the cluster. The routes are read-only and carry no credentials (like Metrictank's own
cluster API); keep them on the cluster's network.

Wire format: every route is `POST /internal/<op>` with a msgpack map as body and the caller's org in
`X-Org-Id`, and answers a msgpack map. msgpack because the answers can be big (a resolve of 100k series).
A fetch answers series data (`SERIES_MEDIA_TYPE`): `MTS1`, the length of a msgpack map of per-series
metadata (u32 little-endian), that map, then the values of all series as one blob of little-endian float64,
never one number object per point; the blob stays outside msgpack so it is copied as few times as possible. A `QueryError` (a user mistake, e.g. a bad regex) comes back with its
own status and the header `X-Mt-Query-Error: 1`, so the caller can tell it from a failing node and report it
instead of trying another replica that would say the same.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from metrictank.query.errors import QueryError
from metrictank.query.series import Series, tags_from_name
from metrictank.query.source import SeriesRef, SeriesSource

__all__ = [
    "MSGPACK",
    "SERIES_MEDIA_TYPE",
    "QUERY_ERROR_HEADER",
    "internal_router",
    "pack_series",
    "unpack_series",
    "wire_key",
]

log = logging.getLogger(__name__)

MSGPACK = "application/x-msgpack"
SERIES_MEDIA_TYPE = "application/x-metrictank-py-series"
QUERY_ERROR_HEADER = "X-Mt-Query-Error"
_MAGIC = b"MTS1"


def wire_key(key: object) -> int | str | None:
    """A source's series key as it can cross the wire; None when it cannot (the peer then finds the series
    again by name)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int | np.integer):
        return int(key)
    if isinstance(key, str):
        return key
    return None


def pack_series(series: Sequence[Series]) -> bytes:
    """A fetch answer: metadata map and all values in one float64 blob (see the module docstring)."""
    meta = msgpack.packb(
        {
            "names": [s.target for s in series],
            "starts": [int(s.start) for s in series],
            "steps": [int(s.step) for s in series],
            "consolidators": [s.consolidator for s in series],
            "lens": [len(s.values) for s in series],
        },
        use_bin_type=True,
    )
    values = np.concatenate([np.asarray(s.values, dtype="<f8") for s in series]) if series else np.empty(0)
    return b"".join(
        (_MAGIC, struct.pack("<I", len(meta)), meta, memoryview(values.astype("<f8", copy=False)))
    )


def unpack_series(body: bytes) -> list[Series]:
    """The inverse of `pack_series`; the values are one writable array split into per-series views."""
    if body[:4] != _MAGIC or len(body) < 8:
        raise ValueError("not a series answer")
    (n,) = struct.unpack_from("<I", body, 4)
    doc = msgpack.unpackb(body[8 : 8 + n], raw=False)
    blob = memoryview(body)[8 + n :]
    if len(blob) % 8:
        raise ValueError(f"series answer has {len(blob)} value bytes, not a whole number of float64")
    values = np.frombuffer(blob, dtype="<f8").astype(np.float64, copy=True)
    lens = doc["lens"]
    if len(values) != sum(lens):
        raise ValueError(f"series answer carries {len(values)} values for series totalling {sum(lens)}")
    bounds = np.cumsum([0, *lens])
    return [
        Series(name, name, {}, int(start), int(step), values[bounds[i] : bounds[i + 1]], cons)
        for i, (name, start, step, cons) in enumerate(
            zip(doc["names"], doc["starts"], doc["steps"], doc["consolidators"], strict=True)
        )
    ]


def _refs_doc(refs: Sequence[SeriesRef]) -> dict[str, Any]:
    return {
        "names": [r.name for r in refs],
        "keys": [wire_key(r.key) for r in refs],
        "last": [int(r.last_update) for r in refs],
    }


def _by_name(source: SeriesSource, org: int, name: str) -> SeriesRef | None:
    """Find one series by its exact name: how a replica serves a fetch whose keys came from another node."""
    if ";" in name:
        tags = tags_from_name(name)
        exprs = [f"name={tags.pop('name')}"] + [f"{k}={v}" for k, v in sorted(tags.items())]
        found = source.resolve_tags(org, exprs)
    else:
        found = source.resolve(org, name)
    return next((r for r in found if r.name == name), None)


def _fetch(source: SeriesSource, org: int, body: dict[str, Any]) -> bytes:
    refs = []
    for name, key in zip(body["names"], body["keys"], strict=True):
        if key is None:
            ref = _by_name(source, org, name)
            if ref is not None:
                refs.append(ref)
        else:
            refs.append(SeriesRef(name, key))
    series = (
        source.fetch(org, refs, int(body["start"]), int(body["end"]), int(body["mdp"]), body.get("cb"))
        if refs
        else []
    )
    return pack_series(series)


def _find(source: SeriesSource, org: int, body: dict[str, Any]) -> dict[str, Any]:
    nodes = source.find(org, body["pattern"], int(body.get("from") or 0))
    return {"nodes": [[n.path, n.leaf, n.has_children] for n in nodes]}


_OPS: dict[str, Callable[[SeriesSource, int, dict[str, Any]], dict[str, Any] | bytes]] = {
    "find": _find,
    "resolve": lambda s, org, b: _refs_doc(s.resolve(org, b["pattern"])),
    "resolve_tags": lambda s, org, b: _refs_doc(s.resolve_tags(org, b["exprs"], int(b.get("from") or 0))),
    "fetch": _fetch,
    "paths": lambda s, org, b: {"paths": list(s.all_paths(org))},
    "tags": lambda s, org, b: {"tags": list(s.tags(org, b.get("filter")))},
    "tag_values": lambda s, org, b: {"values": dict(s.tag_values(org, b["tag"], b.get("filter")))},
    "autocomplete_tags": lambda s, org, b: {
        "tags": list(s.autocomplete_tags(org, b["prefix"], b["exprs"], int(b["limit"])))
    },
    "autocomplete_values": lambda s, org, b: {
        "values": list(s.autocomplete_tag_values(org, b["tag"], b["prefix"], b["exprs"], int(b["limit"])))
    },
}


def _packed(doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgpack.packb(doc, use_bin_type=True), status, headers, media_type=MSGPACK)


def internal_router(get_source: Callable[[], SeriesSource]) -> APIRouter:
    """`POST /internal/{op}` over the node's local source (`get_source()`, called per request)."""
    router = APIRouter()

    @router.post("/internal/{op}")
    async def internal_endpoint(op: str, request: Request) -> Response:
        handler = _OPS.get(op)
        if handler is None:
            return _packed({"error": f"unknown internal operation {op!r}"}, 404)
        try:
            raw = request.headers.get("x-org-id") or "1"
            org = int(raw)
            body = msgpack.unpackb(await request.body() or b"\x80", raw=False)
            if not isinstance(body, dict):
                raise ValueError("body must be a msgpack map")
        except ValueError as e:
            return _packed({"error": f"bad internal request: {e}"}, 400)
        try:
            doc = await run_in_threadpool(handler, get_source(), org, body)
        except QueryError as e:
            return _packed({"error": e.message}, e.status, {QUERY_ERROR_HEADER: "1"})
        except (
            KeyError,
            TypeError,
            ValueError,
        ) as e:  # ValueError: a pattern or tag expression past its limits
            return _packed({"error": f"bad internal request: {type(e).__name__}: {e}"}, 400)
        if isinstance(doc, bytes):
            return Response(doc, media_type=SERIES_MEDIA_TYPE)
        return _packed(doc)

    return router
