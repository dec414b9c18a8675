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
