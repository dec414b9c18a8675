"""Consolidation: reducing groups of points, maxDataPoints, normalisation to a common step, quantisation.

Everything here is vectorised: groups of points are laid out as rows of a 2-D array and reduced along an
axis in one numpy call, so the cost is per series (or per request), not per point.

Null semantics follow Metrictank's batch aggregators (and graphite-web's `safe*` helpers): nulls are
ignored, a group with no non-null value yields null for every method (including count and sum), and
`multiply` is null as soon as one input is null.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .errors import QueryError
from .series import Series

#: accepted method names (graphite-web's aggregation functions, consolidateBy names and Metrictank's
#: spellings) -> canonical method
METHOD_ALIASES: dict[str, str] = {
    "avg": "avg",
    "average": "avg",
    "sum": "sum",
    "total": "sum",
    "min": "min",
    "max": "max",
    "last": "last",
    "lst": "last",
    "current": "last",
    "first": "first",
    "count": "count",
    "cnt": "count",
    "median": "median",
    "med": "median",
    "multiply": "multiply",
    "mult": "multiply",
    "diff": "diff",
    "stddev": "stddev",
    "range": "range",
    "rangeOf": "range",
    "avg_zero": "avg_zero",
}


def canonical_method(name: str) -> str:
    """The canonical method for an aggregation/consolidation name; QueryError for an unknown one."""
    method = METHOD_ALIASES.get(name)
    if method is None:
        raise QueryError(f"unsupported aggregation function {name!r}")
    return method


def reduce_axis(
    mat: np.ndarray, method: str, axis: int = 1, width: np.ndarray | int | None = None
) -> np.ndarray:
    """Reduce a 2-D array of values (NaN = null) along `axis` with a canonical method.

    `width` is the number of real entries per group when groups were padded with NaN at their end (partial
    buckets); only `multiply` and `avg_zero` need to tell padding from real nulls.
    """
    mat = np.asarray(mat, dtype=np.float64)
    n = mat.shape[axis]
    other = mat.shape[1 - axis]
    if n == 0:
        return np.full(other, np.nan)
    isnan = np.isnan(mat)
    cnt = n - isnan.sum(axis=axis)
    empty = cnt == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "sum":
            out = np.where(isnan, 0.0, mat).sum(axis=axis)
        elif method == "avg":
            out = np.where(isnan, 0.0, mat).sum(axis=axis) / cnt
        elif method == "min":
            out = np.fmin.reduce(mat, axis=axis)
        elif method == "max":
            out = np.fmax.reduce(mat, axis=axis)
        elif method == "range":
            out = np.fmax.reduce(mat, axis=axis) - np.fmin.reduce(mat, axis=axis)
        elif method == "count":
            out = cnt.astype(np.float64)
        elif method in ("last", "first", "diff"):
            valid = ~isnan
            if method == "last":
                idx = n - 1 - np.argmax(np.flip(valid, axis=axis), axis=axis)
            else:
                idx = np.argmax(valid, axis=axis)
            picked = np.take_along_axis(mat, np.expand_dims(idx, axis), axis=axis).squeeze(axis)
            if method == "diff":
                rest = np.where(isnan, 0.0, mat).sum(axis=axis) - np.where(empty, 0.0, picked)
                out = picked - rest
            else:
                out = picked
        elif method == "median":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = np.nanmedian(mat, axis=axis)
        elif method == "stddev":
            mean = np.where(isnan, 0.0, mat).sum(axis=axis) / cnt
            dev = np.where(isnan, 0.0, mat - np.expand_dims(mean, axis))
            out = np.sqrt((dev * dev).sum(axis=axis) / cnt)
        elif method == "multiply":
            out = np.where(isnan, 1.0, mat).prod(axis=axis)
            real = n if width is None else width
            out[cnt < real] = np.nan
        elif method == "avg_zero":
            real = n if width is None else width
            out = np.where(isnan, 0.0, mat).sum(axis=axis) / real
        else:
            raise QueryError(f"unsupported aggregation function {method!r}")
    out = np.asarray(out, dtype=np.float64)
    out[empty] = np.nan
    return out


def agg_every(num_points: int, max_points: int) -> int:
    """How many points to merge so that at most `max_points` remain (Metrictank's AggEvery)."""
    if num_points == 0 or max_points <= 0:
        return 1
    return (num_points + max_points - 1) // max_points


def consolidate_values(values: np.ndarray, agg_num: int, method: str) -> np.ndarray:
    """Reduce consecutive groups of `agg_num` points; a shorter last group is reduced on its own points."""
    n = len(values)
    if agg_num <= 1 or n == 0:
        return values.copy()
    full = n // agg_num
    out = reduce_axis(values[: full * agg_num].reshape(full, agg_num), method, axis=1)
    if n % agg_num:
        tail = reduce_axis(values[full * agg_num :].reshape(1, -1), method, axis=1)
        out = np.concatenate([out, tail])
    return out


def consolidate(series: Series, agg_num: int, skip: int = 0) -> Series:
    """Merge every `agg_num` points (after dropping `skip` leading ones).

    Each output point takes the timestamp of the last input point of its group; a trailing partial group is
    stamped where a complete group would have ended, so the output stays evenly spaced (Metrictank).
    """
    method = canonical_method(series.consolidator or "avg")
    values = series.values[skip:]
    start = series.start + skip * series.step
    out = consolidate_values(values, agg_num, method)
    return series.copy(values=out, start=start + (agg_num - 1) * series.step, step=series.step * agg_num)


def nudge_skip(start: int, step: int, agg_num: int, num_points: int) -> int:
    """Leading points to drop so every bucket ends on a multiple of step*agg_num (Metrictank's nudging).

    Stable buckets mean a refresh that moves the window by one point does not change every consolidated
    value; nudging only happens with more than two buckets' worth of points so that small inputs are not
    trimmed to almost nothing.
    """
    if num_points <= 2 * agg_num:
        return 0
    post = step * agg_num
    remainder = (start - step) % post
    return 0 if remainder == 0 else (post - remainder) // step


def consolidate_to_max_points(series: Series, max_points: int) -> Series:
    """Runtime consolidation for maxDataPoints (Metrictank's ConsolidateNudged); no-op when it already fits."""
    n = len(series)
    if max_points <= 0 or n <= max_points:
        return series
    agg_num = agg_every(n, max_points)
    skip = nudge_skip(series.start, series.step, agg_num, n)
    return consolidate(series, agg_num, skip)


def align_forward(ts: int, interval: int) -> int:
    """Smallest multiple of interval >= ts."""
    return -(-ts // interval) * interval


def normalize_to(series: Series, interval: int) -> Series:
    """Consolidate a series to a coarser step that is a multiple of its own.

    The input is first made pre-canonical (Metrictank): nulls are added in front so the first bucket is
    complete and points after the last multiple of `interval` are dropped, so every output point covers
    exactly the `interval / step` inputs ending at its own (multiple of interval) timestamp.
    """
    step = series.step
    if interval == step:
        return series
    if interval % step:
        raise ValueError(f"cannot normalise step {step} to {interval}")
    agg = interval // step
    n = len(series)
    if n == 0:
        return series.copy(start=align_forward(series.start, interval), step=interval)
    canonical_start = align_forward(series.start, interval) - interval + step
    pad = max(0, (series.start - canonical_start) // step)
    last = series.last_ts
    drop = (last - (last // interval) * interval) // step
    vals = series.values[: n - drop] if drop else series.values
    if pad:
        vals = np.concatenate([np.full(pad, np.nan), vals])
    usable = len(vals) - len(vals) % agg
    method = canonical_method(series.consolidator or "avg")
    out = reduce_axis(vals[:usable].reshape(-1, agg), method, axis=1)
    start = series.start - pad * step + (agg - 1) * step
    return series.copy(values=out, start=start, step=interval)


def normalize(series_list: Sequence[Series]) -> list[Series]:
    """Bring series to their least common step (graphite-web and Metrictank both combine at the LCM)."""
    if len(series_list) < 2:
        return list(series_list)
    steps = {s.step for s in series_list}
    if len(steps) == 1:
        return list(series_list)
    lcm = math.lcm(*steps)
    return [normalize_to(s, lcm) for s in series_list]


def stack(series_list: Sequence[Series]) -> tuple[int, int, np.ndarray]:
    """Lay series of one step on a common grid: (start, step, matrix with one row per series).

    Series usually share start and length (same query range), which is a plain stack; otherwise the grid
    spans all of them and missing positions are null.
    """
    step = series_list[0].step
    first = series_list[0]
    if all(s.start == first.start and len(s) == len(first) for s in series_list):
        return first.start, step, np.stack([s.values for s in series_list])
    start = min(s.start for s in series_list)
    end = max(s.end for s in series_list)
    n = (end - start) // step
    mat = np.full((len(series_list), n), np.nan)
    for row, s in enumerate(series_list):
        off = (s.start - start) // step
        mat[row, off : off + len(s)] = s.values
    return start, step, mat


def quantize(ts: np.ndarray, values: np.ndarray, start: int, end: int, step: int) -> tuple[int, np.ndarray]:
    """Put raw points on the step grid of [start, end) with nulls where nothing arrived (Metrictank's Fix).

    Grid slots are the multiples t of `step` with start <= t < end. Slot t takes the first point whose
    timestamp lies in (t - step, t]: values only ever move later in time (a point at 12 with step 10 is
    shown at 20), never earlier; later points of the same slot are dropped. `ts` must be sorted ascending.
    Returns (timestamp of the first slot, values); the array is empty when no slot fits the range.
    """
    first = align_forward(start, step)
    last = (end - 1) // step * step
    if last < first:
        return first, np.empty(0, dtype=np.float64)
    n = (last - first) // step + 1
    out = np.full(n, np.nan)
    if len(ts) == 0:
        return first, out
    ts = np.asarray(ts, dtype=np.int64)
    slot = -((first - ts) // step)  # ceil((ts - first) / step)
    ok = (slot >= 0) & (slot < n) & (ts > first - step)
    slot = slot[ok]
    if len(slot):
        vals = np.asarray(values, dtype=np.float64)[ok]
        keep = np.empty(len(slot), dtype=bool)
        keep[0] = True
        np.not_equal(slot[1:], slot[:-1], out=keep[1:])
        out[slot[keep]] = vals[keep]
    return first, out
