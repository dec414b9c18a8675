"""Memory index benchmarks: key routing throughput, build time, memory per series, find latency.

The series set is Graphite-shaped: `servers.host{00000..}.{cpu,mem,disk,net,load}.metric{00..19}`,
100 series per host, so 1M series = 10,000 hosts. Routing batches are 10k points drawn at random from
the known keys plus 1% unknown keys, as a MetricPoint batch after warm-up would be. The routing
baseline is the obvious per-point Python dict lookup on the same keys, measured in the same process.
"""

from __future__ import annotations

import gc
import hashlib
import statistics
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np
from report import row

from metrictank.index import MemoryIndex, split_md5

GROUPS = ("cpu", "mem", "disk", "net", "load")
BATCH = 10_000


def _series(n: int) -> Iterator[tuple[str, str, bytes]]:
    """(id, name, md5) of the first n series, generated lazily so only the index holds memory."""
    for h in range(n // 100):
        for g in GROUPS:
            for m in range(20):
                name = f"servers.host{h:05d}.{g}.metric{m:02d}"
                md5 = hashlib.md5(name.encode()).digest()
                yield f"1.{md5.hex()}", name, md5


def _build(n: int, keep_md5: bool) -> tuple[MemoryIndex, float, bytes]:
    ix = MemoryIndex()
    md5s = bytearray()
    t0 = time.perf_counter()
    add = ix.add
    for i, (id_, name, md5) in enumerate(_series(n)):
        add(id_, 1, name, 10, "", "gauge", (), i & 7, 1_700_000_000)
        if keep_md5:
            md5s += md5
    return ix, time.perf_counter() - t0, bytes(md5s)


def _row(name, value, unit, target=None, higher=False, runs=1, note=""):
    return row(name, value, unit, target, runs, note, higher)


def _routing(ix: MemoryIndex, md5s: bytes, n: int, runs: int) -> tuple[float, float]:
    """(index points/s, dict-baseline points/s) for 10k-point batches."""
    rng = np.random.default_rng(42)
    k0_all, k1_all = split_md5(md5s)
    batches = []
    for _ in range(runs):
        sel = rng.integers(0, n, BATCH)
        k0, k1 = k0_all[sel].copy(), k1_all[sel].copy()
        unknown = rng.integers(0, BATCH, BATCH // 100)
        k0[unknown] ^= np.uint64(0x5555)  # 1% keys the index has never seen
        batches.append((k0, k1, np.ones(BATCH, np.uint32), sel, unknown))
    times = []
    for k0, k1, org, sel, unknown in batches:
        t = time.perf_counter()
        rows = ix.lookup_rows(k0, k1, org)
        times.append(time.perf_counter() - t)
        want = sel.copy()
        want[unknown] = -1
        assert (rows == want).all(), "routing returned wrong rows"
    # baseline: a dict from the 20-byte binary key to the row, one lookup per point
    base_n = min(n, 200_000)
    d = {md5s[i * 16 : i * 16 + 16] + b"\x01\x00\x00\x00": i for i in range(base_n)}
    base_times = []
    for _ in range(max(3, runs // 3)):
        sel = rng.integers(0, base_n, BATCH)
        raw = np.frombuffer(md5s, np.uint8).reshape(-1, 16)[sel]
        blob = np.concatenate([raw, np.tile(np.array([1, 0, 0, 0], np.uint8), (BATCH, 1))], axis=1).tobytes()
        t = time.perf_counter()
        get = d.get
        out = np.fromiter((get(blob[j : j + 20], -1) for j in range(0, 20 * BATCH, 20)), np.int64, BATCH)
        base_times.append(time.perf_counter() - t)
        assert (out == sel).all()
    return BATCH / statistics.median(times), BATCH / statistics.median(base_times)


def _resend(ix: MemoryIndex, n: int, runs: int) -> dict:
    """MetricData for series the index already has (producers resend them): add_many vs add()."""
    rng = np.random.default_rng(7)
    want = rng.integers(0, n, BATCH)
    order = np.argsort(want)
    picked: list = [None] * BATCH
    pos = 0
    for i, (id_, name, _) in enumerate(_series(n)):
        while pos < BATCH and want[order[pos]] == i:
            picked[order[pos]] = (id_, name)
            pos += 1
    ids = [p[0] for p in picked]
    names = [p[1] for p in picked]
    cols = ([1] * BATCH, names, [10] * BATCH, [""] * BATCH, ["gauge"] * BATCH, [()] * BATCH)
    parts = want & 7
    times = []
    for r in range(runs):
        t = time.perf_counter()
        rows, created = ix.add_many(ids, *cols, parts, np.full(BATCH, 1_700_000_100 + r))
        times.append(time.perf_counter() - t)
        assert not created.any() and (rows == want).all()
    base = []
    add = ix.add
    for r in range(max(2, runs // 5)):
        t = time.perf_counter()
        for j in range(BATCH):
            add(ids[j], 1, names[j], 10, "", "gauge", (), int(parts[j]), 1_700_000_200 + r)
        base.append(time.perf_counter() - t)
    rate, base_rate = BATCH / statistics.median(times), BATCH / statistics.median(base)
    return _row(
        f"add_many 10k known definitions at {n:,} series",
        rate,
        "defs/s",
        higher=True,
        runs=runs,
        note=f"{rate / base_rate:.1f}x calling add() per definition ({base_rate:,.0f} defs/s)",
    )


def _find_latency(ix: MemoryIndex, pattern: str, runs: int) -> tuple[float, float, int]:
    times = []
    count = 0
    for _ in range(runs):
        t = time.perf_counter()
        count = len(ix.find(1, pattern))
        times.append(time.perf_counter() - t)
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return statistics.median(times) * 1e3, p99 * 1e3, count


def _memory_tracemalloc(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ix, _, _ = _build(n, keep_md5=False)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del ix
    return used / n


def _rss() -> int | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - bench extra not installed
        return None
    return psutil.Process().memory_info().rss


def run(quick: bool = False) -> list[dict]:
    big = 100_000 if quick else 1_000_000
    small = 20_000 if quick else 100_000
    rows: list[dict] = []

    # memory first, in a fresh heap: RSS growth over the build of the big index
    gc.collect()
    rss0 = _rss()
    ix, build_s, md5s = _build(big, keep_md5=True)
    gc.collect()
    rss1 = _rss()
    rows.append(
        _row(
            f"build {big:,} series (add() one by one)",
            build_s,
            "s",
            runs=1,
            note=f"{build_s / big * 1e6:.1f} us per new series",
        )
    )
    if rss0 is not None and rss1 is not None:
        rss_per = (rss1 - rss0 - len(md5s)) / big
        rows.append(
            _row(
                f"RSS per series at {big:,}",
                rss_per,
                "bytes",
                target=600,
                note="process RSS growth, index only",
            )
        )

    runs = 10 if quick else 30
    idx_rate, base_rate = _routing(ix, md5s, big, runs)
    rows.append(
        _row(
            f"lookup_rows 10k-point batches at {big:,} series",
            idx_rate,
            "points/s",
            higher=True,
            runs=runs,
            note=f"{idx_rate / base_rate:.1f}x a per-point Python dict lookup ({base_rate:,.0f} points/s)",
        )
    )

    rows.append(_resend(ix, big, 5 if quick else 15))

    find_runs = 7 if quick else 31
    host = big // 100
    patterns = [
        ("servers.*.cpu.metric07", 50, f"some.*.metric shape: one leaf per host ({host:,})"),
        ("servers.*", 50, f"wide level: {host:,} branches"),
        ("servers.host0004*.*.*", 50, "prefix glob then two full levels"),
        ("servers.host{00001,00002,00003}.{cpu,mem}.*", 50, "brace alternatives"),
        ("servers.host00042.cpu.metric0[1-3]", 50, "char class, narrow"),
        ("servers.*.{cpu,mem}.metric0[1-3]", None, f"{6 * host:,} results: output-bound (~1-2 us per node)"),
    ]
    gc.collect()
    for pattern, target, note in patterns:
        p50, p99, count = _find_latency(ix, pattern, find_runs)
        label = f"find {pattern} at {big:,} series"
        rows.append(
            _row(f"{label} p50", p50, "ms", target=target, runs=find_runs, note=f"{count:,} nodes; {note}")
        )
        rows.append(_row(f"{label} p99", p99, "ms", runs=find_runs, note=f"{count:,} nodes"))
    del ix, md5s
    gc.collect()

    ix, _, md5s = _build(small, keep_md5=True)
    idx_rate, base_rate = _routing(ix, md5s, small, runs)
    rows.append(
        _row(
            f"lookup_rows 10k-point batches at {small:,} series",
            idx_rate,
            "points/s",
            higher=True,
            runs=runs,
            note=f"{idx_rate / base_rate:.1f}x a per-point Python dict lookup ({base_rate:,.0f} points/s)",
        )
    )
    del ix, md5s
    per = _memory_tracemalloc(small)
    rows.append(
        _row(
            f"Python heap per series at {small:,} (tracemalloc)",
            per,
            "bytes",
            target=600,
            note="whole index incl. numpy columns, tree and tag index; untagged Graphite names",
        )
    )
    rows.extend(_tagged(20_000 if quick else 200_000))
    return rows


def _tagged(n: int) -> list[dict]:
    """Tagged series: heap per series and a typical seriesByTag query."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ix = MemoryIndex()
    t0 = time.perf_counter()
    for i in range(n):
        tags = (f"host=host{i // 100:05d}", f"dc=dc{i % 7}", f"core=c{(i // 20) % 5}", "env=prod")
        name = f"cpu.usage{i % 20}"
        key = hashlib.md5(f"{name};{';'.join(tags)}".encode()).hexdigest()
        ix.add(f"1.{key}", 1, name, 10, "", "gauge", tags, i & 7, 1_700_000_000)
    build = time.perf_counter() - t0
    gc.collect()
    per = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    out = [
        _row(
            f"Python heap per tagged series at {n:,} (4 tags)",
            per,
            "bytes",
            target=600,
            note=f"tracemalloc; build {build / n * 1e6:.0f} us/series under tracemalloc",
        )
    ]
    for q, note in (
        (["name=cpu.usage3", "dc=dc2"], "= and ="),
        (["env=prod", "host=~host0001[0-4]$", "core!=c1"], "=, =~ and !="),
    ):
        times = []
        count = 0
        for _ in range(9):
            t = time.perf_counter()
            count = len(ix.find_by_tags(1, q))
            times.append(time.perf_counter() - t)
        out.append(
            _row(
                f"find_by_tags {q} at {n:,} tagged series p50",
                statistics.median(times) * 1e3,
                "ms",
                runs=9,
                note=f"{count:,} series; {note}",
            )
        )
    return out


if __name__ == "__main__":
    import json
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
