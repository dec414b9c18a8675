"""Parser for Graphite target expressions.

A target is a path expression (`a.b.*`, `a.{x,y}.c[0-9]`, `a;tag=v`), a function call with positional and
keyword arguments (`summarize(a.*, "1h", func="max")`), a pipe chain (`a.* | scale(2) | alias("x")`), or
`seriesByTag('k=v', ...)`. Literals are strings in single or double quotes, integers, floats (also `1e3`),
booleans (`true`/`false`, any case), `None` and `inf`. The grammar is graphite-web's; errors carry the
0-based character position so a user can find the mistake in a long target.

The parser knows nothing about which functions exist: the engine validates names against the registry, so
an unknown function is reported with its name and position (see `find_calls`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import QueryError

_SYMBOLS = "(){},'\"\\|"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KWARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?![=~])")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?")
# calls (and pipes) nested deeper than this are refused: the parser and the evaluator recurse once per level,
# and Python's stack is not unbounded (1000 nested sumSeries( was a RecursionError, a 500)
DEFAULT_MAX_NESTING_DEPTH = 100
DEFAULT_MAX_TARGET_LENGTH = 65_536


@dataclass(frozen=True, slots=True)
class PathExpr:
    """A metric path pattern; `pattern` is passed to the index unchanged (globs included)."""

    pattern: str
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant argument: str, int, float, bool or None (`kind` keeps int and float apart)."""

    value: str | int | float | bool | None
    kind: str
    pos: int = 0
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; `raw` is the exact source text, which Graphite uses as seriesByTag's path expression."""

    name: str
    args: tuple[Node, ...] = ()
    kwargs: dict[str, Node] = field(default_factory=dict)
    pos: int = 0
    raw: str = ""


Node = PathExpr | Literal | Call


class _Parser:
    def __init__(self, text: str, max_depth: int = DEFAULT_MAX_NESTING_DEPTH) -> None:
        self.s = text
        self.i = 0
        self.depth = 0
        self.max_depth = max_depth

    def too_deep(self) -> QueryError:
        return QueryError(
            f"target nests function calls deeper than the limit of {self.max_depth} (max-nesting-depth) "
            f"at position {self.i}"
        )

    def error(self, msg: str, pos: int | None = None) -> QueryError:
        at = self.i if pos is None else pos
        return QueryError(f"{msg} at position {at} in target {self.s!r}")

    def ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        self.i = i

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def expression(self) -> Node:
        node = self.primary()
        while True:
            self.ws()
            if self.peek() != "|":
                return node
            self.i += 1
            self.ws()
            start = self.i
            m = _IDENT.match(self.s, self.i)
            if not m or self.s[m.end() : m.end() + 1] != "(":
                raise self.error("a pipe must be followed by a function call")
            self.i = m.end()
            call = self.call(m.group(0), start)
            node = Call(call.name, (node, *call.args), call.kwargs, call.pos, self.s[start : self.i])

    def _delimited(self) -> bool:
        """True when the next non-blank character ends an argument (so a number/bool token is a literal)."""
        j = self.i
        while j < len(self.s) and self.s[j] in " \t\r\n":
            j += 1
        return j >= len(self.s) or self.s[j] in ",)|"

    def primary(self) -> Node:
        self.ws()
        start = self.i
        c = self.peek()
        if not c:
            raise self.error("missing expression")
        if c in "'\"":
            return self.string()
        m = _NUMBER.match(self.s, self.i)
        if m:
            save = self.i
            self.i = m.end()
            if self._delimited():
                text = m.group(0)
                if re.fullmatch(r"[-+]?[0-9]+", text):
                    try:
                        return Literal(int(text), "int", start, text)
                    except ValueError:  # more digits than Python converts
                        raise self.error(f"integer {text[:20]}... is too long") from None
                return Literal(float(text), "float", start, text)
            self.i = save
        m = _IDENT.match(self.s, self.i)
        if m:
            word = m.group(0)
            after = m.end()
            j = after
            while j < len(self.s) and self.s[j] in " \t":
                j += 1
            if j < len(self.s) and self.s[j] == "(":
                self.i = j
                return self.call(word, start)
            self.i = after
            if self._delimited():
                low = word.lower()
                if low in ("true", "false"):
                    return Literal(low == "true", "bool", start, word)
                if low == "none":
                    return Literal(None, "none", start, word)
                if low == "inf":
                    return Literal(float("inf"), "float", start, word)
            self.i = start
        return self.path()

    def string(self) -> Literal:
        start = self.i
        quote = self.s[self.i]
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                # graphite-web keeps a string's text verbatim (its grammar returns what is between the
                # quotes): a backslash only stops the next character from ending the string. So 'it\'s'
                # is it\'s, and aliasSub's "\\1X" reaches re.sub with both backslashes (a literal \1X),
                # exactly as a dashboard written for graphite-web expects
                out.append(self.s[self.i : self.i + 2])
                self.i += 2
                continue
            if ch == quote:
                self.i += 1
                return Literal("".join(out), "string", start, self.s[start : self.i])
            out.append(ch)
            self.i += 1
        raise self.error("unterminated string (missing closing quote)", start)

    def path(self) -> PathExpr:
        start = self.i
        s = self.s
        out: list[str] = []
        depth = 0
        while self.i < len(s):
            ch = s[self.i]
            if ch == "\\" and self.i + 1 < len(s) and s[self.i + 1] in _SYMBOLS + "=":
                out.append(s[self.i + 1])
                self.i += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth > 0:
                pass
            elif ch in _SYMBOLS or ch in " \t\r\n":
                break
            out.append(ch)
            self.i += 1
        if depth:
            raise self.error("unbalanced braces: missing '}'", start)
        if not out:
            ch = self.peek()
            if ch == ")":
                raise self.error("unbalanced parenthesis: unexpected ')'")
            if ch == ",":
                raise self.error("missing argument")
            raise self.error(f"unexpected character {ch!r}")
        return PathExpr("".join(out), start)

    def call(self, name: str, start: int) -> Call:
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.too_deep()
        try:
            return self._call(name, start)
        finally:
            self.depth -= 1

    def _call(self, name: str, start: int) -> Call:
        open_pos = self.i
        self.i += 1  # the '('
        args: list[Node] = []
        kwargs: dict[str, Node] = {}
        self.ws()
        if self.peek() == ")":
            self.i += 1
            return Call(name, (), {}, start, self.s[start : self.i])
        while True:
            self.ws()
            if not self.peek():
                break
            m = _KWARG.match(self.s, self.i)
            if m:
                key = m.group(1)
                if key in kwargs:
                    raise self.error(f"keyword argument {key!r} given twice in call to {name}", self.i)
                self.i = m.end()
                kwargs[key] = self.expression()
            else:
                if kwargs:
                    raise self.error(f"positional argument follows keyword argument in call to {name}")
                args.append(self.expression())
            self.ws()
            ch = self.peek()
            if ch == ",":
                self.i += 1
                continue
            if ch == ")":
                self.i += 1
                return Call(name, tuple(args), kwargs, start, self.s[start : self.i])
            if not ch:
                break
            raise self.error(f"unexpected character {ch!r} in call to {name}")
        raise self.error(f"unbalanced parenthesis: missing ')' to close '{name}(' opened", open_pos)


def parse_target(
    text: str, max_depth: int = DEFAULT_MAX_NESTING_DEPTH, max_length: int = DEFAULT_MAX_TARGET_LENGTH
) -> Node:
    """The expression tree of one target; QueryError (400) with the position on any syntax error, and for a
    target longer than `max_length` characters or nesting calls and pipes deeper than `max_depth`."""
    if len(text) > max_length:
        raise QueryError(
            f"target of {len(text)} characters is longer than the limit of {max_length} (max-target-length)"
        )
    p = _Parser(text, max_depth)
    p.ws()
    if not p.peek():
        raise QueryError("empty target")
    node = p.expression()
    p.ws()
    if p.peek():
        ch = p.peek()
        if ch == ")":
            raise p.error("unbalanced parenthesis: unexpected ')'")
        raise p.error(f"unexpected character {ch!r} after expression")
    if depth(node) > max_depth:  # pipes nest without recursing in the parser: `a | f() | f() ...`
        raise QueryError(
            f"target nests function calls deeper than the limit of {max_depth} (max-nesting-depth)"
        )
    return node


def depth(node: Node) -> int:
    """How deeply calls nest in a tree (0 for a path or literal); iterative, so any tree can be measured."""
    best = 0
    stack: list[tuple[Node, int]] = [(node, 0)]
    while stack:
        n, d = stack.pop()
        if isinstance(n, Call):
            d += 1
            best = max(best, d)
            stack.extend((a, d) for a in (*n.args, *n.kwargs.values()))
    return best


def find_calls(node: Node) -> list[Call]:
    """Every call in the tree, outermost first (for validating function names before any data is read)."""
    out: list[Call] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Call):
            out.append(n)
            stack.extend(reversed([*n.args, *n.kwargs.values()]))
    return out


def first_path_expression(name: str) -> str | None:
    """The path expression a derived series name starts from (`scale(a.b.c,2)` -> `a.b.c`), as graphite-web
    does for aliasByNode on function output; None when the name contains no path."""
    try:
        node = parse_target(name)
    except QueryError:
        return None
    while isinstance(node, Call):
        if node.name == "seriesByTag" or not node.args:
            return None
        node = node.args[0]
    return node.pattern if isinstance(node, PathExpr) else None
