"""Speed and density of the chunk codec (metrictank.chunk).

Speeds are points per CPU-second of this process (``time.process_time``), medians of several runs: the machine
is shared, and CPU time is far less disturbed by other tenants than wall time. The batch figures are what the
tank and the store use (one C call for 10,000 chunks of 120 points); the single-chunk figures show the fixed
per-call cost. For a baseline measured in the same process, zlib level 1 compresses and decompresses the same
points as raw 12-byte records; the speed ratios against it survive a noisy machine better than absolute figures.
Go's own codec measured on this machine type: encode ~50 M, decode ~35 M points/s.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np
from report import row as _row

from metrictank.chunk import decode_chunk, decode_chunks, encode_chunk, encode_chunks

SPAN = 1200  # 120 points at 10 s
POINTS = 120
ENCODE_TARGET = 20_000_000.0
DECODE_TARGET = 35_000_000.0


def _timestamps(rng: np.random.Generator, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """10 s interval, about 5% of points arriving 1-3 s late (still in order and inside the chunk)."""
    t0s = (1_500_000_000 // SPAN * SPAN + SPAN * np.arange(n_chunks)).astype(np.uint32)
    offsets = np.tile(np.arange(POINTS, dtype=np.uint32) * 10, n_chunks)
    jitter = np.where(rng.random(n_chunks * POINTS) < 0.05, rng.integers(1, 4, n_chunks * POINTS), 0)
    return t0s, np.repeat(t0s, POINTS) + offsets + jitter.astype(np.uint32)


def _shapes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "constant": np.full(n, 42.0),
        "counter": np.cumsum(rng.integers(0, 1000, n)).astype(np.float64),
        "walk_2dp": np.round(1000.0 + np.cumsum(rng.normal(size=n)), 2),
        "noise": rng.normal(size=n),
    }


_wall: list[float] = []


def _median_time(fn: Callable[[], object], runs: int) -> float:
    """Median CPU seconds of `fn`; the median wall seconds go to _wall for the notes."""
    cpu, wall = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    _wall.append(statistics.median(wall))
    return statistics.median(cpu)


def _wall_note(npts: int) -> str:
    return f"; wall-clock median {npts / _wall[-1] / 1e6:.1f} M points/s"


def run(quick: bool = False) -> list[dict]:
    runs = 5 if quick else 7
    n_chunks = 2_000 if quick else 10_000
    rng = np.random.default_rng(42)
    rows: list[dict] = []

    # density, one shape at a time
    t0s, ts = _timestamps(rng, n_chunks)
    counts = np.full(n_chunks, POINTS, dtype=np.int64)
    shapes = _shapes(rng, n_chunks * POINTS)
    for name, vals in shapes.items():
        blobs = encode_chunks(t0s, SPAN, counts, ts, vals)
        size = sum(len(b) for b in blobs) / vals.size
        rows.append(
            _row(f"bytes per point, {name}", size, "bytes/point", None, 1, "incl. 2-byte header", False)
        )

    # batch speed on a mix of the four shapes (a quarter of the chunks each)
    mixed = np.concatenate([v.reshape(n_chunks, POINTS)[i::4] for i, v in enumerate(shapes.values())]).ravel()
    blobs = encode_chunks(t0s, SPAN, counts, ts, mixed)
    npts = mixed.size
    t_enc = _median_time(lambda: encode_chunks(t0s, SPAN, counts, ts, mixed), runs)
    enc_wall = _wall_note(npts)
    t_dec = _median_time(lambda: decode_chunks(t0s, blobs), runs)
    dec_wall = _wall_note(npts)
    raw = np.empty(npts, dtype=[("t", "<u4"), ("v", "<f8")])
    raw["t"], raw["v"] = ts, mixed
    packed = zlib.compress(raw.tobytes(), 1)
    t_zc = _median_time(lambda: zlib.compress(raw.tobytes(), 1), runs)
    t_zd = _median_time(lambda: np.frombuffer(zlib.decompress(packed), raw.dtype), runs)
    batch = f"{n_chunks} chunks x {POINTS} points, mixed shapes, one call"
    rows.append(_row("encode, batch", npts / t_enc, "points/s", ENCODE_TARGET, runs, batch + enc_wall))
    rows.append(_row("decode, batch", npts / t_dec, "points/s", DECODE_TARGET, runs, batch + dec_wall))
    rows.append(
        _row("encode, batch vs zlib-1 compress", t_zc / t_enc, "x", None, runs, "speed ratio, same points")
    )
    rows.append(
        _row("decode, batch vs zlib-1 decompress", t_zd / t_dec, "x", None, runs, "speed ratio, same points")
    )
    rows.append(
        _row(
            "size vs zlib-1",
            sum(len(b) for b in blobs) / len(packed),
            "x",
            None,
            1,
            "chunk bytes / zlib bytes, same points",
            False,
        )
    )

    # batch speed per shape
    for name, vals in shapes.items():
        shape_blobs = encode_chunks(t0s, SPAN, counts, ts, vals)
        note = f"{n_chunks} chunks x {POINTS} points, {name}, one call"
        t = _median_time(lambda v=vals: encode_chunks(t0s, SPAN, counts, ts, v), runs)
        rows.append(_row(f"encode, batch, {name}", npts / t, "points/s", None, runs, note + _wall_note(npts)))
        t = _median_time(lambda b=shape_blobs: decode_chunks(t0s, b), runs)
        rows.append(_row(f"decode, batch, {name}", npts / t, "points/s", None, runs, note + _wall_note(npts)))

    # one chunk per call: the fixed per-call cost
    calls = 2_000 if quick else 10_000
    t0 = int(t0s[0])
    one_ts, one_vals = ts[:POINTS].copy(), shapes["walk_2dp"][:POINTS].copy()
    one_blob = encode_chunk(t0, SPAN, one_ts, one_vals)

    def enc_loop() -> None:
        for _ in range(calls):
            encode_chunk(t0, SPAN, one_ts, one_vals)

    def dec_loop() -> None:
        for _ in range(calls):
            decode_chunk(t0, one_blob)

    single = f"one {POINTS}-point chunk (2-decimal walk) per call"
    n = calls * POINTS
    t = _median_time(enc_loop, runs)
    rows.append(_row("encode, single chunk", n / t, "points/s", None, runs, single + _wall_note(n)))
    t = _median_time(dec_loop, runs)
    rows.append(_row("decode, single chunk", n / t, "points/s", None, runs, single + _wall_note(n)))
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(f"{r['name']:40s} {r['value']:>16,.2f} {r['unit']:12s} {r['note']}")
