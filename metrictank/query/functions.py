"""Graphite render functions, vectorised with numpy, and the registry behind `/functions`.

Semantics and result names follow graphite-web (`sumSeries(a.*)`, `scale(a.b,2)`, `movingAverage(a,"5min")`,
...): transforms name their output after the input's name and make that name the new path expression, and
aggregates name theirs after the path expressions of their inputs. Where Metrictank deliberately differs and
a Grafana user would see it, Metrictank wins: the default consolidator of derivative-like output is reset to
avg (a counter's sum rollup must not be used to consolidate its rate), and perSecond does not round to six
decimals (that erased low rates).

Each function receives its series arguments already evaluated (`list[Series]`, or a list of lists for
`*seriesLists`) and never modifies them in place: a fetched series may be shared by several targets.

Functions that need data outside the requested range (timeShift, moving windows) declare a `prepare` hook
that widens or shifts the time range their series arguments are evaluated with, as graphite-web re-evaluates
their argument with a modified request context.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from metrictank.regex import PatternError, UserRegex, compile_user_regex

from .consolidate import (
    METHOD_ALIASES,
    align_forward,
    canonical_method,
    normalize,
    reduce_axis,
    stack,
)
from .errors import QueryError, UnknownFunctionError
from .limits import charge_points
from .parser import Call, Node, first_path_expression
from .series import Series, tags_from_name
from .timeparse import parse_duration, parse_offset

if TYPE_CHECKING:
    from .source import SeriesSource

INF = float("inf")

# ----------------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True, slots=True)
class Param:
    """A function parameter, typed with graphite-web's parameter type names (shown by /functions)."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    multiple: bool = False
    options: tuple[Any, ...] = ()
    suggestions: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """graphite-web's Param.toJSON: defaults keep their type (an infinite default is the float inf,
        written 1e9999 by `dumps_functions` so Grafana reads Infinity), options include those of the type
        (every aggregation function for aggFunc) sorted as strings, suggestions keep their order."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.required:
            out["required"] = True
        if self.default is not None:
            out["default"] = self.default
        if self.multiple:
            out["multiple"] = True
        options = set(self.options) | set(_type_options(self.type))
        if options:
            out["options"] = sorted(options, key=str)
        if self.suggestions:
            out["suggestions"] = list(self.suggestions)
        return out


def _type_options(ptype: str) -> tuple[str, ...]:
    """Options graphite-web's parameter types carry themselves: aggFunc lists the aggregation functions,
    aggOrSeriesFunc those plus every aggregating series function (sumSeries, ...)."""
    if ptype == "aggFunc":
        return _AGG_OPTIONS
    if ptype == "aggOrSeriesFunc":
        return _AGG_OPTIONS + tuple(n for n, f in FUNCTIONS.items() if f.aggregator and _is_callback(n))
    return ()


def _is_callback(name: str) -> bool:
    """Whether groupByNode & co. accept the name as their callback (sumSeries yes, asPercent no)."""
    try:
        _check_callback(name)
    except QueryError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What a series argument is evaluated against: the time range in Metrictank's convention
    ([start, end): start inclusive, end exclusive), the maxDataPoints and consolidateBy hints for the
    source, and the request's clock and time zone."""

    source: SeriesSource
    org: int
    start: int
    end: int
    max_data_points: int = 0
    consolidate_by: str | None = None
    now: int = 0
    tz: Any = None

    def replace(self, **changes: Any) -> EvalContext:
        return replace(self, **changes)


@dataclass(slots=True)
class Invocation:
    """One call being executed: the context its series arguments were evaluated with (`ctx`, after the
    function's prepare hook) and the one the call itself was evaluated in (`outer`), the call node, the raw
    bound arguments (nodes for series parameters) and the evaluator, for functions that re-evaluate an
    argument."""

    ctx: EvalContext
    outer: EvalContext
    call: Call
    nodes: dict[str, Any]
    evaluate: Callable[[Node, EvalContext], list[Series]]


@dataclass(frozen=True, slots=True)
class FunctionDef:
    name: str
    impl: Callable[..., list[Series]]
    params: tuple[Param, ...]
    group: str
    description: str
    prepare: Callable[[EvalContext, dict[str, Any]], EvalContext] | None = None
    aggregator: bool = False

    def signature(self) -> str:
        parts = []
        for p in self.params:
            if p.multiple:
                parts.append(f"*{p.name}")
            elif p.required:
                parts.append(p.name)
            else:
                parts.append(f"{p.name}={p.default!r}" if p.default is not None else f"{p.name}=None")
        return f"{self.name}({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": self.signature(),
            "description": self.description,
            "module": "metrictank.query.functions",
            "group": self.group,
            "params": [p.to_json() for p in self.params],
        }


FUNCTIONS: dict[str, FunctionDef] = {}

_SERIES_TYPES = ("seriesList", "seriesLists", "series")


def register(
    names: str | Sequence[str],
    params: Sequence[Param],
    group: str,
    prepare: Callable[[EvalContext, dict[str, Any]], EvalContext] | None = None,
    aggregator: bool = False,
) -> Callable[[Callable[..., list[Series]]], Callable[..., list[Series]]]:
    """Register an implementation under one or more names; its docstring becomes the description."""
    names = [names] if isinstance(names, str) else list(names)

    def deco(fn: Callable[..., list[Series]]) -> Callable[..., list[Series]]:
        doc = (fn.__doc__ or "").strip()
        for n in names:
            FUNCTIONS[n] = FunctionDef(n, fn, tuple(params), group, doc, prepare, aggregator)
        return fn

    return deco


def functions_json(group: str | None = None, grouped: bool = False) -> dict[str, Any]:
    """The `/functions` document in graphite-web's format ({name: info}, or {group: {name: info}})."""
    out: dict[str, Any] = {}
    for name in sorted(FUNCTIONS):
        info = FUNCTIONS[name].to_json()
        if group is not None and info["group"] != group:
            continue
        if grouped:
            out.setdefault(info["group"], {})[name] = info
        else:
            out[name] = info
    return out


_BARE_INFINITY = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity')


def dumps_functions(doc: Any) -> bytes:
    """JSON of a `/functions` document as graphite-web writes it: an infinite default is `1e9999` (which
    JSON parsers, Grafana's included, read as Infinity) instead of the invalid bare `Infinity` token."""
    text = json.dumps(doc, separators=(",", ":"))
    return _BARE_INFINITY.sub(_infinity_token, text).encode()


def _infinity_token(m: re.Match[str]) -> str:
    tok = m.group(0)
    return tok if tok.startswith('"') else tok.replace("Infinity", "1e9999")  # strings stay as they are


# ----------------------------------------------------------------------------------------------------------
# helpers


def fmt_g(x: float) -> str:
    """Python's `%g` of a number, as graphite-web writes numeric arguments into names (`scale(a,0.5)`)."""
    return f"{float(x):g}"


def _transform(
    s: Series, name: str, values: np.ndarray | None = None, tag: tuple[str, Any] | None = None, **changes: Any
) -> Series:
    """A derived series: renamed, path expression = new name (graphite-web), optional new values/tag."""
    tags = dict(s.tags)
    if tag is not None:
        tags[tag[0]] = str(tag[1])
    out = s.copy(target=name, path_expr=name, tags=tags, **changes)
    if values is not None:
        out.values = values
    return out


def format_path_exprs(series: Sequence[Series]) -> str:
    """Distinct path expressions in order of appearance, comma separated (graphite-web)."""
    seen: dict[str, None] = {}
    for s in series:
        seen.setdefault(s.path_expr, None)
    return ",".join(seen)


def _flatten(lists: Sequence[Sequence[Series]]) -> list[Series]:
    return [s for lst in lists for s in lst]


def _first_consolidator(series: Sequence[Series]) -> str | None:
    for s in series:
        if s.consolidator:
            return s.consolidator
    return None


def agg_key(s: Series, nodes: Sequence[int | str]) -> str:
    """Key built from path nodes (ints, negative from the end) and tag values (strings), as graphite-web's
    aggKey: the name of function output is taken from its first path expression."""
    base = s.target
    if base.endswith(")"):
        base = first_path_expression(base) or base
    parts = base.split(";", 1)[0].split(".")
    out = []
    for n in nodes:
        if isinstance(n, int) and not isinstance(n, bool):
            try:
                out.append(parts[n])
                continue
            except IndexError:
                pass
        out.append(s.tags.get(str(n), ""))
    return ".".join(out)


def _xff_mask(nonnull: np.ndarray, total: int | np.ndarray, xff: float | None) -> np.ndarray:
    """Positions failing graphite-web's xFilesFactor test (no value, or too small a non-null fraction)."""
    bad = nonnull == 0
    if xff:
        with np.errstate(invalid="ignore", divide="ignore"):
            bad |= (nonnull / total) < xff
    return bad


def _series_score(s: Series, method: str) -> float:
    if len(s) == 0:
        return math.nan
    return float(reduce_axis(s.values.reshape(1, -1), method, axis=1)[0])


def _sort_key(score: float) -> float:
    """graphite-web's keyFunc: a series without values sorts as -inf."""
    return -INF if math.isnan(score) else score


def _agg_method(name: str) -> str:
    """Aggregation method from a graphite callback name, accepting the deprecated `sumSeries` spellings."""
    if name not in METHOD_ALIASES and name.endswith("Series"):
        base = name[: -len("Series")]
        name = {"average": "average", "rangeOf": "rangeOf"}.get(base, base)
    return canonical_method(name)


# ----------------------------------------------------------------------------------------------------------
# combine


def aggregate_series(
    series: Sequence[Series], func: str, xff: float | None = None, label: str | None = None
) -> list[Series]:
    """Combine series point by point; the workhorse of sumSeries & co."""
    if not series:
        return []
    method = _agg_method(func)
    label = label or (func[: -len("Series")] if func.endswith("Series") else func)
    normed = normalize(series)
    mat = _rows_of_one_matrix(normed)
    if mat is None:
        start, step, mat = stack(normed)
    else:
        start, step = normed[0].start, normed[0].step
    values = reduce_axis(mat, method, axis=0)
    if xff:
        nonnull = len(normed) - np.isnan(mat).sum(axis=0)
        values[_xff_mask(nonnull, len(normed), xff)] = np.nan
    name = f"{label}Series({format_path_exprs(series)})"
    tags = dict(series[0].tags)
    for s in series[1:]:
        tags = {k: v for k, v in tags.items() if s.tags.get(k) == v}
    tags.setdefault("name", name)
    tags["aggregatedBy"] = label
    return [Series(name, name, tags, start, step, values, _first_consolidator(series))]


def _rows_of_one_matrix(series: Sequence[Series]) -> np.ndarray | None:
    """A read-only 2-D view whose rows are the series' values, when those already are consecutive rows of one
    array (a source's fetch hands out its series that way), else None.

    Stacking copies every point of every series (a day of 1000 series at 10 s is 69 MB); the view costs a
    check per series. The series must share start, step and length, as `stack` requires for a plain stack.
    """
    v0 = series[0].values
    owner = v0.base
    n = len(v0)
    if (
        n == 0
        or not isinstance(owner, np.ndarray)
        or owner.dtype != np.float64
        or not owner.flags.c_contiguous
    ):
        return None
    first = series[0]
    row = n * v0.itemsize
    p0 = v0.__array_interface__["data"][0]
    for i, s in enumerate(series):
        v = s.values
        if (
            v.base is not owner
            or len(v) != n
            or v.strides != (v.itemsize,)
            or s.start != first.start
            or s.step != first.step
            or v.__array_interface__["data"][0] != p0 + i * row
        ):
            return None
    offset = p0 - owner.__array_interface__["data"][0]
    if offset < 0 or offset + len(series) * row > owner.nbytes:
        return None
    mat = np.ndarray((len(series), n), np.float64, buffer=owner, offset=offset)
    mat.flags.writeable = False
    return mat


_SL = Param("seriesList", "seriesList", required=True)
_SLS = Param("seriesLists", "seriesList", required=True, multiple=True)
_AGG_OPTIONS = tuple(sorted(set(METHOD_ALIASES) - {"lst", "cnt", "mult", "med", "first"}))


@register(
    "aggregate",
    [_SL, Param("func", "aggFunc", required=True, options=_AGG_OPTIONS), Param("xFilesFactor", "float")],
    "Combine",
)
def aggregate(
    inv: Invocation, seriesList: list[Series], func: str, xFilesFactor: float | None = None
) -> list[Series]:
    """Aggregate series point by point with the given function (sum, average, min, max, ...)."""
    return aggregate_series(seriesList, func, xFilesFactor)


def _make_aggregator(func: str, doc: str) -> Callable[..., list[Series]]:
    def impl(inv: Invocation, seriesLists: list[list[Series]]) -> list[Series]:
        return aggregate_series(_flatten(seriesLists), func)

    impl.__doc__ = doc
    return impl


for _names, _func, _doc in (
    (("sumSeries", "sum"), "sum", "Sum of the series at each point (nulls ignored)."),
    (("averageSeries", "avg"), "average", "Average of the non-null values at each point."),
    (("maxSeries", "max"), "max", "Maximum of the series at each point."),
    (("minSeries", "min"), "min", "Minimum of the series at each point."),
    (("diffSeries",), "diff", "First series minus all the others, at each point (nulls ignored)."),
    (("stddevSeries",), "stddev", "Population standard deviation across the series at each point."),
    (("rangeOfSeries",), "rangeOf", "Maximum minus minimum across the series at each point."),
):
    register(_names, [_SLS], "Combine", aggregator=True)(_make_aggregator(_func, _doc))


@register("multiplySeries", [_SLS], "Combine", aggregator=True)
def multiply_series(inv: Invocation, seriesLists: list[list[Series]]) -> list[Series]:
    """Product of the series at each point (null if any input is null); a single series is returned as is."""
    series = _flatten(seriesLists)
    if len(series) == 1:
        return series
    return aggregate_series(series, "multiply")


@register("countSeries", [Param("seriesLists", "seriesList", multiple=True)], "Combine", aggregator=True)
def count_series(inv: Invocation, seriesLists: list[list[Series]]) -> list[Series]:
    """Number of series in the input, as a series."""
    return _count(_flatten(seriesLists))


def _count(series: list[Series]) -> list[Series]:
    if not series:
        return []
    normed = normalize(series)
    start, step, mat = stack(normed)
    name = f"countSeries({format_path_exprs(series)})"
    values = np.full(mat.shape[1], float(len(series)))
    return [Series(name, name, {"name": name}, start, step, values, _first_consolidator(series))]


@register("group", [_SLS], "Combine")
def group(inv: Invocation, seriesLists: list[list[Series]]) -> list[Series]:
    """All the given series lists as one list."""
    return _flatten(seriesLists)


def _pair(a: Series, b: Series) -> tuple[int, int, np.ndarray, np.ndarray]:
    na, nb = normalize([a, b])
    start, step, mat = stack([na, nb])
    return start, step, mat[0], mat[1]


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / b
    out[b == 0] = np.nan
    return out


@register(
    "divideSeries",
    [
        Param("dividendSeriesList", "seriesList", required=True),
        Param("divisorSeries", "seriesList", required=True),
    ],
    "Combine",
)
def divide_series(
    inv: Invocation, dividendSeriesList: list[Series], divisorSeries: list[Series]
) -> list[Series]:
    """Each dividend divided by the single divisor series (null where the divisor is 0 or null)."""
    if not divisorSeries:
        out = []
        for s in dividendSeriesList:
            name = f"divideSeries({s.target},MISSING)"
            out.append(_transform(s, name, np.full(len(s), np.nan)))
        return out
    if len(divisorSeries) > 1:
        raise QueryError(
            f"divideSeries second argument must reference exactly 1 series (got {len(divisorSeries)})"
        )
    divisor = divisorSeries[0]
    out = []
    for s in dividendSeriesList:
        start, step, a, b = _pair(s, divisor)
        name = f"divideSeries({s.target},{divisor.target})"
        out.append(Series(name, name, {"name": name}, start, step, _safe_div(a, b), s.consolidator))
    return out


def _percent(a: np.ndarray, total: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / total * 100.0
    if isinstance(total, np.ndarray):
        out[total == 0] = np.nan
    elif total == 0:
        out[:] = np.nan
    return out


def _sum_group(series: list[Series]) -> Series:
    if len(series) == 1:
        return series[0]
    name = f"sumSeries({format_path_exprs(series)})"
    agg = aggregate_series(series, "sum")[0]
    return agg.copy(target=name, path_expr=name, tags={"name": name})


@register(
    ("asPercent", "pct"),
    [_SL, Param("total", "any"), Param("nodes", "nodeOrTag", multiple=True)],
    "Combine",
    aggregator=True,
)
def as_percent(
    inv: Invocation, seriesList: list[Series], total: Any = None, nodes: list[Any] | None = None
) -> list[Series]:
    """Each series as a percentage of a total: the sum of the input (default), a number, one total series,
    one total per input series (matched by name), or per group of `nodes`."""
    nodes = nodes or []
    if not seriesList and not isinstance(total, list):
        return []
    series = normalize(seriesList)
    if nodes:
        if total is not None and not isinstance(total, list):
            raise QueryError("asPercent: when nodes are given, total must be None or a seriesList")
        keys: list[str] = []
        groups: dict[str, list[Series]] = {}
        for s in series:
            k = agg_key(s, nodes)
            if k not in groups:
                keys.append(k)
            groups.setdefault(k, []).append(s)
        totals: dict[str, Series] = {}
        if total is None:
            totals = {k: _sum_group(v) for k, v in groups.items()}
        else:
            tgroups: dict[str, list[Series]] = {}
            for s in total:
                k = agg_key(s, nodes)
                if k not in tgroups and k not in groups:
                    keys.append(k)
                tgroups.setdefault(k, []).append(s)
            totals = {k: _sum_group(v) for k, v in tgroups.items()}
        out = []
        for k in keys:
            if k not in groups:
                t = totals[k]
                name = f"asPercent(MISSING,{t.target})"
                out.append(Series(name, name, {"name": name}, t.start, t.step, np.full(len(t), np.nan)))
                continue
            for s in groups[k]:
                if k not in totals:
                    name = f"asPercent({s.target},MISSING)"
                    out.append(Series(name, name, {"name": name}, s.start, s.step, np.full(len(s), np.nan)))
                    continue
                t = totals[k]
                start, step, a, b = _pair(s, t)
                name = f"asPercent({s.target},{t.target})"
                out.append(Series(name, name, {"name": name}, start, step, _percent(a, b)))
        return out

    if total is None:
        agg = aggregate_series(series, "sum")
        start, step, mat = stack(normalize(series))
        tvals = agg[0].values
        text = f"sumSeries({format_path_exprs(series)})"
        out = []
        for row, s in enumerate(series):
            name = f"asPercent({s.target},{text})"
            out.append(Series(name, name, {"name": name}, start, step, _percent(mat[row], tvals)))
        return out
    if isinstance(total, list):
        if len(total) != 1 and len(total) != len(series):
            raise QueryError(
                "asPercent second argument (total) must be missing, a number, reference exactly 1 series "
                "or reference the same number of series as the first argument"
            )
        if len(total) == 1:
            pairs = [(s, total[0]) for s in series]
        else:
            pairs = list(
                zip(
                    sorted(series, key=lambda s: s.target), sorted(total, key=lambda s: s.target), strict=True
                )
            )
        out = []
        for s, t in pairs:
            start, step, a, b = _pair(s, t)
            name = f"asPercent({s.target},{t.target})"
            out.append(Series(name, name, {"name": name}, start, step, _percent(a, b)))
        return out
    if isinstance(total, bool) or not isinstance(total, int | float):
        raise QueryError("asPercent: total must be a number or a seriesList")
    out = []
    for s in series:
        name = f"asPercent({s.target},{total})"
        out.append(Series(name, name, {"name": name}, s.start, s.step, _percent(s.values, float(total))))
    return out


def _group_aggregate(groups: dict[str, list[Series]], keys: list[str], callback: str) -> list[Series]:
    out = []
    for k in keys:
        agg = _count(groups[k]) if callback == "countSeries" else aggregate_series(groups[k], callback)
        out.append(agg[0].copy(target=k, path_expr=k, tags=tags_from_name(k)))
    return out


_CALLBACK = Param("callback", "aggOrSeriesFunc", default="average", options=_AGG_OPTIONS)


def _check_callback(callback: str) -> str:
    if callback != "countSeries":
        _agg_method(callback)
    return callback


@register("groupByNode", [_SL, Param("nodeNum", "nodeOrTag", required=True), _CALLBACK], "Combine")
def group_by_node(
    inv: Invocation, seriesList: list[Series], nodeNum: int | str, callback: str = "average"
) -> list[Series]:
    """Group series by one path node (or tag) and aggregate each group; the result is named by the node."""
    return group_by_nodes(inv, seriesList, callback, [nodeNum])


@register(
    "groupByNodes",
    [_SL, replace(_CALLBACK, required=True, default=None), Param("nodes", "nodeOrTag", multiple=True)],
    "Combine",
)
def group_by_nodes(
    inv: Invocation, seriesList: list[Series], callback: str, nodes: list[int | str] | None = None
) -> list[Series]:
    """Group series by several path nodes (or tags) joined with dots, and aggregate each group."""
    _check_callback(callback)
    keys: list[str] = []
    groups: dict[str, list[Series]] = {}
    for s in seriesList:
        k = agg_key(s, nodes or [])
        if k not in groups:
            keys.append(k)
        groups.setdefault(k, []).append(s)
    return _group_aggregate(groups, keys, callback)


@register(
    "groupByTags",
    [
        _SL,
        replace(_CALLBACK, required=True, default=None),
        Param("tags", "tag", required=True, multiple=True),
    ],
    "Combine",
)
def group_by_tags(inv: Invocation, seriesList: list[Series], callback: str, tags: list[str]) -> list[Series]:
    """Group series by the values of the given tags and aggregate each group; results are named
    `name;tag1=v1;tag2=v2` where name is the common name tag (or the callback when names differ)."""
    _check_callback(callback)
    if not tags:
        raise QueryError("groupByTags(): no tags specified")
    tags = [str(t) for t in tags]
    common = None
    if "name" not in tags:
        names = {s.tags.get("name", "") for s in seriesList}
        common = names.pop() if len(names) == 1 else callback
    keys: list[str] = []
    groups: dict[str, list[Series]] = {}
    for s in seriesList:
        head = common if common is not None else s.tags.get("name", "")
        pairs = sorted(f"{t}={s.tags.get(t, '')}" for t in tags if t != "name")
        k = ";".join([head, *pairs])
        if k not in groups:
            keys.append(k)
        groups.setdefault(k, []).append(s)
    return _group_aggregate(groups, keys, callback)


# ----------------------------------------------------------------------------------------------------------
# transform


@register("scale", [_SL, Param("factor", "float", required=True)], "Transform")
def scale(inv: Invocation, seriesList: list[Series], factor: float) -> list[Series]:
    """Multiply every point by a constant."""
    return [
        _transform(s, f"scale({s.target},{fmt_g(factor)})", s.values * factor, ("scale", factor))
        for s in seriesList
    ]


@register("offset", [_SL, Param("factor", "float", required=True)], "Transform")
def offset(inv: Invocation, seriesList: list[Series], factor: float) -> list[Series]:
    """Add a constant to every point."""
    return [
        _transform(s, f"offset({s.target},{fmt_g(factor)})", s.values + factor, ("offset", factor))
        for s in seriesList
    ]


@register("absolute", [_SL], "Transform")
def absolute(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Absolute value of every point."""
    return [_transform(s, f"absolute({s.target})", np.abs(s.values), ("absolute", 1)) for s in seriesList]


@register("derivative", [_SL], "Transform")
def derivative(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Difference between each point and the previous one (null when either is null)."""
    out = []
    for s in seriesList:
        d = np.full(len(s), np.nan)
        if len(s) > 1:
            d[1:] = s.values[1:] - s.values[:-1]
        out.append(_transform(s, f"derivative({s.target})", d, ("derivative", 1), consolidator=None))
    return out


@register("integral", [_SL], "Transform")
def integral(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Running total of the non-null points (nulls stay null)."""
    out = []
    for s in seriesList:
        v = s.values
        acc = np.cumsum(np.where(np.isnan(v), 0.0, v))
        acc[np.isnan(v)] = np.nan
        out.append(_transform(s, f"integral({s.target})", acc, ("integral", 1), consolidator=None))
    return out


def non_negative_delta(v: np.ndarray, max_value: float | None, min_value: float | None) -> np.ndarray:
    """graphite-web's _nonNegativeDelta for a whole array: a drop is a counter wrap (when maxValue is
    given), a reset to minValue (when only minValue is given) or null; values outside [min, max] are null
    and do not serve as the previous value either."""
    n = len(v)
    valid = ~np.isnan(v)
    if max_value is not None:
        valid &= ~(v > max_value)
    if min_value is not None:
        valid &= ~(v < min_value)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    cur, prev = v[1:], v[:-1]
    ok = valid[1:] & valid[:-1]
    with np.errstate(invalid="ignore"):
        up = cur >= prev
        delta = np.where(up, cur - prev, np.nan)
        if max_value is not None:
            delta = np.where(up, delta, max_value + 1 + cur - prev - (min_value or 0))
        elif min_value is not None:
            delta = np.where(up, delta, cur - min_value)
    out[1:] = np.where(ok, delta, np.nan)
    return out


_MAXV = Param("maxValue", "float")
_MINV = Param("minValue", "float")


@register("nonNegativeDerivative", [_SL, _MAXV, _MINV], "Transform")
def non_negative_derivative(
    inv: Invocation, seriesList: list[Series], maxValue: float | None = None, minValue: float | None = None
) -> list[Series]:
    """Like derivative, but a decrease gives null (or a wrap-around delta when maxValue/minValue are set)."""
    return [
        _transform(
            s,
            f"nonNegativeDerivative({s.target})",
            non_negative_delta(s.values, maxValue, minValue),
            ("nonNegativeDerivative", 1),
            consolidator=None,
        )
        for s in seriesList
    ]


@register("perSecond", [_SL, _MAXV, _MINV], "Transform")
def per_second(
    inv: Invocation, seriesList: list[Series], maxValue: float | None = None, minValue: float | None = None
) -> list[Series]:
    """nonNegativeDerivative divided by the step: the per-second rate of a counter."""
    return [
        _transform(
            s,
            f"perSecond({s.target})",
            non_negative_delta(s.values, maxValue, minValue) / s.step,
            ("perSecond", 1),
            consolidator=None,
        )
        for s in seriesList
    ]


def _summarize_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    return ctx.replace(max_data_points=0)


@register(
    "summarize",
    [
        _SL,
        Param("intervalString", "interval", required=True, suggestions=("10min", "1h", "1d")),
        Param("func", "aggFunc", default="sum", options=_AGG_OPTIONS),
        Param("alignToFrom", "boolean", default=False),
    ],
    "Transform",
    prepare=_summarize_prepare,
)
def summarize(
    inv: Invocation,
    seriesList: list[Series],
    intervalString: str,
    func: str = "sum",
    alignToFrom: bool = False,
) -> list[Series]:
    """Aggregate points into fixed buckets (aligned to multiples of the interval, or to the start of the
    data with alignToFrom=true); each bucket [t, t+interval) is stamped t."""
    interval = parse_duration(intervalString)
    if interval <= 0:
        raise QueryError(f"summarize: interval {intervalString!r} is zero")
    method = canonical_method(func)
    out = []
    suffix = ", true" if alignToFrom else ""
    grids = []
    for s in seriesList:
        if alignToFrom:
            new_start, new_end = s.start, s.end
        else:
            new_start = s.start - s.start % interval
            new_end = s.end - s.end % interval + interval
        grids.append((new_start, max(0, -(-(new_end - new_start) // interval))))
    # a finer interval than the data's makes points: all of them count against the request's limit before the
    # first grid is allocated (charged series by series, most of a refused request was built first)
    charge_points(sum(nb for _start, nb in grids))
    for s, (new_start, nb) in zip(seriesList, grids, strict=True):
        name = f'summarize({s.target}, "{intervalString}", "{func}"{suffix})'
        if nb == 0 or len(s) == 0:
            vals = np.full(nb, np.nan)
        else:
            ts = s.timestamps()
            bucket = (ts - new_start) // interval
            keep = (bucket >= 0) & (bucket < nb)
            bucket, v = bucket[keep], s.values[keep]
            first_idx = np.searchsorted(bucket, np.arange(nb))
            counts = np.bincount(bucket, minlength=nb)
            width = max(1, int(counts.max()) if len(counts) else 1)
            mat = np.full((nb, width), np.nan)
            col = np.arange(len(bucket)) - first_idx[bucket]
            mat[bucket, col] = v
            vals = reduce_axis(mat, method, axis=1, width=counts)
            vals[counts == 0] = np.nan
        tags = dict(s.tags)
        tags["summarize"] = intervalString
        tags["summarizeFunction"] = func
        out.append(Series(name, name, tags, new_start, interval, vals, None))
    return out


def _time_shift_seconds(shift: str) -> int:
    text = shift.strip()
    if text[:1].isdigit():
        text = "-" + text
    return parse_offset(text)


def _dst_adjust(ctx: EvalContext, offset: int) -> int:
    """Extra shift keeping wall-clock alignment across a DST change (graphite-web's alignDST)."""
    tz = ctx.tz
    if tz is None:
        return 0

    def utc_off(ts: int) -> int:
        d = datetime.fromtimestamp(ts, tz).utcoffset()
        return int(d.total_seconds()) if d is not None else 0

    req_s, req_e = utc_off(ctx.start), utc_off(ctx.end)
    my_s, my_e = utc_off(ctx.start + offset), utc_off(ctx.end + offset)
    if req_s == req_e and my_s == my_e:
        return req_s - my_s
    return 0


_SHIFT_SUGGESTIONS = ("1h", "6h", "12h", "1d", "2d", "7d", "14d", "30d")


def _time_shift_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    off = _time_shift_seconds(args["timeShift"])
    if args.get("alignDST"):
        off += _dst_adjust(ctx, off)
    return ctx.replace(start=ctx.start + off, end=ctx.end + off)


@register(
    "timeShift",
    [
        _SL,
        Param("timeShift", "interval", required=True, suggestions=_SHIFT_SUGGESTIONS),
        Param("resetEnd", "boolean", default=True),
        Param("alignDST", "boolean", default=False),
    ],
    "Transform",
    prepare=_time_shift_prepare,
)
def time_shift(
    inv: Invocation, seriesList: list[Series], timeShift: str, resetEnd: bool = True, alignDST: bool = False
) -> list[Series]:
    """Draw the series as it was a given time ago (`1d`, `-1w`; an unsigned shift goes back in time)."""
    text = timeShift.strip()
    if text[:1].isdigit():
        text = "-" + text
    shift = inv.ctx.start - inv.outer.start  # what prepare shifted the data by (DST alignment included)
    return [
        _transform(
            s, f'timeShift({s.target}, "{text}")', s.values.copy(), ("timeShift", text), start=s.start - shift
        )
        for s in seriesList
    ]


@register(
    "transformNull",
    [_SL, Param("default", "float", default=0), Param("referenceSeries", "seriesList")],
    "Transform",
)
def transform_null(
    inv: Invocation, seriesList: list[Series], default: float = 0, referenceSeries: list[Series] | None = None
) -> list[Series]:
    """Replace nulls with a value (only where some reference series has a value, when one is given)."""
    ref_grid = None
    if referenceSeries:
        start, step, mat = stack(normalize(referenceSeries))
        ref_grid = (start, step, ~np.all(np.isnan(mat), axis=0))
    out = []
    for s in seriesList:
        fill = np.isnan(s.values)
        if ref_grid is not None:
            start, step, any_val = ref_grid
            idx = (s.timestamps() - start) // step
            inside = (idx >= 0) & (idx < len(any_val))
            mask = np.zeros(len(s), dtype=bool)
            mask[inside] = any_val[idx[inside]]
            fill &= mask
            name = f"transformNull({s.target},{fmt_g(default)},referenceSeries)"
        else:
            name = f"transformNull({s.target},{fmt_g(default)})"
        t = _transform(s, name, np.where(fill, float(default), s.values), ("transformNull", fmt_g(default)))
        if ref_grid is not None:
            t.tags["referenceSeries"] = "1"
        out.append(t)
    return out


def keep_last(v: np.ndarray, limit: float) -> np.ndarray:
    """Fill runs of nulls with the last value before them, for runs of at most `limit` nulls."""
    isnan = np.isnan(v)
    if not isnan.any():
        return v.copy()
    n = len(v)
    idx = np.where(~isnan, np.arange(n), -1)
    last = np.maximum.accumulate(idx)
    # length of each null run, broadcast to its members
    edges = np.flatnonzero(np.diff(np.concatenate([[0], isnan.astype(np.int8), [0]])))
    lengths = edges[1::2] - edges[0::2]
    run_len = np.zeros(n, dtype=np.int64)
    run_len[isnan] = np.repeat(lengths, lengths)  # null positions, in order, are the runs concatenated
    fill = isnan & (last >= 0) & (run_len <= limit)
    out = v.copy()
    out[fill] = v[last[fill]]
    return out


@register("keepLastValue", [_SL, Param("limit", "intOrInf", default=INF)], "Transform")
def keep_last_value(inv: Invocation, seriesList: list[Series], limit: float = INF) -> list[Series]:
    """Continue the line with the last value across gaps of at most `limit` nulls."""
    return [_transform(s, f"keepLastValue({s.target})", keep_last(s.values, limit)) for s in seriesList]


_CONSOLIDATE_OPTIONS = ("sum", "average", "avg", "avg_zero", "min", "max", "first", "last", "count", "median")


def _consolidate_by_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    return ctx.replace(consolidate_by=canonical_method(args["consolidationFunc"]))


@register(
    "consolidateBy",
    [_SL, Param("consolidationFunc", "string", required=True, options=_CONSOLIDATE_OPTIONS)],
    "Special",
    prepare=_consolidate_by_prepare,
)
def consolidate_by(inv: Invocation, seriesList: list[Series], consolidationFunc: str) -> list[Series]:
    """Choose how points are merged when the series has more points than maxDataPoints (and which rollup
    archive serves it)."""
    method = canonical_method(consolidationFunc)
    return [
        _transform(
            s,
            f'consolidateBy({s.target},"{consolidationFunc}")',
            None,
            ("consolidateBy", consolidationFunc),
            consolidator=method,
        )
        for s in seriesList
    ]


# ----------------------------------------------------------------------------------------------------------
# moving windows


def _window_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    w = args["windowSize"]
    if isinstance(w, str):
        return ctx.replace(start=ctx.start - abs(parse_offset(w)))
    return ctx


def moving_window_values(v: np.ndarray, w: int, first: int, method: str, xff: float | None) -> np.ndarray:
    """Aggregate the w points ending at (and including) each position from `first` on (graphite-web)."""
    n = len(v)
    m = max(0, n - first)
    if w <= 0 or m == 0:
        return np.full(m, np.nan)
    padded = np.concatenate([np.full(w - 1, np.nan), v])
    isnan = np.isnan(padded)
    cnt_cs = np.concatenate([[0], np.cumsum(~isnan)])
    hi = np.arange(first, n) + w  # window covers padded[hi-w : hi]
    nonnull = cnt_cs[hi] - cnt_cs[hi - w]
    if method in ("sum", "avg", "count"):
        cs = np.concatenate([[0.0], np.cumsum(np.where(isnan, 0.0, padded))])
        total = cs[hi] - cs[hi - w]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"sum": total, "avg": total / nonnull, "count": nonnull.astype(np.float64)}[method]
    else:
        windows = sliding_window_view(padded, w)[first:]
        rows_per_chunk = max(1, 2_000_000 // w)
        out = np.concatenate(
            [
                reduce_axis(windows[i : i + rows_per_chunk], method, axis=1)
                for i in range(0, len(windows), rows_per_chunk)
            ]
        )
    out = np.asarray(out, dtype=np.float64)
    out[_xff_mask(nonnull, w, xff)] = np.nan
    return out


def _moving(
    inv: Invocation, series: list[Series], window: int | str, func: str, xff: float | None
) -> list[Series]:
    if not series:
        return []
    method = canonical_method(func)
    tag_name = "moving" + func[:1].upper() + func[1:].lower()
    if isinstance(window, str):
        preview = abs(parse_offset(window))
        data = series
    else:
        preview = max(s.step for s in series) * int(window)
        node = inv.nodes["seriesList"]
        data = inv.evaluate(node, inv.outer.replace(start=inv.outer.start - preview))
    req_start = inv.outer.start
    out = []
    for s in data:
        if isinstance(window, str):
            w = preview // s.step
            name = f'{tag_name}({s.target},"{window}")'
        else:
            w = int(window)
            name = f"{tag_name}({s.target},{window})"
        first_ts = align_forward(req_start, s.step)
        first = max(0, (first_ts - s.start) // s.step)
        vals = moving_window_values(s.values, w, first, method, xff)
        out.append(_transform(s, name, vals, (tag_name, window), start=s.start + first * s.step))
    return out


_WINDOW = Param(
    "windowSize",
    "intOrInterval",
    required=True,
    suggestions=(5, 7, 10, "1min", "5min", "10min", "30min", "1hour"),
)
_XFF = Param("xFilesFactor", "float")


@register(
    "movingWindow",
    [_SL, _WINDOW, Param("func", "aggFunc", default="average", options=_AGG_OPTIONS), _XFF],
    "Calculate",
    prepare=_window_prepare,
)
def moving_window(
    inv: Invocation,
    seriesList: list[Series],
    windowSize: int | str,
    func: str = "average",
    xFilesFactor: float | None = None,
) -> list[Series]:
    """Aggregate each point with the points before it in a window of N points or of a time interval."""
    return _moving(inv, seriesList, windowSize, func, xFilesFactor)


def _make_moving(func: str, doc: str) -> Callable[..., list[Series]]:
    def impl(
        inv: Invocation, seriesList: list[Series], windowSize: int | str, xFilesFactor: float | None = None
    ) -> list[Series]:
        return _moving(inv, seriesList, windowSize, func, xFilesFactor)

    impl.__doc__ = doc
    return impl


for _name, _func in (
    ("movingAverage", "average"),
    ("movingSum", "sum"),
    ("movingMin", "min"),
    ("movingMax", "max"),
    ("movingMedian", "median"),
):
    register(_name, [_SL, _WINDOW, _XFF], "Calculate", prepare=_window_prepare)(
        _make_moving(
            _func,
            f"{_func.capitalize()} of each point and the points before it in a window of N points "
            "or of a time interval (e.g. '5min').",
        )
    )


# ----------------------------------------------------------------------------------------------------------
# filters and sorting


def _ranked(series: list[Series], method: str, reverse: bool) -> list[Series]:
    scored = [(_sort_key(_series_score(s, method)), s) for s in series]
    scored.sort(key=lambda p: p[0], reverse=reverse)
    return [s for _, s in scored]


def _make_highest(func: str, highest: bool, doc: str) -> Callable[..., list[Series]]:
    def impl(inv: Invocation, seriesList: list[Series], n: int = 1) -> list[Series]:
        return _ranked(seriesList, canonical_method(func), highest)[: int(n)]

    impl.__doc__ = doc
    return impl


for _name, _func, _hi in (
    ("highestMax", "max", True),
    ("highestCurrent", "last", True),
    ("highestAverage", "average", True),
    ("lowestCurrent", "last", False),
    ("lowestAverage", "average", False),
):
    register(_name, [_SL, Param("n", "integer", required=True)], "Filter Series")(
        _make_highest(
            _func,
            _hi,
            f"The n series with the {'highest' if _hi else 'lowest'} "
            f"{ {'max': 'maximum', 'last': 'last value'}.get(_func, 'average') }.",
        )
    )


@register(
    "highest",
    [
        _SL,
        Param("n", "integer", default=1),
        Param("func", "aggFunc", default="average", options=_AGG_OPTIONS),
    ],
    "Filter Series",
)
def highest(inv: Invocation, seriesList: list[Series], n: int = 1, func: str = "average") -> list[Series]:
    """The n series ranking highest by an aggregation function."""
    return _ranked(seriesList, canonical_method(func), True)[: int(n)]


@register(
    "lowest",
    [
        _SL,
        Param("n", "integer", default=1),
        Param("func", "aggFunc", default="average", options=_AGG_OPTIONS),
    ],
    "Filter Series",
)
def lowest(inv: Invocation, seriesList: list[Series], n: int = 1, func: str = "average") -> list[Series]:
    """The n series ranking lowest by an aggregation function."""
    return _ranked(seriesList, canonical_method(func), False)[: int(n)]


def _compile(pattern: str) -> UserRegex:
    """A function's regex argument, on RE2 (linear time; see metrictank.regex)."""
    try:
        return compile_user_regex(pattern, f"regular expression argument {pattern[:100]!r}")
    except PatternError as e:
        raise QueryError(str(e)) from None


@register("exclude", [_SL, Param("pattern", "string", required=True)], "Filter Series")
def exclude(inv: Invocation, seriesList: list[Series], pattern: str) -> list[Series]:
    """Drop the series whose name matches a regular expression."""
    rx = _compile(pattern)
    return [s for s in seriesList if not rx.search(s.target)]


@register("grep", [_SL, Param("pattern", "string", required=True)], "Filter Series")
def grep(inv: Invocation, seriesList: list[Series], pattern: str) -> list[Series]:
    """Keep only the series whose name matches a regular expression."""
    rx = _compile(pattern)
    return [s for s in seriesList if rx.search(s.target)]


@register("removeEmptySeries", [_SL, _XFF], "Filter Series")
def remove_empty_series(
    inv: Invocation, seriesList: list[Series], xFilesFactor: float | None = None
) -> list[Series]:
    """Drop series without any value (or with too small a non-null fraction)."""
    out = []
    for s in seriesList:
        nonnull = int(np.count_nonzero(~np.isnan(s.values)))
        if not _xff_mask(np.array([nonnull]), max(1, len(s)), xFilesFactor)[0]:
            out.append(s)
    return out


@register("removeBelowValue", [_SL, Param("n", "float", required=True)], "Filter Data")
def remove_below_value(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
    """Set points below n to null."""
    out = []
    for s in seriesList:
        with np.errstate(invalid="ignore"):
            vals = np.where(s.values < n, np.nan, s.values)
        out.append(_transform(s, f"removeBelowValue({s.target}, {fmt_g(n)})", vals))
    return out


@register("removeAboveValue", [_SL, Param("n", "float", required=True)], "Filter Data")
def remove_above_value(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
    """Set points above n to null."""
    out = []
    for s in seriesList:
        with np.errstate(invalid="ignore"):
            vals = np.where(s.values > n, np.nan, s.values)
        out.append(_transform(s, f"removeAboveValue({s.target}, {fmt_g(n)})", vals))
    return out


@register(
    "sortByName",
    [_SL, Param("natural", "boolean", default=False), Param("reverse", "boolean", default=False)],
    "Sorting",
)
def sort_by_name(
    inv: Invocation, seriesList: list[Series], natural: bool = False, reverse: bool = False
) -> list[Series]:
    """Sort by name, optionally comparing runs of digits as numbers (natural)."""
    if natural:

        def key(s: Series) -> str:
            return re.sub(r"\d+", lambda m: f"{int(m.group(0)):010d}", s.target)
    else:

        def key(s: Series) -> str:
            return s.target

    return sorted(seriesList, key=key, reverse=reverse)


@register("sortByMaxima", [_SL], "Sorting")
def sort_by_maxima(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Sort by maximum value, highest first."""
    return _ranked(seriesList, "max", True)


@register("sortByMinima", [_SL], "Sorting")
def sort_by_minima(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Sort by minimum value, lowest first (series without values last)."""
    scored = [(_series_score(s, "min"), s) for s in seriesList]
    scored.sort(key=lambda p: INF if math.isnan(p[0]) else p[0])
    return [s for _, s in scored]


@register("sortByTotal", [_SL], "Sorting")
def sort_by_total(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Sort by the sum of the values, highest first."""
    return _ranked(seriesList, "sum", True)


@register(
    "sortBy",
    [
        _SL,
        Param("func", "aggFunc", default="average", options=_AGG_OPTIONS),
        Param("reverse", "boolean", default=False),
    ],
    "Sorting",
)
def sort_by(
    inv: Invocation, seriesList: list[Series], func: str = "average", reverse: bool = False
) -> list[Series]:
    """Sort by an aggregation of each series (ascending unless reverse)."""
    return _ranked(seriesList, canonical_method(func), reverse)


# ----------------------------------------------------------------------------------------------------------
# alias


@register("alias", [_SL, Param("newName", "string", required=True)], "Alias")
def alias(inv: Invocation, seriesList: list[Series], newName: str) -> list[Series]:
    """Rename the series."""
    return [s.copy(target=newName) for s in seriesList]


@register("aliasByNode", [_SL, Param("nodes", "nodeOrTag", required=True, multiple=True)], "Alias")
def alias_by_node(inv: Invocation, seriesList: list[Series], nodes: list[int | str]) -> list[Series]:
    """Rename each series to some of its path nodes (0-based, negative from the end) or tag values."""
    return [s.copy(target=agg_key(s, nodes)) for s in seriesList]


@register("aliasByTags", [_SL, Param("tags", "nodeOrTag", required=True, multiple=True)], "Alias")
def alias_by_tags(inv: Invocation, seriesList: list[Series], tags: list[int | str]) -> list[Series]:
    """Rename each series to the values of some tags (or path nodes), joined with dots."""
    return [s.copy(target=agg_key(s, tags)) for s in seriesList]


@register("aliasByMetric", [_SL], "Alias")
def alias_by_metric(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Rename each series to the last node of its path."""
    out = []
    for s in seriesList:
        base = first_path_expression(s.target) if s.target.endswith(")") else s.target
        out.append(s.copy(target=(base or s.target).split(";", 1)[0].split(".")[-1]))
    return out


@register(
    "aliasSub",
    [_SL, Param("search", "string", required=True), Param("replace", "string", required=True)],
    "Alias",
)
def alias_sub(inv: Invocation, seriesList: list[Series], search: str, replace: str) -> list[Series]:
    """Rename with a regular expression substitution (`\\1` refers to a group)."""
    rx = _compile(search)
    try:
        return [s.copy(target=rx.sub(replace, s.target)) for s in seriesList]
    except PatternError as e:
        raise QueryError(f"aliasSub: {e}") from None


@register("seriesByTag", [Param("tagExpressions", "string", required=True, multiple=True)], "Special")
def series_by_tag(inv: Invocation, tagExpressions: list[str]) -> list[Series]:
    """Series whose tags match all expressions (`tag=value`, `tag!=value`, `tag=~regex`, `tag!=~regex`,
    `tag^=prefix`); `name` is the metric name."""
    raise AssertionError("seriesByTag is resolved by the engine")


# ----------------------------------------------------------------------------------------------------------
# argument binding


def _bare_word(node: Node) -> str | None:
    from .parser import PathExpr

    return node.pattern if isinstance(node, PathExpr) else None


_EXPECTED = {
    "integer": "an integer",
    "node": "an integer",
    "float": "a number",
    "intOrInf": "an integer or inf",
    "boolean": "a boolean",
    "nodeOrTag": "a node number or tag name",
    "intOrInterval": "a number of points or an interval string",
    "date": "a time such as '-1d', 'now' or epoch seconds",
}


def convert_arg(fname: str, p: Param, node: Node) -> Any:
    """Check and convert one non-series argument node to the value the implementation receives."""
    from .parser import Literal

    def bad(expected: str) -> QueryError:
        got = (
            node.kind
            if isinstance(node, Literal)
            else ("function call" if isinstance(node, Call) else "path")
        )
        return QueryError(f"{fname}: argument {p.name!r} must be {expected}, got {got}")

    t = p.type
    if isinstance(node, Literal) and node.kind == "none":
        if p.required:  # None stands for "the default", and a required argument has none
            raise bad(_EXPECTED.get(t, f"a {t}"))
        return None
    if t in ("integer", "node"):
        if isinstance(node, Literal) and node.kind == "int":
            return node.value
        if isinstance(node, Literal) and node.kind == "float" and float(node.value).is_integer():  # type: ignore
            return int(node.value)  # type: ignore[arg-type]
        raise bad("an integer")
    if t == "float":
        if isinstance(node, Literal) and node.kind in ("int", "float"):
            return node.value
        raise bad("a number")
    if t == "intOrInf":
        if isinstance(node, Literal) and node.kind == "int":
            return node.value
        if isinstance(node, Literal) and node.kind == "float" and node.value == INF:
            return INF
        raise bad("an integer or inf")
    if t == "boolean":
        if isinstance(node, Literal):
            if node.kind == "bool":
                return node.value
            if node.kind == "int" and node.value in (0, 1):
                return bool(node.value)
            if node.kind == "string" and str(node.value).lower() in ("true", "false"):
                return str(node.value).lower() == "true"
        raise bad("a boolean")
    if t in ("nodeOrTag",):
        if isinstance(node, Literal) and node.kind in ("int", "string"):
            return node.value
        word = _bare_word(node)
        if word is not None:
            return word
        raise bad("a node number or tag name")
    if t == "intOrInterval":
        if isinstance(node, Literal) and node.kind == "int":
            return node.value
        text = node.value if isinstance(node, Literal) and node.kind == "string" else _bare_word(node)
        if isinstance(text, str):
            parse_offset(text)
            return text
        raise bad("a number of points or an interval string")
    if t == "date":
        if isinstance(node, Literal) and node.kind in ("int", "string"):
            return str(node.value)  # parsed against the request's clock where it is used
        raise bad("a time such as '-1d', 'now' or epoch seconds")
    if t in ("string", "interval", "aggFunc", "aggOrSeriesFunc", "tag"):
        if isinstance(node, Literal) and node.kind == "bool" and node.value in p.options:
            return node.value  # a boolean option, such as smartSummarize's legacy alignTo=true
        text = node.value if isinstance(node, Literal) and node.kind == "string" else _bare_word(node)
        if not isinstance(text, str):
            raise bad("a string")
        if t == "interval":
            parse_offset(text)
        elif t == "aggFunc":
            _agg_method(text)
        elif t == "aggOrSeriesFunc":
            _check_callback(text)
        if p.options and t == "string" and text not in p.options:
            raise QueryError(
                f"{fname}: invalid {p.name} {text!r}, expected one of {', '.join(sorted(map(str, p.options)))}"
            )
        return text
    if t == "any":
        if isinstance(node, Literal):
            return node.value
        return node  # a series argument, evaluated by the engine
    raise QueryError(f"{fname}: unsupported parameter type {t}")


@dataclass(slots=True)
class BoundCall:
    """A call matched against its definition: series parameters hold nodes, the others converted values."""

    fdef: FunctionDef
    values: dict[str, Any] = field(default_factory=dict)
    series_nodes: dict[str, Any] = field(default_factory=dict)


def bind(call: Call) -> BoundCall:
    """Match a call's arguments to its function's parameters (positional, then keywords) and convert them."""
    fdef = FUNCTIONS.get(call.name)
    if fdef is None:
        raise UnknownFunctionError(call.name, call.pos)
    bound = BoundCall(fdef)
    params = fdef.params
    args = list(call.args)
    pi = 0
    given: set[str] = set()
    while args:
        if pi >= len(params):
            raise QueryError(f"{call.name}: too many arguments (takes at most {len(params)})")
        p = params[pi]
        if p.multiple:
            _bind_one(call.name, bound, p, args)
            args = []
        else:
            _bind_one(call.name, bound, p, [args.pop(0)])
        given.add(p.name)
        pi += 1
    by_name = {p.name: p for p in params}
    for key, node in call.kwargs.items():
        p = by_name.get(key)
        if p is None:
            raise QueryError(f"{call.name}: unknown keyword argument {key!r}")
        if key in given:
            raise QueryError(f"{call.name}: argument {key!r} given twice")
        _bind_one(call.name, bound, p, [node])
        given.add(key)
    for p in params:
        if p.name in given:
            continue
        if p.required:
            raise QueryError(f"{call.name}: missing required argument {p.name!r}")
        if p.multiple:
            if p.type in _SERIES_TYPES:
                bound.series_nodes[p.name] = []
            else:
                bound.values[p.name] = []
        elif p.type not in _SERIES_TYPES:
            bound.values[p.name] = p.default
    return bound


def _bind_one(fname: str, bound: BoundCall, p: Param, nodes: list[Node]) -> None:
    from .parser import Literal

    if p.type in _SERIES_TYPES:
        for n in nodes:
            if isinstance(n, Literal):
                raise QueryError(
                    f"{fname}: argument {p.name!r} must be a series list, got {n.kind} {n.raw!r}"
                )
        bound.series_nodes[p.name] = nodes if p.multiple else nodes[0]
        return
    if p.type == "string" and p.name == "tagExpressions":
        vals = []
        for n in nodes:
            if not (isinstance(n, Literal) and n.kind == "string"):
                raise QueryError(f"{fname}: tag expressions must be quoted strings")
            vals.append(n.value)
        bound.values[p.name] = vals
        return
    from .parser import PathExpr

    conv = [convert_arg(fname, p, n) for n in nodes]
    if p.multiple and any(c is None for c in conv):  # None is "the default"; one of several values has none
        raise QueryError(f"{fname}: argument {p.name!r} cannot be None")
    if p.type == "any" and not p.multiple and isinstance(conv[0], PathExpr | Call):
        bound.series_nodes[p.name] = conv[0]
        return
    bound.values[p.name] = conv if p.multiple else conv[0]
    if not p.multiple and conv[0] is None and p.default is not None:
        bound.values[p.name] = p.default


# functions beyond the core set, registered into FUNCTIONS by importing their modules
from . import functions_combine, functions_filter, functions_holtwinters, functions_transform  # noqa: E402, F401
