"""Start-up load of the index in the store (`metric_idx`): how long a node takes to know 1M series again.

A node loads every definition of its partitions before it consumes (Instance._load_index), so this is
start-up time that grows with the series count. Measured for SQLite and, when CASSANDRA_HOSTS (or
METRICTANK_TEST_CASSANDRA) is set to "host:port[,host:port]", for Cassandra in a throwaway keyspace.

How, and why:
- Fill (not the headline): N rows over 8 partitions, Graphite names
  `servers.host-NNNN.<group>.metricNN` with two tags on every 10th series, ids as Metrictank computes
  them. They go through the store's own write path: `update(DefBatch)` slices of 10,000 into the bounded
  queue (the `[cassandra-idx]` defaults: write-queue-size, num-conns writers), then `drain`. The rows are
  generated before the clock starts, so the fill rate is the store's, not the generator's.
- Load: each run is a fresh subprocess (so neither the fill nor an earlier run sits in its heap) that builds
  what Instance builds -- MemoryIndex, Tank with the shipped schemas, IngestHandler with an IndexUpdater --
  and times `load(partitions, ...)` with the `[cassandra-idx]` defaults, each batch going through
  `handler.restore_series([batch])` under a lock, exactly as `_load_index` does. The figure therefore
  includes building the index and the tank's slots. The store's data is warm (just written, then read once
  by an untimed load: page cache for SQLite, memtables/caches for Cassandra), as on a node restart shortly
  after the last write; a cold read from disk would be slower.
- Concurrency: `init-load-concurrency` defaults to 1 (metrictank/config.py); it is compared with 4 readers,
  runs interleaved (order alternating per round) so drifting load on the shared machine hits both alike.
- Memory: VmHWM (peak RSS) of the child at the end minus its VmRSS just before the load, i.e. the peak
  growth over the load, per series in the note.
- A `load()`-only run (batches counted and dropped) shows how much of the time is the store read.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from report import row

PARTITIONS = list(range(8))
SLICE = 10_000
GROUPS = ("cpu", "mem", "disk", "net", "load", "io", "fs", "proc", "sock", "irq")
CONCURRENT = 4  # the alternative to the default init-load-concurrency: half the partitions at once


def _rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# ------------------------------------------------------------------------------------------------ child


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _open_index_store(spec: dict):
    """(index store, closer) as `open_index_store` would make it for this backend (Cassandra: the chunk
    store's session, as wiring reuses it)."""
    from metrictank.store.index import CassandraIndexStore, SQLiteIndexStore

    if spec["backend"] == "sqlite":
        s = SQLiteIndexStore(spec["path"], writers=spec["writers"], write_queue_size=spec["queue"])
        return s, s.close
    from metrictank.store.cassandra import CassandraStore

    cs = CassandraStore(spec["hosts"], keyspace=spec["keyspace"], ttls=(), timeout=30.0)
    s = CassandraIndexStore(
        cs.session,
        spec["keyspace"],
        create=True,
        timeout=30.0,
        writers=spec["writers"],
        write_queue_size=spec["queue"],
    )

    def close() -> None:
        try:
            s.close()
        finally:
            cs.close()

    return s, close


def child(spec: dict) -> dict:
    """One start-up load in this (fresh) process, as Instance._load_index runs it."""
    from metrictank.config import load_config
    from metrictank.index import MemoryIndex
    from metrictank.input.handler import IngestHandler
    from metrictank.retention import Aggregations, Schemas
    from metrictank.store.index import IndexUpdater
    from metrictank.tank import Tank

    c = load_config(None, env={}).cassandra_idx
    store, close = _open_index_store(spec)
    try:
        index = MemoryIndex()
        tank = Tank(Schemas.load(None), Aggregations.load(None), row_of_id=index.row_of)
        handler = IngestHandler(index, tank, 0)
        handler.on_definitions = IndexUpdater(store, index, c.update_interval)
        lock = threading.RLock()
        gc.collect()
        rss0 = _proc_status_kb("VmRSS")
        w0, c0 = time.perf_counter(), time.process_time()
        n = rows = 0
        for batch in store.load(
            PARTITIONS,
            max_stale=c.max_stale,
            update_interval=c.update_interval,
            concurrency=spec["concurrency"],
            retries=c.init_load_retries,
            now=time.time(),
        ):
            rows += len(batch)
            if spec["build"]:
                with lock:
                    n += handler.restore_series([batch])
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        return {
            "seconds": wall,
            "cpu": cpu,
            "rows": rows,
            "series": n,
            "hwm_growth_kb": _proc_status_kb("VmHWM") - rss0,
            "rss_growth_kb": _proc_status_kb("VmRSS") - rss0,
            "default_concurrency": c.init_load_concurrency,
        }
    finally:
        close()


def _run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ fill


def _batches(n: int, now: int):
    """The N definitions as DefBatch slices of SLICE, as the ingest handler hands new series to the store."""
    from metrictank.index.defbatch import DefBatch
    from metrictank.schema import series_id

    out = []
    for s in range(0, n, SLICE):
        ids, names, tags = [], [], []
        for i in range(s, min(n, s + SLICE)):
            name = f"servers.host-{i // 1000:04d}.{GROUPS[(i // 100) % 10]}.metric{i % 100:02d}"
            t = (f"dc=dc{(i // 1000) % 4}", "env=prod") if i % 10 == 0 else ()
            ids.append(series_id(1, name, "", "gauge", 10, list(t)))
            names.append(name)
            tags.append(t)
        k = len(ids)
        idx = np.arange(s, s + k, dtype=np.int64)
        out.append(
            DefBatch(
                ids,
                np.ones(k, np.int64),
                names,
                np.full(k, 10, np.int64),
                [""] * k,
                ["gauge"] * k,
                tags,
                idx % len(PARTITIONS),
                now - idx % 10_800,  # saved within the last update-interval, as live series are
            )
        )
    return out


def _fill(spec: dict, n: int) -> tuple[float, float]:
    """Writes the rows through update/drain; (wall seconds, CPU seconds of this process)."""
    batches = _batches(n, int(time.time()))
    store, close = _open_index_store(spec)
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            while store.room() < len(b):
                time.sleep(0.005)
            if store.update(b) != len(b):
                raise RuntimeError("index store dropped definitions during the fill")
        left = store.drain(3600)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if left:
            raise RuntimeError(f"index store did not drain: {left} definitions left")
        if store.insert_errors:
            raise RuntimeError(f"index store: {store.insert_errors} failed inserts during the fill")
    finally:
        close()
    return wall, cpu


# ------------------------------------------------------------------------------------------------ parent


def _row(name, value, unit, target=None, higher=False, runs=1, note="") -> dict:
    return row(name, value, unit, target, runs, note, higher)


def _bench(prefix: str, spec: dict, n: int, runs: int, extra_fill_note: str) -> list[dict]:
    fill_s, fill_cpu = _fill(spec, n)
    label = _rows_label(n)
    rows = [
        _row(
            f"{prefix}.fill {label} rows",
            n / fill_s,
            "rows/s",
            higher=True,
            note=f"update(DefBatch of {SLICE:,}) into the bounded queue, {spec['writers']} writers, until drained: "
            f"{fill_s:.1f} s, CPU {fill_cpu / n * 1e6:.1f} us/row in this process{extra_fill_note}",
        )
    ]
    res: dict[int, list[dict]] = {1: [], CONCURRENT: []}
    scans = []
    _run_child(
        {**spec, "concurrency": 1, "build": False}
    )  # warm-up, not counted: every timed run reads warm data
    for k in range(runs):
        for conc in (1, CONCURRENT) if k % 2 == 0 else (CONCURRENT, 1):
            r = _run_child({**spec, "concurrency": conc, "build": True})
            if r["rows"] != n or r["series"] != n:
                raise RuntimeError(f"load returned {r['rows']} rows / {r['series']} new series, expected {n}")
            res[conc].append(r)
        scans.append(_run_child({**spec, "concurrency": 1, "build": False}))
    scan_s = statistics.median(r["seconds"] for r in scans)
    scan_cpu = statistics.median(r["cpu"] for r in scans)

    def med(conc: int, key: str) -> float:
        return statistics.median(r[key] for r in res[conc])

    default = res[1][0]["default_concurrency"]
    t1, tc = med(1, "seconds"), med(CONCURRENT, "seconds")
    per_run = ", ".join(f"{r['seconds']:.1f}" for r in res[1])
    base = "8 partitions, fresh process per run, MemoryIndex + Tank via restore_series as _load_index"
    rows += [
        _row(
            f"{prefix}.load {label} rows (concurrency 1)",
            t1,
            "s",
            runs=runs,
            note=f"{base}; runs {per_run} s; CPU {med(1, 'cpu'):.1f} s (this process only); "
            f"init-load-concurrency default is {default}",
        ),
        _row(
            f"{prefix}.load rate {label} rows (concurrency 1)",
            n / t1,
            "rows/s",
            higher=True,
            runs=runs,
            note=f"{base}; CPU {med(1, 'cpu') / n * 1e6:.1f} us/row",
        ),
        _row(
            f"{prefix}.load {label} rows (concurrency {CONCURRENT})",
            tc,
            "s",
            runs=runs,
            note=f"{n / tc:,.0f} rows/s, {t1 / tc:.2f}x concurrency 1 (runs interleaved); "
            f"CPU {med(CONCURRENT, 'cpu'):.1f} s",
        ),
        _row(
            f"{prefix}.load() alone {label} rows (no index build)",
            scan_s,
            "s",
            runs=runs,
            note=f"batches counted and dropped, concurrency 1: {n / scan_s:,.0f} rows/s, "
            f"{scan_s / t1:.0%} of the full load (the rest is index + tank); CPU {scan_cpu:.1f} s",
        ),
        _row(
            f"{prefix}.load {label} rows: peak RSS growth",
            med(1, "hwm_growth_kb") / 1024,
            "MB",
            runs=runs,
            note=f"VmHWM at the end minus VmRSS before the load, in the load's fresh process (concurrency 1): "
            f"{med(1, 'hwm_growth_kb') * 1024 / n:,.0f} B/series; RSS after "
            f"{med(1, 'rss_growth_kb') * 1024 / n:,.0f} B/series; concurrency {CONCURRENT}: "
            f"{med(CONCURRENT, 'hwm_growth_kb') / 1024:,.0f} MB",
        ),
    ]
    return rows


def _store_defaults() -> dict:
    from metrictank.config import load_config

    c = load_config(None, env={}).cassandra_idx
    return {"writers": c.num_conns, "queue": c.write_queue_size}


def bench_sqlite(n: int, runs: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-idx-store-") as d:
        path = Path(d) / "idx.db"
        spec = {"backend": "sqlite", "path": str(path), **_store_defaults()}
        rows = _bench("index_store.sqlite", spec, n, runs, "")
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        rows[0]["note"] += f"; file {size / n:.0f} B/row"
    return rows


def bench_cassandra(hosts: str, n: int, runs: int) -> list[dict]:
    from metrictank.store.cassandra import CassandraStore

    ks = f"bench_idx_{uuid.uuid4().hex[:8]}"
    setup = CassandraStore(hosts, keyspace=ks, ttls=(), timeout=30.0)  # creates the keyspace
    try:
        spec = {"backend": "cassandra", "hosts": hosts, "keyspace": ks, **_store_defaults()}
        return _bench(
            "index_store.cassandra", spec, n, runs, " (one INSERT per row, 32 in flight per writer)"
        )
    finally:
        try:
            setup.session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)
        finally:
            setup.close()


def run(quick: bool = False) -> list[dict]:
    n = 50_000 if quick else 1_000_000
    runs = 1 if quick else 3
    rows = bench_sqlite(n, runs)
    hosts = os.environ.get("CASSANDRA_HOSTS") or os.environ.get("METRICTANK_TEST_CASSANDRA")
    if hosts:
        rows.extend(bench_cassandra(hosts, n, runs))
    else:
        rows.append(
            _row(
                "index_store.cassandra.not_configured",
                0.0,
                "",
                higher=True,
                runs=0,
                note="Cassandra not configured (set CASSANDRA_HOSTS=host:port); only SQLite was measured",
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(json.dumps(r))
