"""User patterns (metrictank.regex): globs with graphite-web's semantics in linear time and within documented
limits; user regexes on RE2, so no pattern/text pair can take super-linear time."""

from __future__ import annotations

import fnmatch
import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from metrictank.regex import (
    MAX_BRACE_DEPTH,
    MAX_EXPANSIONS,
    MAX_GLOB_LENGTH,
    MAX_REGEX_LENGTH,
    PatternError,
    compile_glob,
    compile_user_regex,
    expand_braces,
)

_INNER_BRACES = re.compile(r"\{([^{}]*)\}")


def ref_expand(pattern: str) -> set[str]:
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


def ref_match(pattern: str, name: str) -> bool:
    """graphite-web: brace expansion, then fnmatch of each alternative."""
    return any(fnmatch.fnmatchcase(name, alt) for alt in ref_expand(pattern))


atom = st.sampled_from(
    ["a", "b", "-", "!", "]", "[", "*", "?", "[ab]", "[!a]", "[a-b]", "[b-a]", "[]a]", "[!]b]"]
)
glob_st = st.recursive(
    st.lists(atom, max_size=4).map("".join),
    lambda inner: st.lists(
        st.one_of(atom, st.lists(inner, min_size=1, max_size=3).map(lambda alts: "{" + ",".join(alts) + "}")),
        max_size=4,
    ).map("".join),
    max_leaves=8,
)
name_st = st.text(alphabet="ab-!][", max_size=6)


@settings(max_examples=400, deadline=None)
@given(pattern=glob_st, names=st.lists(name_st, min_size=1, max_size=8))
def test_glob_matches_graphite_web_reference(pattern, names):
    # a class spanning a brace is read differently (graphite-web expands braces first); nobody writes that.
    # A `]` right after `[` or `[!` is a member, not the end, so `{[]}` opens a class that spans the `}`.
    assume(not re.search(r"\[!?\]?[^\]]*[{},]", pattern))
    g = compile_glob(pattern)
    for name in names:
        assert g.fullmatch(name) == ref_match(pattern, name), (pattern, name, g.regex)


def test_glob_examples():
    cases = {
        "host*": (["host", "host1", "hostname"], ["hos", "ahost"]),
        "host?": (["host1"], ["host", "host12"]),
        "web[0-9]": (["web0", "web9"], ["weba", "web10"]),
        "web[!0-9]": (["weba"], ["web1", "web"]),
        "{a,b{1,2}}x": (["ax", "b1x", "b2x"], ["bx", "abx"]),
        "a[b": (["a[b"], ["ab"]),
        "a{b": (["a{b"], ["ab"]),
        "a}b": (["a}b"], ["ab"]),
        "[]]": (["]"], ["[]]"]),
        "[z-a]x": ([], ["zx", "ax", "x"]),
        "a.b*": (["a.b", "a.bc"], ["a.b.c", "ab"]),  # `*` stays within a node
        "a?b": (["acb"], ["a.b"]),
        "é*": (["é", "éte"], ["e"]),
    }
    for pattern, (yes, no) in cases.items():
        g = compile_glob(pattern)
        for n in yes:
            assert g.fullmatch(n), (pattern, n)
        for n in no:
            assert not g.fullmatch(n), (pattern, n)


def test_exact_and_all_components():
    assert compile_glob("{a,b,a}").exact == ("a", "b")
    assert compile_glob("web1").exact == ("web1",)
    assert compile_glob("a[b").exact == ("a[b",)  # an unclosed bracket is a literal, not a wildcard
    assert compile_glob("a*").exact is None
    assert compile_glob("*").matches_all and compile_glob("{*,x}").matches_all
    assert expand_braces("{x,y}{1,2}") == ["x1", "x2", "y1", "y2"]
    assert expand_braces("a[{1,2}*") == ["a[1*", "a[2*"]


def test_glob_limits_are_clear_errors():
    with pytest.raises(PatternError, match=f"longer than the limit of {MAX_GLOB_LENGTH}"):
        compile_glob("a" * (MAX_GLOB_LENGTH + 1))
    with pytest.raises(PatternError, match=f"deeper than the limit of {MAX_BRACE_DEPTH}"):
        compile_glob("{" * (MAX_BRACE_DEPTH + 1) + "a" + "}" * (MAX_BRACE_DEPTH + 1))
    compile_glob("{" * MAX_BRACE_DEPTH + "a" + "}" * MAX_BRACE_DEPTH)
    with pytest.raises(PatternError, match=f"more than {MAX_EXPANSIONS} alternatives"):
        compile_glob("{a,b}" * 16)
    with pytest.raises(PatternError, match=f"more than {MAX_EXPANSIONS} alternatives"):
        expand_braces("{a,b}" * 16)
    with pytest.raises(PatternError, match=f"more than {MAX_EXPANSIONS} alternatives"):
        compile_glob("{a*,b}" * 16)  # wildcards too: graphite-web would expand it just the same


@pytest.mark.parametrize(
    "pattern",
    [
        "[" * (MAX_GLOB_LENGTH - 1),
        "[!" * (MAX_GLOB_LENGTH // 2 - 1),
        "{" * (MAX_GLOB_LENGTH - 1),
        "}" * (MAX_GLOB_LENGTH - 1),
        "{a," * (MAX_GLOB_LENGTH // 4),
        "*?" * (MAX_GLOB_LENGTH // 2 - 1),
        "[a-" * (MAX_GLOB_LENGTH // 3 - 1) + "]",
        "x" * (MAX_GLOB_LENGTH - 12) + "{a,b}{c,d}",
    ],
)
def test_glob_compiles_and_matches_in_linear_time(pattern):
    t = time.perf_counter()
    g = compile_glob(pattern)
    g.fullmatch("a" * 200)
    g.fullmatch("[" * 200)
    assert time.perf_counter() - t < 1.0


def test_many_star_glob_on_long_names_is_linear():
    g = compile_glob("*a" * 50 + "b")  # backtracking regex: ~n^50 steps on a long name without 'b'
    t = time.perf_counter()
    assert not g.fullmatch("a" * 5000)
    assert time.perf_counter() - t < 0.5


# --- user regexes ----------------------------------------------------------------------------------------------


def test_catastrophic_regex_is_linear():
    rx = compile_user_regex("^(?:(.*.*)*!)", "tag expression")
    t = time.perf_counter()
    assert not rx.match("a" * 100_000)
    assert not rx.search("x" * 100_000)
    assert time.perf_counter() - t < 0.5


def test_user_regex_semantics():
    rx = compile_user_regex(r"(\w+)\.(\w+)")
    assert rx.match("ab.cd") and not rx.match(".ab")
    assert rx.search("..ab.cd") and not rx.fullmatch("ab.cd!")
    assert rx.sub(r"\2-\1", "ab.cd x.y") == "cd-ab y-x"
    assert rx.sub(r"\g<2>", "ab.cd") == "cd"
    with pytest.raises(PatternError, match="bad replacement"):
        rx.sub(r"\5", "ab.cd")
    assert compile_user_regex("é.").search("aéb")


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        (r"(a)\1", "backreferences and lookaround are not supported"),
        (r"a(?=b)", "backreferences and lookaround are not supported"),
        (r"a(?<!b)", "backreferences and lookaround are not supported"),
        ("(", "missing )"),
        ("a{2,1}", "invalid repetition size"),
    ],
)
def test_invalid_regexes_name_where_and_why(pattern, hint):
    with pytest.raises(PatternError) as e:
        compile_user_regex(pattern, "filter")
    assert "in filter" in str(e.value) and hint in str(e.value)


def test_regex_length_limit():
    compile_user_regex("a" * MAX_REGEX_LENGTH)
    with pytest.raises(PatternError, match=f"limit of {MAX_REGEX_LENGTH}"):
        compile_user_regex("a" * (MAX_REGEX_LENGTH + 1), "grep()")


def test_index_tag_queries_with_catastrophic_regexes_are_fast():
    import hashlib

    from metrictank.index import MemoryIndex, TagQueryError

    ix = MemoryIndex()
    for i in range(50):
        name = "abcdefghijklmno" + "pqrstuvwxyz"[i % 11] * (i % 5)
        ix.add(f"1.{hashlib.md5(str(i).encode()).hexdigest()}", 1, name, 10, "", "gauge", [f"k=v{i}"], 0, 1)
    t = time.perf_counter()
    assert ix.find_by_tags(1, ["name=~(.*.*)*!"]) == []
    assert len(ix.find_by_tags(1, ["k=~v.*", "name!=~(.*.*)*!"])) == 50
    assert ix.tags(1, "(.*.*)*!") == []
    assert ix.tag_values(1, "k", "(x+x+)+y") == []
    assert time.perf_counter() - t < 1.0
    with pytest.raises(TagQueryError, match="backreferences and lookaround are not supported"):
        ix.find_by_tags(1, [r"name=~(a)\1"])
    with pytest.raises(TagQueryError, match="in filter"):
        ix.tags(1, "(")
