"""The functions registered by functions_combine / functions_filter / functions_transform (and the
graphite-web-only ones), against results worked out by hand in the comments (graphite-web semantics and
names unless a test says it checks a Metrictank choice).

Data: 10 s series with points at ts 10..50; queries use from=0 (exclusive) until=50 (inclusive) unless said.
"""

import json
import math

import pytest

from metrictank.query.engine import render
from metrictank.query.errors import QueryError
from metrictank.query.functions import FUNCTIONS, dumps_functions, functions_json
from metrictank.query.source import StaticSource

N = math.nan
DATA = {
    "a.b.c": (10, 10, [1, 2, 3, 4, 5]),
    "a.b.d": (10, 10, [10, N, 30, 40, 50]),
    "a.x.c": (10, 10, [5, 4, 3, 2, 1]),
    "a.x.d": (10, 10, [N, N, N, N, N]),
    "z.zero": (10, 10, [0, 0, 0, 0, 0]),
    "z.mix": (10, 10, [0, N, 2, -4, 0]),
    "h.cpu-0.user": (10, 10, [1, 1, 1, 1, 1]),
    "h.cpu-1.user": (10, 10, [2, 2, N, 2, 2]),
    "h.cpu-0.sys": (10, 10, [3, 3, 3, 3, 3]),
    "h.cpu-1.sys": (10, 10, [4, 4, 4, 4, N]),
    "k": (10, 10, [1, 2, 3, 10, 20]),
    # one point a minute from ts 3060 to 4200, each worth its minute number (3060 -> 51)
    "hr.s": (3060, 60, [float(m) for m in range(51, 71)]),
    "g.s": (10, 10, [1, N, N, 4, N]),
    "g.lead": (10, 10, [N, 2, N, 6, N]),
    "hw.s": (10, 10, [10, 20, 10, 20, 10, 20]),
    "val.a": (10, 10, [7, 8, 9, N, 12.6]),
    "val.none": (10, 10, [N, N, N, N, N]),
    "big": (10, 10, [1500, 2048, 3e6, N, N]),
    "x.1": (10, 10, [1] * 5),
    "x.1a": (10, 10, [1] * 5),
    "x.1ab": (10, 10, [1] * 5),
    "x.1abc": (10, 10, [1] * 5),
}
TS = [10, 20, 30, 40, 50]


@pytest.fixture
def src() -> StaticSource:
    return StaticSource(DATA)


def run(src, target, from_=0, until=50, mdp=0):
    out = render([target], from_, until, mdp, src, now=1000)
    return [
        (s.target, s.timestamps().tolist(), [None if math.isnan(v) else v for v in s.values]) for s in out
    ]


def one(src, target, **kw):
    out = run(src, target, **kw)
    assert len(out) == 1, out
    return out[0]


def names(src, target, **kw):
    return [o[0] for o in run(src, target, **kw)]


def bad(src, target, fragment, **kw):
    with pytest.raises(QueryError) as e:
        run(src, target, **kw)
    assert fragment in str(e.value)
    assert e.value.status == 400


# ----------------------------------------------------------------------------------------------------------
# combine


def test_series_with_wildcards(src) -> None:
    # fetched in name order: cpu-0.sys, cpu-0.user, cpu-1.sys, cpu-1.user; dropping node 1 gives h.sys, h.user
    assert run(src, "sumSeriesWithWildcards(h.*.*, 1)") == [
        ("h.sys", TS, [7, 7, 7, 7, 3]),  # 3+4, ..., 3+null
        ("h.user", TS, [3, 3, 1, 3, 3]),  # 1+2, ..., 1+null
    ]
    assert run(src, "averageSeriesWithWildcards(h.*.*, 1)") == [
        ("h.sys", TS, [3.5, 3.5, 3.5, 3.5, 3]),
        ("h.user", TS, [1.5, 1.5, 1, 1.5, 1.5]),
    ]
    # a product with a null factor is null
    assert run(src, "multiplySeriesWithWildcards(h.*.*, 1)") == [
        ("h.sys", TS, [12, 12, 12, 12, None]),
        ("h.user", TS, [2, 2, None, 2, 2]),
    ]


def test_aggregate_with_wildcards(src) -> None:
    assert run(src, "aggregateWithWildcards(h.*.*, 'max', 1)") == [
        ("h.sys", TS, [4, 4, 4, 4, 3]),
        ("h.user", TS, [2, 2, 1, 2, 2]),
    ]
    # Metrictank's name for the same function
    assert run(src, "aggregateSeriesWithWildcards(h.*.*, 'max', 1)") == run(
        src, "aggregateWithWildcards(h.*.*, 'max', 1)"
    )
    # both nodes wildcarded: one group of all four, 1+2+3+4, 1+2+3+4, 1+3+4, 10, 1+2+3
    assert one(src, "aggregateWithWildcards(h.*.*, 'sum', 1, 2)") == ("h", TS, [10, 10, 8, 10, 6])
    # no position: every series is its own group and keeps its name
    assert names(src, "aggregateWithWildcards(h.cpu-0.*, 'sum')") == ["h.cpu-0.sys", "h.cpu-0.user"]
    assert run(src, "sumSeriesWithWildcards(no.such.*, 1)") == []


def test_aggregate_with_wildcards_errors(src) -> None:
    bad(src, "sumSeriesWithWildcards(h.*.*, -1)", "must be zero or positive")
    bad(src, "aggregateWithWildcards(h.*.*, 'nope', 1)", "unsupported aggregation function")
    bad(src, "aggregateWithWildcards(h.*.*)", "missing required argument 'func'")


def test_divide_series_lists(src) -> None:
    # pairs in name order: (a.b.c, a.x.c) and (a.b.d, a.x.d)
    assert run(src, "divideSeriesLists(a.b.*, a.x.*)") == [
        ("divideSeries(a.b.c,a.x.c)", TS, [0.2, 0.5, 1, 2, 5]),
        ("divideSeries(a.b.d,a.x.d)", TS, [None] * 5),  # the divisor is all null
    ]
    assert one(src, "divideSeriesLists(a.b.c, z.zero)")[2] == [None] * 5  # division by 0 is null
    bad(src, "divideSeriesLists(a.b.*, a.x.c)", "same number of series (got 2 and 1)")


# ----------------------------------------------------------------------------------------------------------
# filter


# per series of a.*.*: a.b.c avg 3 max 5 min 1 last 5; a.b.d avg 32.5 max 50 min 10 last 50;
# a.x.c avg 3 max 5 min 1 last 1; a.x.d no value
@pytest.mark.parametrize(
    "target, expected",
    [
        ("filterSeries(a.*.*, 'max', '>', 5)", ["a.b.d"]),
        ("filterSeries(a.*.*, 'max', '>=', 5)", ["a.b.c", "a.b.d", "a.x.c"]),
        ("filterSeries(a.*.*, 'average', '=', 3)", ["a.b.c", "a.x.c"]),
        ("filterSeries(a.*.*, 'average', '!=', 3)", ["a.b.d", "a.x.d"]),  # no value passes !=
        ("filterSeries(a.*.*, 'average', '<', 3)", ["a.x.d"]),
        ("filterSeries(a.*.*, 'avg', '<=', 3)", ["a.b.c", "a.x.c", "a.x.d"]),
        ("filterSeries(a.*.*, 'count', '=', 0)", ["a.x.d"]),  # count of no value is 0, not null
        ("filterSeries(a.*.*, 'count', '=', 4)", ["a.b.d"]),
        ("averageAbove(a.*.*, 3)", ["a.b.d"]),
        ("averageBelow(a.*.*, 3)", ["a.b.c", "a.x.c", "a.x.d"]),
        ("currentAbove(a.*.*, 1)", ["a.b.c", "a.b.d"]),
        ("currentBelow(a.*.*, 1)", ["a.x.c", "a.x.d"]),
        ("maximumAbove(a.*.*, 5)", ["a.b.d"]),
        ("maximumBelow(a.*.*, 5)", ["a.b.c", "a.x.c", "a.x.d"]),
        ("minimumAbove(a.*.*, 1)", ["a.b.d"]),
        ("minimumBelow(a.*.*, 1)", ["a.b.c", "a.x.c", "a.x.d"]),
    ],
)
def test_filter_series(src, target, expected) -> None:
    assert names(src, target) == expected


def test_filter_series_keeps_the_series_unchanged(src) -> None:
    assert run(src, "maximumAbove(a.b.*, 5)") == [("a.b.d", TS, [10, None, 30, 40, 50])]


def test_filter_series_errors(src) -> None:
    bad(src, "filterSeries(a.*.*, 'max', '~', 1)", "invalid operator")
    bad(src, "filterSeries(a.*.*, 'nope', '>', 1)", "unsupported aggregation function")
    bad(src, "averageAbove(a.*.*, 'x')", "must be a number")
    bad(src, "currentAbove(a.*.*)", "missing required argument 'n'")


def test_remove_zero_series(src) -> None:
    # Metrictank's rule: a point counts unless it is 0, so nulls count and an all-null series stays
    assert names(src, "removeZeroSeries(z.*)") == ["z.mix"]
    assert names(src, "removeZeroSeries(a.x.d)") == ["a.x.d"]
    # z.mix: null, 2 and -4 count: 3 of 5
    assert names(src, "removeZeroSeries(z.mix, 0.6)") == ["z.mix"]
    assert names(src, "removeZeroSeries(z.mix, 0.7)") == []
    bad(src, "removeZeroSeries(z.mix, 2)", "between 0 and 1")


def test_unique(src) -> None:
    assert names(src, "unique(a.b.c, a.*.c, a.b.c)") == ["a.b.c", "a.x.c"]
    assert names(src, "unique(alias(a.b.c, 'x'), alias(a.x.c, 'x'))") == ["x"]


def test_fallback_series(src) -> None:
    assert one(src, "fallbackSeries(no.such, a.b.c)") == ("a.b.c", TS, [1, 2, 3, 4, 5])
    assert names(src, "fallbackSeries(a.x.c, a.b.c)") == ["a.x.c"]
    assert run(src, "fallbackSeries(no.such, no.other)") == []
    bad(src, "fallbackSeries(no.such)", "missing required argument 'fallback'")


def test_remove_above_below_percentile(src) -> None:
    # a.b.d's values sorted: 10 30 40 50; the 50th percentile's rank is 0.5 * (4 + 1) = 2.5, rounded up to
    # 3: the third value, 40
    assert one(src, "removeAbovePercentile(a.b.d, 50)") == (
        "removeAbovePercentile(a.b.d, 50)",
        TS,
        [10, None, 30, 40, None],
    )
    assert one(src, "removeBelowPercentile(a.b.d, 50)") == (
        "removeBelowPercentile(a.b.d, 50)",
        TS,
        [None, None, None, 40, 50],
    )
    # 20th: rank 0.2 * 5 = 1 -> the first value, 10; nothing is below it
    assert one(src, "removeBelowPercentile(a.b.d, 20)")[2] == [10, None, 30, 40, 50]
    # past 100 the rank is past the end: the largest value (graphite-web fails there)
    assert one(src, "removeAbovePercentile(a.b.d, 150)")[2] == [10, None, 30, 40, 50]
    # a series without values is kept, renamed
    assert one(src, "removeAbovePercentile(a.x.d, 50)") == (
        "removeAbovePercentile(a.x.d, 50)",
        TS,
        [None] * 5,
    )
    bad(src, "removeAbovePercentile(a.b.d, 0)", "greater than 0")
    bad(src, "removeBelowPercentile(a.b.d, -5)", "greater than 0")


# ----------------------------------------------------------------------------------------------------------
# transform


@pytest.mark.parametrize(
    "target, name, values",
    [
        ("invert(z.mix)", "invert(z.mix)", [None, None, 0.5, -0.25, None]),  # 1/0 is null
        ("isNonNull(a.b.d)", "isNonNull(a.b.d)", [1, 0, 1, 1, 1]),
        ("isNonNull(a.x.d)", "isNonNull(a.x.d)", [0, 0, 0, 0, 0]),
        ("log(a.b.d)", "log(a.b.d, 10)", [1, None, math.log10(30), math.log10(40), math.log10(50)]),
        ("log(z.mix, 2)", "log(z.mix, 2)", [None, None, 1, None, None]),  # 0 and -4 have no log
        (
            "logarithmic(a.b.c, 2.5)",
            "log(a.b.c, 2.5)",
            [math.log(v) / math.log(2.5) for v in (1, 2, 3, 4, 5)],
        ),
        # min 10, max 50: (v - 10) / 40
        ("minMax(a.b.d)", "minMax(a.b.d)", [0, None, 0.5, 0.75, 1]),
        ("minMax(z.zero)", "minMax(z.zero)", [0, 0, 0, 0, 0]),  # max == min
        ("minMax(a.x.d)", "minMax(a.x.d)", [None] * 5),
        ("offsetToZero(z.mix)", "offsetToZero(z.mix)", [4, None, 6, 0, 4]),  # min -4
        ("offsetToZero(a.x.d)", "offsetToZero(a.x.d)", [None] * 5),
        # 0.25 0.5 0.75 1 1.25, halves to even: 0 0 1 1 1
        ("round(scale(a.b.c, 0.25))", "round(scale(a.b.c,0.25))", [0, 0, 1, 1, 1]),
        ("round(scale(a.b.c, 0.25), 1)", "round(scale(a.b.c,0.25),1)", [0.2, 0.5, 0.8, 1, 1.2]),
        # 15 45 60 75 to tens, halves to even: 20 40 60 80
        ("round(scale(a.b.d, 1.5), -1)", "round(scale(a.b.d,1.5),-1)", [20, None, 40, 60, 80]),
        ("a.b.c | round(precision=0)", "round(a.b.c,0)", [1, 2, 3, 4, 5]),
        # per 10 s step -> per second: / 10
        ("scaleToSeconds(a.b.c, 1)", "scaleToSeconds(a.b.c,1)", [0.1, 0.2, 0.3, 0.4, 0.5]),
        ("scaleToSeconds(a.b.d, 60)", "scaleToSeconds(a.b.d,60)", [60, None, 180, 240, 300]),
        # factor 4e-7: 4e-7 8e-7 1.2e-6 1.6e-6 2e-6, rounded to 6 decimals; the name truncates the seconds
        ("scaleToSeconds(a.b.c, 0.000004)", "scaleToSeconds(a.b.c,0)", [0, 1e-6, 1e-6, 2e-6, 2e-6]),
    ],
)
def test_point_transforms(src, target, name, values) -> None:
    got = one(src, target)
    assert got[0] == name and got[1] == TS
    assert [v is None for v in got[2]] == [v is None for v in values]
    assert [v for v in got[2] if v is not None] == pytest.approx([v for v in values if v is not None])


def test_transform_tags(src) -> None:
    out = render(["invert(a.b.c)", "log(a.b.c, 2)", "offsetToZero(z.mix)", "round(a.b.c, 2)"], 0, 50, 0, src)
    assert [(s.tags.get("invert"), s.path_expr) for s in out[:1]] == [("1", "invert(a.b.c)")]
    assert out[1].tags["log"] == "2"
    assert out[2].tags["offsetToZero"] == "-4.0"
    assert out[3].tags["round"] == "2"


def test_transform_errors(src) -> None:
    bad(src, "log(a.b.c, 1)", "base must be positive and not 1")
    bad(src, "log(a.b.c, -2)", "base must be positive and not 1")
    bad(src, "round(a.b.c, 1.5)", "must be an integer")
    bad(src, "scaleToSeconds(a.b.c)", "missing required argument 'seconds'")
    bad(src, "invert(a.b.c, 1)", "too many arguments")


def test_substr(src) -> None:
    assert names(src, "substr(a.b.c, 1)") == ["b.c"]
    assert names(src, "substr(a.b.c, 0, 2)") == ["a.b"]
    assert names(src, "substr(a.b.c, -1)") == ["c"]
    assert names(src, "substr(a.b.c, 5)") == [""]
    # the path inside the innermost call, without the call's other arguments
    out = render(["substr(scale(a.b.c, 2), 1)"], 0, 50, 0, src, now=1000)
    assert [(s.target, s.path_expr) for s in out] == [("b.c", "scale(a.b.c,2)")]
    bad(src, "substr(a.b.c, 'x')", "must be an integer")


def test_cumulative_is_consolidate_by_sum(src) -> None:
    # 5 points to at most 2: (1+2+3), (4+5)
    assert one(src, "cumulative(a.b.c)", mdp=2) == ('consolidateBy(a.b.c,"sum")', [30, 60], [6, 9])
    assert src.fetches[-1][5] == "sum"


def test_constant_line(src) -> None:
    # from 0 until 50: three points at from, the middle and until
    assert one(src, "constantLine(42)") == ("42", [0, 25, 50], [42, 42, 42])
    assert one(src, "constantLine(1.5)", until=51) == ("1.5", [0, 25, 50], [1.5, 1.5, 1.5])
    assert one(src, "constantLine(7)", from_=49, until=50) == ("7", [49], [7])
    out = render(["constantLine(42)"], 0, 50, 0, src)
    assert out[0].path_expr == "constantLine(42)"
    assert src.fetches == []
    bad(src, "constantLine()", "missing required argument 'value'")
    bad(src, "constantLine(a.b.c)", "must be a number")


def test_linear_regression(src) -> None:
    # a.b.d's points by index: (0,10) (2,30) (3,40) (4,50): n 4, sum i 9, sum v 130, sum i*i 29,
    # sum i*v 380; denominator 4*29 - 9*9 = 35; slope (4*380 - 9*130)/35 = 10 per point = 1 per second;
    # intercept (29*130 - 380*9)/35 = 10 at index 0 (ts 10): the line v = ts
    assert one(src, "linearRegression(a.b.d)") == ("linearRegression(a.b.d, 0, 50)", TS, [10, 20, 30, 40, 50])
    # source (0, 30]: k's 1, 2, 3 -> v = ts / 10, drawn over the requested range
    assert one(src, "linearRegression(k, 0, 30)") == ("linearRegression(k, 0, 30)", TS, [1, 2, 3, 4, 5])
    assert src.fetches[-1][2:5] == (1, 31, 0)
    assert one(src, "linearRegression(k, endSourceAt='-970s')")[2] == [1, 2, 3, 4, 5]  # now 1000 - 970
    # the whole of k (1 2 3 10 20): mean index 2, mean value 7.2, slope 46 / 10 = 4.6 per point,
    # intercept 7.2 - 2 * 4.6 = -2 at index 0
    assert one(src, "linearRegression(k)")[2] == pytest.approx([-2, 2.6, 7.2, 11.8, 16.4])
    assert run(src, "linearRegression(a.x.d)") == []  # fewer than two points


def test_linear_regression_errors(src) -> None:
    bad(src, "linearRegression(k, '-1h', '-2h')", "source range must not be empty")
    bad(src, "linearRegression(k, 'not a time')", "invalid time 'not a time'")


def test_smart_summarize(src) -> None:
    # buckets start at the first point (10): [10, 30) [30, 50) [50, 70)
    assert one(src, "smartSummarize(a.b.d, '20s')") == (
        'smartSummarize(a.b.d, "20s", "sum")',
        [10, 30, 50],
        [10, 70, 50],
    )
    assert one(src, "smartSummarize(a.b.d, '20s', 'avg')")[2] == [10, 35, 50]
    assert one(src, "smartSummarize(a.x.d, '20s')")[2] == [None, None, None]
    assert src.fetches[-1][4] == 0  # read at full resolution


def test_smart_summarize_align_to(src) -> None:
    # request (3700, 3900]: points 3720 (62) 3780 (63) 3840 (64) 3900 (65) -> buckets of 2 min from 3720
    assert one(src, "smartSummarize(hr.s, '2min')", from_=3700, until=3900) == (
        'smartSummarize(hr.s, "2min", "sum")',
        [3720, 3840],
        [62 + 63, 64 + 65],
    )
    # aligned to the hour (3600): read from there, so points 3660 (61) .. 3900 (65)
    got = one(src, "smartSummarize(hr.s, '2min', 'sum', 'hours')", from_=3700, until=3900)
    assert got[1:] == ([3660, 3780, 3900], [61 + 62, 63 + 64, 65])
    assert src.fetches[-1][2] == 3601
    # the legacy boolean (alignToFrom) is ignored
    assert one(src, "smartSummarize(hr.s, '2min', 'sum', true)", from_=3700, until=3900)[2] == [125, 129]
    bad(src, "smartSummarize(hr.s, '2min', 'sum', 'fortnights')", "invalid alignTo")
    bad(src, "smartSummarize(hr.s, '0s')", "is zero")
    bad(src, "smartSummarize(hr.s)", "missing required argument 'intervalString'")


# ----------------------------------------------------------------------------------------------------------
# graphite-web only


def test_percentile_of_series(src) -> None:
    # per point two values (1,5) (2,4) (3,3) (4,2) (5,1): rank 0.5 * 3 = 1.5, rounded up to 2: the larger
    assert one(src, "percentileOfSeries(a.*.c, 50)") == ("percentileOfSeries(a.*.c,50)", TS, [5, 4, 3, 4, 5])
    # interpolated: rank 1 plus half the way to the second value: the middle
    assert one(src, "percentileOfSeries(a.*.c, 50, true)")[2] == [3, 3, 3, 3, 3]
    # at 20 only a.b.c has a value: rank 0.5 * 2 = 1, that value
    assert one(src, "percentileOfSeries(a.b.*, 50)")[2] == [10, 2, 30, 40, 50]
    assert one(src, "percentileOfSeries(a.x.d, 50)")[2] == [None] * 5
    assert run(src, "percentileOfSeries(no.such, 50)") == []
    bad(src, "percentileOfSeries(a.*.c, 0)", "greater than 0")


def test_n_percentile(src) -> None:
    # a.b.d's 50th percentile is 40 (see above); a.x.d has no value and is left out
    assert run(src, "nPercentile(a.*.d, 50)") == [("nPercentile(a.b.d, 50)", TS, [40] * 5)]
    # 1st: rank 0.01 * 5 = 0.05, rounded up to 1: the smallest
    assert one(src, "nPercentile(a.b.d, 1)")[2] == [10] * 5
    bad(src, "nPercentile(a.b.d, 0)", "greater than 0")


def test_delay(src) -> None:
    assert one(src, "delay(a.b.c, 2)") == ("delay(a.b.c,2)", TS, [None, None, 1, 2, 3])
    # the points before the range are read, so the delayed values are there (graphite-web: null)
    assert one(src, "delay(a.b.c, 2)", from_=20) == ("delay(a.b.c,2)", [30, 40, 50], [1, 2, 3])
    assert src.fetches[-1][2] == 21 - 20
    # negative: values from later, read past the end of the range
    assert one(src, "delay(a.b.c, -2)", until=30) == ("delay(a.b.c,-2)", [10, 20, 30], [3, 4, 5])
    assert one(src, "delay(a.b.c, 7)")[2] == [None] * 5
    assert one(src, "delay(a.b.d, 1)")[2] == [None, 10, None, 30, 40]
    bad(src, "delay(a.b.c, 'x')", "must be an integer")


def test_interpolate(src) -> None:
    # 1 _ _ 4: the line through them gives 2 and 3; the trailing null stays
    assert one(src, "interpolate(g.s)") == ("interpolate(g.s)", TS, [1, 2, 3, 4, None])
    assert one(src, "interpolate(g.s, 1)")[2] == [1, None, None, 4, None]  # a gap of 2 > limit 1
    assert one(src, "interpolate(g.s, 2)")[2] == [1, 2, 3, 4, None]
    # a leading null is never filled
    assert one(src, "interpolate(g.lead)")[2] == [None, 2, 4, 6, None]
    assert one(src, "interpolate(a.x.d)")[2] == [None] * 5
    bad(src, "interpolate(g.s, 'x')", "must be an integer or inf")


def test_integral_by_interval(src) -> None:
    # from 0, 20 s intervals: ts 10 | 20 30 | 40 50; a null adds nothing and shows the total so far
    assert one(src, "integralByInterval(a.b.d, '20s')") == (
        "integralByInterval(a.b.d,'20s')",
        TS,
        [10, 0, 30, 40, 90],
    )
    # counted from the range's start: from 5 the intervals are ts 10 20 | 30 40 | 50
    assert one(src, "integralByInterval(a.b.d, '20s')", from_=5)[2] == [10, 10, 30, 70, 50]
    bad(src, "integralByInterval(a.b.d, 'bogus')", "invalid")
    bad(src, "integralByInterval(a.b.d, '0s')", "is zero")


def test_hitcount(src) -> None:
    # each point counts its value once per second of [ts, ts+10); buckets end at the end of the data (60)
    assert one(src, "hitcount(a.b.c, '20s')") == (
        'hitcount(a.b.c, "20s")',
        [0, 20, 40],
        [10, 20 + 30, 40 + 50],
    )
    # 15 s buckets from 0: [0,15) gets 5 s of 1; [15,30) 5 s of 1 + 10 s of 2; [30,45) 10 s of 3 + 5 s of 4;
    # [45,60) 5 s of 4 + 10 s of 5
    assert one(src, "hitcount(a.b.c, '15s')")[1:] == ([0, 15, 30, 45], [5, 25, 50, 70])
    assert one(src, "hitcount(a.b.d, '20s')")[2] == [100, 300, 900]
    assert one(src, "hitcount(g.s, '10s')")[2] == [10, None, None, 40, None]  # a bucket of nulls is null


def test_hitcount_align_to_interval(src) -> None:
    # (3700, 4200]: points 3720 (62) .. 4200 (70), data ends at 4260; one hour bucket ending there
    assert one(src, "hitcount(hr.s, '1h')", from_=3700, until=4200) == (
        'hitcount(hr.s, "1h")',
        [660],
        [sum(range(62, 71)) * 60],
    )
    # aligned to the hour: read from 3600, so 3660 (61) .. 4200, one bucket starting at the first point
    got = one(src, "hitcount(hr.s, '1h', true)", from_=3700, until=4200)
    assert got == ('hitcount(hr.s, "1h", true)', [3660], [sum(range(61, 71)) * 60])
    assert src.fetches[-1][2] == 3601


def test_legend_value(src) -> None:
    # a.b.d: average of 10 30 40 50 is 32.5, 4 values, last 50
    assert names(src, "legendValue(a.b.d, 'avg', 'count', 'last')") == [
        "a.b.d (avg: 32.5) (count: 4) (last: 50.0)"
    ]
    assert names(src, "legendValue(a.x.d, 'max')") == ["a.x.d (max: None)"]
    # with a unit system: name, type and value in columns of 20, 5 and 10; 3e6 is 3.00M, or 2.86Mi
    assert names(src, "legendValue(big, 'max', 'si')") == ["big                 max  3.00M     "]
    assert names(src, "legendValue(big, 'max', 'binary')") == ["big                 max  2.86Mi    "]
    out = render(["legendValue(a.b.d, 'avg')"], 0, 50, 0, src, now=1000)
    assert out[0].path_expr == "a.b.d"  # only the name changes
    bad(src, "legendValue(a.b.d, 'nope')", "invalid valuesTypes 'nope'")


def test_alias_query(src) -> None:
    # a.b.c -> query val.a, whose last value is 12.6
    assert names(src, r"aliasQuery(a.b.c, 'a\.b\.(.*)', 'val.a', 'cpu %d')") == ["cpu 12"]
    assert names(src, r"aliasQuery(a.b.*, 'a\.b\.(.*)', 'val.a', '%.2f of \1')") == [
        "12.60 of \\1",
        "12.60 of \\1",
    ]
    assert names(src, r"aliasQuery(a.b.c, 'a.b.c', 'sumSeries(val.a, val.a)', 'x%g')") == ["x25.2"]


def test_alias_query_errors(src) -> None:
    bad(src, "aliasQuery(a.b.c, 'a', 'no.such', '%d')", "no series found with query 'no.such.b.c'")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'val.none', '%d')", "cannot get the last value")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'val.a', '%d %d')", "does not format one number")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'val.a', '%999999999d')", "too large")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'val.a', '%*d')", "too large")
    bad(src, "aliasQuery(a.b.c, '(', 'val.a', '%d')", "invalid regular expression")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'aliasQuery(val.a, \"x\", \"y\", \"z\")', '%d')", "must not itself")
    bad(src, "aliasQuery(a.b.c, 'a.b.c', 'sum(', '%d')", "unbalanced parenthesis")


def test_alias_query_regex_is_a_user_regex(src) -> None:
    # the search regex is compiled like every user regex (RE2: linear time, Metrictank's syntax), so a
    # construct Python's backtracking `re` would accept is refused with the reason, and a replacement naming a
    # group the pattern lacks is a 400
    bad(src, r"aliasQuery(a.b.c, '(a)\1', 'val.a', '%d')", "backreferences and lookaround are not supported")
    bad(src, "aliasQuery(a.b.c, 'a(?=b)', 'val.a', '%d')", "backreferences and lookaround are not supported")
    bad(src, r"aliasQuery(a.b.c, 'a', '\2', '%d')", "aliasQuery: bad replacement")


# hw.s is 10 20 10 20 ...; with a 20 s bootstrap and a 20 s season (2 points) from 30, the model learns from
# ts 20 on. By hand, with alpha = gamma = 0.1, beta = 0.0035 (i: intercept, s: slope, S: seasonal, p: the
# prediction made for the point, d: deviation):
#   ts 20 (20): p 20, i 20, s 0, S 0, next p 20, d 0
#   ts 30 (10): p 20, i .1*10 + .9*20 = 19, s .0035*(19-20) = -.0035, S .1*(10-19) = -.9,
#               next p 19 - .0035 + S(ts 20) 0 = 18.9965, d .1*|10-20| = 1
#   ts 40 (20): p 18.9965, i .1*20 + .9*18.9965 = 19.09685, s .0035*.09685 + .9965*-.0035 = -.003148775,
#               S .1*(20-19.09685) = .090315, next p 19.09685 - .003148775 + S(ts 30) -.9 = 18.193701225,
#               d .1*|20-18.9965| + .9*d(ts 20) 0 = .10035
#   ts 50 (10): p 18.193701225, i .1*(10+.9) + .9*(19.09685-.003148775) = 18.2743311025,
#               s .0035*(18.2743311025-19.09685) + .9965*-.003148775 = -.00601657042875,
#               next p 18.2743311025 - .00601657042875 + S(ts 40) .090315 = 18.35862953207125,
#               d .1*|10-18.193701225| + .9*d(ts 30) 1 = 1.7193701225
#   ts 60 (20): p 18.35862953207125, d .1*|20-18.35862953207125| + .9*d(ts 40) .10035 = .254452046792875
HW_TS = [40, 50, 60]
HW_P = [18.9965, 18.193701225, 18.35862953207125]
HW_D = [0.10035, 1.7193701225, 0.254452046792875]


def test_holt_winters_forecast(src) -> None:
    got = one(src, "holtWintersForecast(hw.s, '20s', '20s')", from_=30, until=60)
    assert got[0] == "holtWintersForecast(hw.s)" and got[1] == HW_TS
    assert got[2] == pytest.approx(HW_P)
    assert src.fetches[-1][2:5] == (31 - 20, 61, 0)  # bootstrap before the range, full resolution


def test_holt_winters_confidence_bands(src) -> None:
    out = run(src, "holtWintersConfidenceBands(hw.s, 3, '20s', '20s')", from_=30, until=60)
    assert [o[0] for o in out] == ["holtWintersConfidenceLower(hw.s)", "holtWintersConfidenceUpper(hw.s)"]
    assert out[0][2] == pytest.approx([p - 3 * d for p, d in zip(HW_P, HW_D, strict=True)])
    assert out[1][2] == pytest.approx([p + 3 * d for p, d in zip(HW_P, HW_D, strict=True)])
    assert out[0][2][0] == pytest.approx(18.69545) and out[1][2][1] == pytest.approx(23.3518115925)
    bands = render(["holtWintersConfidenceBands(hw.s, 3, '20s', '20s')"], 30, 60, 0, src, now=1000)
    assert {s.path_expr for s in bands} == {"hw.s"}


def test_holt_winters_aberration(src) -> None:
    # ts 40: 20 above the upper band 19.29755; ts 50: 10 below the lower 13.0355908575; ts 60: 20 above 19.1219...
    got = one(src, "holtWintersAberration(hw.s, 3, '20s', '20s')", from_=30, until=60)
    assert got[0] == "holtWintersAberration(hw.s)"
    assert got[2] == pytest.approx([0.70245, 10 - 13.0355908575, 20 - (HW_P[2] + 3 * HW_D[2])])
    # a wide band contains every point
    assert one(src, "holtWintersAberration(hw.s, 1000, '20s', '20s')", from_=30, until=60)[2] == [0, 0, 0]


def test_holt_winters_default_bootstrap_reads_a_week_before(src) -> None:
    got = one(src, "holtWintersForecast(a.b.c)")
    assert src.fetches[-1][2] == 1 - 7 * 86400
    # no history: no prediction for ts 10; then p(20) = 1 (i 1, s 0); at 20 i .1*2 + .9*1 = 1.1,
    # s .0035*.1 = .00035 -> p(30) 1.10035; at 30 i .1*3 + .9*1.10035 = 1.290315,
    # s .0035*.190315 + .9965*.00035 = .0010148775 -> p(40) 1.2913298775
    assert got[2][0] is None
    assert got[2][1:4] == pytest.approx([1, 1.10035, 1.2913298775])


def test_holt_winters_errors(src) -> None:
    bad(src, "holtWintersForecast(a.b.c, '7d', '10s')", "at least two points")
    bad(src, "holtWintersForecast(a.b.c, 'bogus')", "invalid")
    bad(src, "holtWintersConfidenceBands(a.b.c, 'x')", "must be an integer")


# ----------------------------------------------------------------------------------------------------------
# strings and the function catalogue


def test_alias_sub_replacement_keeps_backslashes(src) -> None:
    # the replacement is \\1X as typed, which re.sub reads as a literal backslash, 1 and X (graphite-web)
    assert names(src, r'aliasSub(a.b.c, "(c)", "\\1X")') == ["a.b.\\1X"]
    assert names(src, r"aliasSub(a.b.c, '(c)', '\1X')") == ["a.b.cX"]
    assert names(src, r"alias(a.b.c, 'it\'s')") == ["it\\'s"]


def test_functions_document_matches_graphite_web_shape() -> None:
    text = dumps_functions(functions_json()).decode()
    assert '"default":1e9999' in text and "Infinity" not in text
    doc = json.loads(text)
    assert doc["keepLastValue"]["params"][1] == {"name": "limit", "type": "intOrInf", "default": math.inf}
    assert doc["movingAverage"]["params"][1]["suggestions"] == [
        5,
        7,
        10,
        "1min",
        "5min",
        "10min",
        "30min",
        "1hour",
    ]
    assert doc["smartSummarize"]["params"][3]["options"] == [
        False,
        None,
        True,
        "days",
        "hours",
        "minutes",
        "months",
        "seconds",
        "weeks",
        "years",
    ]
    # an aggFunc parameter lists graphite-web's aggregation functions
    assert "rangeOf" in doc["filterSeries"]["params"][1]["options"]
    assert doc["filterSeries"]["params"][2]["options"] == ["!=", "<", "<=", "=", ">", ">="]
    assert doc["transformNull"]["params"][1]["default"] == 0
    assert doc["holtWintersForecast"]["params"][1] == {
        "name": "bootstrapInterval",
        "type": "interval",
        "default": "7d",
        "suggestions": ["7d", "30d"],
    }
    assert doc["interpolate"]["params"][1]["default"] == math.inf
    assert {doc[n]["group"] for n in ("unique", "removeZeroSeries", "averageAbove")} == {"Filter Series"}
    assert doc["cumulative"]["group"] == doc["substr"]["group"] == "Special"
    # a string that merely contains the word is left alone
    assert dumps_functions({"d": "Infinity, really"}) == b'{"d":"Infinity, really"}'


def test_every_metrictank_native_function_is_registered() -> None:
    native = (
        "aggregateWithWildcards averageAbove averageBelow averageSeriesWithWildcards constantLine cumulative "
        "currentAbove currentBelow divideSeriesLists fallbackSeries filterSeries invert isNonNull "
        "linearRegression log maximumAbove maximumBelow minMax minimumAbove minimumBelow "
        "multiplySeriesWithWildcards offsetToZero removeAbovePercentile removeBelowPercentile "
        "removeZeroSeries round scaleToSeconds smartSummarize substr sumSeriesWithWildcards unique"
    ).split()
    assert [f for f in native if f not in FUNCTIONS] == []


def test_every_graphite_web_function_dashboards_use_is_registered() -> None:
    wanted = (
        "hitcount nPercentile percentileOfSeries holtWintersForecast holtWintersConfidenceBands "
        "holtWintersAberration integral integralByInterval delay interpolate sortByName legendValue "
        "aliasQuery exclude grep"
    ).split()
    assert [f for f in wanted if f not in FUNCTIONS] == []


def test_glob_question_mark_is_exactly_one_character(src) -> None:
    # Graphite's meaning, as docs/http-api.md says; Metrictank's index would also match x.1, x.1a and x.1ab
    assert one(src, "countSeries(x.1???)") == ("countSeries(x.1???)", TS, [1] * 5)
    assert names(src, "x.1?") == ["x.1a"]


def test_alias_query_rewritten_query_is_held_to_the_request_limits(src) -> None:
    from metrictank.query.limits import QueryLimits

    tight = QueryLimits(max_target_length=200, max_nesting_depth=3)
    ok = r"aliasQuery(a.b.c, 'a.b.c', 'val.a', 'x%g')"
    assert [s.target for s in render([ok], 0, 50, 0, src, now=1000, limits=tight)] == ["x12.6"]
    # every match replaced by 300 copies of itself: a rewritten query past the request's max-target-length
    blowup = r"aliasQuery(a.b.c, '(.+)', '" + r"\1" * 60 + "', 'x%g')"
    with pytest.raises(QueryError) as e:
        render([blowup], 0, 50, 0, src, now=1000, limits=tight)
    assert e.value.status == 400 and "max-target-length" in str(e.value)
    deep = r"aliasQuery(a.b.c, 'a.b.c', 'scale(scale(scale(scale(val.a, 1), 1), 1), 1)', 'x%g')"
    with pytest.raises(QueryError) as e:
        render([deep], 0, 50, 0, src, now=1000, limits=tight)
    assert e.value.status == 400 and "max-nesting-depth" in str(e.value)
