"""The tank: every series' recent data as compressed chunks in memory, Metrictank's AggMetrics.

State is columnar and owned here; the per-point work runs in the C kernel (`_tank.c`), which gets the whole state
as one tuple per call. Python does per-batch and per-series work only.

- A *slot* is one stored series: the raw archive of an index row, or one (rollup archive, method) of it. Its
  record (64 bytes, one cache line, in a numpy record array) holds the open chunk's t0 and incremental
  SeriesLong encoder state, the arena region of its compressed bytes, the save marks, flags, and its ring
  position. Record arrays rather than one array per field: the kernel touches a slot's fields together at
  random, so one cache line per point beats one miss per field; numpy still gives per-field column views.
- The ring of closed chunks of a slot is `numchunks` entries of (t0, meta, blob) in flat arrays/lists: the
  `numchunks - 1` chunks before the open one, plus the current chunk when GC finished it (as Metrictank keeps
  it in place until the next chunk starts). A blob is the finished chunk exactly as Metrictank stores it,
  shared with the completed-chunk event.
- A *row* record holds the slot range, rollup bucket state and reorder-buffer offsets, the partition, and the
  wall-clock time of the last accepted point (for GC). Rows are the memory index's dense row numbers.
- Rows are laid out by *layout* (one per (schema, aggregation) pair in use), which fixes the slots a row has.
  Released row blocks are reused by later rows of the same layout.

Deliberate differences from Metrictank, all about robustness:
- Saved marks never stop ingestion (issue 261); they only serve the persist decision, made by the caller.
- A chunk carries a *complete* flag: it began at or after the first message this node consumed from the
  series' partition (issue 452), so a node that started mid-chunk can avoid saving a partial chunk.
  A rollup chunk is complete when its first bucket (t0 - span, t0] began after that message.
- A point for a chunk older than the open one is counted as `too-old` (Metrictank counts it as
  `sample-out-of-order`, like a point older than the previous one in the same chunk).
- GC judges a series' rollups by the series' last write (Metrictank uses each rollup series' own last write,
  which its GC flush itself refreshes, delaying removal by a GC round).

Also as in Metrictank: the optional reorder buffer (per schema, in the kernel), reads that include the
reorder buffer (raw) or the bucket in progress (rollups), and points `> 10%` of the raw TTL ahead of the clock
dropped as `too-far-in-future`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from metrictank.chunk import SPANS, decode_chunks
from metrictank.retention import METHOD_NAMES, STORED_METHODS, Aggregation, Aggregations, Schema, Schemas
from metrictank.tank import _tank

__all__ = ["CompletedChunks", "DISCARD_REASONS", "Tank", "WarmLoadPlan"]

SLOT_DTYPE = np.dtype(
    [
        ("t0", "<u4"),
        ("last_ts", "<u4"),
        ("prev_delta", "<u4"),
        ("npoints", "<u4"),
        ("prev_bits", "<u8"),
        ("off8", "<u4"),
        ("cap", "<u4"),
        ("bitpos", "<u4"),
        ("lss", "<u4"),
        ("lsf", "<u4"),
        ("first_ts", "<u4"),
        ("ring_base", "<u4"),
        ("row", "<u4"),
        ("leading", "u1"),
        ("trailing", "u1"),
        ("flags", "u1"),
        ("span_code", "u1"),
        ("ring_cap", "u1"),
        ("ring_head", "u1"),
        ("ring_count", "u1"),
        ("pad", "u1"),
    ]
)
ROW_DTYPE = np.dtype(
    [
        ("slot_start", "<u4"),
        ("agg_base", "<u4"),
        ("rob_base", "<u4"),
        ("rob_newest", "<u4"),
        ("last_write", "<u4"),
        ("partition", "<u4"),
        ("interval", "<u4"),
        ("layout", "<u2"),
        ("flags", "<u2"),
    ]
)
AGG_DTYPE = np.dtype(
    [("boundary", "<u4"), ("cnt", "<u4"), ("sum", "<f8"), ("min", "<f8"), ("max", "<f8"), ("lst", "<f8")]
)
LAYOUT_DTYPE = np.dtype(
    [
        ("aggdesc_start", "<u4"),
        ("n_aggs", "<u4"),
        ("fut_tol", "<u4"),
        ("rob_window", "<u4"),
        ("rob_allow_update", "<u4"),
        ("nslots", "<u4"),
    ]
)
AGGDESC_DTYPE = np.dtype([("span", "<u4"), ("off", "u1", (5,)), ("pad", "u1", (3,))])
EVENT_DTYPE = np.dtype([("slot", "<u4"), ("t0", "<u4"), ("flags", "<u4"), ("npoints", "<u4")])

for _dt, _size in (
    (SLOT_DTYPE, _tank.SLOT_SIZE),
    (ROW_DTYPE, _tank.ROW_SIZE),
    (AGG_DTYPE, _tank.AGG_SIZE),
    (LAYOUT_DTYPE, _tank.LAYOUT_SIZE),
    (AGGDESC_DTYPE, _tank.AGGDESC_SIZE),
    (EVENT_DTYPE, _tank.EVENT_SIZE),
):
    assert _dt.itemsize == _size, (_dt, _size)

# slot flags (mirrors _tank.c)
F_LIVE, F_FINISHED, F_COMPLETE, F_FIRST, F_ALLOC = 1, 2, 4, 8, 16
R_PRESENT = 1
RM_COMPLETE, RM_FIRST = 1, 2

# meta counters (mirrors _tank.c)
(
    M_ADDED,
    M_INVALID,
    M_FUTURE,
    M_OOO,
    M_DUP,
    M_OLD,
    M_LATE,
    M_ARENA_USED,
    M_ARENA_WASTE,
    M_COMPLETED,
    M_POINTS_MEM,
    M_RING_CHUNKS,
    M_ROLLUP_DISCARD,
    M_REORDERED,
    M_RING_BYTES,
    M_EVICT_UNSAVED,
) = range(16)
assert _tank.META_COUNT == 16

#: Discard reasons, as Metrictank's `discarded_samples_total{reason}` labels where it has one.
DISCARD_REASONS: dict[str, int] = {
    "sample-out-of-order": M_OOO,
    "new-value-for-timestamp": M_DUP,
    "too-old": M_OLD,
    "too-far-in-future": M_FUTURE,
    "received-too-late": M_LATE,
    "invalid": M_INVALID,
}

_SPAN_CODE = {s: i for i, s in enumerate(SPANS)}
_METHOD_ALIASES = {k: v for k, v in METHOD_NAMES.items() if v != "avg"}  # avg is not a stored series
_NONE = 0xFF
_FUTURE_TOLERANCE_PCT = 10
_GC_ACTIVE_GRACE = 15 * 60  # Metrictank: a chunk may still get points this long after its end


@dataclass
class CompletedChunks:
    """Finished chunks, columnar. `amkey(i)` builds the Metrictank key (id or id_method_span) on demand."""

    slot: np.ndarray
    row: np.ndarray
    t0: np.ndarray
    span: np.ndarray
    ttl: np.ndarray
    partition: np.ndarray
    complete: np.ndarray
    data: list[bytes]
    ids: list[str]
    suffixes: list[str]

    def __len__(self) -> int:
        return len(self.data)

    def amkey(self, i: int) -> str:
        return self.ids[i] + self.suffixes[i]

    @property
    def amkeys(self) -> list[str]:
        return [a + b for a, b in zip(self.ids, self.suffixes, strict=True)]

    @classmethod
    def empty(cls) -> CompletedChunks:
        e64, e32 = np.empty(0, np.int64), np.empty(0, np.uint32)
        return cls(e64, e64, e32, e32, e32, np.empty(0, np.int32), np.empty(0, bool), [], [], [])

    def take(self, idx: np.ndarray) -> CompletedChunks:
        """The chunks at positions idx, in that order."""
        il = np.asarray(idx, np.int64).tolist()
        return CompletedChunks(
            self.slot[idx],
            self.row[idx],
            self.t0[idx],
            self.span[idx],
            self.ttl[idx],
            self.partition[idx],
            self.complete[idx],
            [self.data[i] for i in il],
            [self.ids[i] for i in il],
            [self.suffixes[i] for i in il],
        )

    @classmethod
    def concat(cls, parts: Sequence[CompletedChunks]) -> CompletedChunks:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        cat = np.concatenate
        return cls(
            cat([p.slot for p in parts]),
            cat([p.row for p in parts]),
            cat([p.t0 for p in parts]),
            cat([p.span for p in parts]),
            cat([p.ttl for p in parts]),
            cat([p.partition for p in parts]),
            cat([p.complete for p in parts]),
            [d for p in parts for d in p.data],
            [d for p in parts for d in p.ids],
            [d for p in parts for d in p.suffixes],
        )


@dataclass
class _Layout:
    """The slots of a row under one (schema, aggregation): slot 0 raw, then per rollup the stored methods."""

    id: int
    schema: Schema
    agg: Aggregation
    archive: list[int]  # per slot offset
    method: list[str]  # "" for raw
    chunkspan: list[int]
    ttl: list[int]
    numchunks: list[int]
    suffix: list[str]
    ring_off: list[int]  # ring entries before this slot within the row's ring block
    ring_per_row: int
    offset_of: dict[tuple[str, int], int]  # (method, rollup interval) -> slot offset
    lead: list[int]  # rollup span - 1 (how far before t0 a rollup chunk's data begins)
    free: list[tuple[int, int, int, int]] = field(default_factory=list)  # (slot, agg, rob, ring) starts

    @property
    def nslots(self) -> int:
        return len(self.archive)


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    if need <= len(arr):
        return arr
    new = np.zeros(max(need, len(arr) + len(arr) // 2, 1024), arr.dtype)
    new[: len(arr)] = arr
    return new


def _first_at_least(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray, value: int) -> np.ndarray:
    """Per segment [lo, hi) of ts (ascending within each segment): the first index with ts >= value, hi if
    none. A binary search run on all segments at once: a few numpy calls per halving, none per segment."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        act = lo < hi
        if not act.any():
            return lo
        mid = (lo + hi) >> 1
        less = ts[np.where(act, mid, 0)].astype(np.int64) < value
        lo = np.where(act & less, mid + 1, lo)
        hi = np.where(act & ~less, mid, hi)


def _cut(
    ts: np.ndarray, counts: np.ndarray, pos: np.ndarray, n: int, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Where each slot's points in [start, end) lie in the decoded arrays.

    Chunk k holds the next counts[k] points and belongs to slot pos[k] (pos ascending). Returns per slot a
    slice (lo, hi); a slot whose kept points are not one run (only possible if chunks overlapped) gets an
    index array in `pieces` instead. Points within a chunk are strictly increasing (the decoder checks), so
    only chunks that reach outside the range need a search, and their kept points are one run."""
    cend = np.cumsum(counts)
    cstart = cend - counts
    clo, chi = cstart.copy(), cend.copy()
    nz = np.flatnonzero(counts)
    if len(nz):
        first_ts = ts[cstart[nz]].astype(np.int64)
        last_ts = ts[cend[nz] - 1].astype(np.int64)
        k = nz[first_ts < start]
        if len(k):
            clo[k] = _first_at_least(ts, cstart[k], cend[k], start)
        k = nz[last_ts >= end]
        if len(k):
            chi[k] = _first_at_least(ts, cstart[k], cend[k], end)
        chi = np.maximum(chi, clo)  # only when start > end: nothing is kept
    lo = np.zeros(n, np.int64)
    hi = np.zeros(n, np.int64)
    pieces: dict[int, np.ndarray] = {}
    kept = np.flatnonzero(chi > clo)
    if len(kept):
        kp = pos[kept]
        head = np.r_[True, kp[1:] != kp[:-1]]
        tail = np.r_[kp[1:] != kp[:-1], True]
        lo[kp[head]] = clo[kept[head]]
        hi[kp[tail]] = chi[kept[tail]]
        gap = ~head[1:] & (clo[kept[1:]] != chi[kept[:-1]])
        for p in np.unique(kp[1:][gap]).tolist():
            mine = kept[kp == p]
            pieces[p] = np.concatenate([np.arange(a, b) for a, b in zip(clo[mine], chi[mine], strict=True)])
    return lo, hi, pieces


_MATCH_ALL_PATTERNS = frozenset(("", ".*", "^", "^.*"))  # a search of any of these finds every name


def _first_match(patterns: list, names: Sequence[str]) -> np.ndarray | None:
    """Per name, the index of the first pattern whose search finds it (len(patterns) if none); None when
    that is 0 for every name (the first pattern matches everything). Patterns after the first one that
    matches everything are never searched."""
    stop = next((i for i, p in enumerate(patterns) if p.pattern in _MATCH_ALL_PATTERNS), None)
    tests = patterns if stop is None else patterns[:stop]
    default = len(patterns) if stop is None else stop
    if not tests:
        return None if default == 0 else np.full(len(names), default, np.int64)
    out = np.full(len(names), default, np.int64)
    for j, name in enumerate(names):
        for i, p in enumerate(tests):
            if p.search(name):
                out[j] = i
                break
    return out


@dataclass
class WarmLoadPlan:
    """Saved chunks a warm start may read from the store (see `Tank.warm_load_plan`): per slot, chunks with
    t0 in [lo, hi], of the given span, under AMKey `keys[i]` in the table of TTL `ttls[i]`."""

    slots: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    span: np.ndarray
    keys: list[str]
    ttls: np.ndarray

    def __len__(self) -> int:
        return len(self.slots)


@dataclass
class ReadSnapshot:
    """Copies of the chunks a read needs (see `Tank.snapshot_many`); `decode` runs without the tank lock."""

    n: int
    start: int
    end: int
    pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # row index of each blob
    t0: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    blobs: list = field(default_factory=list)
    # per row: the oldest timestamp memory vouches for (chunks, else unflushed points); -1: memory holds nothing
    oldest: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unflushed: dict = field(default_factory=dict)  # row index -> (ts, values) not in any chunk yet

    def oldest_of(self, i: int) -> int:
        """The oldest timestamp memory is authoritative from for row i (`end` when it holds nothing)."""
        old = int(self.oldest[i])
        return self.end if old < 0 else old

    def decode(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per row: points in [start, end) and the oldest timestamp memory vouches for.

        The points of a row are a view into the block's decoded arrays: only the chunks that straddle `start`
        or `end` are searched for the cut (a chunk's points are strictly increasing), so a read costs the
        decode plus work per chunk, not further passes over every point."""
        n, start, end = self.n, self.start, self.end
        if n == 0:
            return []
        if self.blobs:
            counts, ts, vals = decode_chunks(self.t0.astype(np.uint32), self.blobs)
            lo, hi, pieces = _cut(ts, counts, self.pos, n, start, end)
        else:
            ts, vals = np.empty(0, np.uint32), np.empty(0, np.float64)
            lo = hi = np.zeros(n, np.int64)
            pieces = {}
        lo_l, hi_l, old_l = lo.tolist(), hi.tolist(), self.oldest.tolist()
        out = []
        for i in range(n):
            if i in pieces:
                idx = pieces[i]
                out.append((ts[idx], vals[idx], old_l[i]))
            else:
                out.append((ts[lo_l[i] : hi_l[i]], vals[lo_l[i] : hi_l[i]], old_l[i]))
        for i, (xts, xvals) in self.unflushed.items():
            rts, rvals, old = out[i]
            k = (xts >= start) & (xts < end)
            rts, rvals = np.concatenate([rts, xts[k]]), np.concatenate([rvals, xvals[k]])
            order = np.argsort(rts, kind="stable")
            out[i] = (rts[order], rvals[order], old)
        return [(t, v, end if old < 0 else old) for t, v, old in out]


class Tank:
    """In-memory chunks of every series of this node's partitions (see module docstring)."""

    def __init__(
        self,
        schemas: Schemas,
        aggregations: Aggregations,
        clock: Callable[[], float] = time.time,
        row_of_id: Callable[[str], int | None] | None = None,
    ) -> None:
        self.schemas = schemas
        self.aggregations = aggregations
        self.clock = clock
        self._row_of_id = row_of_id
        self._id_rows: dict[str, int] | None = None if row_of_id is not None else {}

        self._slots = np.zeros(0, SLOT_DTYPE)
        self._n_slots = 0
        self._rows = np.zeros(0, ROW_DTYPE)
        self._aggs = np.zeros(0, AGG_DTYPE)
        self._n_aggs = 0
        self._lay_arr = np.zeros(0, LAYOUT_DTYPE)
        self._aggdesc = np.zeros(0, AGGDESC_DTYPE)
        self._ring_t0 = np.zeros(0, np.uint32)
        self._ring_meta = np.zeros(0, np.uint32)
        self._ring_blobs: list[bytes | None] = []
        self._n_ring = 0
        self._arena = bytearray()
        self._meta = np.zeros(_tank.META_COUNT, np.int64)
        self._pstart = np.zeros(0, np.uint32)
        self._rob_ts = np.zeros(0, np.uint32)
        self._rob_val = np.zeros(0, np.float64)
        self._n_rob = 0
        self._events = bytearray()
        self._ev_blobs: list[bytes] = []

        self._ids: list[str | None] = []
        self._active = 0
        self._layouts: list[_Layout] = []
        self._layout_by_key: dict[tuple[int, int], int] = {}
        # flat per-(layout, slot offset) tables for vectorised lookups
        self._lay_base = np.zeros(0, np.int64)
        self._tab_span = np.zeros(0, np.uint32)
        self._tab_ttl = np.zeros(0, np.uint32)
        self._tab_suffix: list[str] = []
        self._tab_lead = np.zeros(0, np.int64)
        self._pending: list[CompletedChunks] = []
        self._recent = CompletedChunks.empty()
        self._part_starts: dict[int, int] = {}

    # --- kernel plumbing ---------------------------------------------------------------------------------------
    def _state(self) -> tuple:
        return (
            self._slots,
            self._rows,
            self._aggs,
            self._lay_arr,
            self._aggdesc,
            self._ring_t0,
            self._ring_meta,
            self._ring_blobs,
            self._arena,
            self._meta,
            self._pstart,
            self._rob_ts,
            self._rob_val,
            self._events,
            self._ev_blobs,
        )

    def _maybe_compact(self) -> None:
        # Regions grow by 1.5x while a series' first chunk fills and shrink to fit later ones; what they leave
        # behind is reclaimed by copying the live regions (a memcpy of the open chunks, rarely needed once the
        # sizes have settled).
        waste = int(self._meta[M_ARENA_WASTE])
        if waste > (1 << 20) and waste * 4 > int(self._meta[M_ARENA_USED]):
            self._arena = _tank.compact(self._state())

    # --- layouts -----------------------------------------------------------------------------------------------
    def _layout_for(self, sidx: int, schema: Schema, aidx: int, agg: Aggregation) -> int:
        key = (sidx, aidx)
        lid = self._layout_by_key.get(key)
        if lid is not None:
            return lid
        lid = len(self._layouts)
        if lid >= 1 << 16:
            raise ValueError("too many distinct (schema, aggregation) combinations")
        archive, method, chunkspan, ttl, numchunks, suffix, lead = [0], [""], [], [], [], [""], [0]
        raw = schema.retentions[0]
        chunkspan.append(raw.chunkspan)
        ttl.append(raw.ttl)
        numchunks.append(raw.numchunks)
        offset_of: dict[tuple[str, int], int] = {}
        descs = []
        stored = agg.stored_methods
        for a, ret in enumerate(schema.retentions[1:], start=1):
            offs = [_NONE] * 5
            for m in stored:
                offs[STORED_METHODS.index(m)] = len(archive)
                offset_of[(m, ret.interval)] = len(archive)
                archive.append(a)
                method.append(m)
                chunkspan.append(ret.chunkspan)
                ttl.append(ret.ttl)
                numchunks.append(ret.numchunks)
                suffix.append(f"_{m}_{ret.interval}")
                lead.append(ret.interval - 1)
            descs.append((ret.interval, offs))
        if len(archive) > 255:
            raise ValueError(f"schema {schema.name!r} needs {len(archive)} series per metric; at most 255")
        ring_off, acc = [], 0
        for n in numchunks:  # numchunks entries: n-1 closed chunks, +1 while GC holds a finished current one
            ring_off.append(acc)
            acc += n
        lay = _Layout(
            lid,
            schema,
            agg,
            archive,
            method,
            chunkspan,
            ttl,
            numchunks,
            suffix,
            ring_off,
            acc,
            offset_of,
            lead,
        )
        self._layouts.append(lay)
        self._layout_by_key[key] = lid

        d0 = len(self._aggdesc)
        self._aggdesc = np.concatenate([self._aggdesc, np.zeros(len(descs), AGGDESC_DTYPE)])
        for k, (span, offs) in enumerate(descs):
            self._aggdesc[d0 + k]["span"] = span
            self._aggdesc[d0 + k]["off"] = offs
        rec = np.zeros(1, LAYOUT_DTYPE)
        rec["aggdesc_start"] = d0
        rec["n_aggs"] = len(descs)
        rec["fut_tol"] = min(raw.ttl * _FUTURE_TOLERANCE_PCT // 100, 0xFFFFFFFF)
        rec["rob_window"] = schema.reorder_window
        rec["rob_allow_update"] = int(schema.reorder_allow_update)
        rec["nslots"] = len(archive)
        self._lay_arr = np.concatenate([self._lay_arr, rec])
        self._lay_base = np.append(self._lay_base, len(self._tab_span))
        self._tab_span = np.append(self._tab_span, np.asarray(chunkspan, np.uint32))
        self._tab_ttl = np.append(self._tab_ttl, np.asarray(np.minimum(ttl, 0xFFFFFFFF), np.uint32))
        self._tab_suffix.extend(suffix)
        self._tab_lead = np.append(self._tab_lead, np.asarray(lead, np.int64))
        return lid

    # --- series ------------------------------------------------------------------------------------------------
    def add_series(
        self,
        rows: np.ndarray,
        names: Sequence[str],
        intervals: np.ndarray,
        partitions: np.ndarray,
        ids: Sequence[str],
    ) -> None:
        """Create the tank state of new index rows (schema and aggregation matched by name and interval)."""
        rows = np.asarray(rows, np.int64)
        n = len(rows)
        if n == 0:
            return
        intervals = np.asarray(intervals, np.int64)
        partitions = np.asarray(partitions, np.int64)
        if not (len(names) == len(intervals) == len(partitions) == len(ids) == n):
            raise ValueError("add_series: rows, names, intervals, partitions and ids must have equal lengths")
        if int(rows.min()) < 0 or int(rows.max()) >= 1 << 32:
            raise ValueError("add_series: rows must lie in [0, 2**32)")
        _, last = np.unique(rows[::-1], return_index=True)
        if len(last) < n:  # a row given twice: its last definition wins
            keep = np.sort(n - 1 - last)
            rows, intervals, partitions = rows[keep], intervals[keep], partitions[keep]
            names = [names[i] for i in keep]
            ids = [ids[i] for i in keep]
            n = len(rows)
        self._ensure_rows(int(rows.max()) + 1)
        lids = self._layout_ids(names, intervals)
        # rows already present: same layout keeps its data, another layout starts over
        present = (self._rows["flags"][rows] & R_PRESENT) != 0
        if present.any():
            same = present & (self._rows["layout"][rows] == lids)
            changed = present & ~same
            if changed.any():
                self.remove_series(rows[changed])
            if same.any():
                self._rows["partition"][rows[same]] = partitions[same]
                self._rows["interval"][rows[same]] = intervals[same]
                for i in np.flatnonzero(same):
                    self._set_id(int(rows[i]), ids[i])
            keep = ~same
            rows, lids, intervals, partitions = rows[keep], lids[keep], intervals[keep], partitions[keep]
            ids = [ids[i] for i in np.flatnonzero(keep)]
            names = [names[i] for i in np.flatnonzero(keep)]
        if len(rows) == 0:
            return
        now = int(self.clock())
        for lid in np.unique(lids):
            sel = np.flatnonzero(lids == lid)
            self._place(self._layouts[int(lid)], rows[sel], intervals[sel], partitions[sel], now)
        if self._id_rows is None:  # ids are only kept per row: nothing to unlink
            idl = self._ids
            for r, id_ in zip(rows.tolist(), ids, strict=True):
                idl[r] = id_
        else:
            for r, id_ in zip(rows.tolist(), ids, strict=True):
                self._set_id(r, id_)
        self._active += len(rows)

    def _layout_ids(self, names: Sequence[str], intervals: np.ndarray) -> np.ndarray:
        """Layout of each new series. Which schema and aggregation apply depends only on the first section
        whose pattern finds the name, so each name costs the pattern searches up to the first pattern that
        matches everything (with the shipped defaults: none) and the rest is one lookup per distinct
        (schema section, aggregation section, interval)."""
        n = len(names)
        s_pats = [s.pattern for s in self.schemas.schemas] + [self.schemas.default.pattern]
        a_pats = [a.pattern for a in self.aggregations.aggregations]
        ks = _first_match(s_pats, names)
        ka = _first_match(a_pats, names)
        if ks is None:
            ks = np.zeros(n, np.int64)
        if ka is None:
            ka = np.zeros(n, np.int64)
        keys = np.stack([ks, ka, intervals])
        uniq, first, inverse = np.unique(keys, axis=1, return_index=True, return_inverse=True)
        lid_of = np.empty(uniq.shape[1], np.int64)
        for u, i in enumerate(first.tolist()):
            name, iv = names[i], int(intervals[i])
            sidx, schema = self.schemas.match(name, iv)
            aidx, agg = self.aggregations.match(name)
            lid_of[u] = self._layout_for(sidx, schema, aidx, agg)
        return lid_of[inverse.ravel()]

    def _set_id(self, row: int, id_: str) -> None:
        old = self._ids[row]
        if self._id_rows is not None:
            if old is not None and self._id_rows.get(old) == row:
                del self._id_rows[old]
            self._id_rows[id_] = row
        self._ids[row] = id_

    def _ensure_rows(self, n: int) -> None:
        if n > len(self._rows):
            self._rows = _grow(self._rows, n)
            self._ids.extend([None] * (len(self._rows) - len(self._ids)))

    def _place(
        self, lay: _Layout, rows: np.ndarray, intervals: np.ndarray, parts: np.ndarray, now: int
    ) -> None:
        k = len(rows)
        ns, na = lay.nslots, int(self._lay_arr["n_aggs"][lay.id])
        nrob = lay.schema.reorder_window
        reuse = [lay.free.pop() for _ in range(min(k, len(lay.free)))]
        fresh = k - len(reuse)
        reused = np.array(reuse, np.int64).reshape(len(reuse), 4)
        step = np.arange(fresh, dtype=np.int64)
        slot0 = np.concatenate([reused[:, 0], self._n_slots + step * ns])
        agg0 = np.concatenate([reused[:, 1], self._n_aggs + step * na])
        rob0 = np.concatenate([reused[:, 2], self._n_rob + step * nrob])
        ring0 = np.concatenate([reused[:, 3], self._n_ring + step * lay.ring_per_row])
        self._n_slots += fresh * ns
        self._n_aggs += fresh * na
        self._n_rob += fresh * nrob
        self._n_ring += fresh * lay.ring_per_row
        if self._n_slots >= 1 << 32 or self._n_ring >= 1 << 32:
            raise MemoryError("tank: more than 2**32 slots or ring entries")
        self._slots = _grow(self._slots, self._n_slots)
        self._aggs = _grow(self._aggs, self._n_aggs)
        self._rob_ts = _grow(self._rob_ts, self._n_rob)
        self._rob_val = _grow(self._rob_val, self._n_rob)
        if self._n_ring > len(self._ring_t0):
            self._ring_t0 = _grow(self._ring_t0, self._n_ring)
            self._ring_meta = _grow(self._ring_meta, self._n_ring)
            self._ring_blobs.extend([None] * (len(self._ring_t0) - len(self._ring_blobs)))

        # slots: zeroed records, then the per-offset constants and the row back-reference
        idx = (slot0[:, None] + np.arange(ns)).ravel()
        self._slots[idx] = np.zeros(1, SLOT_DTYPE)
        s = self._slots
        off = np.tile(np.arange(ns), k)
        span = np.asarray(lay.chunkspan, np.int64)[off]
        s["span_code"][idx] = np.asarray([_SPAN_CODE[c] for c in lay.chunkspan], np.uint8)[off]
        s["ring_cap"][idx] = np.asarray(lay.numchunks, np.int64)[off]
        s["ring_base"][idx] = (ring0[:, None] + np.asarray(lay.ring_off, np.int64)).ravel()
        s["row"][idx] = np.repeat(rows, ns)
        s["leading"][idx] = 0xFF
        s["prev_delta"][idx] = 60
        # first region size: room for the points of one chunk at ~1 byte each plus headroom (grows by 1.5x)
        step = np.repeat(np.maximum(intervals, 1), ns)
        step = np.where(off == 0, step, np.asarray([1] + lay.lead, np.int64)[off] + 1)
        pts = np.minimum(span // np.maximum(step, 1), 4096)
        s["cap"][idx] = ((pts + 24 + 7) // 8 * 8).astype(np.uint32)
        if na:
            aidx = (agg0[:, None] + np.arange(na)).ravel()
            self._aggs[aidx] = np.zeros(1, AGG_DTYPE)
            self._aggs["min"][aidx] = np.finfo(np.float64).max
            self._aggs["max"][aidx] = -np.finfo(np.float64).max
        if nrob:
            ridx = (rob0[:, None] + np.arange(nrob)).ravel()
            self._rob_ts[ridx] = 0
        r = self._rows
        r["slot_start"][rows] = slot0
        r["agg_base"][rows] = agg0
        r["rob_base"][rows] = rob0
        r["rob_newest"][rows] = 0
        r["last_write"][rows] = now
        r["partition"][rows] = parts
        r["interval"][rows] = intervals
        r["layout"][rows] = lay.id
        r["flags"][rows] = R_PRESENT

    def remove_series(self, rows: np.ndarray) -> None:
        """Forget rows (deleted from the index or collected); their completed chunks stay takeable."""
        rows = np.asarray(rows, np.int64)
        rows = rows[(rows >= 0) & (rows < len(self._rows))]
        rows = np.unique(rows[(self._rows["flags"][rows] & R_PRESENT) != 0])
        if len(rows) == 0:
            return
        self._drain()  # resolve pending events' ids before the rows can be reused
        for r in rows.tolist():
            rec = self._rows[r]
            lay = self._layouts[int(rec["layout"])]
            ring0 = int(self._slots["ring_base"][int(rec["slot_start"])])
            lay.free.append((int(rec["slot_start"]), int(rec["agg_base"]), int(rec["rob_base"]), ring0))
            old = self._ids[r]
            if self._id_rows is not None and old is not None and self._id_rows.get(old) == r:
                del self._id_rows[old]
            self._ids[r] = None
        _tank.release(self._state(), rows)
        self._active -= len(rows)
        self._maybe_compact()

    # --- ingest ------------------------------------------------------------------------------------------------
    def add_points(self, rows: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        """Add a batch in arrival order (rows: int64 index rows, -1 = unknown; ts uint32; values float64)."""
        rows = np.ascontiguousarray(rows, np.int64)
        ts = np.ascontiguousarray(ts, np.uint32)
        values = np.ascontiguousarray(values, np.float64)
        if len(rows) == 0:
            return
        _tank.add_points(self._state(), rows, ts, values, int(self.clock()))
        self._maybe_compact()

    @property
    def discarded(self) -> dict[str, int]:
        return {reason: int(self._meta[i]) for reason, i in DISCARD_REASONS.items()}

    @property
    def points_added(self) -> int:
        return int(self._meta[M_ADDED])

    # --- warm start: saved chunks loaded from the store ---------------------------------------------------------
    def warm_load_plan(self, slots: np.ndarray) -> WarmLoadPlan:
        """Which saved chunks these slots could take from the store: per slot, the t0 range [lo, hi] of the
        closed chunks memory lacks before its oldest chunk. Only slots with a chunk in memory (open or in the
        ring) take saved chunks: a slot without one would start its next chunk behind them, and the store
        answers its reads anyway. `hi` includes the oldest ring chunk when it is incomplete (the replay began
        inside it): the store's copy is the whole chunk and replaces it. Owner thread, under the tank lock."""
        slots = np.asarray(slots, np.int64)
        s = self._slots[slots]
        flags = s["flags"].astype(np.int64)
        live = (flags & F_LIVE) != 0
        rows = s["row"].astype(np.int64)
        live &= (self._rows["flags"][rows] & R_PRESENT) != 0
        span = np.asarray(SPANS, np.int64)[s["span_code"]]
        cnt = s["ring_count"].astype(np.int64)
        cap = np.maximum(s["ring_cap"].astype(np.int64), 1)
        limit = cap - 1 + ((flags & F_FINISHED) != 0)
        oldest_idx = s["ring_base"].astype(np.int64) + (s["ring_head"].astype(np.int64) - cnt) % cap
        has_ring = cnt > 0
        oldest = np.where(has_ring, self._ring_t0[np.where(has_ring, oldest_idx, 0)], s["t0"]).astype(
            np.int64
        )
        incomplete = has_ring & ((self._ring_meta[np.where(has_ring, oldest_idx, 0)] & RM_COMPLETE) == 0)
        room = limit - cnt
        hi = np.where(incomplete, oldest, oldest - span)
        lo = oldest - room * span
        ok = live & (hi >= lo) & (hi > 0) & ((room > 0) | incomplete)
        keep = np.flatnonzero(ok)
        keys, ttls = [], []
        for slot in slots[keep].tolist():
            k, ttl = self.slot_key(slot)
            keys.append(k)
            ttls.append(ttl)
        return WarmLoadPlan(
            slots[keep], np.maximum(lo[keep], 0), hi[keep], span[keep], keys, np.asarray(ttls, np.int64)
        )

    def load_saved(
        self,
        slots: np.ndarray,
        t0s: np.ndarray,
        blobs: Sequence[bytes],
        npoints: np.ndarray,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Put chunks read from the store into the rings, older than what memory holds (or replacing the oldest
        ring chunk of the same t0 when it is incomplete); they count as saved. Rules are checked again here:
        the ring may have moved on since `warm_load_plan`. Returns the chunks taken. Owner thread, under the
        tank lock. Any order. `keys` (the AMKey each entry was read for) guards against a slot that was
        collected and reused by another series since the plan: such entries are dropped."""
        slots = np.asarray(slots, np.int64)
        t0s = np.asarray(t0s, np.int64)
        npoints = np.asarray(npoints, np.int64)
        if len(slots) == 0:
            return 0
        # Vectorised: a block of a warm load is ~50k chunks and runs under the tank lock on the main loop (a
        # Python step per chunk held it ~0.5 s). Per slot, newest first; duplicates of a (slot, t0) dropped.
        order = np.lexsort((-t0s, slots))
        es, et = slots[order], t0s[order]
        first = np.r_[True, (es[1:] != es[:-1]) | (et[1:] != et[:-1])]
        order, es, et = order[first], es[first], et[first]
        rec = self._slots[es]
        flags = rec["flags"].astype(np.int64)
        ok = ((flags & F_LIVE) != 0) & ((self._rows["flags"][rec["row"].astype(np.int64)] & R_PRESENT) != 0)
        if keys is not None:
            heads = np.flatnonzero(np.r_[True, es[1:] != es[:-1]])
            reused = [
                int(es[h])
                for h in heads[ok[heads]].tolist()
                if self.slot_key(int(es[h]))[0] != keys[int(order[h])]
            ]
            if reused:
                ok &= ~np.isin(es, reused)
        order, es, et, rec, flags = order[ok], es[ok], et[ok], rec[ok], flags[ok]
        if len(es) == 0:
            return 0
        cap = np.maximum(rec["ring_cap"].astype(np.int64), 1)
        base = rec["ring_base"].astype(np.int64)
        head = rec["ring_head"].astype(np.int64)
        cnt = rec["ring_count"].astype(np.int64)
        limit = cap - 1 + ((flags & F_FINISHED) != 0)
        has = cnt > 0
        oidx = np.where(has, base + (head - cnt) % cap, 0)
        old_t0 = np.where(has, self._ring_t0[oidx], rec["t0"]).astype(np.int64)
        old_incomplete = has & ((self._ring_meta[oidx] & RM_COMPLETE) == 0)
        # replacements: the store's copy of the oldest ring chunk when that one is incomplete
        rep = old_incomplete & (et == old_t0)
        # insertions: older than the oldest, at most `limit - cnt` per slot, newest first
        older = et < old_t0
        grp = np.r_[0, np.cumsum(es[1:] != es[:-1])]
        firsts = np.flatnonzero(np.r_[True, es[1:] != es[:-1]])
        before = np.cumsum(older) - older  # older entries ahead of this one, over all slots
        k = before - before[firsts][grp]  # 0 for the newest older chunk of its slot
        ins = older & (k < limit - cnt)
        meta = self._meta
        blobs_l = list(blobs)
        sizes = np.array(list(map(len, blobs_l)), np.int64)
        if rep.any():
            ri = oidx[rep]
            prev = [self._ring_blobs[x] for x in ri.tolist()]
            prev_size = np.fromiter(
                (len(b) if isinstance(b, bytes) else 0 for b in prev), np.int64, len(prev)
            )
            meta[M_RING_BYTES] += int(sizes[order[rep]].sum() - prev_size.sum())
            meta[M_POINTS_MEM] += int(
                npoints[order[rep]].sum() - (self._ring_meta[ri].astype(np.int64) >> 8).sum()
            )
            self._ring_meta[ri] = (RM_COMPLETE | (npoints[order[rep]] << 8)).astype(np.uint32)
            getb = blobs_l.__getitem__
            deque(map(self._ring_blobs.__setitem__, ri.tolist(), map(getb, order[rep].tolist())), maxlen=0)
        if ins.any():
            ii = base[ins] + (head[ins] - cnt[ins] - 1 - k[ins]) % cap[ins]
            src = order[ins]
            self._ring_t0[ii] = et[ins].astype(np.uint32)
            self._ring_meta[ii] = (RM_COMPLETE | (npoints[src] << 8)).astype(np.uint32)
            getb = blobs_l.__getitem__
            deque(map(self._ring_blobs.__setitem__, ii.tolist(), map(getb, src.tolist())), maxlen=0)
            added = np.bincount(grp[ins], minlength=len(firsts))
            slot_of_grp = es[firsts]
            self._slots["ring_count"][slot_of_grp] = (cnt[firsts] + added).astype(np.uint8)
            meta[M_RING_CHUNKS] += int(ins.sum())
            meta[M_RING_BYTES] += int(sizes[src].sum())
            meta[M_POINTS_MEM] += int(npoints[src].sum())
        took = rep | ins
        if took.any():
            # per slot the newest chunk taken (entries are newest first within a slot)
            ts_, tt_ = es[took], et[took]
            lead = np.r_[True, ts_[1:] != ts_[:-1]]
            self.mark_saved(ts_[lead], tt_[lead])
        return int(took.sum())

    def replay_from(
        self,
        partitions: Sequence[int],
        now: int,
        margin: int,
        last_data: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> dict[int, int | None]:
        """Per partition, the data time from which Kafka must be replayed so that nothing unsaved is missed,
        judged from the saved marks (persist backlog) of the series in memory; None where no series of the
        partition has a mark (nothing to judge by: replay the whole window).

        Per slot with a mark M the first unsaved chunk starts at M + span. A live slot without a mark is taken
        to have begun at the newest chunk start P saved for any series of its partition and chunk span (a
        healthy primary saves the chunks of one boundary together; a series without a mark began after the
        last save round, or its chunk of that round is still queued). Rollups need their first bucket's raw
        points: `lead` (span - 1) earlier. `last_data(rows)` (optional) bounds each row's newest data
        timestamp: a slot whose first unsaved chunk starts after it has nothing unsaved and is ignored (a
        series that stopped long ago must not pull the replay back to its last save)."""
        out: dict[int, int | None] = {}
        n = self._n_slots
        if n == 0:
            return {p: None for p in partitions}
        s = self._slots[:n]
        rows = s["row"].astype(np.int64)
        present = (self._rows["flags"][rows] & R_PRESENT) != 0
        part = self._rows["partition"][rows].astype(np.int64)
        span = np.asarray(SPANS, np.int64)[s["span_code"]]
        lay = self._rows["layout"][rows].astype(np.int64)
        flat = self._lay_base[lay] + (np.arange(n) - self._rows["slot_start"][rows].astype(np.int64))
        lead = self._tab_lead[flat]
        lsf = s["lsf"].astype(np.int64)
        marked = present & (lsf > 0)
        if last_data is not None:
            newest = np.asarray(last_data(rows), np.int64)
            marked_idle = marked & (newest < lsf + span - lead)
            present &= ~marked_idle
            marked &= ~marked_idle
            # an unmarked series idle since before the window's oldest chunk has nothing in it to replay
            present &= ~(~marked & (newest < now - now % span - 2 * span))
        for p in partitions:
            mine = present & (part == p)
            pm = mine & marked
            if not pm.any():
                out[p] = None
                continue
            need = lsf[pm] + span[pm] - lead[pm]
            best = int(need.min())
            for sp in np.unique(span[mine]).tolist():
                newest = lsf[pm & (span == sp)]
                unmarked = mine & ~marked & (span == sp)
                if not unmarked.any():
                    continue
                top = int(newest.max()) if len(newest) else now - now % sp - sp
                best = min(best, top - int(lead[unmarked].max()))
            out[p] = max(0, min(best, now) - margin)
        return out

    # --- completed chunks and save marks -----------------------------------------------------------------------
    def _chunks(
        self, slots: np.ndarray, t0s: np.ndarray, blobs: list, complete: np.ndarray
    ) -> CompletedChunks:
        slots = np.asarray(slots, np.int64)
        rows = self._slots["row"][slots].astype(np.int64)
        flat = self._lay_base[self._rows["layout"][rows]] + (slots - self._rows["slot_start"][rows])
        ids = self._ids
        tab = self._tab_suffix
        return CompletedChunks(
            slot=slots,
            row=rows,
            t0=np.asarray(t0s, np.uint32),
            span=self._tab_span[flat],
            ttl=self._tab_ttl[flat],
            partition=self._rows["partition"][rows].astype(np.int32),
            complete=np.asarray(complete, bool),
            data=blobs,
            ids=[ids[r] for r in rows.tolist()],
            suffixes=[tab[f] for f in flat.tolist()],
        )

    def _drain(self) -> None:
        if not self._ev_blobs:
            return
        ev = np.frombuffer(bytes(self._events), EVENT_DTYPE)
        blobs = self._ev_blobs
        self._events = bytearray()
        self._ev_blobs = []
        self._pending.append(self._chunks(ev["slot"], ev["t0"], blobs, (ev["flags"] & 1) != 0))

    def take_completed(self) -> CompletedChunks:
        """Chunks finished since the last call (oldest first); the caller decides what to persist."""
        self._drain()
        out = CompletedChunks.concat(self._pending)
        self._pending = []
        self._recent = out
        return out

    def _ring_entries(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot per entry, ring index per entry) of the slots' closed chunks, oldest first per slot."""
        s = self._slots[slots]
        cnt = s["ring_count"].astype(np.int64)
        if len(slots) == 0 or int(cnt.max(initial=0)) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        cap = np.maximum(s["ring_cap"].astype(np.int64), 1)
        j = np.arange(int(cnt.max()))
        pos = (s["ring_head"].astype(np.int64)[:, None] - cnt[:, None] + j) % cap[:, None]
        idx = s["ring_base"].astype(np.int64)[:, None] + pos
        mask = j < cnt[:, None]
        return np.broadcast_to(slots[:, None], idx.shape)[mask], idx[mask]

    def unsaved_ring_chunks(self, slots: np.ndarray) -> CompletedChunks:
        """Completed chunks of these slots with t0 beyond their save-start mark, oldest first per slot.

        That is Metrictank's walk-back through the ring, plus the chunks returned by the last
        `take_completed()` that are no longer in the ring: a batch can complete several chunks of a series
        (a replay, numchunks 1) and GC removes idle series, while Metrictank persists each chunk the moment
        it completes. Call it after `take_completed()`, before the next ingest."""
        slots = np.asarray(slots, np.int64)
        es, ei = self._ring_entries(slots)
        t0 = self._ring_t0[ei]
        sel = t0 > self._slots["lss"][es]
        es, ei, t0 = es[sel], ei[sel], t0[sel]
        blobs = [self._ring_blobs[i] for i in ei.tolist()]
        ring = self._chunks(es, t0, blobs, (self._ring_meta[ei] & RM_COMPLETE) != 0)
        rec = self._recent
        if not len(rec):
            return ring
        key = (rec.slot << 32) | rec.t0.astype(np.int64)
        gone = np.isin(rec.slot, slots) & ~np.isin(key, (es << 32) | t0.astype(np.int64))
        gone &= rec.t0 > self._slots["lss"][rec.slot]
        if not gone.any():
            return ring
        both = CompletedChunks.concat([ring, rec.take(np.flatnonzero(gone))])
        return both.take(np.lexsort((both.t0, both.slot)))

    @property
    def n_slots(self) -> int:
        """Slots allocated so far (series archives); slot numbers are below this."""
        return self._n_slots

    def mark_save_started(self, slots: np.ndarray, t0s: np.ndarray) -> None:
        """Chunks up to t0 are saved or queued: never offer them for persisting again."""
        slots = np.asarray(slots, np.int64)
        t0s = np.asarray(t0s, np.int64)
        np.maximum.at(self._slots["lss"], slots, np.clip(t0s, 0, 0xFFFFFFFF).astype(np.uint32))

    def mark_saved(self, slots: np.ndarray, t0s: np.ndarray) -> None:
        """A persist notification (any node's, ours included): chunks up to t0 are durable."""
        self.mark_save_started(slots, t0s)
        slots = np.asarray(slots, np.int64)
        t0s = np.clip(np.asarray(t0s, np.int64), 0, 0xFFFFFFFF).astype(np.uint32)
        np.maximum.at(self._slots["lsf"], slots, t0s)

    def saved_summary(self) -> dict[str, int]:
        """How far saved marks reach: slots with a confirmed save, and the newest confirmed chunk start."""
        lsf = self._slots["lsf"][: self._n_slots]
        return {"slotsSaved": int(np.count_nonzero(lsf)), "newestSavedT0": int(lsf.max()) if len(lsf) else 0}

    def save_marks(self, slot: int) -> tuple[int, int]:
        """(last save start, last save finish) of a slot."""
        return int(self._slots["lss"][slot]), int(self._slots["lsf"][slot])

    def _row_of(self, id_: str) -> int | None:
        if self._id_rows is not None:
            return self._id_rows.get(id_)
        assert self._row_of_id is not None
        return self._row_of_id(id_)

    def slot_of(self, amkey: str) -> int | None:
        """The slot of an AMKey (`<id>` or `<id>_<method>_<span>`), None if unknown here."""
        id_, sep, rest = amkey.partition("_")
        row = self._row_of(id_)
        if row is None or row < 0 or row >= len(self._rows) or not (self._rows["flags"][row] & R_PRESENT):
            return None
        start = int(self._rows["slot_start"][row])
        if not sep:
            return start
        method, _, span = rest.partition("_")
        if not span.isdigit():
            return None
        off = self._layouts[int(self._rows["layout"][row])].offset_of.get((method, int(span)))
        return None if off is None else start + off

    # --- partitions and completeness -------------------------------------------------------------------------
    def set_partition_start(self, partition: int, first_msg_ts: int) -> None:
        """Chunks of this partition starting at or after first_msg_ts are complete (0: consumed from the log
        start, all complete). Call it before adding the partition's first points: chunks that complete before
        the call were judged with the old start. Open chunks are re-judged here, so a call right after the
        first batch still flags the chunks that batch started correctly."""
        if partition < 0:
            raise ValueError("partition must be >= 0")
        if partition >= len(self._pstart):
            new = np.zeros(partition + 1, np.uint32)
            new[: len(self._pstart)] = self._pstart
            self._pstart = new
        start = max(0, min(int(first_msg_ts), 0xFFFFFFFF))
        self._pstart[partition] = start
        self._part_starts[partition] = start
        rows = np.flatnonzero(
            ((self._rows["flags"] & R_PRESENT) != 0) & (self._rows["partition"] == partition)
        )
        if len(rows) == 0:
            return
        nslots = self._lay_arr["nslots"][self._rows["layout"][rows]].astype(np.int64)
        first = self._rows["slot_start"][rows].astype(np.int64)
        off = np.arange(int(nslots.sum())) - np.repeat(np.cumsum(nslots) - nslots, nslots)
        slots = np.repeat(first, nslots) + off
        lead = self._tab_lead[np.repeat(self._lay_base[self._rows["layout"][rows]], nslots) + off]
        flags = self._slots["flags"][slots]
        is_open = ((flags & F_LIVE) != 0) & ((flags & F_FINISHED) == 0)
        slots, lead, flags = slots[is_open], lead[is_open], flags[is_open]
        ok = (start == 0) | (self._slots["t0"][slots].astype(np.int64) - lead >= start)
        self._slots["flags"][slots] = np.where(ok, flags | F_COMPLETE, flags & (0xFF ^ F_COMPLETE))

    @property
    def partition_starts(self) -> dict[int, int]:
        return dict(self._part_starts)

    def complete_from(self) -> int:
        """Data time from which every chunk of every layout in use is complete (0 if all already are): once
        data reaches it, each current chunk is one this node saw from its start."""
        best = 0
        combos = {(cs, ld) for lay in self._layouts for cs, ld in zip(lay.chunkspan, lay.lead, strict=True)}
        for start in self._part_starts.values():
            if start == 0:
                continue
            for cs, ld in combos:
                first = start + ld
                best = max(best, -(-first // cs) * cs)
        return best

    # --- reads -------------------------------------------------------------------------------------------------
    def slot_key(self, slot: int) -> tuple[str, int]:
        """(AMKey, TTL) of a slot: how its chunks are named and kept in the store."""
        row = int(self._slots["row"][slot])
        flat = int(self._lay_base[self._rows["layout"][row]] + (slot - self._rows["slot_start"][row]))
        return self._ids[row] + self._tab_suffix[flat], int(self._tab_ttl[flat])

    def schema_of(self, row: int) -> tuple[Schema, Aggregation]:
        """The storage schema and aggregation a row was matched to (the query side picks archives by them)."""
        if row < 0 or row >= len(self._rows) or not (self._rows["flags"][row] & R_PRESENT):
            raise KeyError(f"row {row} is not in the tank")
        lay = self._layouts[int(self._rows["layout"][row])]
        return lay.schema, lay.agg

    def layouts_of(self, rows: np.ndarray) -> np.ndarray:
        """The layout id of each row (int64), -1 where the row is not in the tank; `layout(id)` gives its
        schema and aggregation. `schema_of` for many rows at once: a query over 1000 series looked each up
        separately, twice, which was ~5% of a 1000-series sumSeries."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(len(rows), -1, dtype=np.int64)
        ok = (rows >= 0) & (rows < len(self._rows))
        idx = rows[ok]
        present = (self._rows["flags"][idx] & R_PRESENT) != 0
        lids = self._rows["layout"][idx].astype(np.int64)
        out[np.flatnonzero(ok)[present]] = lids[present]
        return out

    def layout(self, lid: int) -> tuple[Schema, Aggregation]:
        """The storage schema and aggregation of a layout id from `layouts_of`."""
        lay = self._layouts[lid]
        return lay.schema, lay.agg

    def slot_for(self, row: int, archive: int = 0, method: str | None = None) -> int:
        """The slot of archive `archive` (0 = raw) and rollup `method` of a row; KeyError if not stored."""
        if row < 0 or row >= len(self._rows) or not (self._rows["flags"][row] & R_PRESENT):
            raise KeyError(f"row {row} is not in the tank")
        start = int(self._rows["slot_start"][row])
        if archive == 0:
            return start
        lay = self._layouts[int(self._rows["layout"][row])]
        if archive >= len(lay.schema.retentions):
            raise KeyError(f"row {row} has no archive {archive}")
        m = _METHOD_ALIASES.get(method or lay.agg.default_method)
        off = lay.offset_of.get((m or "", lay.schema.retentions[archive].interval))
        if off is None:
            raise KeyError(
                f"row {row} archive {archive} stores no {method!r} (stored: {lay.agg.stored_methods})"
            )
        return start + off

    def read(
        self, row: int, archive: int, method: str | None, start: int, end: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Points in [start, end) held in memory, and the oldest timestamp memory is authoritative from
        (earlier data must come from the store; `end` when memory holds nothing). Archive 0 is raw; archive
        i > 0 is the i-th rollup of the series' matched schema, `method` one of sum cnt min max lst."""
        return self.read_many([row], archive, method, start, end)[0]

    def read_many(
        self, rows: Sequence[int] | np.ndarray, archive: int, method: str | None, start: int, end: int
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """`read` for many rows with one decode call (a render of many series)."""
        return self.snapshot_many(rows, archive, method, start, end).decode()

    def snapshot_many(
        self, rows: Sequence[int] | np.ndarray, archive: int, method: str | None, start: int, end: int
    ) -> ReadSnapshot:
        """What `read_many` needs from the tank, copied: the part that must run under the tank lock.

        Readers take this under the lock and decode outside it, so a render holds the lock for the cost of a
        few numpy gathers, not for the decode of every chunk. Ring blobs are immutable bytes and the open
        chunks and reorder buffers are copied, so the ingest loop may change the tank as soon as this returns.
        """
        rows = np.asarray(rows, np.int64).ravel()
        n = len(rows)
        if n == 0:
            return ReadSnapshot(0, start, end)
        slots = self._slots_for(rows, archive, method)
        s = self._slots[slots]
        span = np.asarray(SPANS, np.int64)[s["span_code"]]
        flags = s["flags"].astype(np.int64)
        # ring entries, oldest first per slot
        es, ei = self._ring_entries(slots)
        epos = np.repeat(np.arange(n), s["ring_count"].astype(np.int64))
        t0s = self._ring_t0[ei].astype(np.int64)
        # the oldest point memory vouches for: the oldest chunk's t0 (its first point if it is the first chunk)
        open_live = ((flags & F_LIVE) != 0) & ((flags & F_FINISHED) == 0)
        oldest = np.full(n, -1, np.int64)
        if len(ei):
            fe = np.flatnonzero(np.r_[True, epos[1:] != epos[:-1]])
            has = epos[fe]
            oldest[has] = np.where(self._ring_meta[ei[fe]] & RM_FIRST, s["first_ts"][has], t0s[fe])
        only_open = (oldest < 0) & open_live
        oldest[only_open] = np.where(flags[only_open] & F_FIRST, s["first_ts"][only_open], s["t0"][only_open])
        sel = (t0s < end) & (t0s + span[epos] > start)
        b_pos = epos[sel]
        b_t0 = t0s[sel]
        blobs = [self._ring_blobs[i] for i in ei[sel].tolist()]
        cur_t0 = s["t0"].astype(np.int64)
        want_open = open_live & (cur_t0 < end) & (cur_t0 + span > start)
        if want_open.any():
            op = np.flatnonzero(want_open)
            oblobs = _tank.open_blobs(self._state(), slots[op])
            keep = [i for i, bl in enumerate(oblobs) if bl is not None]
            if keep:
                b_pos = np.concatenate([b_pos, op[keep]])
                b_t0 = np.concatenate([b_t0, cur_t0[op[keep]]])
                blobs.extend(oblobs[i] for i in keep)
                order = np.argsort(b_pos, kind="stable")  # ring chunks, then the open one, per slot
                b_pos, b_t0 = b_pos[order], b_t0[order]
                blobs = [blobs[i] for i in order.tolist()]
        unflushed = {}
        for i in np.flatnonzero(self._may_have_unflushed(rows, archive)).tolist():
            xts, xvals = self._unflushed(int(rows[i]), archive, int(slots[i]))
            if len(xts):
                unflushed[i] = (xts, xvals)
                if oldest[i] < 0:  # nothing in chunks: memory vouches from its oldest unflushed point
                    oldest[i] = int(xts.min())
        return ReadSnapshot(n, start, end, b_pos, b_t0, blobs, oldest, unflushed)

    def _slots_for(self, rows: np.ndarray, archive: int, method: str | None) -> np.ndarray:
        """`slot_for` of many rows; the offset is looked up once per layout. Raises what `slot_for` raises for
        the first row it would fail on."""
        if not len(self._rows):
            self.slot_for(int(rows[0]), archive, method)  # raises the KeyError
        ok = (rows >= 0) & (rows < len(self._rows))
        safe = np.where(ok, rows, 0)
        ok &= (self._rows["flags"][safe] & R_PRESENT) != 0
        start = self._rows["slot_start"][safe].astype(np.int64)
        off = np.zeros(len(rows), np.int64)
        if archive != 0:
            lays = self._rows["layout"][safe]
            for lid in np.unique(lays[ok]).tolist():
                members = ok & (lays == lid)
                rep = int(rows[np.argmax(members)])
                try:
                    off[members] = self.slot_for(rep, archive, method) - int(self._rows["slot_start"][rep])
                except KeyError:
                    ok &= ~members
        if not ok.all():
            self.slot_for(int(rows[np.argmin(ok)]), archive, method)  # raises the KeyError
            raise AssertionError("unreachable")
        return start + off

    def _may_have_unflushed(self, rows: np.ndarray, archive: int) -> np.ndarray:
        """Rows whose reorder buffer (raw) or rollup bucket in progress may hold points: the others need no
        per-row look."""
        if archive == 0:
            windows = np.asarray([lay.schema.reorder_window for lay in self._layouts], np.int64)
            return windows[self._rows["layout"][rows]] > 0
        return self._aggs["cnt"][self._rows["agg_base"][rows].astype(np.int64) + archive - 1] != 0

    def _unflushed(self, row: int, archive: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Points not in any chunk yet: the reorder buffer (raw) or the bucket in progress (rollups)."""
        rec = self._rows[row]
        lay = self._layouts[int(rec["layout"])]
        if archive == 0:
            w = lay.schema.reorder_window
            if not w:
                return np.empty(0, np.uint32), np.empty(0, np.float64)
            b = int(rec["rob_base"])
            ts, vals = self._rob_ts[b : b + w], self._rob_val[b : b + w]
            nz = ts != 0
            return ts[nz].copy(), vals[nz].copy()
        a = self._aggs[int(rec["agg_base"]) + archive - 1]
        if a["cnt"] == 0:
            return np.empty(0, np.uint32), np.empty(0, np.float64)
        m = lay.method[slot - int(rec["slot_start"])]
        v = float(a["cnt"]) if m == "cnt" else float(a[m])
        return np.asarray([a["boundary"]], np.uint32), np.asarray([v], np.float64)

    # --- garbage collection ------------------------------------------------------------------------------------
    def gc(self, now: int, chunk_max_stale: int, metric_max_stale: int) -> tuple[int, np.ndarray]:
        """Finish the open chunks of series idle for chunk_max_stale (they become completed chunks) and remove
        series idle for metric_max_stale; returns (chunks finished, removed rows) so the index can drop them."""
        now = int(now)
        fin, removed = _tank.gc(
            self._state(), now, max(now - int(chunk_max_stale), 0), max(now - int(metric_max_stale), 0)
        )
        rows = np.frombuffer(bytes(removed), np.uint32).astype(np.int64)
        if len(rows):
            self.remove_series(rows)
        else:
            self._drain()
        return int(fin), rows

    # --- introspection -----------------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        m = self._meta
        return {
            "metrics_active": self._active,
            "slots": self._n_slots,
            "points_in_memory": int(m[M_POINTS_MEM]),
            "chunks_in_ring": int(m[M_RING_CHUNKS]),
            "chunks_completed": int(m[M_COMPLETED]),
            "arena_bytes": len(self._arena),
            "arena_used": int(m[M_ARENA_USED]),
            "arena_waste": int(m[M_ARENA_WASTE]),
            "ring_blob_bytes": int(m[M_RING_BYTES]),
            "rollup_discarded": int(m[M_ROLLUP_DISCARD]),
            "reordered": int(m[M_REORDERED]),
            "evicted_unsaved": int(m[M_EVICT_UNSAVED]),
        }

    def memory_bytes(self) -> int:
        """Estimate of the memory the tank holds (arrays, arena, ring blobs with their object headers)."""
        arrays = sum(
            a.nbytes
            for a in (
                self._slots,
                self._rows,
                self._aggs,
                self._ring_t0,
                self._ring_meta,
                self._rob_ts,
                self._rob_val,
                self._pstart,
            )
        )
        blobs = int(self._meta[M_RING_BYTES]) + int(self._meta[M_RING_CHUNKS]) * 40
        lists = 8 * (len(self._ring_blobs) + len(self._ids))
        ids = 0 if self._id_rows is None else 100 * len(self._id_rows)
        return arrays + len(self._arena) + blobs + lists + ids

    def __len__(self) -> int:
        return self._active
