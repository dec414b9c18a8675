"""Path globs, /metrics/find nodes and seriesByTag expressions."""

import pytest

from metrictank.query.errors import QueryError
from metrictank.query.match import find_nodes, match_paths, match_tags, parse_tag_expr, parse_tag_query

PATHS = ["a.b.c", "a.b.d", "a.bc.c", "a.x", "a.x.y", "host1.cpu", "host2.cpu", "host10.cpu", "b.c"]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("a.b.c", ["a.b.c"]),
        ("a.*.c", ["a.b.c", "a.bc.c"]),
        ("a.b*.c", ["a.b.c", "a.bc.c"]),
        ("a.{b,x}.*", ["a.b.c", "a.b.d", "a.x.y"]),
        ("host[0-9].cpu", ["host1.cpu", "host2.cpu"]),
        ("host?.cpu", ["host1.cpu", "host2.cpu"]),
        ("host*.cpu", ["host1.cpu", "host10.cpu", "host2.cpu"]),
        ("*", []),
        ("*.*", ["a.x", "b.c", "host1.cpu", "host10.cpu", "host2.cpu"]),
        ("a.b.{c,d}", ["a.b.c", "a.b.d"]),
    ],
)
def test_globs(pattern, expected) -> None:
    assert match_paths(pattern, PATHS) == expected


def test_regex_characters_are_literal() -> None:
    assert match_paths("a.b+c", ["a.b+c", "a.bbc"]) == ["a.b+c"]


def test_find_nodes_marks_leaves_and_branches() -> None:
    got = {(m.path, m.leaf, m.has_children) for m in find_nodes("a.*", PATHS)}
    assert got == {("a.b", False, True), ("a.bc", False, True), ("a.x", True, True)}
    assert [m.path for m in find_nodes("*", PATHS)] == ["a", "b", "host1", "host10", "host2"]


def test_tag_expressions() -> None:
    tags = {"name": "cpu", "dc": "eu-west", "host": "a1"}
    cases = {
        "dc=eu-west": True,
        "dc=eu": False,
        "dc!=us": True,
        "dc=~eu": True,  # anchored at the start only
        "dc=~west": False,
        "dc!=~us.*": True,
        "dc^=eu-": True,
        "rack=": True,  # missing tag compares as empty
        "host!=": True,  # has the tag
        "rack!=": False,
    }
    for expr, want in cases.items():
        assert parse_tag_expr(expr).matches(tags) is want, expr
    assert match_tags(parse_tag_query(["name=cpu", "dc=~eu.*"]), tags)


@pytest.mark.parametrize("exprs", [[], ["dc!=eu"], ["dc=~.*"], ["rack="]])
def test_query_needs_a_non_empty_match(exprs) -> None:
    with pytest.raises(QueryError):
        parse_tag_query(exprs)


@pytest.mark.parametrize("expr", ["nokey", "=v", "dc=~(", "dc=a;b"])
def test_malformed_expressions(expr) -> None:
    with pytest.raises(QueryError):
        parse_tag_expr(expr)
