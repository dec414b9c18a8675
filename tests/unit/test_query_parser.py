"""Target expression parsing: Graphite's grammar and errors that point at the mistake."""

import pytest

from metrictank.query.errors import QueryError
from metrictank.query.parser import Call, Literal, PathExpr, find_calls, first_path_expression, parse_target


def test_path_expressions_with_globs() -> None:
    for pattern in [
        "a.b.c",
        "a.*.c",
        "a.{b,c}.d",
        "host[0-9].cpu",
        "a.b-c_d:e",
        "collectd.*.cpu-?.*",
        "x;dc=eu",
    ]:
        assert parse_target(pattern) == PathExpr(pattern, 0)


def test_nested_calls_and_literals() -> None:
    node = parse_target("aliasByNode(scale(a.{b,c}.*, 2.5), 1, -1)")
    assert isinstance(node, Call) and node.name == "aliasByNode"
    inner, one, minus_one = node.args
    assert isinstance(inner, Call) and inner.name == "scale"
    assert inner.args[0] == PathExpr("a.{b,c}.*", 18)
    assert inner.args[1].value == 2.5 and inner.args[1].kind == "float"
    assert (one.value, one.kind) == (1, "int")
    assert (minus_one.value, minus_one.kind) == (-1, "int")


def test_strings_numbers_booleans_and_kwargs() -> None:
    node = parse_target("summarize(a.b, \"1h\", func='max', alignToFrom=True)")
    assert isinstance(node, Call)
    assert node.args[1] == Literal("1h", "string", 15, '"1h"')
    assert node.kwargs["func"].value == "max"
    assert node.kwargs["alignToFrom"].value is True
    node = parse_target("f(a, 1e3, -2, +3.5, none, inf, FALSE)")
    values = [a.value for a in node.args[1:]]
    assert values == [1000.0, -2, 3.5, None, float("inf"), False]


def test_quoted_strings_keep_commas_and_parens_and_escapes() -> None:
    node = parse_target(r"aliasSub(a.b, '(\w+),x', 'it\'s \1')")
    assert node.args[1].value == r"(\w+),x"
    # graphite-web keeps the text between the quotes verbatim: the backslash stays
    assert node.args[2].value == r"it\'s \1"


def test_backslashes_in_strings_are_not_unescaped() -> None:
    node = parse_target(r'aliasSub(a.b.*, "(c)", "\\1X")')
    assert node.args[2].value == "\\\\1X"  # two backslashes, as typed
    assert parse_target(r"alias(x, 'it\'s')").args[1].value == "it\\'s"
    # an escaped quote does not end the string; an escaped backslash before the quote does not escape it
    assert parse_target(r'alias(x, "a\"b")').args[1].value == 'a\\"b'
    assert parse_target(r"alias(x, 'a\\')").args[1].value == "a\\\\"


def test_number_like_path_nodes_stay_paths() -> None:
    node = parse_target("sumSeries(1.2.3, 10s.x)")
    assert node.args == (PathExpr("1.2.3", 10), PathExpr("10s.x", 17))


def test_series_by_tag_keeps_raw_text() -> None:
    node = parse_target("sumSeries(seriesByTag('name=cpu', 'dc=~eu.*'))")
    inner = node.args[0]
    assert isinstance(inner, Call) and inner.name == "seriesByTag"
    assert inner.raw == "seriesByTag('name=cpu', 'dc=~eu.*')"
    assert [a.value for a in inner.args] == ["name=cpu", "dc=~eu.*"]


def test_pipes_become_first_argument() -> None:
    node = parse_target("a.b.* | scale(2) | alias('x')")
    assert node.name == "alias"
    assert node.args[0].name == "scale"
    assert node.args[0].args == (PathExpr("a.b.*", 0), Literal(2, "int", 14, "2"))


def test_find_calls_lists_all_calls() -> None:
    names = [c.name for c in find_calls(parse_target("a(b(x.y), c(d(z)))"))]
    assert names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("sumSeries(a.b", "missing ')'"),
        ("sumSeries(a.b))", "unexpected ')' at position 14"),
        ("scale(a.b, 'x)", "unterminated string"),
        ("", "empty target"),
        ("sumSeries(a.b,)", "unexpected ')'"),
        ("a.{b,c", "missing '}'"),
        ("f(a=1, b)", "positional argument follows keyword"),
        ("a.b | c.d", "pipe must be followed by a function call"),
    ],
)
def test_syntax_errors_have_positions(target: str, fragment: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_target(target)
    assert fragment in str(e.value)
    assert e.value.status == 400


def test_first_path_expression() -> None:
    assert first_path_expression("scale(a.b.c,2)") == "a.b.c"
    assert first_path_expression('movingAverage(sumSeries(x.y),"5min")') == "x.y"
    assert first_path_expression("a.b") == "a.b"
