"""Chunk store throughput: sustained chunk writes/s and the drain time of a chunkspan-boundary burst.

At a chunkspan boundary every series completes a chunk for each of its archives at once; the store must
absorb that burst (here 100k series x 6 archives = 600k chunks) well before the next boundary. SQLite is
always measured; Cassandra only when CASSANDRA_HOSTS ("host:port[,host:port]") is set.

Baselines measured in the same process: for SQLite a bare `executemany` of the same rows (the store's
ceiling), for Cassandra the same store sending one request per chunk (`batch=False`), which is what a
straightforward port of Metrictank's writer does.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from report import row

from metrictank.schema import row_key, table_for_ttl
from metrictank.store import ChunkWrite, open_store

RAW_TTL = 35 * 86400
ROLLUP_TTL = 365 * 86400
RATE_TARGET = 20_000.0  # chunk writes/s per process
BURST_TARGET_S = 60.0  # a 600k-chunk burst must be written in well under a 10-minute chunkspan
ROLLUPS = ("sum", "cnt", "min", "max", "lst")


def _blob(i: int) -> bytes:
    return bytes([0x02, 11]) + (i & 0xFFFFFFFF).to_bytes(4, "little") * 62  # 250 bytes, like a real chunk


def _series_writes(n_series: int, t0: int, archives: int = 1, salt: int = 0) -> list[ChunkWrite]:
    """Chunks as a tank emits them at a boundary: per series its raw chunk then its rollups."""
    out = []
    data = [_blob(i) for i in range(64)]
    for i in range(n_series):
        sid = f"1.{(i + salt * 10_000_000):032x}"
        out.append(ChunkWrite(sid, 1, t0, 600, RAW_TTL, data[i % 64], i % 8))
        for m in ROLLUPS[: archives - 1]:
            out.append(ChunkWrite(f"{sid}_{m}_3600", 1, t0, 21600, ROLLUP_TTL, data[(i + 7) % 64], i % 8))
    return out


def _boundary(span: int = 600) -> int:
    now = int(time.time())
    return now - now % span


def _timed_write(store, writes: list[ChunkWrite], slice_size: int = 10_000) -> tuple[float, float]:
    """Wall seconds from the first submit until everything is confirmed, and CPU µs per chunk."""
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(writes), slice_size):
        store.submit(writes[i : i + slice_size])
    left = store.drain(600)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if left:
        raise RuntimeError(f"store did not drain: {left} chunks left")
    return wall, cpu / len(writes) * 1e6


def _row(name, value, unit, target, higher, runs, note) -> dict:
    return row(name, value, unit, target, runs, note, higher)


def _rate_rows(
    prefix: str,
    open_fn: Callable[[], object],
    n: int,
    runs: int,
    baseline: Callable[[list[ChunkWrite]], float] | None,
    baseline_name: str,
) -> list[dict]:
    rates, cpus, base_rates = [], [], []
    for r in range(runs):
        writes = _series_writes(n, _boundary() - 600 * (r + 1), salt=r)
        store = open_fn()
        try:
            wall, cpu = _timed_write(store, writes)
        finally:
            store.close()
        rates.append(len(writes) / wall)
        cpus.append(cpu)
        if baseline is not None:
            base_rates.append(baseline(_series_writes(n, _boundary() - 600 * (r + 1), salt=100 + r)))
    rate = statistics.median(rates)
    note = f"{n} chunks/run of 250 B, median; CPU {statistics.median(cpus):.1f} µs/chunk in this process"
    rows = [_row(f"{prefix}.write_rate", rate, "chunks/s", RATE_TARGET, True, runs, note)]
    if base_rates:
        base = statistics.median(base_rates)
        rows.append(
            _row(
                f"{prefix}.write_rate_vs_{baseline_name}",
                rate / base,
                "ratio",
                None,
                True,
                runs,
                f"{baseline_name}: {base:.0f} chunks/s measured in the same process",
            )
        )
    return rows


def _burst_row(prefix: str, open_fn: Callable[[], object], n_series: int, runs: int) -> dict:
    times, cpus = [], []
    for r in range(runs):
        writes = _series_writes(n_series, _boundary(21600) - 21600 * r, archives=6, salt=1000 + r)
        store = open_fn()
        try:
            wall, cpu = _timed_write(store, writes)
        finally:
            store.close()
        times.append(wall)
        cpus.append(cpu)
    n = n_series * 6
    t = statistics.median(times)
    note = (
        f"{n_series} series x 6 archives = {n} chunks submitted at once, until all confirmed; "
        f"{n / t:.0f} chunks/s, CPU {statistics.median(cpus):.1f} µs/chunk"
    )
    return _row(f"{prefix}.burst_drain", t, "s", BURST_TARGET_S if n >= 600_000 else None, False, runs, note)


# -- SQLite ---------------------------------------------------------------------------------------
def _sqlite_baseline(path: Path) -> Callable[[list[ChunkWrite]], float]:
    """Bare executemany in one transaction: the same rows, none of the store's machinery."""

    def run(writes: list[ChunkWrite]) -> float:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        table = table_for_ttl(RAW_TTL)[0]
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL, "
            "expires INTEGER NOT NULL, PRIMARY KEY (key, ts)) WITHOUT ROWID"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires)")
        t = time.perf_counter()
        rows = [(row_key(w.amkey, w.t0), w.t0, w.data, w.t0 + w.span + w.ttl) for w in writes]
        conn.execute("BEGIN")
        conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        dt = time.perf_counter() - t
        conn.close()
        return len(writes) / dt

    return run


def bench_sqlite(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as d:
        n = 50_000 if quick else 200_000
        counter = iter(range(1000))

        def open_fn():
            return open_store("sqlite", path=Path(d) / f"s{next(counter)}.db")

        rows = _rate_rows(
            "store.sqlite", open_fn, n, 3, _sqlite_baseline(Path(d) / "base.db"), "bare_executemany"
        )
        rows.append(_burst_row("store.sqlite", open_fn, 10_000 if quick else 100_000, 1 if quick else 3))
    return rows


# -- Cassandra ------------------------------------------------------------------------------------
def bench_cassandra(hosts: str, quick: bool) -> list[dict]:
    from metrictank.store.cassandra import CassandraStore

    ks = f"bench_store_{uuid.uuid4().hex[:8]}"
    ttls = [RAW_TTL, ROLLUP_TTL]
    setup = CassandraStore(hosts, keyspace=ks, ttls=ttls, timeout=30.0)  # creates keyspace and tables once
    try:

        def open_fn(**kw):
            return CassandraStore(hosts, keyspace=ks, ttls=ttls, timeout=30.0, **kw)

        def unbatched(writes: list[ChunkWrite]) -> float:
            s = open_fn(batch=False)
            try:
                wall, _ = _timed_write(s, writes)
            finally:
                s.close()
            return len(writes) / wall

        n = 20_000 if quick else 200_000
        rows = _rate_rows("store.cassandra", open_fn, n, 3, None, "")
        base_n = 10_000 if quick else 40_000
        base = statistics.median(
            unbatched(_series_writes(base_n, _boundary() - 600 * (50 + r), salt=200 + r)) for r in range(3)
        )
        rows.append(
            _row(
                "store.cassandra.write_rate_vs_unbatched",
                rows[0]["value"] / base,
                "ratio",
                None,
                True,
                3,
                f"same store with batch=False (one request per chunk): {base:.0f} chunks/s, {base_n} chunks/run",
            )
        )
        rows.append(_burst_row("store.cassandra", open_fn, 10_000 if quick else 100_000, 1 if quick else 3))
        return rows
    finally:
        try:
            setup.session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)
        finally:
            setup.close()


def run(quick: bool = False) -> list[dict]:
    rows = bench_sqlite(quick)
    hosts = os.environ.get("CASSANDRA_HOSTS")
    if hosts:
        rows.extend(bench_cassandra(hosts, quick))
    else:
        rows.append(
            _row(
                "store.cassandra.not_configured",
                0.0,
                "",
                None,
                True,
                0,
                "Cassandra not configured (set CASSANDRA_HOSTS=host:port); only SQLite was measured",
            )
        )
    return rows


if __name__ == "__main__":
    import json
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
