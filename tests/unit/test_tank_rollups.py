"""Rollup archives against a brute-force model of Metrictank's Aggregator.

Rollups are what long-range Graphite queries read, and Metrictank nodes read ours: the bucket rule (bucket
(B-span, B], B the next multiple of span >= ts, flushed when a later bucket starts or at once when ts == B), the
stored methods (avg as sum + cnt) and the chunks of each method series must all match.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from metrictank.chunk import decode_chunk, encode_chunk
from metrictank.retention import Aggregations, Schemas
from metrictank.tank import Tank

NOW = 1_700_000_000


def agg_boundary(ts: int, span: int) -> int:
    return ts + span - ((ts - 1) % span + 1)


def accepted_raw(points, span):
    """Raw points that pass the chunk rules (the only ones Metrictank feeds to its aggregators)."""
    out, t0, last = [], None, None
    for t, v in points:
        c = t - t % span
        if t0 is None or c > t0:
            t0, last = c, t
            out.append((t, v))
        elif c == t0 and t > last:
            last = t
            out.append((t, v))
    return out


def ref_rollup(points, span):
    """{method: [(B, value)]} by the bucket rule, computed from whole buckets."""
    out = {m: [] for m in ("sum", "cnt", "min", "max", "lst")}
    boundary, bucket = 0, []

    def flush():
        out["sum"].append((boundary, _seq_sum(bucket)))
        out["cnt"].append((boundary, float(len(bucket))))
        out["min"].append((boundary, min(bucket)))
        out["max"].append((boundary, max(bucket)))
        out["lst"].append((boundary, bucket[-1]))

    for t, v in points:
        b = agg_boundary(t, span)
        if b < boundary:
            continue
        if b > boundary:
            if bucket:
                flush()
                bucket = []
            boundary = b
        bucket.append(v)
        if t == b:
            flush()
            bucket = []
    return out, (boundary, bucket)


def _seq_sum(vals):
    s = 0.0
    for v in vals:
        s += v
    return s


def split_chunks(points, span):
    chunks = {}
    for t, v in points:
        chunks.setdefault(t - t % span, []).append((t, v))
    return [(t0, chunks[t0]) for t0 in sorted(chunks)]


@pytest.mark.parametrize("agg_span,raw_interval", [(60, 10), (300, 7), (600, 1), (3600, 60)])
def test_rollups_match_bucket_model(agg_span, raw_interval):
    rng = np.random.default_rng(agg_span + raw_interval)
    schemas = Schemas.parse(f"[r]\npattern = .*\nretentions = 1s:2d:10min:2,{agg_span}s:30d:6h:100\n")
    aggs = Aggregations.parse("[a]\npattern = .*\naggregationMethod = avg,min,max,last\n")
    tank = Tank(schemas, aggs, clock=lambda: NOW + 10 * 86400)
    tank.add_series(np.array([0]), ["x"], np.array([raw_interval]), np.array([0]), ["1." + "a" * 32])
    n = 4000
    steps = rng.integers(1, 2 * raw_interval + 1, n)
    steps[rng.random(n) < 0.01] = 5000  # gaps: empty buckets are skipped
    ts = NOW - 86400 + np.cumsum(steps)
    ts[rng.random(n) < 0.05] -= rng.integers(1, 3 * raw_interval, 1)  # some out of order (dropped raw)
    # a few points exactly on the bucket boundary (flush at once)
    on = rng.random(n) < 0.05
    ts[on] = ts[on] - ts[on] % agg_span
    vals = np.round(rng.normal(0, 100, n), 2)
    for part in np.array_split(np.arange(n), 9):
        tank.add_points(np.zeros(len(part), np.int64), ts[part].astype(np.uint32), vals[part])

    raw = accepted_raw(zip(ts.tolist(), vals.tolist(), strict=True), 600)
    model, (cur_b, cur_bucket) = ref_rollup(raw, agg_span)
    done = tank.take_completed()
    for archive_method in ("sum", "cnt", "min", "max", "lst"):
        got_ts, got_vals, _ = tank.read(0, 1, archive_method, 0, 2**32 - 1)
        want = list(model[archive_method])
        if cur_bucket:  # the bucket in progress is part of a read (Metrictank's Foresee)
            cur = {
                "sum": _seq_sum(cur_bucket),
                "cnt": float(len(cur_bucket)),
                "min": min(cur_bucket),
                "max": max(cur_bucket),
                "lst": cur_bucket[-1],
            }
            want.append((cur_b, cur[archive_method]))
        assert got_ts.tolist() == [b for b, _ in want]
        np.testing.assert_array_equal(got_vals, np.asarray([v for _, v in want]))
        # finished rollup chunks are exactly the encoded model chunks of this method series
        key = f"1.{'a' * 32}_{archive_method}_{agg_span}"
        mine = [i for i in range(len(done)) if done.amkey(i) == key]
        chunks = split_chunks(model[archive_method], 21600)
        assert len(mine) == len(chunks) - 1  # all but the open one completed
        for i, (t0, pts) in zip(mine, chunks, strict=False):
            assert int(done.t0[i]) == t0 and int(done.span[i]) == 21600 and int(done.ttl[i]) == 30 * 86400
            t, v = zip(*pts, strict=True)
            assert done.data[i] == encode_chunk(t0, 21600, np.asarray(t, np.uint32), np.asarray(v))
    with pytest.raises(KeyError):
        tank.read(0, 1, "avg", 0, NOW)


def test_immediate_flush_on_boundary_and_nan_propagation():
    schemas = Schemas.parse("[r]\npattern = .*\nretentions = 1s:1d:10min:2,60s:7d:2h:2\n")
    aggs = Aggregations.parse("[a]\npattern = .*\naggregationMethod = min,max,sum\n")
    tank = Tank(schemas, aggs, clock=lambda: NOW)
    tank.add_series(np.array([0]), ["x"], np.array([1]), np.array([0]), ["1." + "b" * 32])
    b = NOW - NOW % 60 - 600
    tank.add_points(
        np.zeros(3, np.int64), np.array([b + 1, b + 30, b + 60], np.uint32), np.array([5.0, -1, 2])
    )
    # ts == B: flushed at once, nothing left in progress
    assert tank._aggs["cnt"][0] == 0
    for m, want in (("min", -1.0), ("max", 5.0), ("sum", 6.0)):
        ts, vals, _ = tank.read(0, 1, m, 0, NOW)
        assert ts.tolist() == [b + 60] and vals.tolist() == [want]
    # Go's math.Min/Max propagate NaN (C's fmin would not)
    tank.add_points(np.zeros(2, np.int64), np.array([b + 61, b + 62], np.uint32), np.array([np.nan, 1.0]))
    tank.add_points(np.zeros(1, np.int64), np.array([b + 121], np.uint32), np.array([0.0]))
    for m in ("min", "max", "sum"):
        ts, vals, _ = tank.read(0, 1, m, b + 61, b + 121)
        assert ts.tolist() == [b + 120] and math.isnan(vals[0])
    # a finished rollup chunk decodes to the same points
    tank.add_points(np.zeros(1, np.int64), np.array([b + 7200], np.uint32), np.array([0.0]))
    done = tank.take_completed()
    sums = [i for i in range(len(done)) if done.amkey(i).endswith("_sum_60")]
    assert len(sums) == 1
    t, v = decode_chunk(int(done.t0[sums[0]]), done.data[sums[0]])
    assert t.tolist() == [b + 60, b + 120, b + 180] and v[0] == 6.0 and math.isnan(v[1]) and v[2] == 0.0


def test_rollup_gc_flushes_bucket_and_complete_flag_uses_bucket_start():
    clock = [NOW]
    schemas = Schemas.parse("[r]\npattern = .*\nretentions = 1s:1d:10min:2,300s:7d:1h:2\n")
    tank = Tank(schemas, Aggregations.load(None), clock=lambda: clock[0])
    tank.add_series(np.array([0]), ["x"], np.array([1]), np.array([0]), ["1." + "c" * 32])
    h = NOW - NOW % 3600 - 7200
    # consumption began at h+3400, inside the raw chunk [h+3000, h+3600) and inside the bucket
    # (h+3300, h+3600]: that raw chunk and the rollup chunk at h+3600 (whose first bucket it is) are partial
    tank.set_partition_start(0, h + 3400)
    tank.add_points(np.zeros(2, np.int64), np.array([h + 3599, h + 3601], np.uint32), np.array([1.0, 2.0]))
    assert tank.read(0, 1, "sum", 0, NOW)[0].tolist() == [h + 3600, h + 3900]
    clock[0] = NOW + 7200
    fin, removed = tank.gc(NOW + 7200, 3600, 3 * 3600)
    assert fin == 3 and removed.size == 0  # raw + sum + cnt
    done = tank.take_completed()
    got = sorted((done.amkey(i), int(done.t0[i]), bool(done.complete[i])) for i in range(len(done)))
    key = "1." + "c" * 32
    assert got == [
        (key, h + 3000, False),
        (key, h + 3600, True),
        (key + "_cnt_300", h + 3600, False),
        (key + "_sum_300", h + 3600, False),
    ]
    # the in-progress bucket (h+3600, h+3900] was flushed by GC before the rollup chunk was finished
    sums = [i for i in range(len(done)) if done.amkey(i).endswith("_sum_300")]
    assert decode_chunk(h + 3600, done.data[sums[0]])[0].tolist() == [h + 3600, h + 3900]
    # every chunk starting from here is complete: raw at h+3600, the hourly rollup chunks only at h+7200
    assert tank.complete_from() == h + 7200
