"""Render pipeline: parse targets, validate them, fetch the data they name, apply functions, then consolidate
every output series to maxDataPoints.

Time ranges: Graphite's `from` is exclusive and `until` inclusive; internally (and in `SeriesSource.fetch`)
ranges are Metrictank's [start, end), so a request for from=F until=U reads [F+1, U+1).

All targets are parsed and their calls bound to function definitions before any data is read, so a typo
in the last target of a dashboard costs a 400 and no storage reads.

Limits (`QueryLimits`): before anything is fetched, a planning pass walks the targets with the contexts their
functions prepare, resolves every series expression and asks the source how many points each fetch would read
(`estimate_points`: series x points per series of the archive it would choose). Too many series or points
past the hard limit is a 400 without a single point read; past the soft limit every fetch is asked for fewer
points per series (a coarser archive where there is one) and the output is consolidated to that many. Fetches
only known while evaluating (a moving window over a point count) are held to the same hard budget. The
request's deadline is checked between evaluations and, through `limits.check_deadline`, in the source.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, tzinfo
from typing import Any

from .consolidate import consolidate_to_max_points
from .errors import QueryError
from .functions import BoundCall, EvalContext, Invocation, bind
from .limits import Deadline, PointBudget, QueryLimits, deadline_scope
from .match import parse_tag_query
from .parser import Literal, Node, PathExpr, find_calls, parse_target
from .series import Series, tags_from_name
from .source import SeriesRef, SeriesSource
from .timeparse import parse_time

# a fetch window (after timeShift and friends) must stay within this many seconds of the epoch: far enough for
# any real shift, near enough that grid arithmetic on it never overflows numpy's int64
_MAX_ABS_TS = 1 << 40


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


def _capped(mdp: int, cap: int) -> int:
    """maxDataPoints after the soft limit's per-series cap (0 = none): the smaller, 0 counting as unlimited."""
    if cap and (mdp == 0 or mdp > cap):
        return cap
    return mdp


class _Evaluator:
    def __init__(
        self,
        source: SeriesSource,
        org: int,
        bound: dict[int, BoundCall],
        limits: QueryLimits | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.source = source
        self.org = org
        self.bound = bound
        self.limits = limits or QueryLimits()
        self.deadline = deadline
        self.cache: dict[tuple[Any, ...], list[Series]] = {}
        self.refs: dict[tuple[str, tuple[str, ...] | None], list[SeriesRef]] = {}
        self.cap = 0  # points per series the soft limit allows (0: not needed)
        # the planned fetches' estimates (at the final cap), by fetch key: charged when the fetch runs instead of
        # asking the source again (an estimate resolves the series' schemas, as much work as the plan of a fetch)
        self.estimates: dict[tuple[Any, ...], int] = {}
        self.points = PointBudget(self.limits.max_points_per_req_hard)  # read and produced so far
        self._estimate = getattr(source, "estimate_points", None)

    # -- planning: what the request will read, before reading any of it ----------------------------------------
    def plan(
        self, node: Node, ctx: EvalContext, out: list[tuple[str, tuple[str, ...] | None, EvalContext]]
    ) -> None:
        """Collect the (expression, tag expressions, context) of every fetch `evaluate` will make up front."""
        if isinstance(node, PathExpr):
            out.append((node.pattern, None, ctx))
        elif isinstance(node, Literal):
            return
        elif node.name == "seriesByTag":
            out.append((node.raw, tuple(str(a.value) for a in node.args if isinstance(a, Literal)), ctx))
        else:
            bound = self.bound.get(id(node)) or bind(node)
            inner = bound.fdef.prepare(ctx, bound.values) if bound.fdef.prepare else ctx
            for arg in bound.series_nodes.values():
                for a in arg if isinstance(arg, list) else [arg]:
                    self.plan(a, inner, out)

    def budget(self, fetches: list[tuple[str, tuple[str, ...] | None, EvalContext]]) -> None:
        """Apply max-series-per-req and the point limits to the planned fetches (see the module docstring)."""
        lim = self.limits
        seen: set[tuple[Any, ...]] = set()
        planned = []
        series = 0
        for query, tag_exprs, ctx in fetches:
            key = (query, ctx.start, ctx.end, ctx.max_data_points, ctx.consolidate_by)
            if key in seen:
                continue
            seen.add(key)
            _check_window(ctx)
            refs = self._resolve(query, tag_exprs)
            series += len(refs)
            if series > lim.max_series_per_req:
                raise QueryError(
                    f"the request selects more than {lim.max_series_per_req} series (max-series-per-req): "
                    "narrow the targets"
                )
            if refs:
                planned.append((key, refs, ctx))
        if self._estimate is None or not planned:
            return
        estimates = {key: self._points(refs, ctx, 0) for key, refs, ctx in planned}
        points = sum(estimates.values())
        if points > lim.max_points_per_req_soft:
            self.cap = max(1, lim.max_points_per_req_soft // max(1, series))
            estimates = {key: self._points(refs, ctx, self.cap) for key, refs, ctx in planned}
            points = sum(estimates.values())
        if points > lim.max_points_per_req_hard:
            raise _too_many_points(points, lim)
        self.estimates = estimates

    def _points(self, refs: list[SeriesRef], ctx: EvalContext, cap: int) -> int:
        assert self._estimate is not None
        mdp = _capped(ctx.max_data_points, cap)
        return int(self._estimate(self.org, refs, ctx.start, ctx.end, mdp, ctx.consolidate_by))

    def _resolve(self, query: str, tag_exprs: tuple[str, ...] | None) -> list[SeriesRef]:
        key = (query, tag_exprs)
        refs = self.refs.get(key)
        if refs is None:
            if tag_exprs is None:
                refs = self.source.resolve(self.org, query)
            else:
                parse_tag_query(tag_exprs)  # validated before the source sees them
                refs = self.source.resolve_tags(self.org, list(tag_exprs))
            self.refs[key] = refs
        return refs

    # -- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, node: Node, ctx: EvalContext) -> list[Series]:
        if self.deadline is not None:
            self.deadline.check()
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
        _check_window(ctx)
        refs = self._resolve(query, tag_exprs)
        out: list[Series] = []
        if refs:
            if (
                self._estimate is not None
            ):  # the running total, fetches planned or not, stays within the hard limit
                planned = self.estimates.pop(key, None)
                self.points.charge(self._points(refs, ctx, self.cap) if planned is None else planned)
            fetched = self.source.fetch(
                self.org, refs, ctx.start, ctx.end, _capped(ctx.max_data_points, self.cap), ctx.consolidate_by
            )
            out = [s.copy(path_expr=query, tags=dict(s.tags) or tags_from_name(s.target)) for s in fetched]
            out.sort(key=lambda s: s.target)
        self.cache[key] = out
        return out


def _check_window(ctx: EvalContext) -> None:
    if ctx.start < -_MAX_ABS_TS or ctx.end > _MAX_ABS_TS:
        raise QueryError(
            f"time range [{ctx.start}, {ctx.end}) (after time shifts and windows) is out of the supported range"
        )


def _too_many_points(points: int, lim: QueryLimits) -> QueryError:
    return QueryError(
        f"the request would read {points} points, more than max-points-per-req-hard ({lim.max_points_per_req_hard}): "
        "reduce the time range or the number of series"
    )


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
    limits: QueryLimits | None = None,
    deadline: Deadline | None = None,
) -> list[Series]:
    """Evaluate Graphite targets over (from_, until] and return the output series, each consolidated to at
    most `max_data_points` points, in target order. `max_data_points` 0 asks for full resolution, but never
    past the request's point budget: `limits` (defaults: `QueryLimits()`) still consolidates it harder past
    max-points-per-req-soft and refuses it past the hard limit.

    `from_`/`until` are Graphite time specifications or epoch seconds (from exclusive, until inclusive).
    Raises QueryError (a 400) for anything the user can fix, 503 when `deadline` passes.
    """
    if not targets:
        raise QueryError("missing target")
    limits = limits or QueryLimits()
    now = int(time.time()) if now is None else now
    f, u = resolve_range(from_, until, now, tz)
    if max_data_points < 0:
        raise QueryError("maxDataPoints must not be negative")
    trees = [parse_target(t, limits.max_nesting_depth, limits.max_target_length) for t in targets]
    bound: dict[int, BoundCall] = {}
    for tree in trees:
        bound.update(validate(tree))
    ctx = EvalContext(source, org, f + 1, u + 1, max_data_points, None, now, tz)
    ev = _Evaluator(source, org, bound, limits, deadline)
    with deadline_scope(deadline, ev.points, limits):
        fetches: list[tuple[str, tuple[str, ...] | None, EvalContext]] = []
        for tree in trees:
            ev.plan(tree, ctx, fetches)
        ev.budget(fetches)
        out: list[Series] = []
        for tree in trees:
            out.extend(ev.evaluate(tree, ctx))
    mdp = _capped(max_data_points, ev.cap)
    if mdp > 0:
        out = [consolidate_to_max_points(s, mdp) for s in out]
    return out


__all__ = ["render", "resolve_range", "validate"]
