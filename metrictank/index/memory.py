"""The in-memory series index: definitions, dense row numbers, Graphite find and tag queries.

The index owns the row numbering the tank's columnar arrays are laid out by. Rows are dense ints from
0; a removed series' row goes on a free list and is handed to the next new series, so the tank's
arrays stay as long as the peak series count.

Per series the index keeps numpy columns (binary key, org, partition, lastupdate, interval, unit and
mtype codes) and two Python object slots (the name and, for tagged series, the sorted tag tuple);
`Definition` objects are built only when asked for. Untagged series are placed in a per-org path tree
for `/metrics/find`; every series' name, and every tag of tagged series, goes into the inverted tag
index. Tagged series are not in the tree (as in Metrictank with tag support): their path is
`name;k=v;...` and they are found through tag queries or by that exact path.

Org visibility: a query for org N sees org N's series and the public org's (-1); where both orgs have
the same path, org N's node wins and the public series under it are hidden (Metrictank's rule).

Locking: one lock serialises mutations and the readers of shared Python structures. `lookup_rows`
and `touch`, the per-batch ingest calls, take no lock, so a long `find` never stalls ingest; see
`KeyTable` for why a lock-free lookup is safe.
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from metrictank.index.defbatch import DefBatch
from metrictank.index.glob import compile_path
from metrictank.index.keys import M32, format_id, parse_id, parse_ids
from metrictank.index.keytable import KeyTable
from metrictank.index.tags import TagIndex, TagQueryError, parse_query, posting_size, tag_value
from metrictank.index.tree import Tree, node_info
from metrictank.regex import PatternError, UserRegex, compile_user_regex

PUBLIC_ORG = -1


@dataclass(frozen=True, slots=True)
class Definition:
    """A series definition as stored in the index (a snapshot; the index keeps columns, not these)."""

    id: str
    org: int
    name: str
    interval: int
    unit: str
    mtype: str
    tags: tuple[str, ...]
    partition: int
    lastupdate: int
    row: int

    @property
    def path(self) -> str:
        """Graphite path: the name, plus `;k=v` per tag for tagged series."""
        return ";".join((self.name, *self.tags)) if self.tags else self.name


class Node(NamedTuple):
    """One `/metrics/find` result. A path can be both a leaf (a series) and a branch."""

    path: str
    leaf: bool
    has_children: bool
    rows: tuple[int, ...]


class _Codes:
    """Small string tables (units, mtypes) stored as int codes in a column."""

    __slots__ = ("strs", "codes")

    def __init__(self) -> None:
        self.strs: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, s: str) -> int:
        c = self.codes.get(s)
        if c is None:
            c = self.codes[s] = len(self.strs)
            self.strs.append(sys.intern(s))
        return c


_COLUMNS = (
    ("_org", np.int64),
    ("_id_org", np.int64),
    ("_partition", np.int32),
    ("_lastupdate", np.int64),
    ("_interval", np.int32),
    ("_unit", np.int32),
    ("_mtype", np.int32),
    # object columns: numpy arrays are invisible to the cyclic GC, so a million names and tag tuples
    # add nothing to every full collection (a list of them would be traversed each time)
    ("_names", object),
    ("_tags", object),
)


_PATH = operator.itemgetter(0)
_tuple_new = tuple.__new__


def _nodes(paths: list[str], vals: list[object]) -> list[Node]:
    """Find results as Nodes; built with tuple.__new__ since a NamedTuple's own constructor is a
    Python-level call and wide finds make one per child."""
    out = []
    add = out.append
    for p, v in zip(paths, vals, strict=True):
        cls = v.__class__
        if cls is int:
            add(_tuple_new(Node, (p, True, False, (v,))))
        elif cls is dict:
            add(_tuple_new(Node, (p, False, True, ())))
        elif cls is tuple:
            add(_tuple_new(Node, (p, True, False, v)))
        else:
            add(_tuple_new(Node, (p, *node_info(v))))
    return out


def _rows_of(p: int | Sequence[int]) -> Sequence[int]:
    return (p,) if isinstance(p, int) else p


def _filter(regex: str | None) -> UserRegex | None:
    """The compiled `filter` of a tag listing, on RE2 (compiled before the lock, like every user pattern)."""
    if not regex:
        return None
    try:
        return compile_user_regex(regex, "filter")
    except PatternError as e:
        raise TagQueryError(str(e)) from None


def _limit(items: list[str], limit: int | None) -> list[str]:
    """graphite-web's rule: a limit of 0 or None means no limit."""
    return items[:limit] if limit else items


def _column(n: int, dtype: type) -> np.ndarray:
    return np.full(n, None, object) if dtype is object else np.zeros(n, dtype)


def _first_of_each(k0: np.ndarray, k1: np.ndarray, org: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of each distinct key's first occurrence, ascending; for every position, the index of its
    key's first occurrence in that list)."""
    n = len(k0)
    if n < 2 or len(np.unique(k0)) == n:  # distinct md5 halves: distinct keys (the normal case)
        return np.arange(n), np.arange(n)
    keys = np.empty(n, [("k0", np.uint64), ("k1", np.uint64), ("org", np.int64)])
    keys["k0"], keys["k1"], keys["org"] = k0, k1, np.asarray(org, np.int64) & M32  # the table's notion
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(first), np.int64)
    rank[order] = np.arange(len(first))
    return first[order], rank[inverse.ravel()]


class MemoryIndex:
    """Series index for one node: routing of binary keys to rows, Graphite find, tag queries."""

    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.RLock()
        self._keys = KeyTable(capacity * 2)
        cap = max(16, capacity)
        for name, dtype in _COLUMNS:
            setattr(self, name, _column(cap, dtype))
        self._nrows = 0  # high-water mark of rows handed out
        self._free: list[int] = []
        self._count = 0
        self._units = _Codes()
        self._mtypes = _Codes()
        self._trees: dict[int, Tree] = {}
        self._tagidx = TagIndex()

    # -- size & rows -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def row_capacity(self) -> int:
        """One past the highest row ever handed out: the length per-row arrays need."""
        return self._nrows

    def _grow(self, nrows: int) -> None:
        cap = len(self._org)
        if nrows <= cap:
            return
        new = max(nrows, cap * 2)
        for name, dtype in _COLUMNS:
            arr = _column(new, dtype)
            arr[:cap] = getattr(self, name)
            setattr(self, name, arr)

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        row = self._nrows
        self._grow(row + 1)
        self._nrows += 1
        return row

    # -- writes ----------------------------------------------------------------------------------------

    def add(
        self,
        id: str,
        org: int,
        name: str,
        interval: int,
        unit: str,
        mtype: str,
        tags: Sequence[str],
        partition: int,
        lastupdate: int,
    ) -> tuple[int, bool]:
        """Insert or refresh a definition; returns (row, created).

        A known id gets its partition set and its lastupdate raised (never lowered: an old copy of a
        definition, e.g. one loaded from the store, must not make a live series look stale). If its
        name, tags, interval, unit, mtype or org differ it is re-indexed under the new values.
        """
        id_org, k0, k1 = parse_id(id)
        intern = sys.intern
        tag_t = tuple(sorted({intern(t) for t in tags})) or None
        with self._lock:
            row, slot = self._keys.get_slot(k0, k1, id_org)
            if row >= 0:
                self._partition[row] = partition
                if lastupdate > self._lastupdate[row]:
                    self._lastupdate[row] = lastupdate
                if (
                    self._names[row] != name
                    or self._tags[row] != tag_t
                    or self._interval[row] != interval
                    or self._org[row] != org
                    or self._units.strs[self._unit[row]] != unit
                    or self._mtypes.strs[self._mtype[row]] != mtype
                ):
                    self._unindex(row)
                    self._set_meta(row, org, name, interval, unit, mtype, tag_t)
                    self._index(row)
                return row, False
            row = self._alloc()
            self._keys.insert(k0, k1, id_org, row, slot)
            self._id_org[row] = id_org
            self._partition[row] = partition
            self._lastupdate[row] = lastupdate
            self._set_meta(row, org, name, interval, unit, mtype, tag_t)
            self._index(row)
            self._count += 1
            return row, True

    def add_many(
        self,
        ids: Sequence[str],
        orgs: Sequence[int] | np.ndarray,
        names: Sequence[str],
        intervals: Sequence[int] | np.ndarray,
        units: Sequence[str],
        mtypes: Sequence[str],
        tags: Sequence[Sequence[str] | None],
        partitions: Sequence[int] | np.ndarray,
        lastupdates: Sequence[int] | np.ndarray,
        parsed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`add` for a batch of definitions (e.g. the MetricData of one Kafka batch): (rows, created).

        Same result as calling `add` in order, but both common cases are handled per batch: definitions
        the index already has (producers resend them with every point or periodically) are routed,
        re-partitioned and touched with numpy, and series new to the index are created together (rows,
        key table, columns with numpy; tree and tag index one batch call each). Only changed definitions
        take the per-series path. `parsed` is `parse_ids(ids)` when the caller has it already (the ingest
        path parses ids while validating them)."""
        n = len(ids)
        id_org, k0, k1 = parse_ids(ids) if parsed is None else parsed
        parts = np.asarray(partitions, np.int32)
        lus = np.asarray(lastupdates, np.int64)
        orgs_a = np.asarray(orgs, np.int64)
        ivs = np.asarray(intervals, np.int64)
        created = np.zeros(n, bool)
        with self._lock:
            rows = self._keys.lookup(k0, k1, id_org)
            new = np.flatnonzero(rows < 0)
            if new.size:
                first, inverse = _first_of_each(k0[new], k1[new], id_org[new])
                make = new[first]  # the occurrence that creates each new series, in batch order
                rows[make] = self._create(
                    make, id_org, k0, k1, orgs_a, names, ivs, units, mtypes, tags, parts, lus
                )
                created[make] = True
                if len(make) < len(new):  # later occurrences are updates of the series just created
                    rows[new] = rows[make][inverse]
            known = np.flatnonzero(~created)
            slow: list[int] = []
            if known.size:
                kr = rows[known]
                self._partition[kr] = parts[known]
                np.maximum.at(self._lastupdate, kr, lus[known])
                differs = self._meta_differs(kr, known, orgs_a, names, ivs, units, mtypes, tags)
                if differs.any():
                    # every occurrence of a changed series goes the slow way, so the last one wins
                    slow = known[np.isin(kr, kr[differs])].tolist()
            for i in slow:
                rows[i] = self.add(
                    ids[i],
                    int(orgs_a[i]),
                    names[i],
                    int(ivs[i]),
                    units[i],
                    mtypes[i],
                    tags[i] or (),
                    int(parts[i]),
                    int(lus[i]),
                )[0]
        return rows, created

    def _create(
        self,
        at: np.ndarray,
        id_org: np.ndarray,
        k0: np.ndarray,
        k1: np.ndarray,
        orgs: np.ndarray,
        names: Sequence[str],
        intervals: np.ndarray,
        units: Sequence[str],
        mtypes: Sequence[str],
        tags: Sequence[Sequence[str] | None],
        parts: np.ndarray,
        lus: np.ndarray,
    ) -> np.ndarray:
        """Create the series at batch positions `at` (keys not in the index, no two equal); returns their
        rows, allocated as successive `add` calls would (free list first, most recently freed first)."""
        m = len(at)
        at_l = at.tolist()
        free = self._free
        nf = min(m, len(free))
        reused = free[len(free) - nf :][::-1]
        del free[len(free) - nf :]
        lo = self._nrows
        self._grow(lo + m - nf)
        self._nrows = lo + m - nf
        rows = np.array(reused + list(range(lo, lo + m - nf)), np.int64)
        self._keys.insert_many(k0[at], k1[at], id_org[at], rows)
        self._id_org[rows] = id_org[at]
        self._partition[rows] = parts[at]
        self._lastupdate[rows] = lus[at]
        self._org[rows] = orgs[at]
        self._interval[rows] = intervals[at]
        self._unit[rows] = self._codes_of(self._units, [units[i] for i in at_l])
        self._mtype[rows] = self._codes_of(self._mtypes, [mtypes[i] for i in at_l])
        names_l = [names[i] for i in at_l]
        tags_l = [tags[i] for i in at_l]
        if any(tags_l):
            intern = sys.intern
            tag_ts = [tuple(sorted({intern(t) for t in tt})) or None if tt else None for tt in tags_l]
            # as in `_set_meta`: tagged names repeat across series, so they share one string
            names_l = [intern(nm) if tt else nm for nm, tt in zip(names_l, tag_ts, strict=True)]
            self._tags[rows] = np.fromiter(tag_ts, object, m)
        else:
            tag_ts = [None] * m
            self._tags[rows] = None
        self._names[rows] = np.fromiter(names_l, object, m)
        self._count += m
        self._index_many(rows.tolist(), orgs[at].tolist(), names_l, tag_ts)
        return rows

    @staticmethod
    def _codes_of(table: _Codes, strs: list[str]) -> np.ndarray:
        codes = table.codes
        try:
            return np.fromiter(map(codes.__getitem__, strs), np.int32, len(strs))
        except KeyError:
            return np.fromiter(map(table.code, strs), np.int32, len(strs))

    def _index_many(
        self, rows: list[int], orgs: list[int], names: list[str], tags: list[tuple[str, ...] | None]
    ) -> None:
        """`_index` for a batch of new rows, one tree and one tag-index call per org."""
        by_org: dict[int, list[int]]
        if len(set(orgs)) == 1:
            groups = [(orgs[0], rows, names, tags)]
        else:
            by_org = {}
            for j, o in enumerate(orgs):
                by_org.setdefault(o, []).append(j)
            groups = [
                (o, [rows[j] for j in js], [names[j] for j in js], [tags[j] for j in js])
                for o, js in by_org.items()
            ]
        for org, g_rows, g_names, g_tags in groups:
            if any(g_tags):
                plain = [j for j, t in enumerate(g_tags) if not t]
                t_rows, t_names = [g_rows[j] for j in plain], [g_names[j] for j in plain]
            else:
                t_rows, t_names = g_rows, g_names
            if t_rows:
                tree = self._trees.get(org)
                if tree is None:
                    tree = self._trees[org] = Tree()
                tree.add_many(t_names, t_rows)
            self._tagidx.add_many(org, g_rows, g_names, g_tags)

    def _meta_differs(
        self,
        rows: np.ndarray,
        at: np.ndarray,
        orgs: np.ndarray,
        names: Sequence[str],
        intervals: np.ndarray,
        units: Sequence[str],
        mtypes: Sequence[str],
        tags: Sequence[Sequence[str] | None],
    ) -> np.ndarray:
        """Mask over `rows` of stored definitions whose metadata differs from the batch's at `at`."""
        at_l = at.tolist()
        m = len(at_l)
        new_names = np.empty(m, object)
        new_names[:] = [names[i] for i in at_l]
        differs = self._names[rows] != new_names
        differs |= self._interval[rows] != intervals[at]
        differs |= self._org[rows] != orgs[at]
        ucode, mcode = self._units.codes, self._mtypes.codes
        differs |= self._unit[rows] != np.fromiter((ucode.get(units[i], -1) for i in at_l), np.int64, m)
        differs |= self._mtype[rows] != np.fromiter((mcode.get(mtypes[i], -1) for i in at_l), np.int64, m)
        stored = self._tags[rows].tolist()
        for j, i in enumerate(at_l):
            t, old = tags[i], stored[j]
            if not t:
                if old is not None:
                    differs[j] = True
            elif old is None or (tuple(t) != old and tuple(sorted(set(t))) != old):
                differs[j] = True
        return differs

    def lookup_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of id strings (int64, -1 for unknown)."""
        org, k0, k1 = parse_ids(ids)
        return self._keys.lookup(k0, k1, org)

    def add_definitions(
        self, mds: Sequence[object], partitions: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`add_many` from MetricData-like objects (see `add_definition`)."""
        return self.add_many(
            [m.id for m in mds],  # type: ignore[attr-defined]
            [m.org_id for m in mds],  # type: ignore[attr-defined]
            [m.name for m in mds],  # type: ignore[attr-defined]
            [m.interval for m in mds],  # type: ignore[attr-defined]
            [m.unit for m in mds],  # type: ignore[attr-defined]
            [m.mtype for m in mds],  # type: ignore[attr-defined]
            [m.tags for m in mds],  # type: ignore[attr-defined]
            partitions,
            [m.time for m in mds],  # type: ignore[attr-defined]
        )

    def add_definition(self, md: object, partition: int) -> tuple[int, bool]:
        """`add` from a MetricData-like object (attributes id, org_id, name, interval, unit, mtype,
        tags, time) - the shape `metrictank.schema.MetricData` has."""
        return self.add(
            md.id,  # type: ignore[attr-defined]
            md.org_id,  # type: ignore[attr-defined]
            md.name,  # type: ignore[attr-defined]
            md.interval,  # type: ignore[attr-defined]
            md.unit,  # type: ignore[attr-defined]
            md.mtype,  # type: ignore[attr-defined]
            md.tags or (),  # type: ignore[attr-defined]
            partition,
            md.time,  # type: ignore[attr-defined]
        )

    def _set_meta(
        self,
        row: int,
        org: int,
        name: str,
        interval: int,
        unit: str,
        mtype: str,
        tags: tuple[str, ...] | None,
    ) -> None:
        self._org[row] = org
        self._interval[row] = interval
        self._unit[row] = self._units.code(unit)
        self._mtype[row] = self._mtypes.code(mtype)
        # tagged names repeat across series (cpu.usage per host), so share one string; untagged
        # names are unique paths and interning them would only add a table entry each
        self._names[row] = sys.intern(name) if tags else name
        self._tags[row] = tags

    def _index(self, row: int) -> None:
        org, name, tags = int(self._org[row]), self._names[row], self._tags[row]
        assert name is not None
        if not tags:
            tree = self._trees.get(org)
            if tree is None:
                tree = self._trees[org] = Tree()
            tree.add(name, row)
        self._tagidx.add(org, row, name, tags)

    def _unindex(self, row: int) -> None:
        self._unindex_many([row])

    def _unindex_many(self, rows: list[int]) -> None:
        by_org: dict[int, list[tuple[int, str, tuple[str, ...] | None]]] = {}
        for row in rows:
            org, name, tags = int(self._org[row]), self._names[row], self._tags[row]
            assert name is not None
            if not tags:
                tree = self._trees.get(org)
                if tree is not None:
                    tree.remove(name, row)
                    if not tree:
                        del self._trees[org]
            by_org.setdefault(org, []).append((row, name, tags))
        for org, series in by_org.items():
            self._tagidx.remove(org, series)

    def remove(self, rows: Iterable[int] | np.ndarray) -> np.ndarray:
        """Forget series; their rows go to the free list. Returns the rows that were live."""
        with self._lock:
            live = self._keys.live
            done = sorted(
                {r for r in np.asarray(rows, np.int64).ravel().tolist() if 0 <= r < self._nrows and live[r]}
            )
            self._unindex_many(done)
            for r in done:
                self._keys.delete(r)
                self._names[r] = None
                self._tags[r] = None
            # reuse low rows first (the free list is popped from the end) to keep row ranges compact
            self._free.extend(reversed(done))
            self._count -= len(done)
        return np.array(done, np.int64)

    def prune(self, older_than: int) -> np.ndarray:
        """Remove every series whose lastupdate is before `older_than`; returns their rows."""
        with self._lock:
            n = self._nrows
            stale = np.flatnonzero(self._keys.live[:n] & (self._lastupdate[:n] < older_than))
            return self.remove(stale)

    # -- ingest hot path (lock-free) --------------------------------------------------------------------

    def lookup_rows(self, k0: np.ndarray, k1: np.ndarray, org: np.ndarray) -> np.ndarray:
        """Rows (int64) of a batch of binary keys; -1 where the series is unknown."""
        return self._keys.lookup(k0, k1, org)

    def touch(self, rows: np.ndarray, ts: np.ndarray) -> None:
        """Raise lastupdate of `rows` to `ts` where larger (rows < 0 are skipped).

        Lock-free: racing a column resize can lose an update, which only delays pruning."""
        rows = np.asarray(rows, np.int64)
        ts = np.asarray(ts, np.int64)
        ok = rows >= 0
        if not ok.all():
            rows, ts = rows[ok], ts[ok]
        np.maximum.at(self._lastupdate, rows, ts)

    # -- single-series reads ---------------------------------------------------------------------------

    def row_of(self, id: str) -> int | None:
        org, k0, k1 = parse_id(id)
        row = self._keys.get(k0, k1, org & M32)
        return row if row >= 0 else None

    def get(self, row: int) -> Definition:
        """Snapshot of the definition at `row`; KeyError if no series has that row."""
        with self._lock:
            if not (0 <= row < self._nrows) or not self._keys.live[row]:
                raise KeyError(row)
            k0, k1, _ = self._keys.key(row)
            return Definition(
                id=format_id(int(self._id_org[row]), k0, k1),
                org=int(self._org[row]),
                name=self._names[row],  # type: ignore[arg-type]
                interval=int(self._interval[row]),
                unit=self._units.strs[self._unit[row]],
                mtype=self._mtypes.strs[self._mtype[row]],
                tags=self._tags[row] or (),
                partition=int(self._partition[row]),
                lastupdate=int(self._lastupdate[row]),
                row=row,
            )

    def definitions(self, rows: np.ndarray | Sequence[int]) -> DefBatch:
        """Snapshots of the live `rows` as columns (rows not live are left out), for the persistent index:
        one call per batch instead of a `get` (and a `Definition`) per series."""
        with self._lock:
            rows = np.asarray(rows, np.int64)
            rows = rows[(rows >= 0) & (rows < self._nrows)]
            rows = rows[self._keys.live[rows]]
            ids = []
            for r in rows.tolist():
                k0, k1, _ = self._keys.key(r)
                ids.append(format_id(int(self._id_org[r]), k0, k1))
            units, mtypes = self._units.strs, self._mtypes.strs
            return DefBatch(
                ids,
                self._org[rows].astype(np.int64),
                self._names[rows].tolist(),
                self._interval[rows].astype(np.int64),
                [units[c] for c in self._unit[rows].tolist()],
                [mtypes[c] for c in self._mtype[rows].tolist()],
                [t or () for t in self._tags[rows].tolist()],
                self._partition[rows].astype(np.int64),
                self._lastupdate[rows].astype(np.int64),
            )

    def path_of(self, row: int) -> str:
        """Graphite path of a row (`name;k=v;...` for tagged series)."""
        name, tags = self._names[row], self._tags[row]
        if name is None:
            raise KeyError(row)
        return ";".join((name, *tags)) if tags else name

    def rows_of_partitions(self, parts: Iterable[int]) -> np.ndarray:
        """Live rows whose partition is one of `parts` (int64, ascending)."""
        with self._lock:
            n = self._nrows
            sel = np.isin(self._partition[:n], np.fromiter(parts, np.int64))
            return np.flatnonzero(sel & self._keys.live[:n]).astype(np.int64)

    def live_rows(self) -> np.ndarray:
        with self._lock:
            return np.flatnonzero(self._keys.live[: self._nrows]).astype(np.int64)

    def intervals(self, rows: np.ndarray) -> np.ndarray:
        return self._interval[np.asarray(rows, np.int64)]

    def partitions(self, rows: np.ndarray) -> np.ndarray:
        return self._partition[np.asarray(rows, np.int64)]

    def lastupdates(self, rows: np.ndarray) -> np.ndarray:
        return self._lastupdate[np.asarray(rows, np.int64)]

    # -- Graphite find ---------------------------------------------------------------------------------

    @staticmethod
    def _orgs(org: int) -> tuple[int, ...]:
        return (org,) if org == PUBLIC_ORG else (org, PUBLIC_ORG)

    def find(self, org: int, pattern: str, from_ts: int = 0) -> list[Node]:
        """Nodes at the depth of `pattern` (a Graphite glob), sorted by path.

        With `from_ts`, series last updated before it are left out of a leaf's rows, and a node left
        with neither rows nor children is dropped. A pattern containing ';' is an exact tagged path."""
        if not pattern:
            return []
        # compiled before the lock: however costly a pattern is, it is paid by this request alone, and a
        # pattern past a limit raises PatternError without ever holding up ingest
        matchers = None if ";" in pattern else compile_path(pattern)
        with self._lock:
            if matchers is None:
                out = self._find_tagged(org, pattern)
            else:
                out = []
                seen: set[str] | None = None
                for o in self._orgs(org):
                    tree = self._trees.get(o)
                    if tree is None:
                        continue
                    paths, vals = tree.find(pattern, matchers)
                    if seen is None:  # the first org's nodes need no de-duplication
                        seen = set(paths) if o != PUBLIC_ORG else set()
                        out.extend(_nodes(paths, vals))
                    else:
                        keep = [i for i, p in enumerate(paths) if p not in seen]
                        out.extend(_nodes([paths[i] for i in keep], [vals[i] for i in keep]))
                out.sort(key=_PATH)
            if from_ts:
                out = self._filter_from(out, from_ts)
        return out

    def _filter_from(self, nodes: list[Node], from_ts: int) -> list[Node]:
        lu = self._lastupdate
        res = []
        for n in nodes:
            if n.leaf:
                rows = tuple(r for r in n.rows if lu[r] >= from_ts)
                if rows != n.rows:
                    if not rows and not n.has_children:
                        continue
                    n = n._replace(leaf=bool(rows), rows=rows)
            res.append(n)
        return res

    def _find_tagged(self, org: int, path: str) -> list[Node]:
        name, *tags = path.split(";")
        want = tuple(sorted(tags))
        canon = ";".join((name, *want))
        for o in self._orgs(org):
            idx = self._tagidx.org(o)
            p = idx.get("name", {}).get(name) if idx else None
            if p is None:
                continue
            rows = tuple(r for r in sorted(_rows_of(p)) if self._tags[r] == want)
            if rows:
                return [Node(canon, True, False, rows)]
        return []

    def find_leaves(self, org: int, pattern: str, from_ts: int = 0) -> list[int]:
        """Rows of every series matched by `pattern` (leaf nodes only), ascending."""
        rows: list[int] = []
        for n in self.find(org, pattern, from_ts):
            rows.extend(n.rows)
        rows.sort()
        return rows

    def all_paths(self, org: int) -> list[str]:
        """Every series path visible to `org`, sorted and de-duplicated (`/metrics/index.json`)."""
        with self._lock:
            n = self._nrows
            orgs = self._orgs(org)
            sel = np.flatnonzero(self._keys.live[:n] & np.isin(self._org[:n], orgs))
            names, tags = self._names[sel].tolist(), self._tags[sel].tolist()
            paths = {";".join((n, *t)) if t else n for n, t in zip(names, tags, strict=True)}
        return sorted(paths)  # type: ignore[arg-type]

    # -- tags ------------------------------------------------------------------------------------------

    def _row_value(self, row: int, key: str) -> str | None:
        return self._names[row] if key == "name" else tag_value(self._tags[row], key)

    def find_by_tags(self, org: int, exprs: Sequence[str], from_ts: int = 0) -> list[int]:
        """Rows matching a `seriesByTag` expression list, ascending.

        Raises `TagQueryError` (a ValueError) for a malformed expression or a query without an
        expression that requires a non-empty value."""
        q = parse_query(exprs)
        with self._lock:
            parts = [self._tagidx.query(o, q, self._row_value) for o in self._orgs(org)]
            out = parts[0] if len(parts) == 1 else np.union1d(*parts)
            if from_ts and out.size:
                out = out[self._lastupdate[out] >= from_ts]
        return out.tolist()

    def tags(self, org: int, filter_regex: str | None = None) -> list[str]:
        """Tag names in use (including `name`), sorted; `filter_regex` is searched, unanchored."""
        rx = _filter(filter_regex)
        with self._lock:
            keys: set[str] = set()
            for o in self._orgs(org):
                keys.update(self._tagidx.org(o) or ())
        return sorted(k for k in keys if rx is None or rx.search(k))

    def tag_values(self, org: int, tag: str, filter_regex: str | None = None) -> list[str]:
        """Distinct values of `tag`, sorted; `filter_regex` is searched, unanchored."""
        rx = _filter(filter_regex)
        with self._lock:
            vals: set[str] = set()
            for o in self._orgs(org):
                vals.update((self._tagidx.org(o) or {}).get(tag, ()))
        return sorted(v for v in vals if rx is None or rx.search(v))

    def tag_value_counts(self, org: int, tag: str, filter_regex: str | None = None) -> dict[str, int]:
        """Distinct values of `tag` with the number of series carrying each (the size of its posting), in one
        pass: counting by one tag query per value made `/tags/{tag}` cost a query per value (a million for
        `name` on a large index). Pairs are copied under the lock, the regex runs outside it."""
        rx = _filter(filter_regex)
        pairs: list[tuple[str, int]] = []
        with self._lock:
            for o in self._orgs(org):
                values = (self._tagidx.org(o) or {}).get(tag)
                if values:
                    pairs.extend((v, posting_size(p)) for v, p in values.items())
        out: dict[str, int] = {}
        for v, n in pairs:
            if n and (rx is None or rx.search(v)):
                out[v] = out.get(v, 0) + n
        return out

    def autocomplete_tags(
        self, org: int, prefix: str = "", exprs: Sequence[str] = (), limit: int | None = 100
    ) -> list[str]:
        """graphite-web `/tags/autoComplete/tags`: tag names starting with `prefix`; with `exprs`,
        only tags of series matching them, minus the tags the expressions already name."""
        if not exprs:
            with self._lock:
                keys: set[str] = set()
                for o in self._orgs(org):
                    keys.update(k for k in self._tagidx.org(o) or () if k.startswith(prefix))
            return _limit(sorted(keys), limit)
        searched = {e.key for e in parse_query(exprs)}
        rows = self.find_by_tags(org, exprs)
        found: set[str] = set()
        with self._lock:
            for r in rows:
                if self._names[r] is None:
                    continue
                found.add("name")
                found.update(t.partition("=")[0] for t in self._tags[r] or ())
        return _limit(sorted(k for k in found if k not in searched and k.startswith(prefix)), limit)

    def autocomplete_values(
        self, org: int, tag: str, prefix: str = "", exprs: Sequence[str] = (), limit: int | None = 100
    ) -> list[str]:
        """graphite-web `/tags/autoComplete/values`: values of `tag` starting with `prefix`; with
        `exprs`, only values carried by series matching them."""
        if not exprs:
            with self._lock:
                vals: set[str] = set()
                for o in self._orgs(org):
                    values = (self._tagidx.org(o) or {}).get(tag, {})
                    vals.update(v for v in values if v.startswith(prefix))
            return _limit(sorted(vals), limit)
        rows = self.find_by_tags(org, exprs)
        found: set[str] = set()
        with self._lock:
            for r in rows:
                if self._names[r] is None:
                    continue
                v = self._row_value(r, tag)
                if v is not None and v.startswith(prefix):
                    found.add(v)
        return _limit(sorted(found), limit)
