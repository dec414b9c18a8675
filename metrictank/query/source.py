"""Where the query layer gets its data: the `SeriesSource` protocol, and `StaticSource` for tests.

The protocol is the whole contract between the Graphite API and the storage side (index, tank, chunk
store). The storage side decides which archive (raw or rollup) serves a request, stitches memory and
store, and hands back series already on a fixed step; everything Graphite-specific (parsing, functions,
maxDataPoints, output formats) stays here.

Org visibility: `org` is the caller's org id (X-Org-Id, default 1). Series stored under org -1 are public
and must be returned to every org, as Metrictank does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from metrictank.regex import PatternError, UserRegex, compile_user_regex

from .consolidate import quantize
from .errors import QueryError
from .limits import check_deadline
from .match import find_nodes, match_paths, match_tags, parse_tag_expr
from .series import Series, tags_from_name


@dataclass(frozen=True, slots=True)
class FindNode:
    """A node of the metric tree: `path` is the full dotted path of the node."""

    path: str
    leaf: bool
    has_children: bool


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """A series selected by a query: `name` is its full name (`a.b.c`, or `name;k=v;...` when tagged) and
    `key` an opaque handle the source gives itself to fetch it later (e.g. the series id). `last_update` is
    the time of its newest point or definition (0: unknown), what /tags/findSeries reports as lastTs."""

    name: str
    key: object = None
    last_update: int = 0


@runtime_checkable
class SeriesSource(Protocol):
    """Read side of the store, as the Graphite API needs it."""

    def find(self, org: int, pattern: str, from_ts: int = 0) -> list[FindNode]:
        """Tree nodes matching a path glob (for /metrics/find and /metrics/expand); with `from_ts`, series last
        updated before it are left out (a branch stays while it has children), as Metrictank does."""
        ...

    def resolve(self, org: int, pattern: str) -> list[SeriesRef]:
        """Series whose name matches a path glob (leaves only)."""
        ...

    def resolve_tags(self, org: int, exprs: Sequence[str], from_ts: int = 0) -> list[SeriesRef]:
        """Series matching every tag expression (seriesByTag), given as the raw strings (`dc=~eu.*`), already
        validated by `match.parse_tag_query`; the `name` tag is the metric name. With `from_ts`, series last
        updated before it are left out."""
        ...

    def fetch(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> list[Series]:
        """Data of `refs` for the time range [start, end) (start inclusive, end exclusive, epoch seconds).

        Each returned series has `target` = ref.name, a fixed `step` (the archive read), `start` = the first
        multiple of step >= start, and one value per step up to the last multiple of step < end, NaN where
        no data exists (`consolidate.quantize` does exactly this to raw points). `consolidator` is the
        archive's aggregation method (avg, sum, min, max, last, count), used when the query layer must
        consolidate further. `max_data_points` (0 = no limit) and `consolidate_by` (a method name from
        consolidateBy(), or None) are hints for choosing the archive; the query layer consolidates to
        maxDataPoints itself afterwards. Tags may be left empty: they are derived from the name.
        """
        ...

    def estimate_points(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> int:
        """How many points `fetch` with the same arguments would read: per series, the points of [start, end)
        on the step of the archive it would choose, summed. Must be cheap (no data is read): the engine calls
        it to enforce the request's point limits before fetching. Optional; without it the limits are not
        checked in advance."""
        ...

    def all_paths(self, org: int) -> list[str]:
        """Every series name visible to the org (for /metrics/index.json)."""
        ...

    def tags(self, org: int, filter: str | None) -> list[str]:
        """Sorted tag keys (including `name`) whose key matches the regex `filter` (searched, not anchored)."""
        ...

    def tag_values(self, org: int, tag: str, filter: str | None) -> dict[str, int]:
        """Values of one tag with the number of series carrying each; `filter` is a regex on the value."""
        ...

    def autocomplete_tags(self, org: int, prefix: str, exprs: Sequence[str], limit: int) -> list[str]:
        """Sorted tag keys starting with `prefix` among series matching the tag expressions `exprs` (raw
        strings, validated; all series when empty), leaving out the keys the expressions already constrain;
        at most `limit`."""
        ...

    def autocomplete_tag_values(
        self, org: int, tag: str, prefix: str, exprs: Sequence[str], limit: int
    ) -> list[str]:
        """Sorted values of `tag` starting with `prefix` among series matching `exprs`; at most `limit`."""
        ...


def _filter(regex: str | None) -> UserRegex | None:
    try:
        return compile_user_regex(regex, "filter") if regex else None
    except PatternError as e:
        raise QueryError(str(e)) from None


@dataclass
class _Stored:
    start: int
    step: int
    values: np.ndarray
    consolidator: str


@dataclass
class StaticSource:
    """An in-memory source for tests and benchmarks.

    `data` maps org -> {series name -> (start, step, values)} where values[i] is the point at
    start + i*step (NaN for a gap); a flat {name -> (start, step, values)} mapping is taken as org 1.
    Every fetch is recorded in `fetches` as (org, names, start, end, max_data_points, consolidate_by) so tests
    can check which ranges a query asked for.
    """

    data: Mapping[object, object]
    consolidators: Mapping[str, str] = field(default_factory=dict)
    fetches: list[tuple[int, tuple[str, ...], int, int, int, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        orgs: dict[int, dict[str, _Stored]] = {}
        flat = all(isinstance(k, str) for k in self.data)
        items = {1: self.data} if flat else self.data
        for org, series in items.items():
            store = orgs.setdefault(int(org), {})  # type: ignore[arg-type]
            for name, (start, step, values) in series.items():  # type: ignore[union-attr]
                store[name] = _Stored(
                    int(start),
                    int(step),
                    np.asarray(values, dtype=np.float64),
                    self.consolidators.get(name, "avg"),
                )
        self._orgs = orgs
        self._tags = {org: {n: tags_from_name(n) for n in s} for org, s in orgs.items()}

    def _visible(self, org: int) -> dict[str, _Stored]:
        out = dict(self._orgs.get(-1, {}))
        out.update(self._orgs.get(org, {}))
        return out

    def _visible_tags(self, org: int) -> dict[str, dict[str, str]]:
        out = dict(self._tags.get(-1, {}))
        out.update(self._tags.get(org, {}))
        return out

    def _last_update(self, st: _Stored) -> int:
        """The time of the newest non-NaN point (0 when there is none)."""
        idx = np.flatnonzero(~np.isnan(st.values))
        return int(st.start + st.step * idx[-1]) if len(idx) else 0

    def find(self, org: int, pattern: str, from_ts: int = 0) -> list[FindNode]:
        store = self._visible(org)
        paths = [n for n, st in store.items() if ";" not in n]
        out = []
        for m in find_nodes(pattern, paths):
            leaf = m.leaf and (not from_ts or self._last_update(store[m.path]) >= from_ts)
            if leaf or m.has_children:
                out.append(FindNode(m.path, leaf, m.has_children))
        return out

    def resolve(self, org: int, pattern: str) -> list[SeriesRef]:
        return [SeriesRef(n, n) for n in match_paths(pattern, self._visible(org))]

    def resolve_tags(self, org: int, exprs: Sequence[str], from_ts: int = 0) -> list[SeriesRef]:
        parsed = [parse_tag_expr(e) for e in exprs]
        tags, store = self._visible_tags(org), self._visible(org)
        refs = [
            SeriesRef(n, n, self._last_update(store[n])) for n in sorted(tags) if match_tags(parsed, tags[n])
        ]
        return [r for r in refs if r.last_update >= from_ts] if from_ts else refs

    def estimate_points(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> int:
        store = self._visible(org)
        total = 0
        for ref in refs:
            st = store.get(ref.name)
            if st is not None:
                total += max(0, (end - 1) // st.step - -(-start // st.step) + 1)
        return total

    def fetch(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> list[Series]:
        self.fetches.append((org, tuple(r.name for r in refs), start, end, max_data_points, consolidate_by))
        store = self._visible(org)
        out = []
        for i, ref in enumerate(refs):
            if i % 256 == 0:
                check_deadline()
            st = store.get(ref.name)
            if st is None:
                raise QueryError(f"unknown series {ref.name!r}", status=404)
            if st.start % st.step == 0:
                # stored points already sit on the grid: slots are a plain window of the array
                first = -(-start // st.step) * st.step
                n = max(0, ((end - 1) // st.step * st.step - first) // st.step + 1)
                vals = np.full(n, np.nan)
                off = (first - st.start) // st.step
                lo, hi = max(0, off), min(len(st.values), off + n)
                if lo < hi:
                    vals[lo - off : hi - off] = st.values[lo:hi]
                out.append(Series(ref.name, ref.name, {}, first, st.step, vals, st.consolidator))
                continue
            lo = max(0, -(-(start - st.start) // st.step) - 1)
            hi = min(len(st.values), (end - st.start) // st.step + 1)
            lo = min(lo, hi)
            ts = st.start + st.step * np.arange(lo, hi, dtype=np.int64)
            first, vals = quantize(ts, st.values[lo:hi], start, end, st.step)
            out.append(Series(ref.name, ref.name, {}, first, st.step, vals, st.consolidator))
        return out

    def all_paths(self, org: int) -> list[str]:
        return sorted(self._visible(org))

    def tags(self, org: int, filter: str | None) -> list[str]:
        keys = {k for t in self._visible_tags(org).values() for k in t}
        rx = _filter(filter)
        return sorted(k for k in keys if rx is None or rx.search(k))

    def tag_values(self, org: int, tag: str, filter: str | None) -> dict[str, int]:
        rx = _filter(filter)
        counts: dict[str, int] = {}
        for t in self._visible_tags(org).values():
            v = t.get(tag)
            if v is not None and (rx is None or rx.search(v)):
                counts[v] = counts.get(v, 0) + 1
        return counts

    def _matching(self, org: int, exprs: Sequence[str]) -> list[dict[str, str]]:
        parsed = [parse_tag_expr(e) for e in exprs]
        return [t for t in self._visible_tags(org).values() if match_tags(parsed, t)]

    def autocomplete_tags(self, org: int, prefix: str, exprs: Sequence[str], limit: int) -> list[str]:
        used = {parse_tag_expr(e).key for e in exprs}
        keys = {k for t in self._matching(org, exprs) for k in t if k.startswith(prefix) and k not in used}
        return sorted(keys)[:limit]

    def autocomplete_tag_values(
        self, org: int, tag: str, prefix: str, exprs: Sequence[str], limit: int
    ) -> list[str]:
        vals = {t[tag] for t in self._matching(org, exprs) if tag in t and t[tag].startswith(prefix)}
        return sorted(vals)[:limit]
