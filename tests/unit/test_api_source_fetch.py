"""InstanceSource.fetch over a tank and a SQLite store: what a render of many series is built from.

What users depend on: each series comes back on its step grid holding exactly the points it was sent (older
ones from the store, newer ones from memory, stitched without gaps or duplicates), quantised as Metrictank
does, whatever else is fetched in the same request (other steps, series without data), with rollup averages
as sum / count.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.api.source import InstanceSource
from metrictank.chunk import encode_chunk
from metrictank.query.consolidate import quantize
from metrictank.query.source import SeriesRef
from metrictank.retention import Aggregations, Schemas
from metrictank.store import ChunkWrite
from metrictank.store.sqlite import SQLiteStore
from metrictank.tank import Tank

NOW = 1_700_006_400  # a multiple of every chunkspan below
HIST = 3 * 3600
SCHEMAS = """
[ten]
pattern = ^ten\\.
retentions = 10s:1d:10min:2,1min:2d:30min:2
[min]
pattern = ^min\\.
retentions = 60s:1d:30min:2
"""


class World:
    """A tank whose older chunks went to SQLite, as a primary's do, and the points every series was sent."""

    def __init__(self, tmp_path) -> None:
        self.schemas = Schemas.parse(SCHEMAS)
        clock = lambda: NOW  # noqa: E731
        self.tank = Tank(self.schemas, Aggregations.load(None), clock=clock)
        self.store = SQLiteStore(tmp_path / "c.db", write_queues=1, clock=clock)
        self.source = InstanceSource(
            None, self.tank, self.store, self.schemas, threading.RLock(), clock=clock
        )
        rng = np.random.default_rng(11)
        self.names = [f"ten.{i}" for i in range(12)] + [f"min.{i}" for i in range(4)] + ["ten.empty"]
        ivs = [10] * 12 + [60] * 4 + [10]
        n = len(self.names)
        self.tank.add_series(
            np.arange(n), self.names, np.asarray(ivs), np.zeros(n), [f"1.{i:032x}" for i in range(n)]
        )
        self.points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        rows, tss = [], []
        for r in range(n - 1):
            iv = ivs[r]
            t = np.arange(NOW - HIST, NOW, iv, dtype=np.int64)
            if r % 3 == 1:
                t = t + 4  # regular, but off the grid
            if r % 3 == 2:
                t = t[rng.random(len(t)) > 0.1]  # gaps
            if r == 5:
                t = np.unique(rng.integers(NOW - HIST, NOW, 600))  # irregular
            rows.append(np.full(len(t), r))
            tss.append(t)
        allr, allt = np.concatenate(rows), np.concatenate(tss)
        order = np.argsort(allt, kind="stable")
        allr, allt = allr[order], allt[order]
        allv = rng.normal(size=len(allt)).cumsum()
        for r in range(n - 1):
            self.points[r] = (allt[allr == r], allv[allr == r])
        self.points[n - 1] = (np.empty(0, np.int64), np.empty(0))
        for b in range(0, len(allt), 5000):
            self.tank.add_points(allr[b : b + 5000], allt[b : b + 5000].astype(np.uint32), allv[b : b + 5000])
            self._persist()
        assert self.store.drain(30) == 0

    def _persist(self) -> None:
        done = self.tank.take_completed()
        self.store.submit(
            [
                ChunkWrite(
                    done.amkey(i),
                    1,
                    int(done.t0[i]),
                    int(done.span[i]),
                    int(done.ttl[i]),
                    done.data[i],
                    int(done.partition[i]),
                )
                for i in range(len(done))
            ]
        )

    def refs(self, rows) -> list[SeriesRef]:
        return [SeriesRef(self.names[r], r) for r in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("fetch"))
    yield w
    w.store.close()


def expected(world: World, row: int, start: int, end: int, step: int) -> np.ndarray:
    t, v = world.points[row]
    keep = (t >= start) & (t < end)
    return quantize(t[keep], v[keep], start, end, step)[1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, HIST + 600), st.integers(-60, HIST + 600), st.lists(st.integers(0, 16), max_size=20))
def test_raw_fetch_is_every_point_sent_quantised(world, a, length, rows) -> None:
    start = NOW - HIST - 300 + a
    end = start + length
    rows = rows or list(range(17))
    got = world.source.fetch(1, world.refs(rows), start, end, 0, None)
    assert [s.target for s in got] == [world.names[r] for r in rows]
    for s, r in zip(got, rows, strict=True):
        step = 60 if world.names[r].startswith("min.") else 10
        assert s.step == step
        want = expected(world, r, start, end, step)
        assert s.start == quantize(np.empty(0), np.empty(0), start, end, step)[0]
        assert np.array_equal(s.values, want, equal_nan=True), (world.names[r], start, end)


def test_the_store_part_is_really_used(world) -> None:
    start, end = NOW - HIST, NOW
    oldest = world.tank.read(0, 0, None, start, end)[2]
    assert start + 3600 < oldest < end  # most of the range is only in the store
    (s,) = world.source.fetch(1, world.refs([0]), start, end, 0, None)
    assert not np.isnan(s.values).any()


def test_rollup_average_is_sum_over_count(world) -> None:
    start, end = NOW - HIST, NOW
    rows = list(range(12))
    avg = world.source.fetch(1, world.refs(rows), start, end, 100, None)  # 100 points: the 1 min rollup
    sums = world.source.fetch(1, world.refs(rows), start, end, 100, "sum")
    cnts = world.source.fetch(1, world.refs(rows), start, end, 100, "cnt")
    for a, s, c in zip(avg, sums, cnts, strict=True):
        assert a.step == s.step == c.step == 60
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.where(c.values > 0, s.values / c.values, np.nan)
        assert np.array_equal(a.values, want, equal_nan=True)
        assert np.isfinite(a.values).sum() > 100


def test_overlapping_store_chunks_are_merged_in_time_order(tmp_path) -> None:
    """Chunks written under another chunkspan can overlap in time; the series still comes out sorted."""
    schemas = Schemas.parse(SCHEMAS)
    tank = Tank(schemas, Aggregations.load(None), clock=lambda: NOW)
    tank.add_series(np.arange(2), ["ten.a", "ten.b"], np.full(2, 10), np.zeros(2), ["1.a", "1.b"])
    store = SQLiteStore(tmp_path / "c.db", write_queues=1, clock=lambda: NOW)
    try:
        t0 = NOW - 3600
        # a 10 min chunk, and one starting 5 min in: where they overlap, each slot gets a point from both, and
        # the earlier one (from the first chunk) must win
        a = np.arange(t0 + 2, t0 + 600, 10, dtype=np.uint32)
        b = np.arange(t0 + 308, t0 + 900, 10, dtype=np.uint32)
        writes = []
        for amkey in ("1.a", "1.b"):
            writes.append(ChunkWrite(amkey, 1, t0, 600, 86400, encode_chunk(t0, 600, a, a * 1.0), 0))
            writes.append(
                ChunkWrite(amkey, 1, t0 + 300, 600, 86400, encode_chunk(t0 + 300, 600, b, b * 1.0), 0)
            )
        store.submit(writes)
        assert store.drain(10) == 0
        source = InstanceSource(None, tank, store, schemas, threading.RLock(), clock=lambda: NOW)
        got = source.fetch(1, [SeriesRef("ten.a", 0), SeriesRef("ten.b", 1)], t0, t0 + 900, 0, None)
        ts = np.sort(np.concatenate([a, b])).astype(np.int64)
        want = quantize(ts, ts * 1.0, t0, t0 + 900, 10)[1]
        for s in got:
            assert np.array_equal(s.values, want, equal_nan=True)
            assert s.values[31] == t0 + 302.0  # slot t0 + 310
    finally:
        store.close()
