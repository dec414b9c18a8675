"""Graphite path-glob components compiled into the cheapest matcher that answers them.

A find walks the tree one path component at a time; how a component is matched decides the cost. A
plain name or a `{a,b}` list of plain names becomes direct dict lookups (no scan of the children), a
lone `*` takes every child, and only real wildcards pay for a regex scan. Semantics follow graphite-web
(fnmatch per component after brace expansion): `*` any run, `?` exactly one character, `[..]` / `[!..]`
a character class, `{a,b}` alternatives, nestable and combinable with the others (`host{1,2}*`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

MAX_EXPANSIONS = 10_000
_WILD = frozenset("*?[")


def expand_braces(s: str) -> list[str]:
    """All brace-free alternatives of `s`; an unmatched `{` or `}` is literal."""
    out = _expand(s)
    # de-duplicate, keeping first occurrence, so `{a,a}` is matched once
    return list(dict.fromkeys(out))


def _expand(s: str) -> list[str]:
    i = s.find("{")
    if i < 0:
        return [s]
    depth, start, opts = 0, i + 1, []
    for j in range(i, len(s)):
        c = s[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                opts.append(s[start:j])
                break
        elif c == "," and depth == 1:
            opts.append(s[start:j])
            start = j + 1
    else:  # no closing brace: the '{' is an ordinary character
        return [s[: i + 1] + rest for rest in _expand(s[i + 1 :])]
    head, tails = s[:i], _expand(s[j + 1 :])
    out = [head + o + t for opt in opts for o in _expand(opt) for t in tails]
    if len(out) > MAX_EXPANSIONS:
        raise ValueError(f"glob {s!r} expands to more than {MAX_EXPANSIONS} alternatives")
    return out


@dataclass(frozen=True, slots=True)
class Matcher:
    """How to select children for one component: all of them, a set of exact names, or a predicate."""

    kind: str  # "all" | "exact" | "regex"
    names: tuple[str, ...] = ()
    match: Callable[[str], object] | None = None


@lru_cache(maxsize=4096)
def compile_component(comp: str) -> Matcher:
    """Matcher for one '.'-separated pattern component (cached: dashboards repeat their patterns)."""
    if comp == "*":
        return Matcher("all")
    alts = expand_braces(comp)
    if not any(_WILD & set(a) for a in alts):
        return Matcher("exact", tuple(alts))
    if "*" in alts:
        return Matcher("all")
    rx = re.compile("|".join(fnmatch.translate(a) for a in alts))
    return Matcher("regex", match=rx.match)


def has_wildcards(comp: str) -> bool:
    return any(c in comp for c in "*?[{")
