"""The Graphite API's view of an instance: series from the index, points from the tank and the chunk store.

A read sees one continuous series: the tank is authoritative from the oldest point it holds (per series and
archive), and everything before that comes from the store, so the two are stitched without gaps or duplicates.
The archive is chosen as Metrictank does: the finest one whose TTL covers the range, that is ready, and that
needs no more than maxDataPoints points; a coarser one only when the range or the point budget asks for it.
Store reads of all series of a request go out as one batch and are decoded in one codec call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from metrictank.chunk import decode_chunks
from metrictank.index.tags import TagQueryError
from metrictank.query.consolidate import quantize_many
from metrictank.query.errors import QueryError
from metrictank.query.limits import check_deadline
from metrictank.query.series import Series
from metrictank.query.source import FindNode, SeriesRef
from metrictank.regex import PatternError
from metrictank.retention import METHOD_NAMES

__all__ = ["InstanceSource"]

_METHOD = METHOD_NAMES  # Graphite consolidation names -> stored rollup methods
# stored methods -> the consolidator the query layer should use on top
_CONSOLIDATOR = {"avg": "avg", "sum": "sum", "min": "min", "max": "max", "lst": "last", "cnt": "sum"}
# rows per tank.read_many call: big enough to amortise the per-call cost, small enough that the decoded points
# of a block (~12 bytes each, a day at 10 s is 8640 per series) stay a few tens of MB
_READ_BLOCK = 256


def _empty_read(end: int) -> tuple[np.ndarray, np.ndarray, int]:
    return np.empty(0, np.uint32), np.empty(0, np.float64), end


class InstanceSource:
    """`metrictank.query.source.SeriesSource` over an instance's index, tank and store."""

    def __init__(self, index, tank, store, schemas, lock, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.tank = tank
        self.store = store
        self.lock = lock
        self.clock = clock
        self.schemas = schemas
        self.max_span = schemas.max_chunkspan()

    # --- names ---------------------------------------------------------------------------------------------------
    def find(self, org: int, pattern: str, from_ts: int = 0) -> list[FindNode]:
        try:
            nodes = self.index.find(org, pattern, from_ts)
        except PatternError as e:  # a glob past a limit: the user's to fix
            raise QueryError(str(e)) from None
        return [FindNode(n.path, n.leaf, n.has_children) for n in nodes]

    def resolve(self, org: int, pattern: str) -> list[SeriesRef]:
        try:
            rows = self.index.find_leaves(org, pattern)
        except PatternError as e:
            raise QueryError(str(e)) from None
        return [SeriesRef(self.index.path_of(r), r) for r in rows]

    def resolve_tags(self, org: int, exprs: Sequence[str], from_ts: int = 0) -> list[SeriesRef]:
        try:
            rows = self.index.find_by_tags(org, list(exprs), from_ts)
        except TagQueryError as e:
            raise QueryError(str(e)) from None
        last = self.index.lastupdates(np.asarray(rows, np.int64)).tolist()
        return [SeriesRef(self.index.path_of(r), r, lu) for r, lu in zip(rows, last, strict=True)]

    def all_paths(self, org: int) -> list[str]:
        return self.index.all_paths(org)

    def tags(self, org: int, filter: str | None) -> list[str]:  # noqa: A002 - protocol name
        return self.index.tags(org, filter)

    def tag_values(self, org: int, tag: str, filter: str | None) -> dict[str, int]:  # noqa: A002
        return self.index.tag_value_counts(org, tag, filter)

    def autocomplete_tags(self, org: int, prefix: str, exprs: Sequence[str], limit: int) -> list[str]:
        try:
            return self.index.autocomplete_tags(org, prefix, list(exprs), limit)
        except TagQueryError as e:
            raise QueryError(str(e)) from None

    def autocomplete_tag_values(
        self, org: int, tag: str, prefix: str, exprs: Sequence[str], limit: int
    ) -> list[str]:
        try:
            return self.index.autocomplete_values(org, tag, prefix, list(exprs), limit)
        except TagQueryError as e:
            raise QueryError(str(e)) from None

    # --- data ----------------------------------------------------------------------------------------------------
    def _archive(self, schema, start: int, end: int, mdp: int, now: int) -> int:
        rets = schema.retentions
        usable = [i for i, r in enumerate(rets) if start >= now - r.ttl and r.ready <= start]
        if not usable:
            # nothing covers the whole range: the longest-lived archive has the most of it
            return max(range(len(rets)), key=lambda i: rets[i].ttl)
        if mdp > 0:
            for i in usable:
                if (end - start) / rets[i].interval <= mdp:
                    return i
            return usable[-1]
        return usable[0]

    def estimate_points(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> int:
        """Points `fetch` would read: per series, the length of [start, end) on the step of the archive
        `_archive` picks for its schema (one computation per distinct schema). A series this node does not hold
        (a peer's, in a cluster) is estimated by name with the schema its name matches at its finest archive:
        the cluster shares one storage-schemas file, and the finest archive is the costliest case."""
        now = int(self.clock())
        per_schema: dict[int, int] = {}
        schemas: dict[int, object] = {}

        def points(schema) -> int:
            sid = id(schema)
            n = per_schema.get(sid)
            if n is None:
                schemas[sid] = schema  # keeps the id valid while the cache is in use
                interval = schema.retentions[self._archive(schema, start, end, max_data_points, now)].interval
                n = per_schema[sid] = max(0, -(-(end - start) // interval))
            return n

        total = 0
        rows = []
        for ref in refs:
            if isinstance(ref.key, int | np.integer):
                rows.append(int(ref.key))
            else:
                total += points(self.schemas.match(ref.name, 0)[1])
        if rows:
            # the tank's series counted per layout (schema) at once; rows removed since they were resolved
            # (-1) are skipped, as fetch skips them
            lids, counts = np.unique(self.tank.layouts_of(np.array(rows, dtype=np.int64)), return_counts=True)
            for lid, count in zip(lids.tolist(), counts.tolist(), strict=True):
                if lid >= 0:
                    total += points(self.tank.layout(lid)[0]) * count
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
        now = int(self.clock())
        plans = []  # (ref, row, interval, [(archive, method)], stored method, consolidator)
        chosen: dict[tuple[int, int], tuple] = {}  # per (schema, aggregation): the tail of its series' plans
        # The tank lock (which the ingest loop holds while it applies a batch) is held only for short steps: the
        # plan, then one copy per block of rows (`snapshot_many`); decoding runs outside it. So a 1000-series
        # render delays a batch by the cost of one block's copy, never by the whole render.
        with self.lock:
            rows = [int(ref.key) for ref in refs]
            lids = self.tank.layouts_of(np.array(rows, dtype=np.int64)).tolist()
            by_layout: dict[int, tuple] = {}
            for ref, row, lid in zip(refs, rows, lids, strict=True):
                if lid < 0:
                    continue  # removed since it was resolved
                plan = by_layout.get(lid)
                if plan is None:
                    schema, agg = self.tank.layout(lid)
                    plan = chosen.get((id(schema), id(agg)))
                    if plan is None:
                        plan = chosen[(id(schema), id(agg))] = self._plan(
                            schema, agg, start, end, max_data_points, consolidate_by, now
                        )
                    by_layout[lid] = plan
                plans.append((ref, row, *plan))
        # One tank read per (archive, method) and block of rows: the decode is one codec call and the per-call
        # numpy overhead is paid per block, not per series (1000 reads cost ~3x more). Groups also split by
        # interval, as each group is put on one grid below.
        groups: dict[tuple[int, str | None, int], list[tuple[int, int]]] = {}
        for k, plan in enumerate(plans):
            for archive, method in plan[3]:
                groups.setdefault((archive, method, plan[2]), []).append((k, plan[1]))
        mem: dict[tuple, list] = {}
        store_reqs = {}
        for gkey, members in groups.items():
            archive, method, _interval = gkey
            got: list = []
            for b in range(0, len(members), _READ_BLOCK):
                check_deadline()  # a request past its deadline stops here
                block = members[b : b + _READ_BLOCK]
                with self.lock:
                    snaps, keys = self._snapshot_block(block, archive, method, start, end)
                part = [_empty_read(end)] * len(block)
                for idx, snap in snaps:
                    for j, res in zip(idx, snap.decode(), strict=True):
                        part[j] = res
                got += part
                for j, key in keys.items():
                    store_reqs[(gkey, b + j)] = key
            mem[gkey] = got
        stored = self._read_store(store_reqs, start)
        # each group on its grid in one call; a series' values are a row of its group's matrix
        rows_of: dict[tuple, tuple[int, np.ndarray]] = {}  # group -> (first, matrix)
        where: dict[tuple[int, int, str | None], int] = {}  # (plan, archive, method) -> row in its group
        for gkey, members in groups.items():
            check_deadline()
            ts_parts: list[np.ndarray] = []
            val_parts: list[np.ndarray] = []
            counts = np.empty(len(members), np.int64)
            for j, (ts, vals, _oldest) in enumerate(mem.pop(gkey)):
                old = stored.pop((gkey, j), None)
                if old is not None:
                    ts_parts.append(old[0])
                    val_parts.append(old[1])
                    counts[j] = len(old[0]) + len(ts)
                else:
                    counts[j] = len(ts)
                ts_parts.append(ts)
                val_parts.append(vals)
            # values stay in their pieces (views of the decoded chunks): quantize_many copies them once,
            # straight into the group's matrix
            rows_of[gkey] = quantize_many(np.concatenate(ts_parts), val_parts, counts, start, end, gkey[2])
            del ts_parts, val_parts  # the decoded buffers they view can go
            for j, (k, _row) in enumerate(members):
                where[(k, gkey[0], gkey[1])] = j
        avg = self._averages(plans, rows_of, where)
        out = []
        for k, (ref, _row, interval, parts, want, consolidator) in enumerate(plans):
            archive, method = parts[0]
            first, mat = rows_of[(archive, method, interval)]
            if want == "avg" and len(parts) == 2:
                values = avg[k]
            else:
                values = mat[where[(k, archive, method)]]
            out.append(Series(ref.name, ref.name, {}, first, interval, values, consolidator))
        return out

    def _snapshot_block(self, block, archive, method, start, end):
        """Under the tank lock: copies of one block's chunks (one per row when a series of the block was
        removed since the plan: the survivors are still read) and the store keys of rows whose memory starts
        after `start` (their older part comes from the store)."""
        rows = [row for _k, row in block]
        try:
            snaps = [(list(range(len(rows))), self.tank.snapshot_many(rows, archive, method, start, end))]
        except KeyError:
            snaps = []
            for j, row in enumerate(rows):
                try:
                    snaps.append(([j], self.tank.snapshot_many([row], archive, method, start, end)))
                except KeyError:
                    continue
        keys = {}
        for idx, snap in snaps:
            for i, j in enumerate(idx):
                oldest = snap.oldest_of(i)
                if start < oldest:
                    amkey, ttl = self.tank.slot_key(self.tank.slot_for(rows[j], archive, method))
                    keys[j] = (amkey, ttl, min(oldest, end))
        return snaps, keys

    def _plan(
        self, schema, agg, start: int, end: int, mdp: int, consolidate_by: str | None, now: int
    ) -> tuple[int, list[tuple[int, str | None]], str | None, str]:
        """(interval, [(archive, stored method)], stored method wanted, consolidator) of a series: the same for
        every series of one (schema, aggregation) in a request."""
        archive = self._archive(schema, start, end, mdp, now)
        interval = schema.retentions[archive].interval
        if archive == 0:
            method = _METHOD.get(consolidate_by or agg.default_method, "avg")
            return interval, [(0, None)], None, _CONSOLIDATOR.get(method, "avg")
        want = _METHOD.get(consolidate_by or agg.default_method, "avg")
        stored = set(agg.stored_methods)
        if want == "avg" and not {"sum", "cnt"} <= stored or want != "avg" and want not in stored:
            want = _METHOD.get(agg.default_method, "avg")
        parts = [(archive, "sum"), (archive, "cnt")] if want == "avg" else [(archive, want)]
        return interval, parts, want, _CONSOLIDATOR[want]

    @staticmethod
    def _averages(plans: list, rows_of: dict, where: dict) -> dict[int, np.ndarray]:
        """sum / cnt of the series read from a rollup's sum and cnt, one division per (archive, interval)."""
        by_grid: dict[tuple[int, int], list[int]] = {}
        for k, (_ref, _row, interval, parts, want, _c) in enumerate(plans):
            if want == "avg" and len(parts) == 2:
                by_grid.setdefault((parts[0][0], interval), []).append(k)
        out: dict[int, np.ndarray] = {}
        for (archive, interval), ks in by_grid.items():
            s = rows_of[(archive, "sum", interval)][1][[where[(k, archive, "sum")] for k in ks]]
            c = rows_of[(archive, "cnt", interval)][1][[where[(k, archive, "cnt")] for k in ks]]
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(c > 0, s / c, np.nan)
            out.update(zip(ks, values, strict=True))
        return out

    def _read_store(self, reqs: dict, start: int) -> dict:
        """Chunks older than what memory holds, for all series of a request, decoded in one call."""
        if not reqs:
            return {}
        by_end: dict[int, list] = {}
        for key, (amkey, ttl, upto) in reqs.items():
            by_end.setdefault(upto, []).append((key, amkey, ttl))
        out = {}
        for upto, items in by_end.items():
            check_deadline()
            res = self.store.read_many([(a, t) for _k, a, t in items], start, upto, self.max_span)
            # chunks of item i are contiguous and in the store's t0 order: the points of each item are one slice
            # of the decoded arrays, already sorted unless chunks overlap (then sorted stably, keeping the
            # store's order for equal timestamps). No Python step per chunk or numpy call per point range.
            t0s: list[int] = []
            blobs: list[bytes] = []
            per_item = np.zeros(len(items), np.int64)
            for i, (_key, amkey, _ttl) in enumerate(items):
                chunks = res.get(amkey)
                if chunks:
                    per_item[i] = len(chunks)
                    ct, cb = zip(*chunks, strict=True)
                    t0s.extend(ct)
                    blobs.extend(cb)
            if not blobs:
                continue
            counts, ts, vals = decode_chunks(np.asarray(t0s, np.int64), blobs)
            chunk_ends = np.concatenate([[0], np.cumsum(counts)])  # points in the first k chunks
            seg = np.concatenate([[0], chunk_ends[np.cumsum(per_item)]])  # point bounds of each item
            if _descends_within_items(ts, counts, np.repeat(np.arange(len(items)), per_item)):
                owner = np.repeat(np.arange(len(items), dtype=np.int32), np.diff(seg))
                order = np.lexsort((ts, owner))
                ts, vals = ts[order], vals[order]
            lo_key = np.uint32(min(max(start, 0), 0xFFFFFFFF))
            hi_key = np.uint32(min(max(upto, 0), 0xFFFFFFFF))
            bounds = seg.tolist()
            for i in np.flatnonzero(per_item).tolist():
                t = ts[bounds[i] : bounds[i + 1]]
                lo = int(t.searchsorted(lo_key))
                hi = len(t) if upto > 0xFFFFFFFF else int(t.searchsorted(hi_key))
                v = vals[bounds[i] : bounds[i + 1]]
                out[items[i][0]] = (t[lo:hi], v[lo:hi])
        return out


def _descends_within_items(ts: np.ndarray, counts: np.ndarray, item_of_chunk: np.ndarray) -> bool:
    """Whether a timestamp is lower than the one before it inside one item's points (overlapping chunks).

    A chunk's own points are strictly increasing (the decoder checks), so only the step from one non-empty
    chunk to the next non-empty chunk of the same item can descend: a check per chunk, not per point."""
    nz = np.flatnonzero(counts)
    if len(nz) < 2:
        return False
    ends = np.cumsum(counts)
    first_ts = ts[(ends - counts)[nz[1:]]]
    prev_last = ts[ends[nz[:-1]] - 1]
    same = item_of_chunk[nz[1:]] == item_of_chunk[nz[:-1]]
    return bool((same & (first_ts < prev_last)).any())
