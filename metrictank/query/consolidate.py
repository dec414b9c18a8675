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
    if method in ("sum", "avg") and mat.flags.c_contiguous:
        out = _sum_unless_mixed(mat, axis)
        if out is not None:
            return out if method == "sum" else out / n
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


def _sum_unless_mixed(mat: np.ndarray, axis: int) -> np.ndarray | None:
    """Sums along `axis` when no group mixes nulls with values (None otherwise), without the copy that turns
    nulls into zeros: most groups hold no null, and a group of nulls only (the newest slot nothing reached yet)
    sums to null either way. The sum over the same values in the same layout is the same, bit for bit."""
    with np.errstate(invalid="ignore"):
        total = mat.sum(axis=axis)
    bad = np.isnan(total)  # a null in the group (or inf - inf)
    if bad.any() and not np.isnan(np.compress(bad, mat, axis=1 - axis)).all():
        return None
    return total


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


def quantize_many(
    ts: np.ndarray,
    values: np.ndarray | Sequence[np.ndarray],
    counts: np.ndarray | Sequence[int],
    start: int,
    end: int,
    step: int,
) -> tuple[int, np.ndarray]:
    """`quantize` of many series onto one grid at once: row i of the result is `quantize` of the next
    counts[i] points of ts/values (each series' timestamps ascending).

    A fetch puts all its series of one step on the same grid, so they are quantised with a fixed number of
    numpy calls per request, not per series. Data usually arrives at its interval: a series is then a few runs
    of points exactly `step` apart, each of which fills consecutive slots, so runs are copied as slices
    instead of placing every point. When every series has exactly one point on each slot, the result is the
    values reshaped: it may share memory with `values`.

    `values` may also be given as the pieces whose concatenation it is (memory and store parts of each
    series): runs are then copied straight from the pieces, saving a copy of every value.
    """
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    first = align_forward(start, step)
    last = (end - 1) // step * step
    if last < first:
        return first, np.empty((k, 0), dtype=np.float64)
    n = (last - first) // step + 1
    ts = np.asarray(ts)
    if isinstance(values, np.ndarray):
        parts = [values.astype(np.float64, copy=False)]
    else:
        parts = [np.asarray(v, dtype=np.float64) for v in values]
    sizes = np.fromiter((len(v) for v in parts), np.int64, len(parts))
    if len(ts) != int(counts.sum()) or int(sizes.sum()) != len(ts):
        raise ValueError("quantize_many: ts and values must hold sum(counts) points")
    if k and len(ts) == k * n and bool((counts == n).all()) and _on_grid(ts.reshape(k, n), first, step, n):
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return first, flat.reshape(k, n)
    out = np.empty((k, n))
    if len(ts) and _fill_runs(out, ts, parts, sizes, counts, first, step):
        return first, out
    out.fill(np.nan)
    if len(ts):
        _fill_points(out, ts, parts[0] if len(parts) == 1 else np.concatenate(parts), counts, first, step)
    return first, out


def _on_grid(ts2: np.ndarray, first: int, step: int, n: int) -> bool:
    """Whether every row of ts2 is exactly the grid first, first + step, ..."""
    grid = first + step * np.arange(n, dtype=np.int64)
    if ts2.dtype.kind in "iu" and first >= 0 and np.can_cast(np.min_scalar_type(int(grid[-1])), ts2.dtype):
        grid = grid.astype(ts2.dtype)  # compare in the narrow type: half the memory traffic for uint32
    return bool((ts2 == grid).all())


def _fill_runs(
    out: np.ndarray,
    ts: np.ndarray,
    parts: list[np.ndarray],
    sizes: np.ndarray,
    counts: np.ndarray,
    first: int,
    step: int,
) -> bool:
    """Fill all of `out` run by run, nulls between runs; False (nothing written) when the points do not form
    few enough runs.

    A run is a stretch of one series (and one value piece) whose timestamps advance by exactly `step`: its
    slots are consecutive and distinct, so only where it starts (and the grid's ends) needs arithmetic. Between
    two runs of a series `quantize`'s rule still applies: a run's first point is dropped when it lands on the
    slot of the point just before it.
    """
    k, n = out.shape
    ends = np.cumsum(counts)
    starts = ends - counts
    part_end = np.cumsum(sizes)
    brk = np.flatnonzero(np.diff(ts) != step) + 1  # where a run cannot continue (includes series changes)
    if len(brk) + k + len(parts) > max(len(ts) // 16, 64):
        return False
    run0 = np.union1d(np.union1d(brk, starts[counts > 0]), (part_end - sizes)[sizes > 0])
    run_end = np.r_[run0[1:], len(ts)]
    series = np.searchsorted(ends, run0, side="right")
    run_end = np.minimum(run_end, ends[series])
    t_first = ts[run0].astype(np.int64)
    t_last = ts[run_end - 1].astype(np.int64)
    length = run_end - run0
    if not (t_last - t_first == (length - 1) * step).all():
        return False  # a wrapped difference in the narrow dtype: not really a run
    same = series[1:] == series[:-1]
    if (same & (t_first[1:] <= t_last[:-1])).any():
        return False  # not ascending within a series: leave it to the per-point rule
    slot0 = -((first - t_first) // step)  # ceil((t - first) / step)
    lo = np.maximum(slot0, 0)
    hi = np.minimum(slot0 + length, n)
    has = hi > lo
    # the slot of the point before a run's first one: the previous run's last, if it was inside the grid
    clash = np.zeros(len(run0), dtype=bool)
    clash[1:] = same & has[:-1] & has[1:] & (lo[1:] == hi[:-1] - 1)
    lo = lo + clash
    fill = np.flatnonzero(hi > lo)
    part = np.searchsorted(part_end, run0[fill], side="right")
    src = (run0 + (lo - slot0))[fill] - (part_end - sizes)[part]  # offset in the run's piece
    flat = out.reshape(-1)
    pos = (series * n + lo)[fill].tolist()
    width = (hi - lo)[fill].tolist()
    done = 0  # runs land in ascending, disjoint ranges of `flat`: what lies between them is null
    for o, p, s, m in zip(pos, part.tolist(), src.tolist(), width, strict=True):
        if o > done:
            flat[done:o] = np.nan
        flat[o : o + m] = parts[p][s : s + m]
        done = o + m
    flat[done:] = np.nan
    return True


def _fill_points(
    out: np.ndarray, ts: np.ndarray, values: np.ndarray, counts: np.ndarray, first: int, step: int
) -> None:
    """`quantize`'s rule point by point, for all series in one go."""
    k, n = out.shape
    off = np.subtract(ts, first, dtype=np.int64)
    slot = off + (step - 1)
    slot //= step  # ceil(off / step)
    ok = (off > -step) & (slot < n)
    slot += np.repeat(np.arange(k, dtype=np.int64) * n, counts)  # flat position in out
    slot = slot[ok]
    if len(slot):
        keep = np.empty(len(slot), dtype=bool)
        keep[0] = True
        np.not_equal(slot[1:], slot[:-1], out=keep[1:])  # the first point of a slot wins
        out.reshape(-1)[slot[keep]] = values[ok][keep]
