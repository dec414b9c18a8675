"""User-supplied patterns (Graphite globs and regular expressions) compiled so that no input can stall a node.

Every pattern here comes from a query: a Graphite path glob (`servers.web{1,2}*.cpu`), a tag expression's
regex (`dc=~eu-.*`), a `filter` parameter, the regex argument of `grep()`/`exclude()`/`aliasSub()`. Python's
`re` is a backtracking engine: `(.*.*)*!` takes seconds on a 15-character name, and `fnmatch.translate` is
quadratic in a run of unclosed `[`. Both ran while the index lock was held, stalling ingest. So:

- regular expressions always run on RE2 (the `google-re2` package), whose matching is linear in the text, with
  a bounded pattern length. RE2 is also what Metrictank (Go's regexp) uses, so the accepted syntax is the same:
  backreferences and lookaround are refused, with a message that says so.
- globs are translated by a single linear pass (no `fnmatch`), with documented limits on length, brace nesting
  and the number of alternatives. The result runs on Python's `re` only when it cannot backtrack badly (at most
  one `*`, few alternatives, a short pattern: the common `host*` case, several times faster per name than a
  call into RE2), and on RE2 otherwise.

Errors are `PatternError` (a ValueError); the index wraps them into its `TagQueryError`, the query layer into
a 400 `QueryError`. This module imports nothing of the project, so index and query can both use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

import re2

__all__ = [
    "MAX_BRACE_DEPTH",
    "MAX_EXPANSIONS",
    "MAX_GLOB_LENGTH",
    "MAX_REGEX_LENGTH",
    "Glob",
    "PatternError",
    "UserRegex",
    "check_expansions",
    "check_glob_length",
    "compile_glob",
    "compile_user_regex",
    "expand_braces",
]

MAX_REGEX_LENGTH = 4096  # characters of one user regex
MAX_GLOB_LENGTH = 32768  # characters of one path glob (a `{...}` list of a few thousand hosts still fits)
MAX_BRACE_DEPTH = 10  # `{a,{b,{c}}}` nests 3 deep; dashboards use 1 or 2
MAX_EXPANSIONS = 10_000  # alternatives a glob's `{..}` groups multiply out to (graphite-web expands them all)
RE2_MAX_MEM = 8 << 20  # RE2's own default budget for a compiled program and its DFA cache, made explicit

# Python `re` is used for a glob only below these sizes and with at most one `*` (see the module docstring)
_FAST_MAX_LENGTH = 256
_FAST_MAX_EXPANSIONS = 64
# a wildcard-free glob is expanded to its names (for direct lookups) only while they stay this small in total;
# beyond that the regex answers (a 30k-character prefix times a thousand alternatives is 30M characters)
_MAX_EXPANDED_CHARS = 1 << 20


class PatternError(ValueError):
    """A user pattern that is invalid or past a documented limit: HTTP 400 material, never a server fault."""


def _re2_options(capture: bool) -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # a bad user pattern is answered with a 400, not logged to stderr by the C++ side
    opts.max_mem = RE2_MAX_MEM
    opts.never_capture = not capture
    return opts


_OPTS_CAPTURE = _re2_options(True)
_OPTS_NO_CAPTURE = _re2_options(False)
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
_ANCHOR_START = re2._re2.RE2.Anchor.ANCHOR_START
_ANCHOR_BOTH = re2._re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = (-1, -1)


def _re2_compile(pattern: str, what: str, capture: bool = True) -> re2._Regexp:
    try:
        return re2.compile(pattern, _OPTS_CAPTURE if capture else _OPTS_NO_CAPTURE)
    except re2.error as e:
        msg = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        hint = ""
        if "invalid escape sequence: \\" in msg and msg[-1:].isdigit() or "invalid perl operator: (?" in msg:
            hint = " (backreferences and lookaround are not supported: the syntax is RE2's, as in Metrictank)"
        raise PatternError(f"invalid regular expression in {what}: {msg}{hint}") from None
    except UnicodeEncodeError:
        raise PatternError(f"invalid regular expression in {what}: not valid Unicode text") from None


class UserRegex:
    """A user's regular expression on RE2: linear-time matching whatever the pattern and the text.

    The boolean tests call RE2 directly (no match object is built): they run once per tag value or series name
    of a query, where the `re`-like wrapper's per-call overhead would dominate."""

    __slots__ = ("pattern", "_rx", "_match")

    def __init__(self, pattern: str, rx: re2._Regexp) -> None:
        self.pattern = pattern
        self._rx = rx
        self._match = rx._regexp.Match

    def _test(self, anchor: object, text: str) -> bool:
        b = text.encode("utf-8", "surrogatepass")
        return self._match(anchor, b, 0, len(b))[0] != _NO_MATCH

    def match(self, text: str) -> bool:
        """Whether the pattern matches at the start of `text` (`re.match`)."""
        return self._test(_ANCHOR_START, text)

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text` (`re.search`)."""
        return self._test(_UNANCHORED, text)

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches all of `text` (`re.fullmatch`)."""
        return self._test(_ANCHOR_BOTH, text)

    def sub(self, repl: str, text: str) -> str:
        """`re.sub` with a Python-style template (`\\1`, `\\g<1>`, `\\g<name>`); PatternError for a template
        naming a group the pattern does not have."""
        try:
            return self._rx.sub(repl, text)
        except (IndexError, re2.error, ValueError) as e:
            raise PatternError(
                f"bad replacement {repl!r} for regular expression {self.pattern!r}: {e}"
            ) from None

    def __repr__(self) -> str:
        return f"UserRegex({self.pattern!r})"


@lru_cache(maxsize=1024)
def compile_user_regex(pattern: str, what: str = "regular expression") -> UserRegex:
    """Compile a regular expression that came from a request, on RE2 (cached: dashboards repeat theirs).

    `what` names where it came from (`tag expression 'dc=~x'`, `filter`, `grep()`) for the error message.
    Raises PatternError for invalid patterns, for constructs RE2 does not have (backreferences, lookaround)
    and for patterns longer than MAX_REGEX_LENGTH."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise PatternError(
            f"regular expression in {what} is {len(pattern)} characters long, more than the limit of "
            f"{MAX_REGEX_LENGTH}"
        )
    return UserRegex(pattern, _re2_compile(pattern, what))


# --- globs ---------------------------------------------------------------------------------------------------

# parsed glob: a sequence of tokens; a token is a literal str, _STAR, _ONE, a ("class", regex) or a list of
# alternatives (each a sequence)
_STAR = object()
_ONE = object()


def _esc(ch: str) -> str:
    """A character as a regex literal both `re` and RE2 read the same way (inside or outside a class)."""
    if ch.isascii():
        return ch if ch.isalnum() else f"\\x{ord(ch):02x}"
    return ch


class Glob:
    """A compiled Graphite glob: what the tree walk and full-path matching need from it.

    `exact` is the tuple of names it can match when it has no wildcard (`{a,b}`, `web1`): looked up directly
    instead of scanning; `matches_all` says it accepts any name (`*`, `{*,x}`); `fullmatch(name)` tests a name
    (or, for a whole path pattern, a path: `*` and `?` never cross a `.`)."""

    __slots__ = ("pattern", "regex", "exact", "matches_all", "expansions", "stars", "_fullmatch")

    def __init__(
        self,
        pattern: str,
        regex: str,
        exact: tuple[str, ...] | None,
        matches_all: bool,
        expansions: int,
        stars: int,
    ) -> None:
        self.pattern = pattern
        self.regex = regex
        self.exact = exact
        self.matches_all = matches_all
        self.expansions = expansions
        self.stars = stars
        self._fullmatch: Callable[[str], bool] | None = None

    @property
    def fullmatch(self) -> Callable[[str], bool]:
        """Name -> whether the glob matches all of it; the engine is chosen (and compiled) on first use."""
        fm = self._fullmatch
        if fm is None:
            if (
                self.stars <= 1
                and self.expansions <= _FAST_MAX_EXPANSIONS
                and len(self.pattern) <= _FAST_MAX_LENGTH
            ):
                py = re.compile(self.regex, re.DOTALL).fullmatch
                fm = self._fullmatch = lambda s: py(s) is not None
            else:
                fm = self._fullmatch = UserRegex(
                    self.pattern, _re2_compile(self.regex, f"glob {self.pattern[:100]!r}", capture=False)
                ).fullmatch
        return fm


class _GlobParser:
    """One linear pass over the pattern: matched braces are paired with a stack, and for every position the next
    `]` and the next matched brace are precomputed, so deciding whether a `[` opens a class is O(1) (that
    decision is what made fnmatch quadratic on a run of unclosed `[`)."""

    def __init__(self, p: str, wildcards: bool = True) -> None:
        self.p = p
        self.wildcards = wildcards
        n = len(p)
        close: dict[int, int] = {}
        stack: list[int] = []
        for i, c in enumerate(p):
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                close[stack.pop()] = i
        self.close = close
        braces = set(close) | set(close.values())
        next_rb = [n] * (n + 1)
        next_brace = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            next_rb[i] = i if p[i] == "]" else next_rb[i + 1]
            next_brace[i] = i if i in braces else next_brace[i + 1]
        self.next_rb = next_rb
        self.next_brace = next_brace

    def seq(self, lo: int, hi: int, depth: int) -> list:
        p, out, lit = self.p, [], []
        i = lo
        while i < hi:
            c = p[i]
            if c == "{" and i in self.close:
                j = self.close[i]
                if depth >= MAX_BRACE_DEPTH:
                    raise PatternError(
                        f"glob {p[:100]!r} nests {{...}} groups deeper than the limit of {MAX_BRACE_DEPTH}"
                    )
                cuts, k = [i], i + 1
                while k < j:
                    ch = p[k]
                    if ch == "{" and k in self.close:
                        k = self.close[k] + 1
                        continue
                    if ch == ",":
                        cuts.append(k)
                    k += 1
                cuts.append(j)
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append([self.seq(a + 1, b, depth + 1) for a, b in zip(cuts, cuts[1:], strict=False)])
                i = j + 1
            elif not self.wildcards and c in "[*?":
                lit.append(c)
                i += 1
            elif c == "[":
                k = i + 1
                neg = k < hi and p[k] == "!"
                if neg:
                    k += 1
                body = k
                if k < hi and p[k] == "]":  # a `]` first in the class is a member (fnmatch)
                    k += 1
                j = self.next_rb[k] if k <= len(p) else len(p)
                if j >= min(hi, self.next_brace[i]):  # unclosed (within its alternative): a literal `[`
                    lit.append(c)
                    i += 1
                    continue
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append(("class", _class_regex(p[body:j], neg)))
                i = j + 1
            elif c == "*":
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append(_STAR)
                i += 1
            elif c == "?":
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append(_ONE)
                i += 1
            else:
                lit.append(c)
                i += 1
        if lit:
            out.append("".join(lit))
        return out


def _class_regex(body: str, negated: bool) -> str:
    """`[..]` / `[!..]` body as a regex class with fnmatch's rules: `a-z` ranges, a reversed range matches
    nothing, `-` first or last is literal. A negated class never matches `.` (it stays within a node)."""
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        if i + 2 < n and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if lo <= hi:
                items.append(f"{_esc(lo)}-{_esc(hi)}")
            i += 3
        else:
            items.append(_esc(body[i]))
            i += 1
    if negated:
        return "[^" + "".join(items) + "\\x2e]"
    return "[" + "".join(items) + "]" if items else "[^\\s\\S]"


def _regex(seq: list) -> str:
    parts = []
    for t in seq:
        if t is _STAR:
            parts.append("[^.]*")
        elif t is _ONE:
            parts.append("[^.]")
        elif isinstance(t, str):
            parts.append("".join(map(_esc, t)))
        elif isinstance(t, tuple):
            parts.append(t[1])
        else:
            parts.append("(?:" + "|".join(_regex(a) for a in t) + ")")
    return "".join(parts)


def _count(seq: list, cap: int) -> int:
    """Alternatives a sequence expands to, saturating at cap + 1 (never builds them)."""
    total = 1
    for t in seq:
        if isinstance(t, list):
            total *= min(cap + 1, sum(_count(a, cap) for a in t))
            total = min(total, cap + 1)
    return total


def _stats(seq: list) -> tuple[int, bool]:
    """(number of `*`, whether any wildcard: `*`, `?` or a class)."""
    stars, wild = 0, False
    for t in seq:
        if t is _STAR:
            stars, wild = stars + 1, True
        elif t is _ONE or isinstance(t, tuple):
            wild = True
        elif isinstance(t, list):
            for a in t:
                s, w = _stats(a)
                stars, wild = stars + s, wild or w
    return stars, wild


def _expand(seq: list) -> list[str]:
    outs = [""]
    for t in seq:
        if isinstance(t, str):
            outs = [o + t for o in outs]
        else:  # alternatives (only called on wildcard-free sequences)
            alts = [x for a in t for x in _expand(a)]
            outs = [o + a for o in outs for a in alts]
    return outs


def check_glob_length(pattern: str) -> None:
    """PatternError when a glob is longer than MAX_GLOB_LENGTH."""
    if len(pattern) > MAX_GLOB_LENGTH:
        raise PatternError(
            f"glob of {len(pattern)} characters is longer than the limit of {MAX_GLOB_LENGTH} characters"
        )


def check_expansions(pattern: str, expansions: int) -> None:
    """PatternError when a glob's `{..}` groups multiply out to more than MAX_EXPANSIONS alternatives."""
    if expansions > MAX_EXPANSIONS:
        raise PatternError(
            f"glob {pattern[:100]!r} expands to more than {MAX_EXPANSIONS} alternatives "
            "(each {...} group multiplies them)"
        )


def _parse(pattern: str, wildcards: bool) -> tuple[list, int]:
    """The parsed glob and the alternatives it expands to, within the length and expansion limits."""
    check_glob_length(pattern)
    seq = _GlobParser(pattern, wildcards).seq(0, len(pattern), 0)
    expansions = _count(seq, MAX_EXPANSIONS)
    check_expansions(pattern, expansions)
    return seq, expansions


def expand_braces(pattern: str) -> list[str]:
    """The `{a,b}` alternatives of a pattern, multiplied out (first occurrence order, no duplicates), other
    characters kept as they are; an unmatched `{` or `}` is literal. PatternError past the limits."""
    seq, _ = _parse(pattern, wildcards=False)
    return list(dict.fromkeys(_expand(seq)))


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Glob:
    """Compile a Graphite glob (graphite-web semantics): `*` any run of characters within a node, `?` exactly
    one, `[..]` / `[!..]` a character class (an unclosed `[` is literal), `{a,b}` alternatives, nestable and
    combinable with the rest (an unmatched `{` or `}` is literal). Linear in the pattern length; cached.

    Braces are paired before classes are read, so a class does not span a `{`/`}` (graphite-web expands
    braces first: `[{a,b}]` is a class there, literal text here - nobody writes that).
    Raises PatternError past MAX_GLOB_LENGTH, MAX_BRACE_DEPTH or MAX_EXPANSIONS."""
    seq, expansions = _parse(pattern, wildcards=True)
    stars, wild = _stats(seq)
    small = expansions * max(1, len(pattern)) <= _MAX_EXPANDED_CHARS
    exact = tuple(dict.fromkeys(_expand(seq))) if not wild and small else None
    matches_all = seq == [_STAR] or (
        len(seq) == 1 and isinstance(seq[0], list) and any(a == [_STAR] for a in seq[0])
    )
    return Glob(pattern, _regex(seq), exact, matches_all, expansions, stars)
