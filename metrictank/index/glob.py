"""Graphite path-glob components compiled into the cheapest matcher that answers them.

A find walks the tree one path component at a time; how a component is matched decides the cost. A
plain name or a `{a,b}` list of plain names becomes direct dict lookups (no scan of the children), a
lone `*` takes every child, and only real wildcards pay for a regex scan. Semantics follow graphite-web
(fnmatch per component after brace expansion): `*` any run, `?` exactly one character, `[..]` / `[!..]`
a character class, `{a,b}` alternatives, nestable and combinable with the others (`host{1,2}*`).

Compilation is `metrictank.regex.compile_glob`: linear in the pattern, bounded by documented limits
(PatternError past them), and done by the caller before it takes the index lock, so a hostile pattern costs
its own request a 400 and never holds up ingest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from metrictank.regex import (
    MAX_EXPANSIONS,
    PatternError,
    check_expansions,
    check_glob_length,
    compile_glob,
    expand_braces,
)

__all__ = ["MAX_EXPANSIONS", "Matcher", "PatternError", "compile_component", "compile_path", "expand_braces"]


@dataclass(frozen=True, slots=True)
class Matcher:
    """How to select children for one component: all of them, a set of exact names, or a predicate."""

    kind: str  # "all" | "exact" | "regex"
    names: tuple[str, ...] = ()
    match: Callable[[str], bool] | None = None
    expansions: int = 1


@lru_cache(maxsize=4096)
def compile_component(comp: str) -> Matcher:
    """Matcher for one '.'-separated pattern component (cached: dashboards repeat their patterns)."""
    if comp == "*":
        return Matcher("all")
    g = compile_glob(comp)
    if g.matches_all:
        return Matcher("all", expansions=g.expansions)
    if g.exact is not None:
        return Matcher("exact", g.exact, expansions=g.expansions)
    return Matcher("regex", match=g.fullmatch, expansions=g.expansions)


def compile_path(pattern: str) -> list[Matcher]:
    """Matchers of every component of a path glob, ready for `Tree.find`.

    Raises PatternError when the pattern is past a limit: longer than MAX_GLOB_LENGTH, braces nested deeper
    than MAX_BRACE_DEPTH, or more than MAX_EXPANSIONS alternatives over all components together (what
    graphite-web would expand the pattern to)."""
    check_glob_length(pattern)
    out = [compile_component(c) for c in pattern.split(".")]
    total = 1
    for m in out:
        total *= m.expansions
        check_expansions(pattern, total)
    return out
