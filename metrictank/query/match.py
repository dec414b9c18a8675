"""Graphite path globs and seriesByTag expressions.

Pure matching logic, shared by the in-memory `StaticSource` and available to an index implementation:

- Path globs work node by node (nodes are separated by `.`): `*` is any run of characters within a node,
  `?` one character, `[0-9]`/`[abc]` a character class, `{a,b}` alternatives.
- Tag expressions are graphite-web's (`k=v`, `k!=v`, `k=~re`, `k!=~re`) plus Metrictank's prefix operator
  `k^=p`. Regular expressions are anchored at the start only, as in both. A missing tag compares as the
  empty string, so `k=` selects series without `k` and `k!=` series that have it. A query must contain one
  expression that cannot match the empty value, otherwise it would select every series of the org.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from metrictank.regex import PatternError, UserRegex, compile_glob, compile_user_regex

from .errors import QueryError


def _split_outside_braces(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is not inside `{...}` (alternatives may hold dots and commas of their own)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """Full-path matcher of a Graphite path glob (`*` and `?` never cross a `.`), compiled by the same linear,
    limited translator the index uses; QueryError (400) for a pattern past a limit."""
    try:
        return compile_glob(pattern).fullmatch
    except PatternError as e:
        raise QueryError(str(e)) from None


def match_paths(pattern: str, paths: Iterable[str]) -> list[str]:
    """The paths (full metric names) a glob selects, sorted."""
    match = glob_matcher(pattern)
    return sorted(p for p in paths if match(p))


@dataclass(frozen=True, slots=True)
class FindMatch:
    path: str
    leaf: bool
    has_children: bool


def find_nodes(pattern: str, paths: Iterable[str]) -> list[FindMatch]:
    """Tree nodes a `/metrics/find` pattern selects among the given leaf paths.

    The pattern is matched against path prefixes with as many nodes as the pattern has; a prefix is a leaf
    when it is itself a metric and has children when some metric continues below it (both can hold).
    """
    depth = len(_split_nodes(pattern))
    match = glob_matcher(pattern)
    nodes: dict[str, list[bool]] = {}
    for p in paths:
        parts = p.split(".")
        if len(parts) < depth:
            continue
        prefix = ".".join(parts[:depth])
        if not match(prefix):
            continue
        flags = nodes.setdefault(prefix, [False, False])
        if len(parts) == depth:
            flags[0] = True
        else:
            flags[1] = True
    return [FindMatch(k, v[0], v[1]) for k, v in sorted(nodes.items())]


def _split_nodes(pattern: str) -> list[str]:
    """Split a glob on the dots that are outside braces."""
    return _split_outside_braces(pattern, ".")


@dataclass(frozen=True, slots=True)
class TagExpr:
    """One seriesByTag expression: `key op value` with op one of = != =~ !=~ ^=."""

    key: str
    op: str
    value: str
    regex: UserRegex | None = None  # RE2, see metrictank.regex

    def matches(self, tags: Mapping[str, str]) -> bool:
        v = tags.get(self.key, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        if self.op == "^=":
            return v.startswith(self.value)
        assert self.regex is not None
        hit = self.regex.match(v)
        return hit if self.op == "=~" else not hit

    def requires_value(self) -> bool:
        """True when the expression can only select series that carry this tag with a non-empty value."""
        if self.op == "=":
            return self.value != ""
        if self.op == "!=":
            return self.value == ""
        if self.op == "^=":
            return self.value != ""
        if self.op == "=~":
            return self.regex is not None and not self.regex.match("")
        return False

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


_TAG_OPS = ("!=~", "=~", "!=", "^=", "=")


def _split_tag_expr(text: str) -> tuple[str, str, str] | None:
    """(key, operator, value) of `key op value`, or None. A plain scan: the regex this replaces backtracked
    quadratically on a long run of blanks."""
    s = text.strip()
    i = next((k for k, c in enumerate(s) if c in "=!^~;"), -1)
    if i <= 0:
        return None
    op = next((o for o in _TAG_OPS if s.startswith(o, i)), None)
    if op is None:
        return None
    return s[:i].strip(), op, s[i + len(op) :].lstrip()


def parse_tag_expr(text: str) -> TagExpr:
    """Parse one expression such as `dc=~eu-.*`; QueryError (400) when malformed or a bad regex."""
    parts = _split_tag_expr(text)
    if parts is None or not parts[0]:
        raise QueryError(
            f"invalid tag expression {text!r}: expected key=value, key!=value, key=~regex, "
            "key!=~regex or key^=prefix"
        )
    key, op, value = parts
    if ";" in value:
        raise QueryError(f"invalid tag expression {text!r}: ';' is not allowed in a value")
    regex = None
    if op in ("=~", "!=~"):
        try:
            regex = compile_user_regex(value, f"tag expression {text!r}")
        except PatternError as e:
            raise QueryError(str(e)) from None
    return TagExpr(key, op, value, regex)


def parse_tag_query(exprs: Iterable[str]) -> list[TagExpr]:
    """Parse the arguments of seriesByTag; at least one must require a non-empty value."""
    parsed = [parse_tag_expr(e) for e in exprs]
    if not parsed:
        raise QueryError("seriesByTag needs at least one tag expression")
    if not any(e.requires_value() for e in parsed):
        raise QueryError(
            "seriesByTag needs at least one expression that requires a non-empty value "
            "(such as name=x or dc=~eu.*)"
        )
    return parsed


def match_tags(exprs: Iterable[TagExpr], tags: Mapping[str, str]) -> bool:
    return all(e.matches(tags) for e in exprs)
