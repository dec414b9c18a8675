"""Batched tank reads: every range read returns exactly the points memory holds in that range.

What users depend on: a render shows each series' points in [start, end) from memory, no more and no fewer,
in time order, with the oldest timestamp memory vouches for (so the store fills in exactly what is missing);
and a read of many series gives each series what a read of that series alone gives.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.retention import Aggregations, Schemas
from metrictank.tank import Tank
from metrictank.tank.tank import _cut

NOW = 1_700_000_000
FAR = 2**32 - 1
SCHEMAS = {
    "raw-ring": "1s:1d:10min:3",
    "single-chunk": "1s:1d:10min:1",
    "rollups": "10s:1d:30min:2,1min:2d:2h:2",
    "reorder": "1s:1d:10min:2\nreorderBuffer = 5",
}


def make(kind: str, n: int) -> Tank:
    schemas = Schemas.parse(f"[t]\npattern = .*\nretentions = {SCHEMAS[kind]}\n")
    aggs = Aggregations.parse("[all]\npattern = .*\naggregationMethod = avg,min,max,last,sum\n")
    tank = Tank(schemas, aggs, clock=lambda: NOW)
    rows = np.arange(n, dtype=np.int64)
    interval = 10 if kind == "rollups" else 1
    tank.add_series(
        rows, [f"s.{r}" for r in rows], np.full(n, interval), np.zeros(n), [f"1.{r:032x}" for r in rows]
    )
    return tank


BASE = NOW - 6 * 3600


def span_of(kind: str) -> int:
    """Seconds of data fed: a little more than the ring holds, so reads see evicted, ring and open chunks."""
    return 3 * 3600 if kind == "rollups" else 2400


def feed(
    tank: Tank, n: int, seed: int, npts: int, step: int, span: int, jumble: bool
) -> dict[int, np.ndarray]:
    """Ascending unique timestamps per series (interleaved in arrival), a few swapped when `jumble`."""
    rng = np.random.default_rng(seed)
    base = BASE
    per = {}
    rows, ts = [], []
    for r in range(n):
        t = np.unique(base + rng.integers(0, span // step, npts) * step + rng.integers(0, step, npts))
        per[r] = t
        rows.append(np.full(len(t), r))
        ts.append(t)
    allr, allt = np.concatenate(rows), np.concatenate(ts)
    order = np.argsort(allt, kind="stable")
    allr, allt = allr[order], allt[order]
    if jumble and len(allt) > 2:
        i = rng.integers(1, len(allt), max(len(allt) // 50, 1))
        allt[i], allt[i - 1] = allt[i - 1].copy(), allt[i].copy()
    tank.add_points(allr, allt.astype(np.uint32), allr * 1000.0 + allt % 997)
    return per


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(SCHEMAS)),
    st.integers(1, 8),
    st.integers(0, 2**32 - 1),
    st.integers(1, 1500),
    st.lists(st.tuples(st.floats(-0.1, 1.1), st.floats(-0.05, 1.2)), min_size=1, max_size=8),
)
def test_range_reads_are_the_full_read_cut_to_the_range(kind, n, seed, npts, ranges) -> None:
    tank = make(kind, n)
    span = span_of(kind)
    feed(tank, n, seed, npts, 10 if kind == "rollups" else 1, span, jumble=kind == "reorder")
    archives = [(0, None)] + (
        [(1, m) for m in ("sum", "cnt", "min", "max", "lst")] if kind == "rollups" else []
    )
    rows = list(range(n)) + [0, n - 1]  # a row may be asked for twice
    for archive, method in archives:
        full = tank.read_many(rows, archive, method, 0, FAR)
        for a, b in ranges:
            start, end = BASE + int(a * span), BASE + int(b * span)
            got = tank.read_many(rows, archive, method, start, end)
            for (ft, fv, fo), (gt, gv, go), row in zip(full, got, rows, strict=True):
                keep = (ft >= start) & (ft < end)
                assert gt.dtype == np.uint32 and gv.dtype == np.float64
                assert gt.tolist() == ft[keep].tolist()
                assert np.array_equal(gv, fv[keep], equal_nan=True)
                assert go == (end if fo == FAR else fo)
                alone = tank.read(row, archive, method, start, end)
                assert alone[0].tolist() == gt.tolist() and alone[2] == go


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["raw-ring", "single-chunk"]), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_full_read_is_every_point_since_the_oldest(kind, n, seed) -> None:
    tank = make(kind, n)
    per = feed(tank, n, seed, 2000, 1, span_of(kind), jumble=False)
    for row, (ts, vals, oldest) in enumerate(tank.read_many(range(n), 0, None, 0, FAR)):
        want = per[row][per[row] >= oldest]
        assert ts.tolist() == want.tolist()
        assert vals.tolist() == (row * 1000.0 + want % 997).tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 300), max_size=12), max_size=10),
    st.integers(0, 3),
    st.integers(-10, 320),
    st.integers(-10, 320),
)
def test_cut_matches_a_point_by_point_filter_even_for_overlapping_chunks(chunks, nslots, start, end) -> None:
    """The cut works per chunk; chunks that overlap (never written by the tank, but possible in principle) must
    still give the points a filter over every point gives, in the same order."""
    nslots += 1
    pos = np.sort(np.arange(len(chunks)) % nslots)
    ts = np.concatenate([np.unique(c) for c in chunks] + [np.empty(0)]).astype(np.uint32)
    counts = np.asarray([len(np.unique(c)) for c in chunks], np.int64)
    lo, hi, pieces = _cut(ts, counts, pos, nslots, start, end)
    owner = np.repeat(pos, counts)
    for p in range(nslots):
        want = ts[(owner == p) & (ts >= start) & (ts < end)]
        got = ts[pieces[p]] if p in pieces else ts[lo[p] : hi[p]]
        assert got.tolist() == want.tolist()
