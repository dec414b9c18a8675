"""Ingest speed and memory of the tank (metrictank.tank).

Speeds are points per CPU-second of this process (``time.process_time``), medians of several runs, for
`Tank.add_points` on batches of 20,000 points including the per-batch `take_completed()`. Series are warmed up
first (two rounds), so chunk starts, region growth and chunk completions are all part of the measured steady state.
"shuffled" batches visit the series in a new random order every round (what a Kafka partition delivers when
many producers interleave); "round-robin" visits them in the same order every round (the friendly case).

Memory: 100,000 series x 140 points at a 10 s interval under the shipped default schema (1s:35d:10min:7), in a
fresh subprocess: the process RSS growth from just before the tank is created until after ingest, per series;
also `tracemalloc`'s count of the bytes the tank allocated. Values are a mix of four shapes (constant,
integer counter, 2-decimal random walk, Gaussian noise), 25% of series each; the noise-only figure is the worst
case. Metrictank holds about 5.6 KB per series for the same load; the target is half that.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np
from report import row as _row

from metrictank.retention import Aggregations, Schemas
from metrictank.tank import Tank

NOW = 1_700_000_000
BATCH = 20_000
ADD_TARGET = 10_000_000.0
MEM_TARGET = 2800.0
METRICTANK_BYTES_PER_SERIES = 5600.0


def _values(rng: np.random.Generator, n_series: int, rounds: int, shape: str = "mix") -> np.ndarray:
    """Per-series value sequences, shape (rounds, n_series)."""
    kinds = np.arange(n_series) % 4 if shape == "mix" else np.full(n_series, 3)
    out = np.empty((rounds, n_series))
    for k in range(4):
        cols = np.flatnonzero(kinds == k)
        if not len(cols):
            continue
        size = (rounds, len(cols))
        if k == 0:
            out[:, cols] = 42.0
        elif k == 1:
            out[:, cols] = np.cumsum(rng.integers(0, 1000, size), axis=0)
        elif k == 2:
            out[:, cols] = np.round(1000.0 + np.cumsum(rng.normal(size=size), axis=0), 2)
        else:
            out[:, cols] = rng.normal(size=size)
    return out


def _tank(n_series: int, interval: int, schemas: Schemas, aggs: Aggregations) -> Tank:
    tank = Tank(schemas, aggs, clock=lambda: NOW + 10**7)
    rows = np.arange(n_series, dtype=np.int64)
    tank.add_series(
        rows,
        [f"bench.series.{i}" for i in range(n_series)],
        np.full(n_series, interval),
        np.zeros(n_series, np.int64),
        [f"1.{i:032x}" for i in range(n_series)],
    )
    return tank


def _throughput(
    n_series: int, interval: int, shuffled: bool, runs: int, rounds: int, schemas=None, aggs=None
) -> tuple[float, float]:
    """(median points per CPU second, median points per wall second)."""
    rng = np.random.default_rng(n_series + interval)
    tank = _tank(n_series, interval, schemas or Schemas.load(None), aggs or Aggregations.load(None))
    total_rounds = 2 + runs * rounds
    vals = _values(rng, n_series, total_rounds)
    series = np.arange(n_series, dtype=np.int64)
    start = NOW - NOW % 3600

    def batch_rounds(first: int, count: int):
        order = [rng.permutation(series) if shuffled else series for _ in range(count)]
        rows = np.concatenate(order)
        rnd = np.repeat(np.arange(first, first + count), n_series)
        ts = (start + rnd * interval).astype(np.uint32)
        return rows, ts, vals[rnd, rows]

    def ingest(rows, ts, v):
        for i in range(0, len(rows), BATCH):
            tank.add_points(rows[i : i + BATCH], ts[i : i + BATCH], v[i : i + BATCH])
            tank.take_completed()

    ingest(*batch_rounds(0, 2))
    cpu, wall = [], []
    for r in range(runs):
        data = batch_rounds(2 + r * rounds, rounds)
        w, c = time.perf_counter(), time.process_time()
        ingest(*data)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    assert tank.points_added == total_rounds * n_series, tank.discarded
    n = rounds * n_series
    return n / statistics.median(cpu), n / statistics.median(wall)


def _memory(shape: str, n_series: int = 100_000, points: int = 140, trace: bool = False) -> dict:
    """Run in a fresh process: tank memory after n_series x points at 10 s, default schema."""
    import psutil

    rng = np.random.default_rng(5)
    names = [f"bench.series.{i}" for i in range(n_series)]  # the index holds these, not the tank
    ids = [f"1.{i:032x}" for i in range(n_series)]
    vals = _values(rng, n_series, points, shape)
    series = np.arange(n_series, dtype=np.int64)
    start = NOW - NOW % 600 - 10 * points + 200
    gc.collect()
    proc = psutil.Process()
    if trace:
        tracemalloc.start()
    rss0 = proc.memory_info().rss
    tank = Tank(Schemas.load(None), Aggregations.load(None), clock=lambda: NOW + 10**7)
    tank.add_series(series, names, np.full(n_series, 10), np.zeros(n_series, np.int64), ids)
    for p in range(points):
        rows = rng.permutation(series)
        ts = np.full(n_series, start + 10 * p, np.uint32)
        v = vals[p, rows]
        for i in range(0, n_series, BATCH):
            tank.add_points(rows[i : i + BATCH], ts[i : i + BATCH], v[i : i + BATCH])
            tank.take_completed()
    gc.collect()
    out = {
        "rss_per_series": (proc.memory_info().rss - rss0) / n_series,
        "estimate_per_series": tank.memory_bytes() / n_series,
        "points": int(tank.stats()["points_in_memory"]),
        "ring_blob_bytes": int(tank.stats()["ring_blob_bytes"]),
        "arena_bytes": int(tank.stats()["arena_bytes"]),
    }
    if trace:
        out["traced_per_series"] = tracemalloc.get_traced_memory()[0] / n_series
        tracemalloc.stop()
    assert tank.points_added == n_series * points
    return out


def _memory_subprocess(shape: str, trace: bool, quick: bool) -> dict:
    args = (
        [sys.executable, __file__, "--memory", shape] + (["--trace"] if trace else []) + (["--quick"] * quick)
    )
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    runs = 3 if quick else 5
    rows: list[dict] = []
    rollup_schemas = Schemas.parse(
        "[r]\npattern = .*\nretentions = 10s:35d:10min:7,1m:90d:2h:2,10m:1y:6h:2\n"
    )
    rollup_aggs = Aggregations.parse("[a]\npattern = .*\naggregationMethod = avg,min,max\n")
    cases = [
        ("10k series, 1 s, round-robin", 10_000, 1, False, 50, None, None),
        ("10k series, 1 s, shuffled", 10_000, 1, True, 50, None, None),
        ("10k series, 10 s, shuffled", 10_000, 10, True, 50, None, None),
        ("100k series, 10 s, round-robin", 100_000, 10, False, 10, None, None),
        ("100k series, 10 s, shuffled", 100_000, 10, True, 10, None, None),
        ("100k series, 1 s, shuffled", 100_000, 1, True, 10, None, None),
        (
            "10k series, 10 s, 2 rollups avg,min,max, shuffled",
            10_000,
            10,
            True,
            50,
            rollup_schemas,
            rollup_aggs,
        ),
    ]
    for name, n, interval, shuffled, rounds, sch, agg in cases:
        if quick:
            rounds = max(2, rounds // 5)
        cpu, wall = _throughput(n, interval, shuffled, runs, rounds, sch, agg)
        target = ADD_TARGET if sch is None else None
        note = f"batches of {BATCH:,}; wall-clock median {wall / 1e6:.1f} M points/s"
        if sch is not None:
            note += "; 7 stored series per metric (raw + sum,cnt,min,max per rollup of 2): no target set"
        rows.append(_row(f"add_points {name}", cpu, "points/s", target, runs, note))

    n_mem = 20_000 if quick else 100_000
    for shape in ("mix", "noise"):
        m = _memory_subprocess(shape, False, quick)
        t = _memory_subprocess(shape, True, quick)
        bpp = m["ring_blob_bytes"] / max(1, m["points"])
        note = (
            f"{n_mem:,} series x 140 points at 10 s, shipped schema; RSS growth per series "
            f"(Metrictank ~{METRICTANK_BYTES_PER_SERIES:.0f} B, ratio {m['rss_per_series'] / 5600:.2f}); "
            f"tracemalloc {t['traced_per_series']:.0f} B, own estimate {m['estimate_per_series']:.0f} B; "
            f"closed chunks {bpp:.1f} B/point"
        )
        target = MEM_TARGET if shape == "mix" else None
        label = "values mixed" if shape == "mix" else "values Gaussian noise (worst case, no target)"
        rows.append(_row(f"memory per series, {label}", m["rss_per_series"], "bytes", target, 1, note, False))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--memory":
        quick = "--quick" in sys.argv
        res = _memory(sys.argv[2], 20_000 if quick else 100_000, trace="--trace" in sys.argv)
        print(json.dumps(res))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(f"{r['name']}: {r['value']:,.0f} {r['unit']} ({r['note']})")
