"""Throughput of the schema layer's hot paths, chiefly the batch decoder of ingest.

``classify_and_decode`` is measured on the two shapes producers send (10,000 one-point ``0x02`` messages;
100 arrays of 100 points) and compared with a per-message ``struct`` decoder run on the same batch in the same
process, so the ratio survives a noisy shared machine better than the absolute figure.
"""

from __future__ import annotations

import statistics
import struct
import time
from collections.abc import Callable

import numpy as np
from report import row as _row

from metrictank.schema import (
    POINT_DTYPE,
    MetricData,
    classify_and_decode,
    decode_metricdata,
    encode_metricdata,
    encode_metricpoint_array_np,
    encode_metricpoints_many,
    partition_many,
    series_id,
)

DECODER_TARGET = 5_000_000.0  # points/s: ingest aims at 1.5 M/s end to end, decoding must be far cheaper


def _median_time(fn: Callable[[], object], runs: int, inner: int = 1) -> tuple[float, float]:
    """Median (CPU, wall) seconds per call. Figures use CPU time (``process_time``): the code is
    single-threaded, and on a 2-core machine shared with other jobs wall time mostly measures the neighbours."""
    fn()  # warm-up
    cpu, wall = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        cpu.append((time.process_time() - c0) / inner)
        wall.append((time.perf_counter() - w0) / inner)
    return statistics.median(cpu), statistics.median(wall)


def _points(n: int, series: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 2**63, size=(series, 2), dtype=np.uint64)
    pts = np.zeros(n, dtype=POINT_DTYPE)
    which = np.arange(n) % series
    pts["k0"], pts["k1"] = k[which, 0], k[which, 1]
    pts["org"] = 1
    pts["value"] = rng.normal(size=n)
    pts["time"] = 1_600_000_000 + np.arange(n) // series * 10
    return pts


_POINT = struct.Struct("<QQdII")


def _naive_decode(values: list[bytes]) -> list[tuple]:
    """Baseline: one struct unpack per point, the obvious per-message Python decoder."""
    out = []
    for v in values:
        if v[0] == 2 and len(v) == 33:
            out.append(_POINT.unpack_from(v, 1))
        elif v[0] == 5 and v[1] == 2:
            out.extend(_POINT.iter_unpack(v[2 : 2 + (len(v) - 2) // 32 * 32]))
    return out


def run(quick: bool = False) -> list[dict]:
    runs = 3 if quick else 5
    inner = 3 if quick else 10
    rows = []

    singles = encode_metricpoints_many(_points(10_000, 2_000))
    t, w = _median_time(lambda: classify_and_decode(singles, 0), runs, inner)
    tb, _ = _median_time(lambda: _naive_decode(singles), runs, max(1, inner // 3))
    rows.append(
        _row(
            "classify_and_decode, 10k one-point 0x02 messages",
            len(singles) / t,
            "points/s",
            DECODER_TARGET,
            runs,
            f"median CPU {t * 1e3:.2f} ms/batch (wall {w * 1e3:.2f} ms); "
            f"{tb / t:.1f}x a per-message struct decoder",
        )
    )

    pts = _points(10_000, 100, seed=1)
    arrays = [encode_metricpoint_array_np(pts[i : i + 100]) for i in range(0, 10_000, 100)]
    t, w = _median_time(lambda: classify_and_decode(arrays, 0), runs, inner)
    tb, _ = _median_time(lambda: _naive_decode(arrays), runs, max(1, inner // 3))
    rows.append(
        _row(
            "classify_and_decode, 100 arrays x 100 points",
            10_000 / t,
            "points/s",
            DECODER_TARGET,
            runs,
            f"median CPU {t * 1e3:.2f} ms/batch (wall {w * 1e3:.2f} ms); "
            f"{tb / t:.1f}x a per-message struct decoder",
        )
    )

    mds = [
        MetricData(series_id(1, f"some.metric.{i}", "", "gauge", 10, ["a=b"]), 1, f"some.metric.{i}", 10, 1.0, "",
                   1_600_000_000, "gauge", ["a=b"])
        for i in range(1_000)
    ]  # fmt: skip
    raw_mds = [encode_metricdata(m) for m in mds]
    t, _ = _median_time(lambda: [decode_metricdata(r) for r in raw_mds], runs)
    rows.append(
        _row("decode_metricdata", len(raw_mds) / t, "messages/s", None, runs, "1,000 msgs, 1 tag each")
    )
    t, _ = _median_time(lambda: [encode_metricdata(m) for m in mds], runs)
    rows.append(_row("encode_metricdata", len(mds) / t, "messages/s", None, runs, "1,000 msgs, 1 tag each"))

    names = [f"some.host{i % 97}.metric.{i}" for i in range(10_000)]
    t, _ = _median_time(lambda: partition_many("bySeries", 1, names, None, 128), runs)
    rows.append(
        _row("partition_many bySeries", len(names) / t, "series/s", None, runs, "10k names, uncached")
    )
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']:<52} {r['value']:>14,.0f} {r['unit']:<12} {r['note']}")
