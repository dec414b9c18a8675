"""Transform and special functions beyond the core set in `functions.py`: point-wise maths (invert, log,
round, ...), renaming (substr), summaries over time (smartSummarize), regression and constant lines.

They register into `functions.FUNCTIONS` when `functions.py` imports this module. Names follow
graphite-web, as the rest of the registry does (`log(a.b, 10)`, `round(a.b,2)`, `scaleToSeconds(a.b,1)`),
and a transform's name becomes its path expression (graphite-web's TimeSeries.copy does the same). Where
Metrictank answers differently and the docstring does not say otherwise, graphite-web 1.1.10 is followed;
the exceptions are listed in docs/http-api.md.

Functions that read data outside the requested range declare a `prepare` hook, like summarize and
timeShift do: linearRegression reads its source range, smartSummarize with alignTo reads from the aligned
start, and both read at full resolution (maxDataPoints 0) since their buckets are their own.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import numpy as np

from metrictank.regex import PatternError

from .consolidate import align_forward, reduce_axis
from .errors import QueryError
from .functions import (
    _AGG_OPTIONS,
    _SL,
    EvalContext,
    Invocation,
    Param,
    _agg_method,
    _compile,
    _transform,
    consolidate_by,
    fmt_g,
    register,
)
from .functions_filter import check_percent, series_aggregate, series_percentile
from .limits import charge_points, current_limits
from .parser import Literal, find_calls, parse_target
from .series import Series
from .timeparse import parse_duration, parse_offset, parse_time

# ----------------------------------------------------------------------------------------------------------
# helpers


def py_round(values: np.ndarray, ndigits: int) -> np.ndarray:
    """Python's round() of every finite value: graphite-web rounds with it, so halves go to the even
    neighbour (round(2.5) == 2) and decimal digits are rounded exactly, which numpy's scaling does not."""
    out = values.copy()
    ok = np.isfinite(values)
    out[ok] = [round(float(v), ndigits) for v in values[ok]]
    return out


def bucket_reduce(values: np.ndarray, bucket: np.ndarray, nb: int, method: str) -> np.ndarray:
    """Reduce values grouped by a non-decreasing bucket index in [0, nb); a bucket without a non-null value
    is null (graphite-web's xff test with the default xFilesFactor)."""
    if nb == 0:
        return np.empty(0)
    counts = np.bincount(bucket, minlength=nb)
    width = max(1, int(counts.max()) if len(counts) else 1)
    first_idx = np.searchsorted(bucket, np.arange(nb))
    mat = np.full((nb, width), np.nan)
    mat[bucket, np.arange(len(bucket)) - first_idx[bucket]] = values
    out = reduce_axis(mat, method, axis=1, width=counts)
    nonnull = np.bincount(bucket, weights=~np.isnan(values), minlength=nb)
    out[nonnull == 0] = np.nan
    return out


ALIGN_UNITS = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")


def align_start(ts: int, unit: str, tz: tzinfo | None) -> int:
    """The start of the calendar unit (in the request's time zone) that ts falls in; weeks start on
    Monday, as graphite-web aligns them."""
    dt = datetime.fromtimestamp(ts, tz or UTC)
    midnight = {"hour": 0, "minute": 0, "second": 0, "microsecond": 0}
    if unit == "years":
        dt = dt.replace(month=1, day=1, **midnight)
    elif unit == "months":
        dt = dt.replace(day=1, **midnight)
    elif unit == "weeks":
        dt = dt.replace(**midnight) - timedelta(days=dt.isoweekday() - 1)
    elif unit == "days":
        dt = dt.replace(**midnight)
    elif unit == "hours":
        dt = dt.replace(minute=0, second=0, microsecond=0)
    elif unit == "minutes":
        dt = dt.replace(second=0, microsecond=0)
    elif unit != "seconds":
        raise QueryError(f"invalid alignment unit {unit!r}, expected one of {', '.join(ALIGN_UNITS)}")
    return int(dt.timestamp())


# ----------------------------------------------------------------------------------------------------------
# point-wise transforms


@register("invert", [_SL], "Transform")
def invert(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """1/x of every point (null where x is 0 or null)."""
    out = []
    for s in seriesList:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = 1.0 / s.values
        vals[s.values == 0] = np.nan
        out.append(_transform(s, f"invert({s.target})", vals, ("invert", 1)))
    return out


@register("isNonNull", [_SL], "Transform")
def is_non_null(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """1 where the series has a value, 0 where it is null: counts reporting series when summed."""
    return [
        _transform(s, f"isNonNull({s.target})", (~np.isnan(s.values)).astype(np.float64), ("isNonNull", 1))
        for s in seriesList
    ]


@register(("log", "logarithmic"), [_SL, Param("base", "float", default=10)], "Transform")
def logarithm(inv: Invocation, seriesList: list[Series], base: float = 10) -> list[Series]:
    """Logarithm of every point in the given base (default 10); null for values of 0 or less.

    graphite-web declares the base an integer; a fractional base is accepted as Metrictank does."""
    if not base > 0 or base == 1:
        raise QueryError(f"log: base must be positive and not 1, got {fmt_g(base)}")
    out = []
    for s in seriesList:
        vals = np.full(len(s), np.nan)
        pos = s.values > 0  # False for NaN
        vals[pos] = np.log(s.values[pos]) / math.log(base)
        out.append(_transform(s, f"log({s.target}, {base})", vals, ("log", base)))
    return out


@register("minMax", [_SL], "Transform")
def min_max(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Scale each series to [0, 1] by its own minimum and maximum (0 everywhere when they are equal)."""
    out = []
    for s in seriesList:
        vals = s.values
        if np.isnan(vals).all():
            out.append(_transform(s, f"minMax({s.target})", vals.copy()))
            continue
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
        new = np.zeros(len(s)) if hi == lo else (vals - lo) / (hi - lo)
        new[np.isnan(vals)] = np.nan
        out.append(_transform(s, f"minMax({s.target})", new))
    return out


@register("offsetToZero", [_SL], "Transform")
def offset_to_zero(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """Subtract the series' minimum from every point, so its lowest point is 0."""
    out = []
    for s in seriesList:
        if np.isnan(s.values).all():
            out.append(_transform(s, f"offsetToZero({s.target})", s.values.copy()))
            continue
        lo = float(np.nanmin(s.values))
        out.append(_transform(s, f"offsetToZero({s.target})", s.values - lo, ("offsetToZero", lo)))
    return out


def _given(inv: Invocation, index: int, name: str) -> bool:
    """Whether the call spelled out an argument (positionally at `index`, or by keyword) other than None."""
    node = inv.call.args[index] if len(inv.call.args) > index else inv.call.kwargs.get(name)
    return node is not None and not (isinstance(node, Literal) and node.kind == "none")


@register("round", [_SL, Param("precision", "integer", default=0)], "Transform")
def round_function(inv: Invocation, seriesList: list[Series], precision: int = 0) -> list[Series]:
    """Round every point to `precision` decimal digits (negative: to tens, hundreds, ...), halves to even
    as graphite-web's Python round() does (Metrictank rounds halves away from zero)."""
    given = _given(inv, 1, "precision")
    out = []
    for s in seriesList:
        name = f"round({s.target},{precision})" if given else f"round({s.target})"
        out.append(_transform(s, name, py_round(s.values, precision), ("round", precision)))
    return out


@register("scaleToSeconds", [_SL, Param("seconds", "float", required=True)], "Transform")
def scale_to_seconds(inv: Invocation, seriesList: list[Series], seconds: float) -> list[Series]:
    """Turn a per-step value into a per-`seconds` value (value * seconds / step), rounded to 6 decimals
    as graphite-web and Metrictank both do."""
    return [
        _transform(
            s,
            f"scaleToSeconds({s.target},{int(seconds)})",
            py_round(s.values * (seconds / s.step), 6),
            ("scaleToSeconds", seconds),
        )
        for s in seriesList
    ]


@register(
    "substr",
    [_SL, Param("start", "node", default=0), Param("stop", "node", default=0)],
    "Special",
)
def substr(inv: Invocation, seriesList: list[Series], start: int = 0, stop: int = 0) -> list[Series]:
    """Rename each series to a slice of the nodes of the path inside its innermost call (Python slice
    rules: negative counts from the end, stop 0 means to the end); the path expression is kept."""
    out = []
    for s in seriesList:
        name = s.target
        left = name.rfind("(") + 1
        right = name.find(")")
        if right < 0:
            right = len(name) + 1
        parts = name[left:right].split(".")
        new = ".".join(parts[start:] if stop == 0 else parts[start:stop])
        out.append(s.copy(target=re.sub(",.*$", "", new)))  # substr(f(a.b,'c'),1) is b, not b,'c'
    return out


# ----------------------------------------------------------------------------------------------------------
# special


def _cumulative_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    return ctx.replace(consolidate_by="sum")


@register("cumulative", [_SL], "Special", prepare=_cumulative_prepare)
def cumulative(inv: Invocation, seriesList: list[Series]) -> list[Series]:
    """consolidateBy(seriesList, 'sum'): points merged for maxDataPoints (and rollups read) are summed."""
    return consolidate_by(inv, seriesList, "sum")


@register("constantLine", [Param("value", "float", required=True)], "Special")
def constant_line(inv: Invocation, value: float) -> list[Series]:
    """A line at the given value across the requested range: three points, at from, the middle and
    until (graphite-web's shape; a one-second range gets one point)."""
    first, last = inv.outer.start - 1, inv.outer.end - 1  # graphite's from and until
    step = (last - first) // 2
    name = str(value)
    if step <= 0:
        return [Series(name, f"constantLine({value})", {"name": name}, first, 1, np.array([float(value)]))]
    return [Series(name, f"constantLine({value})", {"name": name}, first, step, np.full(3, float(value)))]


# ----------------------------------------------------------------------------------------------------------
# calculate


def _regression_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    tz = ctx.tz or UTC
    start, end = ctx.start, ctx.end
    if args.get("startSourceAt") is not None:
        start = parse_time(args["startSourceAt"], ctx.now, tz) + 1
    if args.get("endSourceAt") is not None:
        end = parse_time(args["endSourceAt"], ctx.now, tz) + 1
    if start >= end:
        raise QueryError(
            f"linearRegression: the source range must not be empty (from {start - 1} until {end - 1})"
        )
    return ctx.replace(start=start, end=end, max_data_points=0)


def regression(s: Series) -> tuple[float, float] | None:
    """Least squares (factor, offset) with value = offset + factor * timestamp over the non-null points;
    None with fewer than two of them (graphite-web's _linearRegressionAnalysis)."""
    idx = np.flatnonzero(~np.isnan(s.values)).astype(np.float64)
    n = len(idx)
    v = s.values[~np.isnan(s.values)]
    sum_i, sum_v, sum_ii, sum_iv = idx.sum(), v.sum(), (idx * idx).sum(), (idx * v).sum()
    den = n * sum_ii - sum_i * sum_i
    if den == 0:
        return None
    factor = (n * sum_iv - sum_i * sum_v) / den / s.step
    offset = (sum_ii * sum_v - sum_iv * sum_i) / den - factor * s.start
    return float(factor), float(offset)


@register(
    "linearRegression",
    [_SL, Param("startSourceAt", "date"), Param("endSourceAt", "date")],
    "Calculate",
    prepare=_regression_prepare,
)
def linear_regression(
    inv: Invocation,
    seriesList: list[Series],
    startSourceAt: str | None = None,
    endSourceAt: str | None = None,
) -> list[Series]:
    """The least-squares line through each series' points in a source range (default: the requested
    range), drawn over the requested range; series with fewer than two points in the source are left out.

    The source series is read at full resolution, so the line does not depend on maxDataPoints."""
    src_from, src_until = inv.ctx.start - 1, inv.ctx.end - 1
    out = []
    for s in seriesList:
        fit = regression(s)
        if fit is None:
            continue
        factor, offset = fit
        start = align_forward(inv.outer.start, s.step)
        n = max(0, (inv.outer.end - 1 - start) // s.step + 1)
        ts = start + s.step * np.arange(n, dtype=np.float64)
        name = f"linearRegression({s.target}, {src_from}, {src_until})"
        out.append(
            _transform(
                s,
                name,
                offset + ts * factor,
                ("linearRegressions", f"{src_from}, {src_until}"),
                start=start,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# summaries


def _smart_summarize_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    ctx = ctx.replace(max_data_points=0)
    align = args.get("alignTo")
    if isinstance(align, str):  # a boolean is the legacy alignToFrom, which graphite-web ignores
        ctx = ctx.replace(start=align_start(ctx.start - 1, align, ctx.tz) + 1)
    return ctx


@register(
    "smartSummarize",
    [
        _SL,
        Param("intervalString", "interval", required=True, suggestions=("10min", "1h", "1d")),
        Param("func", "aggFunc", default="sum", options=_AGG_OPTIONS),
        Param("alignTo", "string", options=(None, *ALIGN_UNITS, True, False)),
    ],
    "Transform",
    prepare=_smart_summarize_prepare,
)
def smart_summarize(
    inv: Invocation, seriesList: list[Series], intervalString: str, func: str = "sum", alignTo: Any = None
) -> list[Series]:
    """Aggregate points into buckets of the interval that start at the first point of the range (with
    alignTo: at the start of the year, month, week, day, hour or minute the range starts in, which is
    read from there), each bucket [t, t+interval) stamped t. Metrictank registers smartSummarize without
    computing it (it returns its input); graphite-web's result is followed."""
    interval = parse_duration(intervalString)
    if interval <= 0:
        raise QueryError(f"smartSummarize: interval {intervalString!r} is zero")
    method = _agg_method(func)
    out = []
    nbs = [-(-len(s) * s.step // interval) for s in seriesList]
    charge_points(sum(nbs))  # a finer interval than the data's makes points, as in summarize: all before any
    for s, nb in zip(seriesList, nbs, strict=True):
        bucket = (s.timestamps() - s.start) // interval
        vals = bucket_reduce(s.values, bucket, nb, method)
        name = f'smartSummarize({s.target}, "{intervalString}", "{func}")'
        tags = dict(s.tags)
        tags["smartSummarize"] = intervalString
        tags["smartSummarizeFunction"] = func
        out.append(Series(name, name, tags, s.start, interval, vals, None))
    return out


# ----------------------------------------------------------------------------------------------------------
# graphite-web functions Metrictank proxies to graphite-web


@register("nPercentile", [_SL, Param("n", "float", required=True)], "Calculate")
def n_percentile(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
    """A flat line at each series' n-th percentile (of its non-null points); series without values are
    left out."""
    check_percent("nPercentile", n)
    out = []
    for s in seriesList:
        p = series_percentile(s, n)
        if math.isnan(p):
            continue
        out.append(
            _transform(s, f"nPercentile({s.target}, {fmt_g(n)})", np.full(len(s), p), ("nPercentile", n))
        )
    return out


def _delay_values(v: np.ndarray, steps: int, first: int, count: int) -> np.ndarray:
    """The `count` values from index `first` on, each replaced by the value `steps` points earlier."""
    src = np.arange(first, first + count) - steps
    out = np.full(count, np.nan)
    ok = (src >= 0) & (src < len(v))
    out[ok] = v[src[ok]]
    return out


@register("delay", [_SL, Param("steps", "integer", required=True)], "Transform")
def delay(inv: Invocation, seriesList: list[Series], steps: int) -> list[Series]:
    """Shift the values `steps` points later (earlier when negative), keeping the timestamps.

    graphite-web leaves the first `steps` points null; here the points before the range are read, so
    they hold the values they are delayed from (null only where that data does not exist either)."""
    if not seriesList or steps == 0:
        return [
            _transform(s, f"delay({s.target},{steps})", s.values.copy(), ("delay", steps)) for s in seriesList
        ]
    preview = max(s.step for s in seriesList) * abs(steps)
    wide = (
        inv.outer.replace(start=inv.outer.start - preview)
        if steps > 0
        else inv.outer.replace(end=inv.outer.end + preview)
    )
    data = {s.target: s for s in inv.evaluate(inv.nodes["seriesList"], wide)}
    out = []
    for s in seriesList:
        w = data.get(s.target)
        if w is None or w.step != s.step:
            vals = _delay_values(s.values, steps, 0, len(s))
        else:
            vals = _delay_values(w.values, steps, (s.start - w.start) // s.step, len(s))
        out.append(_transform(s, f"delay({s.target},{steps})", vals, ("delay", steps)))
    return out


def null_run_lengths(isnan: np.ndarray) -> np.ndarray:
    """For each position, the length of the run of nulls it belongs to (0 for a value)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], isnan.astype(np.int8), [0]])))
    lengths = edges[1::2] - edges[0::2]
    out = np.zeros(len(isnan), dtype=np.int64)
    out[isnan] = np.repeat(lengths, lengths)
    return out


def interpolate_values(v: np.ndarray, limit: float) -> np.ndarray:
    """Fill runs of at most `limit` nulls that have a value on both sides with the straight line between
    those values; nulls at the start or the end stay null (graphite-web)."""
    isnan = np.isnan(v)
    valid = np.flatnonzero(~isnan)
    if not isnan.any() or len(valid) < 2:
        return v.copy()
    idx = np.arange(len(v))
    fill = isnan & (idx > valid[0]) & (idx < valid[-1]) & (null_run_lengths(isnan) <= limit)
    out = v.copy()
    out[fill] = np.interp(idx[fill], valid, v[valid])
    return out


@register("interpolate", [_SL, Param("limit", "intOrInf", default=math.inf)], "Transform")
def interpolate(inv: Invocation, seriesList: list[Series], limit: float = math.inf) -> list[Series]:
    """Bridge gaps of at most `limit` nulls with a straight line between the values around them."""
    return [
        _transform(s, f"interpolate({s.target})", interpolate_values(s.values, limit)) for s in seriesList
    ]


@register("integralByInterval", [_SL, Param("intervalUnit", "string", required=True)], "Transform")
def integral_by_interval(inv: Invocation, seriesList: list[Series], intervalUnit: str) -> list[Series]:
    """Running total that restarts at 0 every interval, counted from the start of the requested range;
    a null adds nothing and shows the total so far."""
    interval = abs(parse_offset(intervalUnit))
    if interval == 0:
        raise QueryError(f"integralByInterval: interval {intervalUnit!r} is zero")
    origin = inv.outer.start - 1  # graphite's from
    out = []
    for s in seriesList:
        ts = s.timestamps()
        group = (ts - origin) // interval
        cs = np.cumsum(np.where(np.isnan(s.values), 0.0, s.values))
        starts = np.ones(len(s), dtype=bool)
        starts[1:] = group[1:] != group[:-1]
        before = np.concatenate([[0.0], cs[:-1]])  # running total up to the previous point
        base = np.maximum.accumulate(np.where(starts, np.arange(len(s)), 0)) if len(s) else np.zeros(0, int)
        vals = cs - before[base]
        name = f"integralByInterval({s.target},'{intervalUnit}')"
        out.append(_transform(s, name, vals, ("integralByInterval", intervalUnit)))
    return out


def _hitcount_prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    ctx = ctx.replace(max_data_points=0)
    if args.get("alignToInterval"):
        interval = parse_duration(args["intervalString"])
        unit = (
            "days"
            if interval >= 86400
            else "hours"
            if interval >= 3600
            else "minutes"
            if interval >= 60
            else None
        )
        if unit is not None:
            ctx = ctx.replace(start=align_start(ctx.start - 1, unit, ctx.tz) + 1)
    return ctx


def _coverage(x: np.ndarray, start: int, step: int, weights: np.ndarray) -> np.ndarray:
    """sum over points i of weights[i] * (seconds of [start + i*step, start + (i+1)*step) before x)."""
    n = len(weights)
    cs = np.concatenate([[0.0], np.cumsum(weights * step)])
    j = np.clip((x - start) // step, 0, n)
    partial = np.zeros(len(x))
    inside = (j < n) & (x > start)
    partial[inside] = weights[j[inside]] * (x[inside] - (start + j[inside] * step))
    return cs[j] + partial


@register(
    "hitcount",
    [
        _SL,
        Param("intervalString", "interval", required=True, suggestions=("10min", "1h", "1d")),
        Param("alignToInterval", "boolean", default=False),
    ],
    "Transform",
    prepare=_hitcount_prepare,
)
def hitcount(
    inv: Invocation, seriesList: list[Series], intervalString: str, alignToInterval: bool = False
) -> list[Series]:
    """Turn a per-second rate into the number of hits per interval: each point's value counts once per
    second of its step, split over the buckets its step overlaps. Buckets end at the end of the data (with
    alignToInterval: start at the start of the day, hour or minute the range starts in)."""
    interval = parse_duration(intervalString)
    if interval <= 0:
        raise QueryError(f"hitcount: interval {intervalString!r} is zero")
    out = []
    ends = [
        s.start + ((s.end - s.start) // interval) * interval + interval if alignToInterval else s.end
        for s in seriesList
    ]
    nbs = [-(-(end - s.start) // interval) for s, end in zip(seriesList, ends, strict=True)]
    charge_points(sum(nbs))  # a finer interval than the data's makes points, as in summarize: all before any
    for s, end, nb in zip(seriesList, ends, nbs, strict=True):
        new_start = end - nb * interval
        edges = new_start + interval * np.arange(nb + 1, dtype=np.int64)
        isnan = np.isnan(s.values)
        hits = np.diff(_coverage(edges, s.start, s.step, np.where(isnan, 0.0, s.values)))
        seen = np.diff(_coverage(edges, s.start, s.step, (~isnan).astype(np.float64)))
        vals = np.where(seen > 0, hits, np.nan)
        suffix = ", true" if alignToInterval else ""
        name = f'hitcount({s.target}, "{intervalString}"{suffix})'
        out.append(_transform(s, name, vals, ("hitcount", intervalString), start=new_start, step=interval))
    return out


_UNIT_SYSTEMS = {
    "binary": (("Pi", 1024.0**5), ("Ti", 1024.0**4), ("Gi", 1024.0**3), ("Mi", 1024.0**2), ("Ki", 1024.0)),
    "si": (("P", 1000.0**5), ("T", 1000.0**4), ("G", 1000.0**3), ("M", 1000.0**2), ("k", 1000.0)),
}


def format_units(v: float, system: str) -> tuple[float, str]:
    """graphite-web's format_units: the value in the largest unit it reaches, and that unit's prefix."""
    for prefix, size in _UNIT_SYSTEMS[system]:
        if abs(v) >= size:
            v2 = v / size
            if (v2 - math.floor(v2)) < 0.00000000001 and v > 1:
                v2 = float(math.floor(v2))
            return v2, prefix
    if (v - math.floor(v)) < 0.00000000001 and v > 1:
        v = float(math.floor(v))
    return v, ""


_LEGEND_TYPES = (*_AGG_OPTIONS, *(f"{f}Series" for f in _AGG_OPTIONS), "si", "binary")


def _legend_value(s: Series, value_type: str) -> Any:
    try:
        method = _agg_method(value_type)
    except QueryError:
        return "(?)"
    v = series_aggregate(s, method)
    if method == "count":
        return int(v)
    return None if math.isnan(v) else v


@register(
    "legendValue",
    [_SL, Param("valuesTypes", "string", multiple=True, options=_LEGEND_TYPES)],
    "Alias",
)
def legend_value(inv: Invocation, seriesList: list[Series], valuesTypes: list[str]) -> list[Series]:
    """Append aggregates of each series to its name (`a.b (avg: 2.5)`); a last argument of si or binary
    formats them with unit prefixes in fixed-width columns instead, as graphite-web does."""
    types = list(valuesTypes)
    system = None
    if types and types[-1] in ("si", "binary"):
        system = types.pop()
    out = []
    for s in seriesList:
        name = s.target
        for vt in types:
            value = _legend_value(s, vt)
            if system is None:
                name += f" ({vt}: {value})"
            else:
                text = value
                if not (isinstance(value, str) or value is None):
                    scaled, prefix = format_units(value, system)
                    text = f"{scaled:.2f}{prefix}"
                name = f"{name:<20}{vt:<5}{text!s:<10}"
        out.append(s.copy(target=name))
    return out


_HUGE_FIELD = re.compile(r"%[-+ #0]*(?:\d{3,}|\*|\d*\.(?:\d{3,}|\*))")


def percent_format(fmt: str, value: float) -> str:
    """`fmt % value` as graphite-web names aliasQuery's series, refusing field widths of 100 or more (which
    would let a target allocate without bound) and answering 400 for a format that does not fit."""
    if _HUGE_FIELD.search(fmt):
        raise QueryError(f"aliasQuery: field width or precision too large in {fmt!r}")
    try:
        return fmt % value
    except (TypeError, ValueError, OverflowError, KeyError) as e:
        raise QueryError(f"aliasQuery: newName {fmt!r} does not format one number: {e}") from None


@register(
    "aliasQuery",
    [
        _SL,
        Param("search", "string", required=True),
        Param("replace", "string", required=True),
        Param("newName", "string", required=True),
    ],
    "Alias",
)
def alias_query(
    inv: Invocation, seriesList: list[Series], search: str, replace: str, newName: str
) -> list[Series]:
    """Rename each series with the last value of another query: the series name, rewritten with the
    search regex and replacement, is evaluated as a target over the same range, and newName is
    %-formatted with the last non-null value of its first series (e.g. 'cpu %d')."""
    rx = _compile(search)  # RE2, like every user regex: linear whatever the pattern and the name
    out = []
    for s in seriesList:
        try:
            query = rx.sub(replace, s.target)
        except PatternError as e:
            raise QueryError(f"aliasQuery: {e}") from None
        lim = current_limits()  # the request's own: the rewritten query is a target like the others
        tree = parse_target(query, lim.max_nesting_depth, lim.max_target_length)
        if any(c.name == "aliasQuery" for c in find_calls(tree)):
            raise QueryError(f"aliasQuery: the query {query!r} must not itself use aliasQuery")
        found = inv.evaluate(tree, inv.outer)
        if not found:
            raise QueryError(f"aliasQuery: no series found with query {query!r}")
        last = series_aggregate(found[0], "last")
        if math.isnan(last):
            raise QueryError(f"aliasQuery: cannot get the last value of series {found[0].target!r}")
        out.append(s.copy(target=percent_format(newName, last)))
    return out
