"""Consolidation, maxDataPoints, normalisation and quantisation with Metrictank's semantics."""

import numpy as np
import pytest

from metrictank.query.consolidate import (
    agg_every,
    consolidate,
    consolidate_to_max_points,
    normalize,
    normalize_to,
    nudge_skip,
    quantize,
    reduce_axis,
)
from metrictank.query.errors import QueryError
from metrictank.query.series import Series

N = np.nan


def vals(a) -> list:
    return [None if np.isnan(x) else float(x) for x in a]


def test_reduce_methods_ignore_nulls() -> None:
    mat = np.array([[1.0, N, 3.0, 4.0], [N, N, N, N], [2.0, 2.0, 8.0, N]])
    expect = {
        "sum": [8, None, 12],
        "avg": [8 / 3, None, 4],
        "min": [1, None, 2],
        "max": [4, None, 8],
        "last": [4, None, 8],
        "first": [1, None, 2],
        "count": [3, None, 3],
        "median": [3, None, 2],
        "diff": [1 - 3 - 4, None, 2 - 2 - 8],
        "range": [3, None, 6],
        "multiply": [None, None, None],
        "stddev": [np.std([1, 3, 4]), None, np.std([2, 2, 8])],
        "avg_zero": [2, None, 3],
    }
    for method, want in expect.items():
        got = vals(reduce_axis(mat, method, axis=1))
        assert got == pytest.approx(want, nan_ok=True), method
    assert vals(reduce_axis(np.array([[2.0, 3.0, 4.0]]), "multiply")) == [24]


def test_reduce_across_series_axis() -> None:
    mat = np.array([[1.0, N, 3.0], [10.0, N, N]])
    assert vals(reduce_axis(mat, "sum", axis=0)) == [11, None, 3]


def test_unknown_method() -> None:
    with pytest.raises(QueryError):
        reduce_axis(np.ones((1, 2)), "bogus")


def test_agg_every() -> None:
    assert agg_every(8640, 800) == 11
    assert agg_every(800, 800) == 1
    assert agg_every(801, 800) == 2
    assert agg_every(0, 800) == 1


def test_consolidate_stamps_last_point_and_evens_out_the_tail() -> None:
    s = Series("x", "x", {}, 10, 10, np.arange(1.0, 11.0), "avg")  # ts 10..100
    out = consolidate(s, 3)
    # groups (10,20,30) (40,50,60) (70,80,90) (100) -> last group stamped as if complete: 120
    assert out.timestamps().tolist() == [30, 60, 90, 120]
    assert vals(out.values) == [2, 5, 8, 10]
    assert out.step == 30


def test_nudging_follows_metrictank() -> None:
    # Metrictank's example: preAggInterval 5, aggNum 4, first point 15 -> strip 2 points, start at 25
    assert nudge_skip(15, 5, 4, 20) == 2
    assert nudge_skip(25, 5, 4, 20) == 0
    # few points (<= 2 buckets' worth): no nudging, so MaxDataPoints=1 keeps every point
    assert nudge_skip(15, 5, 4, 8) == 0


def test_max_data_points_consolidation_is_stable_across_refreshes() -> None:
    base = np.arange(1.0, 101.0)  # one value per 10 s, ts 10..1000
    a = Series("x", "x", {}, 10, 10, base[:60], None)  # ts 10..600
    b = Series("x", "x", {}, 20, 10, base[1:61], None)  # one step later
    ca, cb = consolidate_to_max_points(a, 20), consolidate_to_max_points(b, 20)
    assert ca.step == cb.step == 30
    # every timestamp is a multiple of the bucket span, and buckets present in both hold the same value
    assert all(t % 30 == 0 for t in ca.timestamps()) and all(t % 30 == 0 for t in cb.timestamps())
    common = set(ca.timestamps().tolist()) & set(cb.timestamps().tolist())
    da = dict(zip(ca.timestamps().tolist(), ca.values.tolist(), strict=True))
    db = dict(zip(cb.timestamps().tolist(), cb.values.tolist(), strict=True))
    full = [t for t in common if t <= 600]
    assert full and all(da[t] == db[t] for t in full)
    assert len(ca) <= 20 and len(cb) <= 20


def test_max_data_points_uses_the_series_consolidator() -> None:
    s = Series("x", "x", {}, 10, 10, np.array([1.0, 2, 3, 4]), "sum")
    out = consolidate_to_max_points(s, 2)
    assert vals(out.values) == [3, 7] and out.timestamps().tolist() == [20, 40]
    assert consolidate_to_max_points(s, 4) is s


def test_normalize_to_is_canonical() -> None:
    # step 5 -> 15: ts 10..40; pre-canonical input starts at 5 (null in front); points after 30 dropped
    s = Series("x", "x", {}, 10, 5, np.array([1.0, 2, 3, 4, 5, 6, 7]), "sum")  # ts 10,15,...,40
    out = normalize_to(s, 15)
    assert out.timestamps().tolist() == [15, 30]
    assert vals(out.values) == [1 + 2, 3 + 4 + 5]


def test_normalize_brings_series_to_the_lcm() -> None:
    a = Series("a", "a", {}, 10, 10, np.ones(6), "avg")  # 10..60
    b = Series("b", "b", {}, 15, 15, np.ones(4), "avg")  # 15..60
    na, nb = normalize([a, b])
    assert na.step == nb.step == 30
    assert na.timestamps().tolist() == [30, 60] and nb.timestamps().tolist() == [30, 60]


def test_quantize_moves_points_forward_only() -> None:
    # grid of [10, 50) at step 10: slots 10, 20, 30, 40
    ts = np.array([10, 12, 19, 31, 33, 55])
    v = np.array([1.0, 2, 3, 4, 5, 6])
    first, out = quantize(ts, v, 10, 50, 10)
    assert first == 10
    # 10 -> slot 10; 12 and 19 -> slot 20 (first wins); nothing in (20,30]; 31 and 33 -> slot 40; 55 outside
    assert vals(out) == [1, 2, None, 4]


def test_quantize_unaligned_range_and_empty_input() -> None:
    first, out = quantize(np.array([], dtype=np.int64), np.array([]), 11, 35, 10)
    assert first == 20 and vals(out) == [None, None]
    first, out = quantize(np.array([5]), np.array([1.0]), 11, 15, 10)
    assert len(out) == 0
