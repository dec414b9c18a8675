"""Batched quantisation and the aggregate fast paths a 1000-series render relies on.

What users depend on: a render of many series shows exactly what quantising each series on its own shows
(`quantize`, Metrictank's Fix), whatever the shape of the data (on the grid, shifted, with gaps, irregular,
split into memory and store pieces); and sumSeries & co. give the same numbers whether the series arrive as
rows of one matrix (InstanceSource) or as separate arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.query.consolidate import quantize, quantize_many, reduce_axis
from metrictank.query.functions import aggregate_series
from metrictank.query.series import Series


@st.composite
def series_ts(draw, lo: int, hi: int, step: int) -> np.ndarray:
    """Ascending timestamps around [lo, hi) in one of the shapes real data has."""
    kind = draw(st.sampled_from(["grid", "shifted", "gaps", "irregular", "short", "empty"]))
    if kind == "empty":
        return np.empty(0, np.int64)
    if kind == "irregular":
        raw = draw(st.lists(st.integers(max(lo - 3 * step, 0), hi + 3 * step), max_size=80))
        return np.unique(np.asarray(raw, np.int64))
    shift = draw(st.integers(0, step - 1)) if kind != "grid" else 0
    first = max(lo - draw(st.integers(0, 3)) * step, 0)
    t = np.arange(first - first % step + shift, hi + draw(st.integers(0, 3)) * step, step, dtype=np.int64)
    if kind == "gaps" and len(t):
        drop = draw(st.lists(st.integers(0, len(t) - 1), max_size=10))
        t = np.delete(t, drop)
    if kind == "short":
        a = draw(st.integers(0, len(t)))
        t = t[a : a + draw(st.integers(0, 20))]
    return t


@st.composite
def batches(draw):
    step = draw(st.sampled_from([1, 2, 10, 60]))
    start = draw(st.integers(0, 500))
    end = start + draw(st.integers(-3 * step, 60 * step))
    tss = draw(st.lists(series_ts(start, max(end, start), step), max_size=6))
    return step, start, end, tss


def _pieces(vals: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(vals, sorted(min(c, len(vals)) for c in cuts))


@settings(max_examples=400, deadline=None)
@given(batches(), st.sampled_from(["array", "pieces"]), st.lists(st.integers(0, 400), max_size=5), st.data())
def test_each_row_is_quantize_of_its_series(batch, how, cuts, data) -> None:
    step, start, end, tss = batch
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    vss = [rng.normal(size=len(t)) for t in tss]
    dtype = data.draw(st.sampled_from([np.uint32, np.int64]))
    ts = np.concatenate(tss).astype(dtype) if tss else np.empty(0, dtype)
    vals = np.concatenate(vss) if vss else np.empty(0)
    values = vals if how == "array" else _pieces(vals, cuts)
    first, mat = quantize_many(ts, values, [len(t) for t in tss], start, end, step)
    want_first, want = quantize(np.empty(0, np.int64), np.empty(0), start, end, step)
    assert first == want_first
    assert mat.shape == (len(tss), len(want))
    for row, t, v in zip(mat, tss, vss, strict=True):
        assert np.array_equal(row, quantize(t, v, start, end, step)[1], equal_nan=True)


def test_full_grid_is_the_values_reshaped() -> None:
    step, start, end = 10, 1001, 1101
    grid = np.arange(1010, 1101, 10)
    ts = np.tile(grid, 3).astype(np.uint32)
    vals = np.arange(len(ts), dtype=np.float64)
    first, mat = quantize_many(ts, vals, [len(grid)] * 3, start, end, step)
    assert first == 1010
    assert mat.tolist() == vals.reshape(3, -1).tolist()


def test_runs_split_by_gaps_keep_the_first_point_of_a_slot() -> None:
    # 1010..1030 on the grid, then 1031 and 1032 both fall in slot 1040 (the first wins), then 1050.. again
    t = np.array([1010, 1020, 1030, 1031, 1032, 1050, 1060], np.int64)
    v = np.arange(7, dtype=np.float64)
    _, mat = quantize_many(t, [v[:4], v[4:]], [7], 1000, 1070, 10)
    assert np.array_equal(mat[0], quantize(t, v, 1000, 1070, 10)[1], equal_nan=True)
    assert np.isnan(mat[0, 0]) and mat[0, 1:].tolist() == [0.0, 1.0, 2.0, 3.0, 5.0, 6.0]


def test_empty_inputs_and_ranges() -> None:
    first, mat = quantize_many(np.empty(0, np.uint32), np.empty(0), [0, 0], 100, 150, 10)
    assert first == 100 and mat.shape == (2, 5) and np.isnan(mat).all()
    first, mat = quantize_many(np.array([5], np.uint32), np.ones(1), [1], 100, 100, 10)
    assert mat.shape == (1, 0)
    with pytest.raises(ValueError):
        quantize_many(np.array([5, 6], np.uint32), np.ones(1), [2], 0, 100, 10)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 200),
    st.sampled_from(["clean", "null-columns", "scattered-nulls", "infinities", "zeros"]),
    st.sampled_from(["sum", "avg"]),
    st.integers(0, 1),
    st.integers(0, 2**32 - 1),
)
def test_sum_and_avg_ignore_nulls_bit_for_bit(k, n, kind, method, axis, seed) -> None:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(k, n)) * 10.0 ** rng.integers(-3, 12)
    if kind == "null-columns":
        m[:, rng.integers(0, n, 3)] = np.nan
    elif kind == "scattered-nulls":
        m[rng.random((k, n)) < 0.05] = np.nan
    elif kind == "infinities":
        m[0, 0], m[-1, 0] = np.inf, -np.inf
    elif kind == "zeros":
        m = np.where(rng.random((k, n)) < 0.5, -0.0, 0.0)
    nulls = np.isnan(m)
    cnt = (~nulls).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(nulls, 0.0, m).sum(axis=axis)
        want = total if method == "sum" else total / cnt
    want[cnt == 0] = np.nan
    got = reduce_axis(m, method, axis)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert got[~np.isnan(got)].tobytes() == want[~np.isnan(want)].tobytes()  # same bits, -0.0 included


@pytest.mark.parametrize(
    "func", ["sumSeries", "averageSeries", "maxSeries", "multiplySeries", "stddevSeries"]
)
def test_aggregate_of_matrix_rows_equals_aggregate_of_copies(func) -> None:
    rng = np.random.default_rng(3)
    mat = rng.normal(size=(5, 40))
    mat[1, 3] = mat[:, 7] = np.nan
    rows = [Series(f"a.{i}", "a.*", {}, 100, 10, mat[i]) for i in range(5)]
    copies = [Series(f"a.{i}", "a.*", {}, 100, 10, mat[i].copy()) for i in range(5)]
    (got,) = aggregate_series(rows, func)
    (want,) = aggregate_series(copies, func)
    assert (got.start, got.step, got.target) == (want.start, want.step, want.target)
    assert np.array_equal(got.values, want.values, equal_nan=True)
    # a subset, out of order, or shifted rows are not one block: still the same answer
    for pick in ([0, 2, 4], [3, 1], [1, 2, 3]):
        (g,) = aggregate_series([rows[i] for i in pick], func)
        (w,) = aggregate_series([copies[i] for i in pick], func)
        assert np.array_equal(g.values, w.values, equal_nan=True)
    shifted = [rows[0], rows[1].copy(start=110)]
    (g,) = aggregate_series(shifted, func)
    (w,) = aggregate_series([copies[0], copies[1].copy(start=110)], func)
    assert (g.start, len(g.values)) == (w.start, len(w.values))
    assert np.array_equal(g.values, w.values, equal_nan=True)
    assert not np.isnan(mat[0, 0])  # the source matrix is left as it was
