"""Graphite tag expressions (`seriesByTag`) and the inverted index they run against.

The index maps org -> tag -> value -> rows, with `name` indexed for every series (tagged or not) as
Metrictank does, so `seriesByTag('name=a.b')` also finds plain Graphite series. A posting is a bare
int while a value has one series (most values of high-cardinality tags such as `host`), and an
`array('i')` once it has more (4 bytes a member), which keeps a tag's cost per series near one dict
slot.

Query evaluation is Metrictank's plan: start from the cheapest expression that requires a non-empty
value (an `=` posting, else a scan of one tag's values), then narrow the candidate rows (a sorted
numpy array) with the other expressions: by `np.isin` against postings when those are small, by
testing each candidate's own value otherwise. A tag a series does not have counts as the empty
value (graphite-web's rule), so `t!=v`, `t=` and a regex that matches "" accept series without `t`.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from metrictank.regex import PatternError, UserRegex, compile_user_regex

Posting = int | array
OrgTags = dict[str, dict[str, Posting]]

EQ, NE, MATCH, NOT_MATCH, PREFIX, HAS, NOT_HAS, MATCH_ALL, MATCH_NONE = (
    "=",
    "!=",
    "=~",
    "!=~",
    "^=",
    "has",
    "not-has",
    "match-all",
    "match-none",
)
_MATCH_ANY_RE = {"^(?:.*)", "^.*", "^(.*)"}


class TagQueryError(ValueError):
    """A tag expression or query Graphite would reject (HTTP 400 material)."""


@dataclass(frozen=True, slots=True)
class Expr:
    """One parsed expression; `op` is the effective operator after empty-value rewriting."""

    key: str
    op: str
    value: str
    rx: UserRegex | None = None  # RE2: a user's regex runs in time linear in the value, whatever it is

    @property
    def positive(self) -> bool:
        """Whether the expression can only match series that have the tag (Graphite requires one)."""
        if self.op in (EQ, HAS, PREFIX, MATCH_NONE):
            return True
        if self.op == MATCH:
            return self.rx is not None and not self.rx.match("")
        if self.op == NOT_MATCH:
            return self.rx is not None and self.rx.match("")
        return False

    def passes(self, v: str | None) -> bool:
        """Whether a series whose value for `key` is `v` (None: absent) satisfies the expression."""
        op = self.op
        if op == EQ:
            return v == self.value
        if op == NE:
            return v != self.value
        if op == HAS:
            return v is not None
        if op == NOT_HAS:
            return v is None
        if op == PREFIX:
            return v is not None and v.startswith(self.value)
        if op == MATCH:
            return self.rx.match(v or "")  # type: ignore[union-attr]
        if op == NOT_MATCH:
            return not self.rx.match(v or "")  # type: ignore[union-attr]
        return op == MATCH_ALL


def parse_expr(expr: str) -> Expr:
    """Parse `tag=v`, `tag!=v`, `tag=~re`, `tag!=~re`, `tag^=prefix` (Metrictank's grammar)."""
    pos = 0
    not_, prefix = False, False
    while pos < len(expr):
        c = expr[pos]
        if c == "=":
            break
        if c == "!":
            not_ = True
            break
        if c == "^":
            prefix = True
            break
        if c == ";":
            raise TagQueryError(f"invalid tag expression {expr!r}: ';' in tag name")
        pos += 1
    key = expr[:pos]
    if not key:
        raise TagQueryError(f"invalid tag expression {expr!r}: empty tag name")
    if key.startswith("__tag"):
        raise TagQueryError(f"invalid tag expression {expr!r}: __tag expressions are not supported")
    if not_ or prefix:
        pos += 1
    if pos >= len(expr) or expr[pos] != "=":
        raise TagQueryError(f"invalid tag expression {expr!r}: want tag=, tag!=, tag=~, tag!=~ or tag^=")
    pos += 1
    regex = False
    if pos < len(expr) and expr[pos] == "~":
        if prefix:
            raise TagQueryError(f"invalid tag expression {expr!r}: ^=~ is not an operator")
        regex = True
        pos += 1
    value = expr[pos:]
    if ";" in value:
        raise TagQueryError(f"invalid tag expression {expr!r}: ';' in value")
    if regex:
        if not value:
            return Expr(key, MATCH_NONE if not_ else MATCH_ALL, value)
        pattern = value if value.startswith("^") else "^(?:" + value + ")"
        if pattern in _MATCH_ANY_RE:
            return Expr(key, MATCH_NONE if not_ else MATCH_ALL, value)
        try:
            rx = compile_user_regex(pattern, f"tag expression {expr!r}")
        except PatternError as e:
            raise TagQueryError(str(e)) from None
        return Expr(key, NOT_MATCH if not_ else MATCH, value, rx)
    if prefix:
        return Expr(key, PREFIX if value else MATCH_ALL, value)
    if not_:
        return Expr(key, NE if value else HAS, value)
    return Expr(key, EQ if value else NOT_HAS, value)


def parse_query(exprs: Iterable[str]) -> list[Expr]:
    """Parse and validate a whole `seriesByTag` argument list."""
    parsed = list(dict.fromkeys(parse_expr(e) for e in exprs))
    if not parsed:
        raise TagQueryError("tag query needs at least one expression")
    if not any(e.positive for e in parsed):
        raise TagQueryError(
            "tag query needs at least one expression that requires a non-empty value "
            "(tag=value, tag!=, tag^=prefix or tag=~regex whose regex does not match an empty string)"
        )
    return parsed


def tag_value(tags: tuple[str, ...] | None, key: str) -> str | None:
    """Value of `key` in a sorted `k=v` tuple."""
    if tags:
        pre = key + "="
        for t in tags:
            if t.startswith(pre):
                return t[len(pre) :]
    return None


def _add_tags(idx: dict, row: int, tags) -> None:
    """Post `row` under each `k=v` tag (`name=` skipped: the name has its own postings); keys and values interned."""
    intern = sys.intern
    for t in tags or ():
        k, _, v = t.partition("=")
        if k == "name":
            continue
        values = idx.get(k)
        if values is None:
            values = idx[intern(k)] = {}
        _add(values, v if v in values else intern(v), row)


def _add(values: dict[str, Posting], v: str, row: int) -> None:
    cur = values.get(v)
    if cur is None:
        values[v] = row
    elif cur.__class__ is int:
        if cur != row:
            values[v] = array("i", (cur, row))
    else:
        cur.append(row)  # type: ignore[union-attr]


def _rows(p: Posting | None) -> np.ndarray:
    """A posting as an int64 array (a copy: a view would pin the array.array's buffer)."""
    if p is None:
        return _EMPTY
    if p.__class__ is int:
        return np.array((p,), np.int64)
    return np.frombuffer(p, np.int32).astype(np.int64)  # type: ignore[arg-type]


def posting_size(p: Posting | None) -> int:
    """The number of series (rows) in a posting."""
    if p is None:
        return 0
    return 1 if p.__class__ is int else len(p)  # type: ignore[arg-type]


def _union(postings: list[Posting]) -> np.ndarray:
    """Sorted unique rows of several postings."""
    if not postings:
        return _EMPTY
    singles = [p for p in postings if p.__class__ is int]
    arrays = [np.frombuffer(p, np.int32) for p in postings if p.__class__ is not int]  # type: ignore[arg-type]
    if singles:
        arrays.append(np.array(singles, np.int32))
    out = np.unique(np.concatenate(arrays)).astype(np.int64)
    del arrays  # release the buffer views at once
    return out


_EMPTY = np.zeros(0, np.int64)


class TagIndex:
    """Inverted index org -> tag -> value -> rows; not thread-safe (the owner locks).

    A posting is a bare int while a value has one series and an `array('i')` of rows (4 bytes each,
    unsorted, unique) once it has more: a set would cost ~40 bytes a member, ten times as much, and
    queries work on numpy arrays anyway."""

    def __init__(self) -> None:
        self._orgs: dict[int, OrgTags] = {}

    def org(self, org: int) -> OrgTags | None:
        return self._orgs.get(org)

    def add(self, org: int, row: int, name: str, tags: tuple[str, ...] | None) -> None:
        idx = self._orgs.get(org)
        if idx is None:
            idx = self._orgs[org] = {}
        names = idx.get("name")
        if names is None:
            names = idx["name"] = {}
        _add(names, name, row)
        _add_tags(idx, row, tags)

    def add_many(
        self, org: int, rows: list[int], names: list[str], tags: list[tuple[str, ...] | None]
    ) -> None:
        """`add` for a batch of one org's series, same result. New plain series have names no other
        series has, so the `name` postings of such a batch go in with one dict update."""
        if not rows:
            return
        idx = self._orgs.get(org)
        if idx is None:
            idx = self._orgs[org] = {}
        names_d = idx.get("name")
        if names_d is None:
            names_d = idx["name"] = {}
        fresh = dict(zip(names, rows, strict=True))
        if len(fresh) == len(rows) and names_d.keys().isdisjoint(fresh):
            names_d.update(fresh)
        else:
            for name, row in zip(names, rows, strict=True):
                _add(names_d, name, row)
        if not any(tags):
            return
        for row, tt in zip(rows, tags, strict=True):
            _add_tags(idx, row, tt)

    def remove(self, org: int, series: Iterable[tuple[int, str, tuple[str, ...] | None]]) -> None:
        """Drop (row, name, tags) entries; batched so a posting shared by many removed series (say
        `env=prod` during a prune) is rewritten once, not once per series."""
        idx = self._orgs.get(org)
        if idx is None:
            return
        drops: dict[tuple[str, str], list[int]] = {}
        for row, name, tags in series:
            drops.setdefault(("name", name), []).append(row)
            for t in tags or ():
                k, _, v = t.partition("=")
                if k != "name":
                    drops.setdefault((k, v), []).append(row)
        for (k, v), rows in drops.items():
            values = idx.get(k)
            cur = values.get(v) if values is not None else None
            if cur is None:
                continue
            assert values is not None
            if cur.__class__ is int:
                if cur in rows:
                    del values[v]
            elif len(rows) == 1:
                try:
                    cur.remove(rows[0])  # type: ignore[union-attr]
                except ValueError:
                    pass
                if len(cur) == 1:  # type: ignore[arg-type]
                    values[v] = cur[0]  # type: ignore[index]
            else:
                a = np.frombuffer(cur, np.int32)  # type: ignore[arg-type]
                keep = a[~np.isin(a, rows)]
                del a
                if len(keep) == 0:
                    del values[v]
                elif len(keep) == 1:
                    values[v] = int(keep[0])
                else:
                    values[v] = array("i", keep.tobytes())
            if not values:
                del idx[k]
        if not idx:
            del self._orgs[org]

    def query(self, org: int, exprs: list[Expr], row_value: Callable[[int, str], str | None]) -> np.ndarray:
        """Sorted rows of `org` matching every expression; `row_value(row, key)` reads one series' value."""
        idx = self._orgs.get(org)
        if not idx:
            return _EMPTY
        sel = _pick_selector(idx, exprs)
        if sel is None:
            return _EMPTY
        cand = _select(idx, sel)
        rest = sorted((e for e in exprs if e is not sel), key=lambda e: e.op not in (EQ, NE))
        for e in rest:
            if cand.size == 0:
                break
            cand = _narrow(idx, e, cand, row_value)
        return cand


def _pick_selector(idx: OrgTags, exprs: list[Expr]) -> Expr | None:
    """The positive expression expected to yield the fewest candidates; None if one matches nothing."""
    best, best_cost = None, None
    for e in exprs:
        if not e.positive:
            continue
        values = idx.get(e.key)
        if e.op == MATCH_NONE or values is None:
            return None
        if e.op == EQ:
            n = posting_size(values.get(e.value))
            if n == 0:
                return None
            cost = n
        else:  # scans every value of the tag; a regex per value costs more than a prefix test
            cost = len(values) * (4 if e.rx is not None else 2)
        if best_cost is None or cost < best_cost:
            best, best_cost = e, cost
    return best


def _select(idx: OrgTags, e: Expr) -> np.ndarray:
    values = idx[e.key]
    if e.op == EQ:
        return np.sort(_rows(values.get(e.value)))
    passes = e.passes
    return _union([p for v, p in values.items() if passes(v)])


def _narrow(
    idx: OrgTags, e: Expr, cand: np.ndarray, row_value: Callable[[int, str], str | None]
) -> np.ndarray:
    values = idx.get(e.key) or {}
    if e.op in (EQ, NE):
        hit = np.isin(cand, _rows(values.get(e.value)))
        return cand[hit] if e.op == EQ else cand[~hit]
    if e.op == MATCH_ALL:
        return cand
    if e.op == MATCH_NONE:
        return _EMPTY
    absent_passes = e.passes(None)
    if len(values) <= cand.size:
        # decide per distinct value, then combine postings when that touches fewer rows than testing
        # each candidate would
        chosen = [p for v, p in values.items() if e.passes(v) != absent_passes]
        if sum(posting_size(p) for p in chosen) <= 8 * cand.size:
            hit = np.isin(cand, _union(chosen))
            return cand[~hit] if absent_passes else cand[hit]
    cache: dict[str | None, bool] = {}
    key, passes = e.key, e.passes
    keep = np.zeros(cand.size, bool)
    for i, r in enumerate(cand.tolist()):
        v = row_value(r, key)
        ok = cache.get(v)
        if ok is None:
            ok = cache[v] = passes(v)
        keep[i] = ok
    return cand[keep]
