"""Render pipeline: Graphite's time range semantics, maxDataPoints, validation and the source contract."""

import math

import numpy as np
import pytest

from metrictank.query.engine import render, resolve_range
from metrictank.query.errors import QueryError
from metrictank.query.source import SeriesSource, StaticSource

NOW = 1_700_000_000


def test_from_is_exclusive_until_inclusive() -> None:
    src = StaticSource({"a": (10, 10, [1, 2, 3, 4, 5])})
    out = render(["a"], 10, 40, 0, src, now=NOW)[0]
    assert out.timestamps().tolist() == [20, 30, 40]
    assert out.values.tolist() == [2, 3, 4]
    # the source is asked for Metrictank's [from+1, until+1)
    assert src.fetches[-1][2:4] == (11, 41)


def test_relative_times_and_missing_data_are_null() -> None:
    start = NOW // 60 * 60 - 3600
    src = StaticSource({"a": (start, 60, np.arange(30.0))})  # only the first half hour has data
    out = render(["a"], "-1h", "now", 0, src, now=NOW)[0]
    assert out.step == 60 and len(out) == 60
    assert out.values[:29].tolist() == list(range(1, 30))
    assert all(math.isnan(v) for v in out.values[29:])


def test_default_range_is_the_last_day() -> None:
    assert resolve_range(None, None, NOW) == (NOW - 86400, NOW)
    assert resolve_range("", "", NOW) == (NOW - 86400, NOW)


@pytest.mark.parametrize("frm, until", [(100, 100), (200, 100), ("-1h", "-2h"), ("now", "now")])
def test_from_must_be_before_until(frm, until) -> None:
    with pytest.raises(QueryError, match="from .* must be before until"):
        render(["a"], frm, until, 0, StaticSource({}), now=NOW)


def test_max_data_points_consolidates_with_nudging() -> None:
    src = StaticSource({"a": (20, 10, np.arange(1.0, 101.0))})  # ts 20..1010
    out = render(["a"], 10, 1010, 30, src, now=NOW)[0]
    # 100 points, mdp 30 -> aggNum 4 (40 s buckets covering (B-40, B]); the first bucket to start at ts 20
    # would end at 50, not a multiple of 40: the points at 20, 30, 40 are skipped and buckets end at 80, 120...
    assert out.step == 40
    assert out.timestamps()[0] == 80 and all(t % 40 == 0 for t in out.timestamps())
    assert out.values[0] == np.mean([4, 5, 6, 7])
    assert len(out) <= 30
    # data starting with a full bucket (its first point at B-30) is not trimmed
    aligned = render(["a"], 40, 1040, 30, StaticSource({"a": (50, 10, np.arange(1.0, 101.0))}), now=NOW)[0]
    assert aligned.timestamps()[0] == 80 and aligned.values[0] == np.mean([1, 2, 3, 4])


def test_max_data_points_zero_means_full_resolution() -> None:
    src = StaticSource({"a": (10, 10, np.arange(1.0, 101.0))})
    assert len(render(["a"], 0, 1000, 0, src, now=NOW)[0]) == 100


def test_targets_keep_their_order_and_all_output_is_returned() -> None:
    src = StaticSource({"b.x": (10, 10, [1]), "a.y": (10, 10, [2])})
    out = render(["b.*", "a.*", "sumSeries(*.*)"], 0, 10, 0, src, now=NOW)
    assert [s.target for s in out] == ["b.x", "a.y", "sumSeries(*.*)"]


def test_orgs_are_isolated_and_public_series_are_shared() -> None:
    src = StaticSource(
        {1: {"a.one": (10, 10, [1])}, 2: {"a.two": (10, 10, [2])}, -1: {"a.pub": (10, 10, [3])}}
    )
    assert [s.target for s in render(["a.*"], 0, 10, 0, src, org=1, now=NOW)] == ["a.one", "a.pub"]
    assert [s.target for s in render(["a.*"], 0, 10, 0, src, org=2, now=NOW)] == ["a.pub", "a.two"]


def test_static_source_implements_the_protocol() -> None:
    assert isinstance(StaticSource({}), SeriesSource)


def test_unaligned_stored_points_are_quantized_forward() -> None:
    src = StaticSource({"a": (13, 10, [1, 2, 3])})  # raw points at 13, 23, 33
    out = render(["a"], 0, 40, 0, src, now=NOW)[0]
    assert out.timestamps().tolist() == [10, 20, 30, 40]
    assert [None if math.isnan(v) else v for v in out.values] == [None, 1, 2, 3]


def test_empty_target_list() -> None:
    with pytest.raises(QueryError, match="missing target"):
        render([], 0, 10, 0, StaticSource({}), now=NOW)
