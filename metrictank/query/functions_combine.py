"""Combine functions beyond the core set in `functions.py`: aggregation with wildcarded path nodes, pairwise
division of two series lists and percentiles across series.

They register into `functions.FUNCTIONS` when `functions.py` imports this module. Names follow graphite-web,
as the rest of the registry does: the wildcard aggregations are named after the group key (the name with
the wildcarded nodes removed), divideSeriesLists names each quotient `divideSeries(a,b)`.
"""

from __future__ import annotations

import numpy as np

from .consolidate import normalize, stack
from .errors import QueryError
from .functions import (
    _AGG_OPTIONS,
    _SL,
    Invocation,
    Param,
    _first_consolidator,
    _group_aggregate,
    _pair,
    _safe_div,
    fmt_g,
    register,
)
from .functions_filter import check_percent
from .series import Series

_POSITION = Param("position", "node", multiple=True)


def _without_positions(
    series: list[Series], positions: list[int]
) -> tuple[dict[str, list[Series]], list[str]]:
    """Group series by their name with the nodes at `positions` removed, keys in order of appearance."""
    for p in positions:
        if p < 0:
            # graphite-web silently ignores a negative position (it never matches a node index);
            # Metrictank answers 400, which tells the user why nothing was wildcarded
            raise QueryError(f"position must be zero or positive, got {p}")
    drop = set(positions)
    groups: dict[str, list[Series]] = {}
    keys: list[str] = []
    for s in series:
        key = ".".join(part for i, part in enumerate(s.target.split(".")) if i not in drop)
        if key not in groups:
            keys.append(key)
        groups.setdefault(key, []).append(s)
    return groups, keys


@register(
    ("aggregateWithWildcards", "aggregateSeriesWithWildcards"),
    [_SL, Param("func", "aggFunc", required=True, options=_AGG_OPTIONS), _POSITION],
    "Combine",
)
def aggregate_with_wildcards(
    inv: Invocation, seriesList: list[Series], func: str, position: list[int] | None = None
) -> list[Series]:
    """Aggregate the series whose names are equal once the given node positions are wildcarded, one result
    per group, named by the name without those nodes (e.g. position 1 groups `host.cpu-0.user` with
    `host.cpu-1.user` as `host.user`). `aggregateSeriesWithWildcards` is Metrictank's name for it."""
    if not seriesList:
        return []
    groups, keys = _without_positions(seriesList, position or [])
    return _group_aggregate(groups, keys, func)


def _make_wildcards(func: str, label: str) -> None:
    def impl(inv: Invocation, seriesList: list[Series], position: list[int] | None = None) -> list[Series]:
        return aggregate_with_wildcards(inv, seriesList, func, position)

    impl.__doc__ = (
        f"{label} of the series whose names are equal once the given node positions are wildcarded "
        f"(aggregateWithWildcards with {func})."
    )
    register(f"{func}SeriesWithWildcards", [_SL, _POSITION], "Combine", aggregator=True)(impl)


for _func, _label in (("sum", "Sum"), ("average", "Average"), ("multiply", "Product")):
    _make_wildcards(_func, _label)


@register(
    "divideSeriesLists",
    [
        Param("dividendSeriesList", "seriesList", required=True),
        Param("divisorSeriesList", "seriesList", required=True),
    ],
    "Combine",
)
def divide_series_lists(
    inv: Invocation, dividendSeriesList: list[Series], divisorSeriesList: list[Series]
) -> list[Series]:
    """Divide the n-th dividend by the n-th divisor (both lists in name order); null where the divisor is 0
    or null. The lists must have the same length, because pairing by position is the whole point."""
    if len(dividendSeriesList) != len(divisorSeriesList):
        raise QueryError(
            "divideSeriesLists: dividendSeriesList and divisorSeriesList must have the same number of series "
            f"(got {len(dividendSeriesList)} and {len(divisorSeriesList)})"
        )
    out = []
    for a, b in zip(dividendSeriesList, divisorSeriesList, strict=True):
        start, step, va, vb = _pair(a, b)
        name = f"divideSeries({a.target},{b.target})"
        out.append(Series(name, name, {"name": name}, start, step, _safe_div(va, vb), a.consolidator))
    return out


def percentile_columns(mat: np.ndarray, n: float, interpolate: bool) -> np.ndarray:
    """graphite-web's _getPercentile of every column of a matrix (nulls ignored; null for an empty column),
    vectorised: the rank is n% of (count + 1), rounded up unless interpolating, clamped to the values."""
    cols = np.sort(mat, axis=0)  # nulls (NaN) sort last, so a column's values are its first `count` rows
    count = (~np.isnan(mat)).sum(axis=0)
    fractional = n / 100.0 * (count + 1)
    rank = np.floor(fractional).astype(np.int64)
    frac = fractional - rank
    if not interpolate:
        rank = rank + np.ceil(frac).astype(np.int64)
    last = np.maximum(count - 1, 0)
    pick = np.clip(rank - 1, 0, last)
    out = np.take_along_axis(cols, pick[None, :], axis=0)[0]
    if interpolate:
        nxt = np.take_along_axis(cols, np.minimum(rank, last)[None, :], axis=0)[0]
        out = np.where(rank < count, out + frac * (nxt - out), out)
    out[count == 0] = np.nan
    return out


@register(
    "percentileOfSeries",
    [_SL, Param("n", "float", required=True), Param("interpolate", "boolean", default=False)],
    "Combine",
)
def percentile_of_series(
    inv: Invocation, seriesList: list[Series], n: float, interpolate: bool = False
) -> list[Series]:
    """The n-th percentile across the series at each point (nulls ignored); without interpolate it is
    always one of the values. Named after the first series' path expression, as graphite-web does."""
    check_percent("percentileOfSeries", n)
    if not seriesList:
        return []
    start, step, mat = stack(normalize(seriesList))
    name = f"percentileOfSeries({seriesList[0].path_expr},{fmt_g(n)})"
    values = percentile_columns(mat, n, interpolate)
    return [Series(name, name, {"name": name}, start, step, values, _first_consolidator(seriesList))]
