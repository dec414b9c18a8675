"""Warm start in the tank: where to replay from, and saved chunks from the store put back into the rings.

What a user depends on: after a restart that replayed only the unsaved part of Kafka, memory holds every chunk
of the in-memory window again, each byte-identical to the saved one, a chunk the replay began in the middle of
is replaced by the whole saved chunk, nothing loaded is offered for saving again, and the replay start never
skips data that no node saved.
"""

from __future__ import annotations

import numpy as np

from metrictank.chunk import encode_chunk
from metrictank.retention import Aggregations, Schemas
from metrictank.tank import Tank

NOW = 1_700_000_500  # 100 s into a 10-minute chunk
SPAN = 600


def make(retentions: str = "10s:1d:10min:4", now: int = NOW) -> Tank:
    schemas = Schemas.parse(f"[t]\npattern = .*\nretentions = {retentions}\n")
    return Tank(schemas, Aggregations.load(None), clock=lambda: now)


def sid(i: int) -> str:
    return f"1.{i:032x}"


def add(tank: Tank, n: int, partition: int = 0) -> None:
    rows = np.arange(n, dtype=np.int64)
    tank.add_series(
        rows, [f"s.{r}" for r in rows], np.full(n, 10), np.full(n, partition), [sid(r) for r in rows]
    )


def points(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(lo, hi, 10, dtype=np.uint32)
    return ts, ts.astype(np.float64) * 0.5


def saved_chunk(t0: int) -> bytes:
    ts, vals = points(t0, t0 + SPAN)
    return encode_chunk(t0, SPAN, ts, vals)


def open_t0(now: int = NOW) -> int:
    return now - now % SPAN


def test_loaded_chunks_fill_the_ring_and_replace_the_partial_one():
    tank = make()
    add(tank, 1)
    cur = open_t0()
    replay_start = cur - SPAN + 300  # the replay began in the middle of the previous chunk
    tank.set_partition_start(0, replay_start)
    ts, vals = points(replay_start, NOW)
    tank.add_points(np.zeros(len(ts), np.int64), ts, vals)
    assert len(tank.take_completed()) == 1  # the partial chunk completed (incomplete: never saved)

    plan = tank.warm_load_plan(np.array([0]))
    assert len(plan) == 1
    # numchunks 4: the open chunk plus 3 closed ones; the partial one (cur - SPAN) is replaced
    assert (int(plan.lo[0]), int(plan.hi[0])) == (cur - 3 * SPAN, cur - SPAN)
    assert plan.keys == [sid(0)]

    t0s = [cur - 4 * SPAN, cur - 3 * SPAN, cur - 2 * SPAN, cur - SPAN]  # one more than fits: ignored
    blobs = [saved_chunk(t) for t in t0s]
    taken = tank.load_saved(np.zeros(4, np.int64), np.array(t0s), blobs, np.full(4, SPAN // 10))
    assert taken == 3

    got_ts, got_vals, oldest = tank.read(0, 0, None, cur - 3 * SPAN, NOW + 1)
    want_ts, want_vals = points(cur - 3 * SPAN, NOW)
    assert oldest == cur - 3 * SPAN  # memory vouches for the whole window again
    np.testing.assert_array_equal(got_ts, want_ts)
    np.testing.assert_array_equal(got_vals, want_vals)
    # ring blobs are the store's bytes, unchanged
    es, ei = tank._ring_entries(np.array([0]))
    assert [tank._ring_blobs[i] for i in ei.tolist()] == blobs[1:]
    assert tank.save_marks(0) == (cur - SPAN, cur - SPAN)
    assert len(tank.unsaved_ring_chunks(np.array([0]))) == 0  # loaded chunks are never offered for saving
    assert tank.stats()["points_in_memory"] == 3 * (SPAN // 10) + len(points(cur, NOW)[0])


def test_load_rechecks_the_ring_and_skips_slots_without_data():
    tank = make()
    add(tank, 2)
    cur = open_t0()
    tank.set_partition_start(0, cur)
    ts, vals = points(cur, NOW)
    tank.add_points(np.zeros(len(ts), np.int64), ts, vals)  # row 1 gets nothing: not live
    plan = tank.warm_load_plan(np.array([0, 1]))
    assert plan.slots.tolist() == [0]
    # a chunk as new as the open one, or newer, is never inserted; neither is one for a slot without data
    taken = tank.load_saved(
        np.array([0, 1]),
        np.array([cur, cur - SPAN]),
        [saved_chunk(cur), saved_chunk(cur - SPAN)],
        np.array([60, 60]),
    )
    assert taken == 0
    assert tank.stats()["chunks_in_ring"] == 0
    # a new point in the open chunk after a load still goes in
    tank.load_saved(np.array([0]), np.array([cur - SPAN]), [saved_chunk(cur - SPAN)], np.array([60]))
    tank.add_points(np.zeros(1, np.int64), np.array([NOW], np.uint32), np.array([1.0]))
    got_ts, _v, oldest = tank.read(0, 0, None, 0, NOW + 1)
    assert oldest == cur - SPAN and got_ts[-1] == NOW and len(got_ts) == 60 + len(ts) + 1


def test_replay_from_follows_the_saved_marks():
    tank = make()
    add(tank, 3, partition=0)
    rows = np.arange(3, dtype=np.int64)
    tank.add_series(np.array([3]), ["p1"], np.array([10]), np.array([1]), [sid(3)])
    cur = open_t0()
    # series 0 saved up to the previous chunk, series 1 one chunk behind, series 2 has no mark yet
    tank.mark_saved(np.array([0, 1]), np.array([cur - SPAN, cur - 2 * SPAN]))
    got = tank.replay_from([0, 1], NOW, margin=30)
    assert got[1] is None  # no marks in partition 1: replay the whole window
    assert got[0] == cur - SPAN - 30  # series 1's first unsaved chunk, minus the margin

    # series 1 stopped before its next chunk: nothing unsaved; series 2 (no mark) counts from the newest save
    def last_data(r):
        return np.where(r == 1, cur - 2 * SPAN + 100, NOW)

    assert tank.replay_from([0], NOW, margin=0, last_data=last_data)[0] == cur - SPAN
    del rows


def test_a_slot_reused_by_another_series_takes_nothing():
    tank = make()
    add(tank, 1)
    cur = open_t0()
    ts, vals = points(cur, NOW)
    tank.add_points(np.zeros(len(ts), np.int64), ts, vals)
    plan = tank.warm_load_plan(np.array([0]))
    tank.remove_series(np.array([0]))  # collected between the plan and the apply; the row is reused
    tank.add_series(np.array([0]), ["other"], np.array([10]), np.array([0]), [sid(7)])
    tank.add_points(np.zeros(len(ts), np.int64), ts, vals)
    args = (np.array([0]), np.array([cur - SPAN]), [saved_chunk(cur - SPAN)], np.array([60]))
    assert tank.load_saved(*args, keys=plan.keys) == 0
    assert tank.load_saved(*args, keys=[sid(7)]) == 1


def test_a_chunk_leaving_the_ring_before_its_save_is_counted():
    """A read node whose window is shorter than the writers' save delay loses chunks from memory before the
    store has them: counted, so that the operator sees it (and a forgotten series is not such a loss)."""
    tank = make("10s:1d:10min:2")  # the open chunk plus one closed one
    add(tank, 2)
    cur = open_t0()
    for t0 in (cur - 3 * SPAN, cur - 2 * SPAN, cur - SPAN):
        ts, vals = points(t0, t0 + SPAN)
        tank.add_points(np.zeros(len(ts), np.int64), ts, vals)
        tank.add_points(np.ones(len(ts), np.int64), ts, vals)
        tank.take_completed()
    tank.mark_saved(np.array([1]), np.array([cur - 2 * SPAN]))  # series 1's announcements kept up
    ts, vals = points(cur, NOW)
    tank.add_points(np.zeros(len(ts), np.int64), ts, vals)
    tank.add_points(np.ones(len(ts), np.int64), ts, vals)
    # series 0 lost cur-3*SPAN and cur-2*SPAN unsaved; series 1 only cur-3*SPAN
    assert tank.stats()["evicted_unsaved"] == 3
    tank.remove_series(np.array([0, 1]))  # collected: not a loss of memory
    assert tank.stats()["evicted_unsaved"] == 3


def _reference_load(tank: Tank, slots, t0s, blobs, npoints) -> dict:
    """The rule of `load_saved`, one chunk at a time: what each ring must hold afterwards."""
    from metrictank.tank.tank import F_FINISHED, F_LIVE, RM_COMPLETE

    want = {}
    for slot in sorted(set(slots)):
        rec = tank._slots[slot]
        es, ei = tank._ring_entries(np.array([slot]))
        ring = [(int(tank._ring_t0[i]), tank._ring_blobs[i], int(tank._ring_meta[i])) for i in ei.tolist()]
        if not int(rec["flags"]) & F_LIVE:
            want[slot] = ring
            continue
        limit = int(rec["ring_cap"]) - 1 + (1 if int(rec["flags"]) & F_FINISHED else 0)
        mine = sorted(
            {t: (b, n) for s, t, b, n in zip(slots, t0s, blobs, npoints, strict=True) if s == slot}.items(),
            reverse=True,
        )
        for t0, (b, n) in mine:
            oldest = ring[0][0] if ring else int(rec["t0"])
            if ring and t0 == oldest and not ring[0][2] & RM_COMPLETE:
                ring[0] = (t0, b, RM_COMPLETE | (n << 8))
            elif t0 < oldest and len(ring) < limit:
                ring.insert(0, (t0, b, RM_COMPLETE | (n << 8)))
        want[slot] = ring
    return want


def test_load_matches_the_one_chunk_at_a_time_rule():
    rng = np.random.default_rng(7)
    for _round in range(20):
        tank = make("10s:1d:10min:5")
        n = 30
        add(tank, n)
        cur = open_t0()
        # series start at random points of the last hour (some mid-chunk: incomplete), some get nothing
        starts = cur - rng.integers(0, 7, n) * SPAN + rng.integers(0, 60, n) * 10
        tank.set_partition_start(0, int(starts.min()) + 300)
        for r in range(n):
            if r % 7 == 3:
                continue
            ts, vals = points(int(starts[r]), NOW)
            tank.add_points(np.full(len(ts), r, np.int64), ts, vals)
        tank.take_completed()
        slots, t0s, blobs, npts = [], [], [], []
        for r in range(n):
            for t0 in rng.choice(
                np.arange(cur - 8 * SPAN, cur + SPAN, SPAN), size=rng.integers(0, 8), replace=False
            ):
                slots.append(r)
                t0s.append(int(t0))
                blobs.append(saved_chunk(int(t0)))
                npts.append(SPAN // 10)
        perm = rng.permutation(len(slots))
        slots, t0s = [slots[i] for i in perm], [t0s[i] for i in perm]
        blobs, npts = [blobs[i] for i in perm], [npts[i] for i in perm]
        want = _reference_load(tank, slots, t0s, blobs, npts)
        before_rings = {}
        for slot in want:
            _es, ei = tank._ring_entries(np.array([slot]))
            before_rings[slot] = [
                (int(tank._ring_t0[i]), tank._ring_blobs[i], int(tank._ring_meta[i])) for i in ei.tolist()
            ]
        taken = tank.load_saved(np.array(slots, np.int64), np.array(t0s), blobs, np.array(npts))
        got = {}
        for slot in want:
            _es, ei = tank._ring_entries(np.array([slot]))
            got[slot] = [
                (int(tank._ring_t0[i]), tank._ring_blobs[i], int(tank._ring_meta[i])) for i in ei.tolist()
            ]
        assert got == want
        # the counters follow the rings: every ring entry of every slot, and their blobs' bytes
        after = tank.stats()
        _es, ei = tank._ring_entries(np.arange(n, dtype=np.int64))
        assert after["chunks_in_ring"] == len(ei)
        assert after["ring_blob_bytes"] == sum(len(tank._ring_blobs[i]) for i in ei.tolist())
        assert taken == sum(
            1 for s in want for e in want[s] if e not in {(t, b, m) for t, b, m in before_rings[s]}
        )


def test_a_stored_chunk_that_does_not_decode_costs_only_itself():
    """The warm loader reads rows any writer may have put in the store: a corrupt one is counted and skipped,
    the other chunks of its block are still loaded, and the load finishes."""
    import threading

    from metrictank.instance.warm import WarmLoader

    tank = make()
    add(tank, 2)
    cur = open_t0()
    tank.set_partition_start(0, cur)
    ts, vals = points(cur, NOW)
    for r in range(2):
        tank.add_points(np.full(len(ts), r, np.int64), ts, vals)
    good = {t: saved_chunk(t) for t in (cur - 3 * SPAN, cur - 2 * SPAN, cur - SPAN)}

    class Store:
        def read_many(self, reqs, start, end, max_span):
            out = {}
            for key, _ttl in reqs:
                chunks = [(t, b) for t, b in sorted(good.items()) if start <= t < end]
                if key == sid(1):  # series 1's newest stored chunk is garbage
                    chunks[-1] = (chunks[-1][0], b"\x02\x0b\xff\xff")
                out[key] = chunks
            return out

    handed = []
    stop = threading.Event()
    w = WarmLoader(
        tank, Store(), threading.RLock(), lambda *a: handed.append(a), lambda: 0, lambda: True, stop
    )
    w.start()
    w.join(10)
    assert w.state == "done" and w.chunks_invalid == 1 and w.chunks_read == 3  # series 0: all; series 1: none
    for block in handed:
        tank.load_saved(*block)
    assert tank.read(0, 0, None, 0, NOW + 1)[2] == cur - 3 * SPAN  # series 0: all three chunks
    got_ts, _v, oldest = tank.read(1, 0, None, 0, NOW + 1)
    # series 1: its newest stored chunk is bad, so the older good ones stay in the store too: memory must not
    # vouch for a range with a hole in it (the read path asks the store for everything before `oldest`)
    assert oldest == cur
    assert len(got_ts) == len(ts)
