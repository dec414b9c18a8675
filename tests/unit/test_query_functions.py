"""Each Graphite function against hand-computed results (graphite-web semantics and names).

Data: 10 s series with points at ts 10..50; queries use from=0 (exclusive) until=50 (inclusive) unless said.
"""

import math

import numpy as np
import pytest

from metrictank.query.engine import render
from metrictank.query.errors import QueryError
from metrictank.query.functions import FUNCTIONS
from metrictank.query.source import StaticSource

N = math.nan
DATA = {
    "a.b.c": (10, 10, [1, 2, 3, 4, 5]),
    "a.b.d": (10, 10, [10, N, 30, 40, 50]),
    "a.x.c": (10, 10, [5, 4, 3, 2, 1]),
    "cnt.x": (10, 10, [100, 110, 130, 5, 25]),
    "n.v": (10, 10, [-1, -2.5, N, 3, -4]),
    "z.zero": (10, 10, [0, 1, 0, 2, 4]),
    "g.s": (10, 10, [1, N, N, 4, N]),
    "m.s": (10, 10, [2, 4, 6, 8, 10]),
    "nat.s10": (10, 10, [1] * 5),
    "nat.s9": (10, 10, [1] * 5),
    "nat.s100": (10, 10, [1] * 5),
    "cpu;dc=eu;host=a": (10, 10, [1] * 5),
    "cpu;dc=eu;host=b": (10, 10, [2] * 5),
    "cpu;dc=us;host=c": (10, 10, [3] * 5),
}


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


TS = [10, 20, 30, 40, 50]


def test_fetch_names_and_tags(src) -> None:
    out = render(["a.b.*"], 0, 50, 0, src, now=1000)
    assert [s.target for s in out] == ["a.b.c", "a.b.d"]
    assert out[0].tags == {"name": "a.b.c"} and out[0].path_expr == "a.b.*"
    tagged = render(["seriesByTag('name=cpu','dc=eu')"], 0, 50, 0, src, now=1000)
    assert [s.target for s in tagged] == ["cpu;dc=eu;host=a", "cpu;dc=eu;host=b"]
    assert tagged[0].tags == {"name": "cpu", "dc": "eu", "host": "a"}


@pytest.mark.parametrize(
    "target, name, values",
    [
        ("sumSeries(a.b.*)", "sumSeries(a.b.*)", [11, 2, 33, 44, 55]),
        ("sum(a.b.*)", "sumSeries(a.b.*)", [11, 2, 33, 44, 55]),
        ("averageSeries(a.b.*)", "averageSeries(a.b.*)", [5.5, 2, 16.5, 22, 27.5]),
        ("maxSeries(a.b.*)", "maxSeries(a.b.*)", [10, 2, 30, 40, 50]),
        ("minSeries(a.b.*)", "minSeries(a.b.*)", [1, 2, 3, 4, 5]),
        ("diffSeries(a.b.d, a.b.c)", "diffSeries(a.b.d,a.b.c)", [9, 2, 27, 36, 45]),
        ("multiplySeries(a.b.c, a.x.c)", "multiplySeries(a.b.c,a.x.c)", [5, 8, 9, 8, 5]),
        ("multiplySeries(a.b.d, a.b.c)", "multiplySeries(a.b.d,a.b.c)", [10, None, 90, 160, 250]),
        ("sumSeries(a.b.c, a.*.c)", "sumSeries(a.b.c,a.*.c)", [7, 8, 9, 10, 11]),
        ("countSeries(a.*.c)", "countSeries(a.*.c)", [2, 2, 2, 2, 2]),
        ("aggregate(a.b.*, 'max')", "maxSeries(a.b.*)", [10, 2, 30, 40, 50]),
    ],
)
def test_aggregates(src, target, name, values) -> None:
    assert one(src, target) == (name, TS, values)


def test_aggregate_tags_keep_common_ones(src) -> None:
    out = render(["sumSeries(seriesByTag('name=cpu','dc=eu'))"], 0, 50, 0, src, now=1000)
    assert out[0].tags == {"name": "cpu", "dc": "eu", "aggregatedBy": "sum"}
    out = render(["sumSeries(a.b.*)"], 0, 50, 0, src, now=1000)
    assert out[0].tags == {"name": "sumSeries(a.b.*)", "aggregatedBy": "sum"}


def test_multiply_single_series_is_unchanged(src) -> None:
    assert one(src, "multiplySeries(a.b.c)") == ("a.b.c", TS, [1, 2, 3, 4, 5])


def test_aggregate_of_nothing_is_nothing(src) -> None:
    assert run(src, "sumSeries(no.such.*)") == []


def test_divide_series(src) -> None:
    assert one(src, "divideSeries(a.b.d, a.b.c)") == ("divideSeries(a.b.d,a.b.c)", TS, [10, None, 10, 10, 10])
    # division by zero is null
    assert one(src, "divideSeries(a.b.c, z.zero)")[2] == [None, 2, None, 2, 1.25]
    missing = one(src, "divideSeries(a.b.c, no.such)")
    assert missing == ("divideSeries(a.b.c,MISSING)", TS, [None] * 5)
    with pytest.raises(QueryError, match="exactly 1 series"):
        run(src, "divideSeries(a.b.c, a.b.*)")


def test_as_percent(src) -> None:
    out = run(src, "asPercent(a.b.*)")
    assert [o[0] for o in out] == ["asPercent(a.b.c,sumSeries(a.b.*))", "asPercent(a.b.d,sumSeries(a.b.*))"]
    assert out[0][2] == pytest.approx([100 / 11, 100, 100 / 11, 100 / 11, 100 / 11])
    assert out[1][2][1] is None and out[1][2][0] == pytest.approx(1000 / 11)
    assert one(src, "asPercent(a.b.c, 4)") == ("asPercent(a.b.c,4)", TS, [25, 50, 75, 100, 125])
    assert one(src, "asPercent(a.b.c, a.x.c)") == ("asPercent(a.b.c,a.x.c)", TS, [20, 50, 100, 200, 500])
    assert one(src, "asPercent(a.b.c, z.zero)")[2] == [None, 200, None, 200, 125]


def test_as_percent_by_nodes(src) -> None:
    # groups by node 2 (c / d); the c group totals a.b.c + a.x.c = 6 at every point
    out = run(src, "asPercent(a.*.*, None, 2)")
    by_name = {o[0]: o[2] for o in out}
    assert by_name["asPercent(a.b.c,sumSeries(a.*.*))"] == pytest.approx(
        [100 / 6, 200 / 6, 50, 400 / 6, 500 / 6]
    )
    assert by_name["asPercent(a.b.d,a.b.d)"] == [100, None, 100, 100, 100]


@pytest.mark.parametrize(
    "target, name, values",
    [
        ("scale(a.b.d, 0.5)", "scale(a.b.d,0.5)", [5, None, 15, 20, 25]),
        ("offset(a.b.c, -1)", "offset(a.b.c,-1)", [0, 1, 2, 3, 4]),
        ("absolute(n.v)", "absolute(n.v)", [1, 2.5, None, 3, 4]),
        ("derivative(cnt.x)", "derivative(cnt.x)", [None, 10, 20, -125, 20]),
        ("derivative(a.b.d)", "derivative(a.b.d)", [None, None, None, 10, 10]),
        ("nonNegativeDerivative(cnt.x)", "nonNegativeDerivative(cnt.x)", [None, 10, 20, None, 20]),
        ("nonNegativeDerivative(cnt.x, 150)", "nonNegativeDerivative(cnt.x)", [None, 10, 20, 26, 20]),
        ("nonNegativeDerivative(cnt.x, minValue=0)", "nonNegativeDerivative(cnt.x)", [None, 10, 20, 5, 20]),
        ("nonNegativeDerivative(a.b.d)", "nonNegativeDerivative(a.b.d)", [None, None, None, 10, 10]),
        ("perSecond(cnt.x)", "perSecond(cnt.x)", [None, 1, 2, None, 2]),
        ("perSecond(cnt.x, maxValue=150)", "perSecond(cnt.x)", [None, 1, 2, 2.6, 2]),
        ("integral(a.b.d)", "integral(a.b.d)", [10, None, 40, 80, 130]),
        ("transformNull(a.b.d)", "transformNull(a.b.d,0)", [10, 0, 30, 40, 50]),
        ("transformNull(a.b.d, -1)", "transformNull(a.b.d,-1)", [10, -1, 30, 40, 50]),
        ("keepLastValue(g.s)", "keepLastValue(g.s)", [1, 1, 1, 4, 4]),
        ("keepLastValue(g.s, 1)", "keepLastValue(g.s)", [1, None, None, 4, 4]),
        ("removeBelowValue(a.b.c, 3)", "removeBelowValue(a.b.c, 3)", [None, None, 3, 4, 5]),
        ("removeAboveValue(a.b.c, 3)", "removeAboveValue(a.b.c, 3)", [1, 2, 3, None, None]),
    ],
)
def test_transforms(src, target, name, values) -> None:
    got = one(src, target)
    assert got[0] == name and got[1] == TS
    assert got[2] == pytest.approx(values, nan_ok=True)


def test_transform_null_with_reference_series(src) -> None:
    # fill only where the reference (a.b.d) has a value: a.b.d is null at 20, so g.s stays null there
    assert one(src, "transformNull(g.s, 0, referenceSeries=a.b.d)")[2] == [1, None, 0, 4, 0]


def test_derived_series_reset_consolidator(src) -> None:
    s = StaticSource({"c": (10, 10, [1, 2, 3, 4])}, consolidators={"c": "sum"})
    assert render(["c"], 0, 40, 0, s, now=1000)[0].consolidator == "sum"
    for f in ("perSecond", "derivative", "nonNegativeDerivative", "integral"):
        assert render([f"{f}(c)"], 0, 40, 0, s, now=1000)[0].consolidator is None


def test_moving_window_uses_earlier_data(src) -> None:
    # request (20, 50]: the 20s window needs 2 points, so data from ts 10 is fetched too
    assert one(src, "movingAverage(m.s, '20s')", from_=20) == (
        'movingAverage(m.s,"20s")',
        [30, 40, 50],
        [5, 7, 9],
    )
    assert src.fetches[-1][2] == 21 - 20
    assert one(src, "movingAverage(m.s, 3)", from_=20) == ("movingAverage(m.s,3)", [30, 40, 50], [4, 6, 8])
    assert one(src, "movingSum(m.s, 2)", from_=20)[2] == [10, 14, 18]
    assert one(src, "movingMax(m.s, '30s')", from_=20)[2] == [6, 8, 10]
    assert one(src, "movingMin(m.s, '30s')", from_=20)[2] == [2, 4, 6]
    assert one(src, "movingWindow(m.s, '30s', 'sum')", from_=20) == (
        'movingSum(m.s,"30s")',
        [30, 40, 50],
        [12, 18, 24],
    )


def test_moving_window_nulls_and_xff(src) -> None:
    # windows ending at 10..50 over [N]+[10,N,30,40,50]
    assert one(src, "movingMedian(a.b.d, 3)")[2] == [10, 10, 20, 35, 40]
    assert one(src, "movingAverage(a.b.d, 2)")[2] == [10, 10, 30, 35, 45]
    assert one(src, "movingAverage(a.b.d, 2, 0.6)")[2] == [None, None, None, 35, 45]


def test_summarize(src) -> None:
    assert one(src, "summarize(a.b.c, '20s')") == (
        'summarize(a.b.c, "20s", "sum")',
        [0, 20, 40, 60],
        [1, 5, 9, None],
    )
    assert one(src, "summarize(a.b.c, '20s', 'max', true)") == (
        'summarize(a.b.c, "20s", "max", true)',
        [10, 30, 50],
        [2, 4, 5],
    )
    assert one(src, "summarize(a.b.d, '20s', 'avg')")[2] == [10, 30, 45, None]
    assert one(src, "summarize(a.b.c, '20s', 'last')")[2] == [1, 3, 5, None]


def test_consolidate_by_changes_max_data_points_consolidation(src) -> None:
    got = one(src, "consolidateBy(a.b.c, 'max')", mdp=2)
    # 5 points, mdp 2 -> aggNum 3, no nudging with so few points: (1,2,3)@30, (4,5)@60
    assert got == ('consolidateBy(a.b.c,"max")', [30, 60], [3, 5])
    assert src.fetches[-1][5] == "max"
    assert one(src, "consolidateBy(a.b.c, 'sum')", mdp=2)[2] == [6, 9]
    assert one(src, "a.b.c", mdp=2)[2] == [2, 4.5]  # default avg


def test_group_by_node_and_nodes(src) -> None:
    assert run(src, "groupByNode(a.*.c, 1, 'sum')") == [
        ("b", TS, [1, 2, 3, 4, 5]),
        ("x", TS, [5, 4, 3, 2, 1]),
    ]
    assert run(src, "groupByNodes(a.*.*, 'sum', 2)") == [
        ("c", TS, [6] * 5),
        ("d", TS, [10, None, 30, 40, 50]),
    ]
    assert run(src, "groupByNode(a.*.*, 2, 'sumSeries')")[0] == ("c", TS, [6] * 5)
    assert run(src, "groupByNode(a.*.*, 2)")[0] == ("c", TS, [3] * 5)  # default: average
    assert run(src, "groupByNodes(a.*.*, 'max', 0, 2)")[1] == ("a.d", TS, [10, None, 30, 40, 50])


def test_group_by_tags(src) -> None:
    out = render(["groupByTags(seriesByTag('name=cpu'), 'sum', 'dc')"], 0, 50, 0, src, now=1000)
    assert [(s.target, s.values.tolist()) for s in out] == [
        ("cpu;dc=eu", [3.0] * 5),
        ("cpu;dc=us", [3.0] * 5),
    ]
    assert out[0].tags == {"name": "cpu", "dc": "eu"}


def test_aliases(src) -> None:
    assert [o[0] for o in run(src, "alias(a.b.*, 'foo')")] == ["foo", "foo"]
    assert [o[0] for o in run(src, "aliasByNode(a.*.c, 1)")] == ["b", "x"]
    assert [o[0] for o in run(src, "aliasByNode(a.*.c, -1, 0)")] == ["c.a", "c.a"]
    assert [o[0] for o in run(src, "aliasByNode(scale(a.b.c, 2), 1)")] == ["b"]
    assert [o[0] for o in run(src, "aliasByTags(seriesByTag('name=cpu','dc=eu'), 'host')")] == ["a", "b"]
    assert [o[0] for o in run(src, "aliasByTags(seriesByTag('name=cpu','dc=eu'), 'dc', 'host')")] == [
        "eu.a",
        "eu.b",
    ]
    assert [o[0] for o in run(src, r"aliasSub(a.b.c, '^a\.(\w+)\.c$', 'x.\1')")] == ["x.b"]
    assert [o[0] for o in run(src, "aliasByMetric(a.b.*)")] == ["c", "d"]


def test_filters_and_sorting(src) -> None:
    names = lambda t: [o[0] for o in run(src, t)]  # noqa: E731
    assert names("highestMax(a.*.*, 1)") == ["a.b.d"]
    assert names("highestCurrent(a.*.*, 2)") == ["a.b.d", "a.b.c"]
    assert names("lowestCurrent(a.*.*, 1)") == ["a.x.c"]
    assert names("exclude(a.*.*, 'x')") == ["a.b.c", "a.b.d"]
    assert names("grep(a.*.*, 'd$')") == ["a.b.d"]
    assert names("sortByName(a.*.*, reverse=true)") == ["a.x.c", "a.b.d", "a.b.c"]
    assert names("sortByName(nat.*)") == ["nat.s10", "nat.s100", "nat.s9"]
    assert names("sortByName(nat.*, true)") == ["nat.s9", "nat.s10", "nat.s100"]
    # maxima 50, 5, 5: ties keep their order
    assert names("sortByMaxima(a.*.*)") == ["a.b.d", "a.b.c", "a.x.c"]


def test_time_shift(src) -> None:
    got = one(src, "timeShift(a.b.c, '10s')", from_=10)
    assert got == ('timeShift(a.b.c, "-10s")', [20, 30, 40, 50], [1, 2, 3, 4])
    assert src.fetches[-1][2:4] == (1, 41)
    assert one(src, "timeShift(a.b.c, '-10s')", from_=10)[0] == 'timeShift(a.b.c, "-10s")'


def test_nested_functions(src) -> None:
    got = one(src, "alias(scale(sumSeries(a.b.*), 2), 'total')")
    assert got == ("total", TS, [22, 4, 66, 88, 110])
    assert one(src, "sumSeries(scale(a.b.*, 2))")[0] == "sumSeries(scale(a.b.c,2),scale(a.b.d,2))"


def test_every_listed_function_is_registered() -> None:
    listed = (
        "alias aliasByNode aliasByTags aliasSub sumSeries averageSeries maxSeries minSeries diffSeries "
        "divideSeries multiplySeries asPercent scale offset absolute perSecond derivative nonNegativeDerivative "
        "integral movingAverage summarize consolidateBy groupByNode groupByTags highestMax highestCurrent "
        "lowestCurrent sortByName sortByMaxima timeShift transformNull keepLastValue removeBelowValue "
        "removeAboveValue countSeries exclude grep seriesByTag"
    ).split()
    assert not [f for f in listed if f not in FUNCTIONS]


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("nosuch(a.b.c)", 'unknown function "nosuch"'),
        ("sumSeries(nosuch(a.b.c))", 'unknown function "nosuch"'),
        ("scale(a.b.c, 'x')", "must be a number"),
        ("scale(a.b.c)", "missing required argument 'factor'"),
        ("scale(a.b.c, 1, 2)", "too many arguments"),
        ("scale(a.b.c, foo=2)", "unknown keyword argument 'foo'"),
        ("scale(1, 2)", "must be a series list"),
        ("summarize(a.b.c, 'bogus')", "invalid interval"),
        ("summarize(a.b.c, '1h', 'nope')", "unsupported aggregation function"),
        ("consolidateBy(a.b.c, 'nope')", "invalid consolidationFunc"),
        ("seriesByTag('dc!=eu')", "non-empty value"),
        ("seriesByTag('dc=~(')", "invalid regular expression"),
        ("grep(a.b.c, '(')", "invalid regular expression"),
        ("'just a string'", "must be a metric path or a function call"),
    ],
)
def test_bad_targets_are_user_errors(src, target, fragment) -> None:
    with pytest.raises(QueryError) as e:
        run(src, target)
    assert fragment in str(e.value)
    assert e.value.status == 400


def test_no_data_is_read_for_an_invalid_request(src) -> None:
    with pytest.raises(QueryError):
        render(["a.b.c", "sumSeries(a.b.*)", "nosuch(a.b.c)"], 0, 50, 0, src, now=1000)
    assert src.fetches == []


def test_inputs_are_not_modified(src) -> None:
    out = render(["a.b.c", "scale(a.b.c, 10)", "keepLastValue(a.b.c)"], 0, 50, 0, src, now=1000)
    assert out[0].values.tolist() == [1, 2, 3, 4, 5]
    assert out[1].values.tolist() == [10, 20, 30, 40, 50]
    assert len(src.fetches) == 1  # the shared fetch is cached per request


def test_series_with_different_steps_are_combined_at_the_lcm() -> None:
    s = StaticSource({"f.a": (10, 10, np.arange(1.0, 13.0)), "f.b": (15, 15, [1.0] * 8)})
    out = render(["sumSeries(f.*)"], 0, 120, 0, s, now=1000)[0]
    assert out.step == 30
    # f.a averaged per 30 s bucket (10,20,30 -> 2; ...), f.b averaged per 2 points -> 1
    assert out.timestamps().tolist() == [30, 60, 90, 120]
    assert out.values.tolist() == [3.0, 6.0, 9.0, 12.0]
