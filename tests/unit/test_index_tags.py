"""Tag queries (`seriesByTag`), tag listings and autocomplete against brute-force references."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.index import MemoryIndex, TagQueryError

# -- reference --------------------------------------------------------------------------------------

_EXPR = re.compile(r"^([^=!^;~]+)(!=~|=~|!=|\^=|=)(.*)$")


def ref_pred(expr: str):
    """Graphite's rule written out directly: a missing tag is the empty value."""
    key, op, val = _EXPR.match(expr).groups()
    if op in ("=~", "!=~"):
        rx = re.compile(val if val.startswith("^") else f"^(?:{val})")
        test = (lambda v: rx.match(v) is not None) if op == "=~" else (lambda v: rx.match(v) is None)
    elif op == "=":
        test = lambda v: v == val  # noqa: E731
    elif op == "!=":
        test = lambda v: v != val  # noqa: E731
    else:
        test = lambda v: v.startswith(val)  # noqa: E731
    return key, test


def ref_query(series: dict[int, dict[str, str]], exprs: list[str]) -> list[int] | None:
    """Rows matching; None when Graphite would refuse the query (no expression needs a value)."""
    preds = [ref_pred(e) for e in exprs]
    if not any(not test("") for _, test in preds):
        return None
    return sorted(r for r, tags in series.items() if all(test(tags.get(k, "")) for k, test in preds))


def _id(org: int, key: str) -> str:
    return f"{org}.{hashlib.md5(key.encode()).hexdigest()}"


def build(
    specs: list[tuple[int, str, dict[str, str]]],
) -> tuple[MemoryIndex, dict[int, dict[int, dict[str, str]]]]:
    """specs: (org, name, tags). Returns the index and org -> row -> {name, tags...}."""
    ix = MemoryIndex()
    by_org: dict[int, dict[int, dict[str, str]]] = {}
    for i, (org, name, tags) in enumerate(specs):
        row, _ = ix.add(
            _id(org, f"{i}"), org, name, 10, "", "gauge", [f"{k}={v}" for k, v in tags.items()], 0, 100
        )
        by_org.setdefault(org, {})[row] = {"name": name, **tags}
    return ix, by_org


# -- strategies -------------------------------------------------------------------------------------

KEYS = ["a", "b", "c"]
VALUES = ["x", "y", "xy", "yx", "z", "xz"]
NAMES = ["m.a", "m.b", "n", "m.ab"]
REGEXES = ["x", "y.*", "x|z", "", ".*", "[xy]+$", "z?", "^x", ".*z", "m\\.a", "(x|yx)$"]

series_st = st.lists(
    st.tuples(
        st.sampled_from([1, 1, 1, 2, -1]),
        st.sampled_from(NAMES),
        st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3),
    ),
    max_size=40,
)


@st.composite
def expr_st(draw):
    key = draw(st.sampled_from(KEYS + ["name"]))
    op = draw(st.sampled_from(["=", "!=", "=~", "!=~", "^="]))
    pool = REGEXES if "~" in op else (NAMES if key == "name" else VALUES) + ["", "x", "m"]
    return f"{key}{op}{draw(st.sampled_from(pool))}"


@settings(max_examples=400, deadline=None)
@given(specs=series_st, exprs=st.lists(expr_st(), min_size=1, max_size=4))
def test_tag_query_matches_reference(specs, exprs):
    ix, by_org = build(specs)
    want_own = ref_query(by_org.get(1, {}), exprs)
    if want_own is None:
        with pytest.raises(TagQueryError, match="non-empty value"):
            ix.find_by_tags(1, exprs)
        return
    want = sorted(want_own + ref_query(by_org.get(-1, {}), exprs))  # org 1 also sees public series
    assert ix.find_by_tags(1, exprs) == want
    assert ix.find_by_tags(-1, exprs) == ref_query(by_org.get(-1, {}), exprs)


@settings(max_examples=100, deadline=None)
@given(specs=series_st, exprs=st.lists(expr_st(), min_size=1, max_size=3), data=st.data())
def test_tag_query_after_removals_matches_reference(specs, exprs, data):
    ix, by_org = build(specs)
    rows = sorted(by_org.get(1, {}))
    gone = set(data.draw(st.lists(st.sampled_from(rows), max_size=len(rows))) if rows else [])
    ix.remove(sorted(gone))
    left = {r: t for r, t in by_org.get(1, {}).items() if r not in gone}
    want = ref_query(left, exprs)
    if want is None:
        return
    assert ix.find_by_tags(1, exprs) == sorted(want + ref_query(by_org.get(-1, {}), exprs))


def test_large_postings_narrowed_both_ways():
    """Enough series that narrowing switches between posting algebra and per-candidate checks."""
    specs = []
    for i in range(3000):
        tags = {"env": "prod" if i % 10 else "dev", "host": f"h{i % 300}", "dc": f"dc{i % 3}"}
        if i % 7 == 0:
            tags["team"] = f"t{i % 4}"
        specs.append((1, f"svc.m{i % 5}", tags))
    ix, by_org = build(specs)
    queries = [
        ["env=prod", "dc!=dc1"],
        ["env=prod", "host=~h1[0-9]$", "team="],
        ["dc=dc2", "host!=~h2.*", "name=~svc.m[12]"],
        ["name^=svc.m3", "team=~t[01]", "env!=dev"],
        ["host=h7", "env=prod"],
        ["team!=", "dc=~dc[01]"],
        ["env=~.*", "host=h3"],
        ["env!=~.*"],
    ]
    for q in queries:
        assert ix.find_by_tags(1, q) == ref_query(by_org[1], q), q


def test_untagged_series_are_found_by_name():
    ix, _ = build([(1, "a.b.c", {}), (1, "a.b.d", {}), (1, "a.b.c", {"k": "v"})])
    assert ix.find_by_tags(1, ["name=a.b.c"]) == [0, 2]
    assert ix.find_by_tags(1, ["name=~a\\.b\\.[cd]", "k="]) == [0, 1]


@pytest.mark.parametrize(
    "exprs",
    [
        [],
        ["a!=x"],
        ["a="],
        ["a=~"],
        ["a=~.*"],
        ["a!=~x"],
        ["a^="],
    ],
)
def test_queries_without_a_required_value_are_rejected(exprs):
    ix, _ = build([(1, "n", {"a": "x"})])
    with pytest.raises(TagQueryError):
        ix.find_by_tags(1, exprs)


@pytest.mark.parametrize("bad", ["=x", "a", "a!x", "a;b=c", "a=b;c", "a^=~x", "a=~(", "__tag=a"])
def test_malformed_expressions_are_rejected(bad):
    ix, _ = build([(1, "n", {"a": "x"})])
    with pytest.raises(ValueError):
        ix.find_by_tags(1, [bad])


def test_regex_is_anchored_at_start_only():
    ix, _ = build([(1, "n", {"a": "xyz"}), (1, "n", {"a": "wxyz"})])
    assert ix.find_by_tags(1, ["a=~xy"]) == [0]
    assert ix.find_by_tags(1, ["a=~.*yz"]) == [0, 1]
    assert ix.find_by_tags(1, ["a=~^w"]) == [1]


def test_from_ts_filters_tag_results():
    ix = MemoryIndex()
    ix.add(_id(1, "a"), 1, "n", 10, "", "gauge", ["k=v"], 0, 100)
    ix.add(_id(1, "b"), 1, "n", 10, "", "gauge", ["k=v"], 0, 500)
    assert ix.find_by_tags(1, ["k=v"], from_ts=300) == [1]


# -- listings and autocomplete ----------------------------------------------------------------------


@pytest.fixture
def tagged():
    return build(
        [
            (1, "cpu.user", {"host": "web1", "dc": "east"}),
            (1, "cpu.user", {"host": "web2", "dc": "west"}),
            (1, "cpu.sys", {"host": "db1", "dc": "east", "role": "db"}),
            (1, "plain.metric", {}),
            (2, "hidden", {"secret": "yes"}),
            (-1, "shared", {"host": "pub1", "pubtag": "p"}),
        ]
    )[0]


def test_tags_and_values_listing(tagged):
    assert tagged.tags(1) == ["dc", "host", "name", "pubtag", "role"]
    assert tagged.tags(1, "o") == ["host", "role"]  # searched, not anchored
    assert tagged.tags(2) == ["host", "name", "pubtag", "secret"]
    assert tagged.tag_values(1, "host") == ["db1", "pub1", "web1", "web2"]
    assert tagged.tag_values(1, "host", "^web") == ["web1", "web2"]
    assert tagged.tag_values(1, "name") == ["cpu.sys", "cpu.user", "plain.metric", "shared"]
    assert tagged.tag_values(1, "nope") == []


def test_autocomplete_tags(tagged):
    assert tagged.autocomplete_tags(1) == ["dc", "host", "name", "pubtag", "role"]
    assert tagged.autocomplete_tags(1, "h") == ["host"]
    assert tagged.autocomplete_tags(1, "", limit=2) == ["dc", "host"]
    # with expressions: tags of the matching series, without the tags already queried
    assert tagged.autocomplete_tags(1, "", ["dc=east"]) == ["host", "name", "role"]
    assert tagged.autocomplete_tags(1, "r", ["dc=east"]) == ["role"]
    assert tagged.autocomplete_tags(1, "", ["name=cpu.user"]) == ["dc", "host"]
    assert tagged.autocomplete_tags(1, "", ["host=nobody"]) == []


def test_autocomplete_values(tagged):
    assert tagged.autocomplete_values(1, "host") == ["db1", "pub1", "web1", "web2"]
    assert tagged.autocomplete_values(1, "host", "we") == ["web1", "web2"]
    assert tagged.autocomplete_values(1, "host", "", limit=1) == ["db1"]
    assert tagged.autocomplete_values(1, "host", "", ["dc=east"]) == ["db1", "web1"]
    assert tagged.autocomplete_values(1, "host", "w", ["dc=east"]) == ["web1"]
    assert tagged.autocomplete_values(1, "name", "", ["dc=east"]) == ["cpu.sys", "cpu.user"]
    assert tagged.autocomplete_values(1, "role", "", ["name=cpu.user"]) == []


def test_limit_zero_means_unlimited_and_bad_filter_is_a_query_error(tagged):
    assert tagged.autocomplete_tags(1, "", limit=0) == tagged.tags(1)
    assert tagged.autocomplete_values(1, "host", "", ["dc=east"], limit=None) == ["db1", "web1"]
    with pytest.raises(TagQueryError):
        tagged.tags(1, "(")
    with pytest.raises(TagQueryError):
        tagged.tag_values(1, "host", "[")


def test_tag_value_counts_in_one_pass_match_a_query_per_value(tagged) -> None:
    for tag in ("host", "name", "dc", "nope"):
        for flt in (None, "^web", "1"):
            want = {v: len(tagged.find_by_tags(1, [f"{tag}={v}"])) for v in tagged.tag_values(1, tag, flt)}
            assert tagged.tag_value_counts(1, tag, flt) == want, (tag, flt)
