"""The tank against Metrictank's rules and its golden chunks.

What users depend on: the chunks we persist are byte-identical to Metrictank's for the same points (other
Metrictank nodes and tools read them), the chunk/ring/discard rules match Metrictank's AggMetric, reads return
what was ingested, GC finishes and drops idle series, and the save marks and complete flag let the cluster layer
persist exactly the chunks it should (issues 261 and 452).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from metrictank.chunk import decode_chunk, encode_chunk
from metrictank.retention import Aggregations, Schemas
from metrictank.tank import Tank

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"
NOW = 1_700_000_000
ID = "1.0123456789abcdef0123456789abcdef"


def make_tank(retentions: str = "1s:35d:10min:3", extra: str = "", aggs: str | None = None, now=NOW) -> Tank:
    schemas = Schemas.parse(f"[t]\npattern = .*\nretentions = {retentions}\n{extra}")
    aggregations = Aggregations.parse(aggs) if aggs else Aggregations.load(None)
    return Tank(schemas, aggregations, clock=lambda: now)


def sid(i: int) -> str:
    return f"1.{i:032x}"


def add(tank: Tank, n: int, interval: int = 1, partition: int = 0, first_row: int = 0) -> None:
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    tank.add_series(
        rows,
        [f"s.{r}" for r in rows],
        np.full(n, interval),
        np.full(n, partition),
        [sid(int(r)) for r in rows],
    )


def push(tank: Tank, rows, ts, vals=None) -> None:
    ts = np.asarray(ts, np.uint32)
    rows = np.broadcast_to(np.asarray(rows, np.int64), ts.shape).copy()
    vals = np.arange(len(ts), dtype=np.float64) if vals is None else np.asarray(vals, np.float64)
    tank.add_points(rows, ts, vals)


# --- reference model: Metrictank's AggMetric.add for one series -----------------------------------------------
def ref_chunks(points, span):
    """(closed chunks [(t0, ts, vals)], open chunk or None, discard counter) for points in arrival order."""
    closed, cur, disc = [], None, Counter()
    for t, v in points:
        t0 = t - t % span
        if cur is None:
            cur = (t0, [t], [v])
        elif t0 == cur[0]:
            if t == cur[1][-1]:
                disc["new-value-for-timestamp"] += 1
            elif t < cur[1][-1]:
                disc["sample-out-of-order"] += 1
            else:
                cur[1].append(t)
                cur[2].append(v)
        elif t0 < cur[0]:
            disc["too-old"] += 1
        else:
            closed.append(cur)
            cur = (t0, [t], [v])
    return closed, cur, disc


def blob(t0, span, ts, vals) -> bytes:
    return encode_chunk(t0, span, np.asarray(ts, np.uint32), np.asarray(vals, np.float64))


def random_stream(rng, n, start, interval, disorder=0.0):
    """Mostly increasing timestamps with jitter, big gaps, duplicates and late points; awkward floats."""
    ts, t = [], start
    for _ in range(n):
        r = rng.random()
        if r < 0.02:
            t += int(rng.integers(1000, 100000))  # large dod, skips chunks
        elif r < 0.04:
            t += 0  # duplicate
        else:
            t += int(max(1, interval + rng.integers(-interval // 2 - 1, interval // 2 + 2)))
        if disorder and rng.random() < disorder:
            ts.append(max(1, t - int(rng.integers(1, 5000))))
        else:
            ts.append(t)
    kind = rng.integers(0, 5, n)
    vals = np.where(
        kind == 0,
        rng.normal(0, 1e6, n),
        np.where(
            kind == 1, np.round(rng.normal(100, 5, n), 1), np.where(kind == 2, 42.0, rng.integers(0, 9, n))
        ),
    ).astype(np.float64)
    special = rng.random(n) < 0.03
    vals[special] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324], special.sum())
    return np.asarray(ts, np.uint32), vals


# --- byte compatibility -------------------------------------------------------------------------------------
def _golden_chunks():
    with GOLDEN.open() as f:
        return [r for r in map(json.loads, f) if r["type"] == "chunk" and r["points"]]


@pytest.mark.parametrize("row", _golden_chunks()[:201], ids=lambda r: f"{r['span']}-{len(r['points'])}")
def test_golden_chunks_byte_exact(row):
    t0, span = row["t0"], row["span"]
    tank = make_tank(f"1s:35d:{span}s:2")
    add(tank, 1)
    ts = [p[0] for p in row["points"]]
    vals = [np.nan if p[1] is None else p[1] for p in row["points"]]
    push(tank, 0, ts, vals)
    assert len(tank.take_completed()) == 0
    push(tank, 0, [t0 + 2 * span], [0.0])  # a point for a later chunk completes this one
    done = tank.take_completed()
    assert len(done) == 1
    assert done.data[0].hex() == row["hex"]
    assert int(done.t0[0]) == t0 and int(done.span[0]) == span
    assert done.amkey(0) == sid(0)


def test_blobs_equal_encode_chunk_on_random_streams():
    rng = np.random.default_rng(1)
    for span, interval in ((600, 1), (600, 10), (7200, 60), (60, 1), (86400, 300)):
        tank = make_tank(f"1s:400d:{span}s:4")
        add(tank, 1)
        ts, vals = random_stream(rng, 3000, NOW - 20 * 86400, interval)
        for part in np.array_split(np.arange(len(ts)), 7):
            tank.add_points(np.zeros(len(part), np.int64), ts[part], vals[part])
        closed, cur, disc = ref_chunks(zip(ts.tolist(), vals.tolist(), strict=True), span)
        done = tank.take_completed()
        assert len(done) == len(closed)
        for i, (t0, cts, cvals) in enumerate(closed):
            assert int(done.t0[i]) == t0
            assert done.data[i] == blob(t0, span, cts, cvals)
        assert {k: v for k, v in tank.discarded.items() if v} == dict(disc)
        # the open chunk reads back exactly
        got_ts, got_vals, _ = tank.read(0, 0, None, cur[0], cur[0] + span)
        assert got_ts.tolist() == cur[1]
        np.testing.assert_array_equal(got_vals, np.asarray(cur[2]))


# --- chunk lifecycle -----------------------------------------------------------------------------------------
def test_completion_ring_eviction_and_reads():
    tank = make_tank("1s:35d:10min:3")  # ring of 2 closed chunks + the open one
    add(tank, 1, interval=10)
    base = NOW - NOW % 600 - 10 * 600
    ts = np.arange(base, base + 5 * 600, 10, dtype=np.uint32)
    push(tank, 0, ts, ts.astype(float))
    done = tank.take_completed()
    assert done.t0.tolist() == [base, base + 600, base + 1200, base + 1800]
    assert done.complete.all()
    st = tank.stats()
    assert st["chunks_in_ring"] == 2 and st["points_in_memory"] == 180
    got_ts, got_vals, oldest = tank.read(0, 0, None, 0, NOW)
    assert got_ts.tolist() == list(range(base + 1200, base + 3000, 10))
    np.testing.assert_array_equal(got_vals, got_ts.astype(float))
    assert oldest == base + 1200  # older chunks fell out of the ring: read them from the store
    ts2, _, _ = tank.read(0, 0, None, base + 2395, base + 2405)
    assert ts2.tolist() == [base + 2400]  # a range across the ring / open chunk boundary
    assert tank.read(0, 0, None, base, base + 600)[0].size == 0


def test_first_chunk_reports_first_point_as_oldest():
    tank = make_tank()
    add(tank, 1)
    t0 = NOW - NOW % 600 - 600
    push(tank, 0, [t0 + 123, t0 + 124])
    ts, _, oldest = tank.read(0, 0, None, 0, NOW)
    assert ts.tolist() == [t0 + 123, t0 + 124] and oldest == t0 + 123
    push(tank, 0, [t0 + 600])
    assert tank.read(0, 0, None, 0, NOW)[2] == t0 + 123
    # nothing held: memory is authoritative from nowhere; the caller reads everything from the store
    add(tank, 1, first_row=1)
    assert tank.read(1, 0, None, 10, 20)[2] == 20


def test_every_discard_reason():
    tank = make_tank("1s:10d:10min:2")  # future tolerance: 10% of 10 days
    add(tank, 1)
    t0 = NOW - NOW % 600
    push(tank, 0, [t0 + 10, t0 + 20])
    push(tank, 0, [t0 + 20])  # same timestamp
    push(tank, 0, [t0 + 15])  # older than the last point, same chunk
    push(tank, 0, [t0 - 5])  # older chunk
    push(tank, 0, [NOW + 86400 + 1])  # > 10% of the TTL ahead of now
    push(tank, 0, [NOW + 86400])  # exactly at the tolerance: kept
    tank.add_points(np.array([-1, 7, 0], np.int64), np.array([t0, t0, 0], np.uint32), np.zeros(3))
    assert tank.discarded == {
        "sample-out-of-order": 1,
        "new-value-for-timestamp": 1,
        "too-old": 1,
        "too-far-in-future": 1,
        "received-too-late": 0,
        "invalid": 3,
    }
    assert tank.points_added == 3
    # received-too-late: a point for a chunk GC already finished
    tank2 = make_tank(now=NOW)
    add(tank2, 1)
    t0 = NOW - NOW % 600 - 3 * 3600
    push(tank2, 0, [t0 + 1])
    tank2._rows["last_write"][0] = NOW - 2 * 3600
    fin, removed = tank2.gc(NOW, 3600, 4 * 3600)
    assert (fin, removed.tolist()) == (1, [])
    push(tank2, 0, [t0 + 2])
    assert tank2.discarded["received-too-late"] == 1
    push(tank2, 0, [t0 + 600])  # the next chunk starts normally, no second event for the finished one
    assert tank2.take_completed().t0.tolist() == [t0]


def test_saved_marks_never_stop_ingest_and_drive_walk_back():
    tank = make_tank("1s:35d:10min:4")
    add(tank, 1)
    base = NOW - NOW % 600 - 6000
    slot = tank.slot_of(sid(0))
    assert slot is not None
    # a persist message far ahead of our data (a lagging secondary, issue 261)
    tank.mark_saved(np.array([slot]), np.array([base + 6000]))
    push(tank, 0, np.arange(base, base + 1800, 30))
    assert tank.points_added == 60 and len(tank.take_completed()) == 2
    assert tank.read(0, 0, None, base, base + 1800)[0].size == 60
    assert len(tank.unsaved_ring_chunks(np.array([slot]))) == 0
    # marks lower than the ring: walk back returns the unsaved ring chunks oldest first
    tank2 = make_tank("1s:35d:10min:4")
    add(tank2, 1)
    push(tank2, 0, np.arange(base, base + 2400, 30))
    tank2.take_completed()
    tank2.mark_saved(np.array([slot]), np.array([base]))
    un = tank2.unsaved_ring_chunks(np.array([slot]))
    assert un.t0.tolist() == [base + 600, base + 1200]
    assert [decode_chunk(int(t), d)[0].size for t, d in zip(un.t0, un.data, strict=True)] == [20, 20]
    tank2.mark_save_started(np.array([slot]), np.array([base + 600]))
    assert tank2.unsaved_ring_chunks(np.array([slot])).t0.tolist() == [base + 1200]
    assert tank2.save_marks(slot) == (base + 600, base)
    # marks only move forward
    tank2.mark_saved(np.array([slot, slot]), np.array([base - 600, base + 300]))
    assert tank2.save_marks(slot) == (base + 600, base + 300)


def test_complete_flag_follows_partition_start():
    tank = make_tank("1s:35d:10min:3")
    add(tank, 2, partition=0)
    add(tank, 1, partition=3, first_row=2)
    t0 = NOW - NOW % 600 - 1800
    tank.set_partition_start(0, t0 + 100)  # started consuming partition 0 mid-chunk
    tank.set_partition_start(3, 0)  # partition 3 from the start of the log
    push(tank, [0, 1, 2], [t0 + 150, t0 + 160, t0 + 170])
    push(tank, [0, 1, 2], [t0 + 700, t0 + 710, t0 + 720])
    push(tank, [0, 1, 2], [t0 + 1300, t0 + 1310, t0 + 1320])
    done = tank.take_completed()
    got = {(int(r), int(t)): bool(c) for r, t, c in zip(done.row, done.t0, done.complete, strict=True)}
    assert got == {
        (0, t0): False,
        (1, t0): False,
        (2, t0): True,
        (0, t0 + 600): True,
        (1, t0 + 600): True,
        (2, t0 + 600): True,
    }
    un = tank.unsaved_ring_chunks(np.array([0, 2]))
    assert un.complete.tolist() == [False, True, True, True]
    assert tank.partition_starts == {0: t0 + 100, 3: 0}
    assert tank.complete_from() == t0 + 600


def test_late_partition_start_rejudges_open_chunks():
    tank = make_tank("1s:35d:10min:3")
    add(tank, 1, partition=1)
    add(tank, 1, partition=2, first_row=1)
    t0 = NOW - NOW % 3600 - 3600
    push(tank, [0, 1], [t0 + 30, t0 + 30])  # the first batch is added before the start is known
    tank.set_partition_start(1, t0 + 20)
    push(tank, [0, 1], [t0 + 4000, t0 + 4000])
    done = tank.take_completed()
    assert done.row.tolist() == [0, 1] and done.t0.tolist() == [t0, t0]
    assert done.complete.tolist() == [False, True]  # partition 2: no start known, consumed from the start


def test_gc_finishes_idle_chunks_and_removes_idle_series():
    clock = [NOW]
    schemas = Schemas.parse("[t]\npattern = .*\nretentions = 1s:35d:10min:2\n")
    tank = Tank(schemas, Aggregations.load(None), clock=lambda: clock[0])
    add(tank, 3)
    t0 = NOW - NOW % 600
    push(tank, [0, 1, 2], [t0 + 1, t0 + 2, t0 + 3])
    clock[0] = NOW + 1800
    push(tank, [1], [t0 + 600])  # row 1 keeps writing
    # an hour later: 0 and 2 are idle for chunk-max-stale; their chunk ended long ago
    fin, removed = tank.gc(NOW + 3700, 3600, 3 * 3600)
    assert fin == 2 and removed.size == 0
    done = tank.take_completed()
    assert sorted(done.row.tolist()) == [0, 1, 2]  # row 1 completed its first chunk by writing
    assert all(decode_chunk(int(t), d)[0].size == 1 for t, d in zip(done.t0, done.data, strict=True))
    # still readable after the finish (the chunk sits in the ring)
    assert tank.read(0, 0, None, 0, NOW * 2)[0].tolist() == [t0 + 1]
    fin, removed = tank.gc(NOW + 3 * 3600 + 10, 3600, 3 * 3600)
    assert sorted(removed.tolist()) == [0, 2]
    assert len(tank) == 1 and tank.slot_of(sid(0)) is None and tank.slot_of(sid(1)) is not None
    # GC finished row 1's chunk too; like Metrictank it stays in place beside the previous one
    assert tank.take_completed().t0.tolist() == [t0 + 600]
    assert tank.read(1, 0, None, 0, NOW * 2)[0].tolist() == [t0 + 2, t0 + 600]
    assert tank.stats()["chunks_in_ring"] == 2
    push(tank, 1, [t0 + 4 * 3600])  # the next chunk starts: back to numchunks - 1 closed chunks
    assert tank.read(1, 0, None, 0, NOW * 2)[0].tolist() == [t0 + 600, t0 + 4 * 3600]
    assert tank.stats()["chunks_in_ring"] == 1 and tank.stats()["points_in_memory"] == 2
    with pytest.raises(KeyError):
        tank.read(0, 0, None, 0, NOW)
    push(tank, [0, 2], [t0 + 700, t0 + 700])
    assert tank.discarded["invalid"] == 2
    # a series whose current chunk is recent is never finished, however idle
    assert tank.gc(NOW + 4 * 3600, 0, 1000 * 3600)[0] == 0
    assert tank.gc(NOW + 5 * 3600, 0, 1000 * 3600)[0] == 1


def test_random_interleaving_matches_per_series_reference():
    rng = np.random.default_rng(7)
    n_series, span = 40, 600
    tank = make_tank(f"1s:35d:{span}s:3", now=NOW + 50 * 86400)
    add(tank, n_series, interval=5)
    streams = [
        random_stream(rng, int(rng.integers(50, 400)), NOW - 86400, 5, disorder=0.05) for _ in range(n_series)
    ]
    rows = np.concatenate([np.full(len(s[0]), i, np.int64) for i, s in enumerate(streams)])
    ts = np.concatenate([s[0] for s in streams])
    vals = np.concatenate([s[1] for s in streams])
    # random interleaving that keeps each series' own order
    order = np.argsort(rng.random(len(rows)), kind="stable")
    order = np.concatenate([np.sort(order[rows[order] == i]) for i in range(n_series)])
    keys = rng.random(len(rows))
    per = [np.flatnonzero(rows == i) for i in range(n_series)]
    merged = np.empty(len(rows), np.int64)
    slots_of = np.argsort(keys)
    cursor = [0] * n_series
    for k, pos in enumerate(slots_of):
        i = int(rows[pos])
        merged[k] = per[i][cursor[i]]
        cursor[i] += 1
    for part in np.array_split(merged, 13):
        tank.add_points(rows[part], ts[part], vals[part])
    done = tank.take_completed()
    total = Counter()
    for i, (sts, svals) in enumerate(streams):
        closed, cur, disc = ref_chunks(zip(sts.tolist(), svals.tolist(), strict=True), span)
        total.update(disc)
        mine = [j for j in range(len(done)) if done.row[j] == i]
        assert [int(done.t0[j]) for j in mine] == [c[0] for c in closed]
        assert [done.data[j] for j in mine] == [blob(t0, span, a, b) for t0, a, b in closed]
        kept = (closed[-2:] if len(closed) >= 2 else closed) + [cur]
        got_ts, got_vals, _ = tank.read(i, 0, None, 0, 2**32 - 1)
        assert got_ts.tolist() == [t for c in kept for t in c[1]]
        np.testing.assert_array_equal(got_vals, np.asarray([v for c in kept for v in c[2]]))
    assert {k: v for k, v in tank.discarded.items() if v} == dict(total)


def test_arena_growth_compaction_and_row_reuse():
    rng = np.random.default_rng(3)
    tank = make_tank("1s:35d:2h:2")
    n = 3000
    add(tank, n)
    t0 = NOW - NOW % 7200 - 7200
    # noisy values need ~10 bytes a point: regions grow several times and the waste gets compacted
    ts = np.repeat(np.arange(t0, t0 + 400, dtype=np.uint32), n)
    rows = np.tile(np.arange(n, dtype=np.int64), 400)
    vals = rng.normal(0, 1, len(ts))
    for part in np.array_split(np.arange(len(ts)), 20):
        tank.add_points(rows[part], ts[part], vals[part])
    st = tank.stats()
    assert st["arena_waste"] * 2 <= st["arena_used"] + (1 << 20)
    for r in (0, 1234, n - 1):
        got_ts, got_vals, _ = tank.read(r, 0, None, 0, NOW)
        assert got_ts.tolist() == list(range(t0, t0 + 400))
        np.testing.assert_array_equal(got_vals, vals[rows == r])
    # remove and re-add rows: blocks are reused, no stale data shows through
    slots_before = tank.stats()["slots"]
    tank.remove_series(np.arange(100, dtype=np.int64))
    assert len(tank) == n - 100
    add(tank, 100)
    assert tank.stats()["slots"] == slots_before
    assert tank.read(5, 0, None, 0, NOW)[0].size == 0
    push(tank, 5, [t0 + 7200 + 1])
    assert tank.read(5, 0, None, 0, NOW)[0].tolist() == [t0 + 7201]
    assert tank.stats()["points_in_memory"] == (n - 100) * 400 + 1
    assert tank.memory_bytes() > st["arena_used"]


def test_add_series_again_keeps_data_and_slot_of_amkeys():
    tank = make_tank("1s:1d:10min:2,1m:7d:2h:2", aggs="[a]\npattern = .\naggregationMethod = max,avg\n")
    add(tank, 2)
    t0 = NOW - NOW % 600
    push(tank, 0, [t0 + 1])
    add(tank, 2)  # the index re-announces: nothing is lost
    assert tank.read(0, 0, None, 0, NOW)[0].tolist() == [t0 + 1]
    raw = tank.slot_of(sid(1))
    assert raw is not None
    assert {tank.slot_of(f"{sid(1)}_{m}_60") for m in ("sum", "cnt", "max")} == {raw + 1, raw + 2, raw + 3}
    assert tank.slot_of(f"{sid(1)}_min_60") is None
    assert tank.slot_of(f"{sid(1)}_max_300") is None
    assert tank.slot_of("1.ffffffffffffffffffffffffffffffff") is None
    with pytest.raises(KeyError):
        tank.read(0, 1, "min", 0, NOW)
    # a schema change for the same row starts it over
    tank.add_series(np.array([0]), ["s.0"], np.array([3600]), np.array([0]), [sid(0)])
    assert tank.read(0, 0, None, 0, NOW)[0].size == 0


def test_add_series_with_a_row_twice_keeps_the_last():
    tank = make_tank()
    tank.add_series(np.array([4, 4]), ["a", "b"], np.array([1, 1]), np.array([0, 2]), [sid(1), sid(2)])
    assert len(tank) == 1 and tank.stats()["slots"] == 1
    assert tank.slot_of(sid(2)) == 0 and tank.slot_of(sid(1)) is None


def test_external_id_lookup():
    schemas = Schemas.load(None)
    ids = {sid(0): 0}
    tank = Tank(schemas, Aggregations.load(None), clock=lambda: NOW, row_of_id=ids.get)
    add(tank, 1)
    assert tank.slot_of(sid(0)) == 0 and tank.slot_of(sid(1)) is None


def test_reorder_buffer():
    tank = make_tank("10s:35d:10min:3", extra="reorderBuffer = 5\n")
    add(tank, 1, interval=10)
    b = NOW - NOW % 600 - 600
    # out of order within the window is accepted; timestamps are quantised up to the interval
    push(tank, 0, [b + 10, b + 30, b + 17, b + 40], [1, 3, 2, 4])
    assert tank.read(0, 0, None, 0, NOW)[0].tolist() == [b + 10, b + 20, b + 30, b + 40]
    push(tank, 0, [b + 40], [9])  # same slot, no update allowed
    push(tank, 0, [b - 100], [0])  # older than the window
    assert tank.discarded["new-value-for-timestamp"] == 1
    assert tank.discarded["sample-out-of-order"] == 1
    push(tank, 0, [b + 100], [10])  # flushes everything older than the window into the chunk
    assert tank.stats()["points_in_memory"] == 4
    ts, vals, _ = tank.read(0, 0, None, 0, NOW)
    assert ts.tolist() == [b + 10, b + 20, b + 30, b + 40, b + 100] and vals.tolist() == [1, 2, 3, 4, 10]
    # allow update
    tank2 = make_tank("10s:35d:10min:3", extra="reorderBuffer = 5\nreorderBufferAllowUpdate = true\n")
    add(tank2, 1, interval=10)
    push(tank2, 0, [b + 10, b + 10], [1, 2])
    assert tank2.read(0, 0, None, 0, NOW)[1].tolist() == [2]
    # gc flushes the buffer into chunks
    tank2._rows["last_write"][0] = NOW - 7200
    tank2.gc(NOW + 2000, 3600, 3 * 3600)
    done = tank2.take_completed()
    assert done.t0.tolist() == [b] and decode_chunk(b, done.data[0])[1].tolist() == [2]


def test_set_partition_start_grows_and_validates():
    tank = make_tank()
    tank.set_partition_start(100, 5)
    assert tank.partition_starts == {100: 5}
    with pytest.raises(ValueError):
        tank.set_partition_start(-1, 0)


def test_read_many_equals_single_reads():
    rng = np.random.default_rng(11)
    tank = make_tank(
        "1s:35d:10min:3,1m:90d:2h:2", extra="", aggs="[a]\npattern = .\naggregationMethod = max,sum\n"
    )
    add(tank, 30, interval=10)
    base = NOW - NOW % 600 - 3000
    for r in range(30):
        n = int(rng.integers(0, 300))
        ts = base + np.cumsum(rng.integers(1, 20, n))
        push(tank, r, ts, rng.normal(size=n))
    for archive, method in ((0, None), (1, "max"), (1, None), (1, "sum")):
        for start, end in ((0, 2**32 - 1), (base + 700, base + 1900), (base + 5000, base + 5001)):
            many = tank.read_many(range(30), archive, method, start, end)
            for r in range(30):
                one = tank.read(r, archive, method, start, end)
                assert one[0].tolist() == many[r][0].tolist() and one[2] == many[r][2]
                np.testing.assert_array_equal(one[1], many[r][1])
    # a rollup read without a method uses the aggregation's first (default) method
    assert tank.read(3, 1, None, 0, NOW)[1].tolist() == tank.read(3, 1, "max", 0, NOW)[1].tolist()
    assert tank.read_many([], 0, None, 0, 1) == []


def test_walk_back_includes_chunks_that_left_the_ring():
    # numchunks 1 keeps no closed chunk, and a replay can complete several chunks of a series in one batch:
    # the chunks completed since the last take must still be offered for persisting (Metrictank persists each
    # the moment it completes)
    tank = make_tank("1s:35d:10min:1")
    add(tank, 2)
    base = NOW - NOW % 600 - 3000
    push(tank, [0, 1], [base, base])
    push(tank, [0] * 3, [base + 600, base + 1200, base + 1800])
    done = tank.take_completed()
    assert done.t0.tolist() == [base, base + 600, base + 1200]
    un = tank.unsaved_ring_chunks(np.unique(done.slot))
    assert un.t0.tolist() == [base, base + 600, base + 1200] and un.data == done.data
    tank.mark_save_started(un.slot, un.t0)
    assert len(tank.unsaved_ring_chunks(np.unique(done.slot))) == 0
    # GC: the finished chunk of a removed series is still offered once
    tank._rows["last_write"][1] = NOW - 4 * 3600
    fin, removed = tank.gc(NOW, 3600, 3 * 3600)
    assert fin == 1 and removed.tolist() == [1]
    done = tank.take_completed()
    un = tank.unsaved_ring_chunks(done.slot)
    assert un.amkeys == [sid(1)] and un.t0.tolist() == [base]
