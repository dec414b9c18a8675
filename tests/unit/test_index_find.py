"""Graphite find: glob semantics checked against a brute-force reference, org visibility, filters."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.index import MemoryIndex, Node
from metrictank.index.glob import expand_braces

# -- brute-force reference ------------------------------------------------------------------------------

_INNER_BRACES = re.compile(r"\{([^{}]*)\}")


def ref_expand(pattern: str) -> set[str]:
    """Brace expansion innermost-first (the implementation expands outermost-first)."""
    todo, out = [pattern], set()
    while todo:
        p = todo.pop()
        m = _INNER_BRACES.search(p)
        if m is None:
            out.add(p)
            continue
        for opt in m.group(1).split(","):
            todo.append(p[: m.start()] + opt + p[m.end() :])
    return out


def ref_component_match(comp: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, alt) for alt in ref_expand(comp))


def ref_find(series: list[tuple[str, int]], pattern: str) -> dict[str, tuple[bool, bool, tuple[int, ...]]]:
    """path -> (leaf, has_children, rows) by testing every prefix of every series path."""
    parts = pattern.split(".")
    depth = len(parts)
    out: dict[str, list] = {}
    for path, row in series:
        comps = path.split(".")
        if len(comps) < depth:
            continue
        if not all(ref_component_match(p, c) for p, c in zip(parts, comps, strict=False)):
            continue
        node = ".".join(comps[:depth])
        entry = out.setdefault(node, [False, False, []])
        if len(comps) == depth:
            entry[0] = True
            entry[2].append(row)
        else:
            entry[1] = True
    return {p: (e[0], e[1], tuple(sorted(e[2]))) for p, e in out.items()}


def as_ref(nodes: list[Node]) -> dict[str, tuple[bool, bool, tuple[int, ...]]]:
    return {n.path: (n.leaf, n.has_children, tuple(sorted(n.rows))) for n in nodes}


def _id(org: int, key: str) -> str:
    return f"{org}.{hashlib.md5(key.encode()).hexdigest()}"


def build(paths_by_org: dict[int, list[str]]) -> tuple[MemoryIndex, dict[int, list[tuple[str, int]]]]:
    ix = MemoryIndex()
    series: dict[int, list[tuple[str, int]]] = {}
    for org, paths in paths_by_org.items():
        for i, p in enumerate(paths):
            row, _ = ix.add(_id(org, f"{p}#{i}"), org, p, 10, "", "gauge", [], 0, 100)
            series.setdefault(org, []).append((p, row))
    return ix, series


# -- strategies -----------------------------------------------------------------------------------------

COMPONENTS = ["a", "b", "ab", "ba", "abc", "b1", "c", "a1", "aa"]
PATTERN_COMPONENTS = COMPONENTS + [
    "*",
    "a*",
    "*a",
    "?",
    "??",
    "a?",
    "[ab]",
    "[!a]*",
    "[a-b]1",
    "{a,b}",
    "{a,ab}*",
    "{a,b{1,c}}",
    "{c,a,b}",
    "{ab,a?,c*}",
    "{*,c}",
    "b{,1}",
    "{}",
    "*{1,c}",
    "{a",
    "a}",
    "[",
]

paths_st = st.lists(
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map(".".join), min_size=0, max_size=40
)
pattern_st = st.lists(st.sampled_from(PATTERN_COMPONENTS), min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(paths=paths_st, pattern=pattern_st)
def test_find_matches_bruteforce_reference(paths, pattern):
    ix, series = build({1: paths})
    got = ix.find(1, pattern)
    assert [n.path for n in got] == sorted(n.path for n in got)
    assert as_ref(got) == ref_find(series.get(1, []), pattern)
    leaves = sorted(r for n in got for r in n.rows)
    assert ix.find_leaves(1, pattern) == leaves


@settings(max_examples=150, deadline=None)
@given(own=paths_st, public=paths_st, other=paths_st, pattern=pattern_st)
def test_org_sees_own_and_public_series_own_wins(own, public, other, pattern):
    ix, series = build({1: own, -1: public, 2: other})
    mine = ref_find(series.get(1, []), pattern)
    pub = ref_find(series.get(-1, []), pattern)
    want = dict(pub)
    want.update(mine)  # a path present in both orgs is the org's own node
    assert as_ref(ix.find(1, pattern)) == want
    assert as_ref(ix.find(-1, pattern)) == pub
    assert as_ref(ix.find(3, pattern)) == pub  # an org without series still sees public ones


@settings(max_examples=100, deadline=None)
@given(paths=paths_st, data=st.data())
def test_find_after_removals_matches_reference(paths, data):
    ix, series = build({1: paths})
    rows = [r for _, r in series.get(1, [])]
    gone = set(data.draw(st.lists(st.sampled_from(rows), max_size=len(rows))) if rows else [])
    ix.remove(sorted(gone))
    left = [(p, r) for p, r in series.get(1, []) if r not in gone]
    for pattern in ("*", "*.*", "*.*.*", "a*.{b,ab}", "*.*.*.*"):
        assert as_ref(ix.find(1, pattern)) == ref_find(left, pattern)


def test_expand_braces_examples():
    assert expand_braces("host{1,2}*") == ["host1*", "host2*"]
    assert expand_braces("{a,b{1,2}}x") == ["ax", "b1x", "b2x"]
    assert expand_braces("{a,a}") == ["a"]
    assert expand_braces("a{b") == ["a{b"]
    assert expand_braces("a}b") == ["a}b"]
    assert sorted(expand_braces("{x,y}{1,2}")) == sorted(map("".join, itertools.product("xy", "12")))


def test_graphite_find_examples():
    ix, _ = build(
        {
            1: [
                "servers.web1.cpu.user",
                "servers.web1.cpu.system",
                "servers.web2.cpu.user",
                "servers.db1.mem.free",
                "servers.web1",  # a path that is both a leaf and a branch
            ]
        }
    )
    assert ix.find(1, "*") == [Node("servers", False, True, ())]
    web1 = ix.find(1, "servers.web1")
    assert [(n.path, n.leaf, n.has_children) for n in web1] == [("servers.web1", True, True)]
    assert [n.path for n in ix.find(1, "servers.*.cpu.user")] == [
        "servers.web1.cpu.user",
        "servers.web2.cpu.user",
    ]
    assert [n.path for n in ix.find(1, "servers.{web,db}?.*")] == [
        "servers.db1.mem",
        "servers.web1.cpu",
        "servers.web2.cpu",
    ]
    assert [n.path for n in ix.find(1, "servers.web[!1].cpu.*")] == ["servers.web2.cpu.user"]
    assert ix.find(1, "servers.web1.cpu.user.deeper") == []
    assert ix.find(1, "nothing.*") == []
    assert ix.find(1, "") == []
    assert ix.find(2, "*") == []


def test_question_mark_is_exactly_one_character():
    ix, _ = build({1: ["a.b", "a.bb", "a.bbb", "a.c"]})
    assert [n.path for n in ix.find(1, "a.b?")] == ["a.bb"]
    assert [n.path for n in ix.find(1, "a.?")] == ["a.b", "a.c"]


def test_several_series_on_one_path_are_one_node():
    ix = MemoryIndex()
    r1, _ = ix.add(_id(1, "i10"), 1, "a.b", 10, "", "gauge", [], 0, 100)
    r2, _ = ix.add(_id(1, "i60"), 1, "a.b", 60, "", "gauge", [], 0, 100)
    assert ix.find(1, "a.*") == [Node("a.b", True, False, (r1, r2))]
    ix.remove([r1])
    assert ix.find(1, "a.*") == [Node("a.b", True, False, (r2,))]


def test_from_ts_filters_stale_leaves():
    ix = MemoryIndex()
    old, _ = ix.add(_id(1, "o"), 1, "a.old", 10, "", "gauge", [], 0, 100)
    new, _ = ix.add(_id(1, "n"), 1, "a.new", 10, "", "gauge", [], 0, 500)
    both, _ = ix.add(_id(1, "b"), 1, "a.both", 10, "", "gauge", [], 0, 100)
    ix.add(_id(1, "bc"), 1, "a.both.child", 10, "", "gauge", [], 0, 100)
    got = ix.find(1, "a.*", from_ts=300)
    assert got == [Node("a.both", False, True, ()), Node("a.new", True, False, (new,))]
    assert ix.find_leaves(1, "a.*", from_ts=300) == [new]
    assert {n.path for n in ix.find(1, "a.*")} == {"a.old", "a.new", "a.both"}
    assert old in ix.find_leaves(1, "a.*")


def test_tagged_series_found_by_exact_tagged_path_only():
    ix = MemoryIndex()
    row, _ = ix.add(_id(1, "t"), 1, "cpu.load", 10, "", "gauge", ["host=a", "dc=x"], 0, 1)
    ix.add(_id(1, "t2"), 1, "cpu.load", 10, "", "gauge", ["host=a"], 0, 1)
    assert ix.find(1, "cpu.*") == []
    # tag order in the query path does not matter; the returned path is the canonical sorted one
    assert ix.find(1, "cpu.load;host=a;dc=x") == [Node("cpu.load;dc=x;host=a", True, False, (row,))]
    assert ix.find(1, "cpu.load;dc=x") == []
    pub, _ = ix.add(_id(-1, "p"), -1, "pub.m", 10, "", "gauge", ["k=v"], 0, 1)
    assert ix.find(5, "pub.m;k=v") == [Node("pub.m;k=v", True, False, (pub,))]


@pytest.mark.parametrize("pattern", ["a.{b,c", "a.[b", "a.b}", "a.*{"])
def test_unbalanced_pattern_characters_are_literal(pattern):
    ix, _ = build({1: ["a.b", "a.c"]})
    literal = pattern.split(".")[1]
    assert ix.find(1, pattern) == []
    ix2, _ = build({1: ["a." + literal]})
    if "*" not in literal:
        assert [n.path for n in ix2.find(1, pattern)] == ["a." + literal]
