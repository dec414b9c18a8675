"""Filter functions beyond the core set in `functions.py`: keeping or dropping whole series by an
aggregate of their values (filterSeries and its shorthands), by name (unique) or by being all zero, and
blanking points beyond a percentile.

They register into `functions.FUNCTIONS` when `functions.py` imports this module. A filtered series keeps
its name (graphite-web and Metrictank both); the percentile filters rename, as graphite-web does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .consolidate import reduce_axis
from .errors import QueryError
from .functions import (
    _AGG_OPTIONS,
    _SL,
    _XFF,
    Invocation,
    Param,
    _agg_method,
    _flatten,
    _transform,
    fmt_g,
    register,
)
from .series import Series

# graphite-web's operatorFuncs: a series without values (null aggregate) passes `!=`, `<` and `<=` only
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda v, t: not math.isnan(v) and v == t,
    "!=": lambda v, t: math.isnan(v) or v != t,
    ">": lambda v, t: not math.isnan(v) and v > t,
    ">=": lambda v, t: not math.isnan(v) and v >= t,
    "<": lambda v, t: math.isnan(v) or v < t,
    "<=": lambda v, t: math.isnan(v) or v <= t,
}


def series_aggregate(s: Series, method: str) -> float:
    """One number for a whole series (nan when it has no value), as graphite-web's aggregation functions
    compute it; `count` of a series without values is 0, not null (graphite-web's safeLen)."""
    nonnull = int(np.count_nonzero(~np.isnan(s.values)))
    if method == "count":
        return float(nonnull)
    if nonnull == 0:
        return math.nan
    return float(reduce_axis(s.values.reshape(1, -1), method, axis=1)[0])


def _filter(series: list[Series], func: str, operator: str, threshold: float) -> list[Series]:
    method = _agg_method(func)
    op = _OPERATORS.get(operator)
    if op is None:
        raise QueryError(
            f"unsupported operator {operator!r}, expected one of {', '.join(sorted(_OPERATORS))}"
        )
    return [s for s in series if op(series_aggregate(s, method), threshold)]


@register(
    "filterSeries",
    [
        _SL,
        Param("func", "aggFunc", required=True, options=_AGG_OPTIONS),
        Param("operator", "string", required=True, options=tuple(sorted(_OPERATORS))),
        Param("threshold", "float", required=True),
    ],
    "Filter Series",
)
def filter_series(
    inv: Invocation, seriesList: list[Series], func: str, operator: str, threshold: float
) -> list[Series]:
    """Keep the series whose aggregate (func over all its points) compares to the threshold with the
    operator (=, !=, >, >=, <, <=); a series without values only passes !=, < and <=."""
    return _filter(seriesList, func, operator, threshold)


def _make_threshold_filter(func: str, operator: str, doc: str) -> Callable[..., list[Series]]:
    def impl(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
        return _filter(seriesList, func, operator, n)

    impl.__doc__ = doc
    return impl


for _name, _func, _op, _what in (
    ("averageAbove", "average", ">", "average is above n"),
    ("averageBelow", "average", "<=", "average is n or less"),
    ("currentAbove", "last", ">", "last value is above n"),
    ("currentBelow", "last", "<=", "last value is n or less"),
    ("maximumAbove", "max", ">", "maximum is above n"),
    ("maximumBelow", "max", "<=", "maximum is n or less"),
    ("minimumAbove", "min", ">", "minimum is above n"),
    ("minimumBelow", "min", "<=", "minimum is n or less"),
):
    register(_name, [_SL, Param("n", "float", required=True)], "Filter Series")(
        _make_threshold_filter(
            _func,
            _op,
            f"Keep the series whose {_what} (filterSeries with {_func} and {_op}; "
            "a series without values counts as below).",
        )
    )


@register("removeZeroSeries", [_SL, _XFF], "Filter Series")
def remove_zero_series(
    inv: Invocation, seriesList: list[Series], xFilesFactor: float | None = None
) -> list[Series]:
    """Drop the series whose points are all 0 (or whose share of non-zero points is below xFilesFactor).

    Metrictank's function (graphite-web has none): a point counts as non-zero when it is not 0, so a null
    counts and a series of nulls is kept; removeEmptySeries drops those."""
    xff = xFilesFactor or 0.0
    if not 0.0 <= xff <= 1.0:
        raise QueryError(f"removeZeroSeries: xFilesFactor must be between 0 and 1, got {fmt_g(xff)}")
    out = []
    for s in seriesList:
        nonzero = int(np.count_nonzero(s.values != 0))  # NaN != 0
        if nonzero and nonzero / len(s) >= xff:
            out.append(s)
    return out


@register("unique", [Param("seriesLists", "seriesList", required=True, multiple=True)], "Filter Series")
def unique(inv: Invocation, seriesLists: list[list[Series]]) -> list[Series]:
    """The series of all lists without repeated names (the first one of a name is kept)."""
    seen: set[str] = set()
    out = []
    for s in _flatten(seriesLists):
        if s.target not in seen:
            seen.add(s.target)
            out.append(s)
    return out


@register(
    "fallbackSeries",
    [_SL, Param("fallback", "seriesList", required=True)],
    "Special",
)
def fallback_series(inv: Invocation, seriesList: list[Series], fallback: list[Series]) -> list[Series]:
    """The series list, or the fallback when the list is empty (a placeholder for a missing metric)."""
    return seriesList if seriesList else fallback


def percentile_of_sorted(vals: np.ndarray, n: float, interpolate: bool = False) -> float:
    """graphite-web's _getPercentile on already sorted non-null values (nan when there are none).

    The rank is n% of (count + 1), rounded up unless interpolating. A rank past the end (n > 100) gives
    the largest value, as in Metrictank, where graphite-web fails with an IndexError (a 500)."""
    m = len(vals)
    if m == 0:
        return math.nan
    fractional = n / 100.0 * (m + 1)
    rank = int(fractional)
    frac = fractional - rank
    if not interpolate:
        rank += math.ceil(frac)
    if rank == 0:
        p = float(vals[0])
    elif rank - 1 >= m:
        p = float(vals[-1])
    else:
        p = float(vals[rank - 1])
    if interpolate and rank < m:
        p = p + frac * (float(vals[rank]) - p)
    return p


def check_percent(fname: str, n: float) -> None:
    """A percentile must be above 0 (graphite-web asserts it, which is a 500 there)."""
    if not n > 0:
        raise QueryError(f"{fname}: the requested percent must be greater than 0, got {fmt_g(n)}")


def series_percentile(s: Series, n: float) -> float:
    """The n-th percentile of a series' non-null values (nan when it has none)."""
    vals = s.values[~np.isnan(s.values)]
    return percentile_of_sorted(np.sort(vals), n)


def _remove_percentile(series: list[Series], n: float, above: bool) -> list[Series]:
    fname = "removeAbovePercentile" if above else "removeBelowPercentile"
    check_percent(fname, n)
    out = []
    for s in series:
        p = series_percentile(s, n)
        vals = s.values.copy()
        if not math.isnan(p):
            with np.errstate(invalid="ignore"):
                vals[(vals > p) if above else (vals < p)] = np.nan
        # a series without values is kept (renamed, still empty), as graphite-web does; Metrictank drops it
        out.append(_transform(s, f"{fname}({s.target}, {fmt_g(n)})", vals))
    return out


@register("removeAbovePercentile", [_SL, Param("n", "float", required=True)], "Filter Data")
def remove_above_percentile(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
    """Set the points above the series' n-th percentile to null."""
    return _remove_percentile(seriesList, n, True)


@register("removeBelowPercentile", [_SL, Param("n", "float", required=True)], "Filter Data")
def remove_below_percentile(inv: Invocation, seriesList: list[Series], n: float) -> list[Series]:
    """Set the points below the series' n-th percentile to null."""
    return _remove_percentile(seriesList, n, False)
