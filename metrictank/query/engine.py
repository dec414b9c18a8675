"""Render pipeline: parse targets, validate them, fetch the data they name, apply functions, then consolidate
every output series to maxDataPoints.

Time ranges: Graphite's `from` is exclusive and `until` inclusive; internally (and in `SeriesSource.fetch`)
ranges are Metrictank's [start, end), so a request for from=F until=U reads [F+1, U+1).

All targets are parsed and their calls bound to function definitions before any data is read, so a typo
in the last target of a dashboard costs a 400 and no storage reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, tzinfo
from typing import Any

from .consolidate import consolidate_to_max_points
from .errors import QueryError
from .functions import BoundCall, EvalContext, Invocation, bind
from .match import parse_tag_query
from .parser import Literal, Node, PathExpr, find_calls, parse_target
from .series import Series, tags_from_name
from .source import SeriesSource
from .timeparse import parse_time


def resolve_range(
    from_: int | str | None, until: int | str | None, now: int, tz: tzinfo = UTC
) -> tuple[int, int]:
    """Graphite (from, until) in epoch seconds; defaults are the last 24 hours. QueryError naming the parameter
    when one is invalid, and when from >= until."""
    f = (
        now - 86400
        if from_ in (None, "")
        else from_
        if isinstance(from_, int)
        else _time(from_, "from", now, tz)
    )
    u = now if until in (None, "") else until if isinstance(until, int) else _time(until, "until", now, tz)
    if f >= u:
        raise QueryError(f"invalid time range requested: from ({f}) must be before until ({u})")
    return f, u


def _time(spec: str, param: str, now: int, tz: tzinfo) -> int:
    try:
        return parse_time(spec, now, tz)
    except QueryError as e:
        raise QueryError(f"invalid {param}: {e}") from None


class _Evaluator:
    def __init__(self, source: SeriesSource, org: int, bound: dict[int, BoundCall]) -> None:
        self.source = source
        self.org = org
        self.bound = bound
        self.cache: dict[tuple[Any, ...], list[Series]] = {}

    def evaluate(self, node: Node, ctx: EvalContext) -> list[Series]:
        if isinstance(node, PathExpr):
            return self._fetch(node.pattern, None, ctx)
        if isinstance(node, Literal):
            raise QueryError(
                f"expected a series expression, got {node.kind} {node.raw!r} at position {node.pos}"
            )
        if node.name == "seriesByTag":
            exprs = tuple(str(a.value) for a in node.args if isinstance(a, Literal))
            return self._fetch(node.raw, exprs, ctx)
        bound = self.bound.get(id(node)) or bind(node)
        fdef = bound.fdef
        inner = fdef.prepare(ctx, bound.values) if fdef.prepare else ctx
        kwargs = dict(bound.values)
        for name, arg in bound.series_nodes.items():
            if isinstance(arg, list):
                kwargs[name] = [self.evaluate(a, inner) for a in arg]
            else:
                kwargs[name] = self.evaluate(arg, inner)
        inv = Invocation(inner, ctx, node, bound.series_nodes, self.evaluate)
        return fdef.impl(inv, **kwargs)

    def _fetch(self, query: str, tag_exprs: tuple[str, ...] | None, ctx: EvalContext) -> list[Series]:
        key = (query, ctx.start, ctx.end, ctx.max_data_points, ctx.consolidate_by)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if tag_exprs is None:
            refs = self.source.resolve(self.org, query)
        else:
            parse_tag_query(tag_exprs)  # validated before the source sees them
            refs = self.source.resolve_tags(self.org, list(tag_exprs))
        out: list[Series] = []
        if refs:
            fetched = self.source.fetch(
                self.org, refs, ctx.start, ctx.end, ctx.max_data_points, ctx.consolidate_by
            )
            out = [s.copy(path_expr=query, tags=dict(s.tags) or tags_from_name(s.target)) for s in fetched]
            out.sort(key=lambda s: s.target)
        self.cache[key] = out
        return out


def validate(tree: Node) -> dict[int, BoundCall]:
    """Check function names, arguments and seriesByTag expressions of a parsed target, without data."""
    if isinstance(tree, Literal):
        raise QueryError(f"a target must be a metric path or a function call, got {tree.kind} {tree.raw!r}")
    bound: dict[int, BoundCall] = {}
    for call in find_calls(tree):
        if call.name == "seriesByTag":
            if call.kwargs or not all(isinstance(a, Literal) and a.kind == "string" for a in call.args):
                raise QueryError("seriesByTag arguments must be quoted tag expressions such as 'name=a.b'")
            parse_tag_query([str(a.value) for a in call.args])  # type: ignore[union-attr]
            continue
        bound[id(call)] = bind(call)
    return bound


def render(
    targets: Sequence[str],
    from_: int | str | None,
    until: int | str | None,
    max_data_points: int,
    source: SeriesSource,
    org: int = 1,
    now: int | None = None,
    tz: tzinfo = UTC,
) -> list[Series]:
    """Evaluate Graphite targets over (from_, until] and return the output series, each consolidated to at
    most `max_data_points` points (0 = no limit), in target order.

    `from_`/`until` are Graphite time specifications or epoch seconds (from exclusive, until inclusive).
    Raises QueryError (a 400) for anything the user can fix.
    """
    if not targets:
        raise QueryError("missing target")
    now = int(time.time()) if now is None else now
    f, u = resolve_range(from_, until, now, tz)
    if max_data_points < 0:
        raise QueryError("maxDataPoints must not be negative")
    trees = [parse_target(t) for t in targets]
    bound: dict[int, BoundCall] = {}
    for tree in trees:
        bound.update(validate(tree))
    ctx = EvalContext(source, org, f + 1, u + 1, max_data_points, None, now, tz)
    ev = _Evaluator(source, org, bound)
    out: list[Series] = []
    for tree in trees:
        out.extend(ev.evaluate(tree, ctx))
    if max_data_points > 0:
        out = [consolidate_to_max_points(s, max_data_points) for s in out]
    return out


__all__ = ["render", "resolve_range", "validate"]
