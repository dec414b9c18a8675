"""End-to-end latency of the Graphite HTTP API (issue 6): what a Grafana panel waits for.

The data is built in-process, without Kafka: a MemoryIndex, a Tank and a SQLiteStore (temp dir) behind an
InstanceSource, served by uvicorn on 127.0.0.1 and queried with a keep-alive httpx client from the same process
(so client CPU shares the GIL with the server: the figures are an upper bound on server latency). Requests have
the shape Grafana sends: POST form `target`, `from=-24h`, `until=now`, `maxDataPoints=1000`, `format=json`;
`/metrics/find` is a GET with `query`.

Cases (24 h at 10 s = 8640 points per series, timestamps aligned to the real clock since `-24h` is relative):
- `mem.*`: schema `10s:2d:2h:13`, so the whole 24 h is in the tank;
- `mix.*`: schema `10s:2d:2h:3`, memory holds the last 4-6 h and the rest comes from SQLite (the completed
  chunks were written there), so a read stitches store and memory;
- find over 1M index-only series `servers.dcN.hostNNNN.cpu.metricNN` (10 DCs x 1000 hosts x 100 metrics;
  quick mode uses 100k with 100 hosts per DC).

The anchor cases repeat the side-by-side measurement of `../shared/spec/anchors.md` (Metrictank vs this
project, 2026-12-02): a 50-minute range (301 points at 10 s), one series and sumSeries over 1000 series, GET
`/render?target=...&from=-50min&until=now&format=json`, 2 warm-ups then the requests. They use a plain stdlib
keep-alive connection (http.client), far cheaper than httpx, so the figure is mostly the server's; each HTTP
request is followed by the same render called in-process (render + JSON body), and both p50s are reported
with the HTTP layer's share of the time (1 - engine / HTTP), so it is visible where a millisecond goes.

Per case: wall-clock p50 (the target) and p99 over all requests, and the process CPU per request. The machine
is shared, so wall time includes waiting for the CPU; CPU time is the request's own cost (server and client
threads together). The engine is also called directly (render + JSON body, or find + treejson body), and the
ratio of CPU medians shows what HTTP (uvicorn, FastAPI form parsing, httpx) adds.
"""

from __future__ import annotations

import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from report import row

from metrictank.api import create_app
from metrictank.api.source import InstanceSource
from metrictank.fakemetrics import values_for
from metrictank.index import MemoryIndex
from metrictank.query.encode import render_json
from metrictank.query.engine import render
from metrictank.query.http import treejson
from metrictank.retention import Aggregations, Schemas
from metrictank.schema import series_id
from metrictank.store import ChunkWrite
from metrictank.store.sqlite import SQLiteStore
from metrictank.tank import Tank

STEP = 10
SCHEMAS = """
[mem]
pattern = ^mem\\.
retentions = 10s:2d:2h:13

[mix]
pattern = ^mix\\.
retentions = 10s:2d:2h:3
"""
HISTORY = 26 * 3600  # 24 h queried, plus margin so the oldest chunk in memory starts before the range
BATCH_STEPS = 360  # timestamps per add_points call (1 h of every series)
FORM = {"from": "-24h", "until": "now", "maxDataPoints": "1000", "format": "json"}


class _Admin:
    """The AdminBackend the app requires; only the Graphite routes are exercised."""

    admin_token = ""

    def node_json(self) -> dict:
        return {}

    def is_ready(self) -> bool:
        return True

    def priority_json(self) -> dict:
        return {}

    def cluster_json(self) -> dict:
        return {}

    def promote(self, force: bool) -> tuple[bool, list[str]]:
        return False, ["benchmark"]

    def demote(self) -> tuple[bool, str]:
        return True, ""

    def metrics_text(self) -> bytes:
        return b""


def _ids(names: list[str]) -> list[str]:
    return [series_id(1, n, "", "gauge", STEP, None) for n in names]


def _add_series(index: MemoryIndex, tank: Tank | None, names: list[str], now: int) -> np.ndarray:
    n = len(names)
    ids = _ids(names)
    rows, _ = index.add_many(
        ids, [1] * n, names, [STEP] * n, [""] * n, ["gauge"] * n, [None] * n, np.zeros(n), np.full(n, now)
    )
    if tank is not None:
        tank.add_series(rows, names, np.full(n, STEP), np.zeros(n, np.int64), ids)
    return rows


def _writes(done) -> list[ChunkWrite]:
    return [
        ChunkWrite(
            amkey=done.amkey(i),
            org=1,
            t0=int(done.t0[i]),
            span=int(done.span[i]),
            ttl=int(done.ttl[i]),
            data=done.data[i],
            partition=int(done.partition[i]),
        )
        for i in range(len(done))
    ]


class _Data:
    """Index + tank + store + InstanceSource holding 24 h+ of every render series."""

    def __init__(self, tmp: Path, n_sum: int) -> None:
        self.schemas = Schemas.parse(SCHEMAS)
        self.lock = threading.RLock()
        self.index = MemoryIndex()
        self.tank = Tank(self.schemas, Aggregations.load(None), row_of_id=self.index.row_of)
        self.store = SQLiteStore(tmp / "chunks.db", write_queues=1)
        self.source = InstanceSource(self.index, self.tank, self.store, self.schemas, self.lock)
        self.end = int(time.time()) // STEP * STEP
        names = ["mem.single.cpu", "mix.single.cpu"]
        names += [f"mem.host{h:04d}.cpu" for h in range(n_sum)]
        names += [f"mix.host{h:04d}.cpu" for h in range(n_sum)]
        t = time.perf_counter()
        rows = _add_series(self.index, self.tank, names, self.end)
        self.npoints, self.nchunks = self._feed(rows)
        self.build_s = time.perf_counter() - t

    def _feed(self, rows: np.ndarray) -> tuple[int, int]:
        """Time-ordered batches of every series; completed chunks go to the store as a primary's would."""
        sidx = np.arange(len(rows), dtype=np.int64)
        first = self.end - HISTORY + STEP
        total = chunks = 0
        for b0 in range(first, self.end + 1, BATCH_STEPS * STEP):
            tb = np.arange(b0, min(b0 + BATCH_STEPS * STEP, self.end + 1), STEP, dtype=np.int64)
            ts = np.repeat(tb, len(rows))
            s = np.tile(sidx, len(tb))
            with self.lock:
                self.tank.add_points(rows[s], ts.astype(np.uint32), values_for("walk", s, ts))
                done = self.tank.take_completed()
            if len(done):
                self.store.submit(_writes(done))
                chunks += len(done)
            total += len(ts)
        left = self.store.drain(120.0)
        if left:
            raise RuntimeError(f"SQLite store did not write {left} chunks")
        return total, chunks


def _find_source(n: int, tank: Tank, store: SQLiteStore, schemas: Schemas) -> tuple[InstanceSource, float]:
    """An index-only source of n Graphite series: find never touches the tank or the store."""
    per_dc = n // 100 // 10
    names = [
        f"servers.dc{d}.host{h:04d}.cpu.metric{m:02d}"
        for d in range(10)
        for h in range(per_dc)
        for m in range(100)
    ]
    index = MemoryIndex(capacity=len(names))
    t = time.perf_counter()
    for i in range(0, len(names), 100_000):
        _add_series(index, None, names[i : i + 100_000], int(time.time()))
    return InstanceSource(index, tank, store, schemas, threading.RLock()), time.perf_counter() - t


class _Server:
    """uvicorn in a background thread on a free loopback port; `source` can be switched between phases."""

    def __init__(self, source: InstanceSource) -> None:
        self.source = source
        app = create_app(_Admin(), lambda: self.source)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, name="bench-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _times_ms(fn: Callable[[], object], n: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """(wall ms, process CPU ms) per call. CPU covers every thread of the process (server, client), so it is
    the request's cost regardless of how much of the shared machine other processes take meanwhile."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return wall, cpu


def _p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def _row(name: str, value: float, target: float | None, runs: int, note: str) -> dict:
    return row(name, round(value, 3), "ms", target, runs, note, higher=False)


def _rows(
    name: str, http: tuple[list, list], direct: tuple[list, list], target: float | None, what: str
) -> list:
    (wall, cpu), (dwall, dcpu) = http, direct
    p50, c50, d50, dc50 = (statistics.median(x) for x in (wall, cpu, dwall, dcpu))
    ratio = c50 / dc50 if dc50 > 0 else float("nan")
    return [
        _row(f"{name} p50", p50, target, len(wall), f"{what}; wall ms per HTTP request"),
        _row(f"{name} p99", _p99(wall), None, len(wall), "wall ms per HTTP request"),
        _row(
            f"{name} CPU p50",
            c50,
            None,
            len(cpu),
            f"process CPU ms per HTTP request (server + client); HTTP/direct CPU {ratio:.2f}x",
        ),
        _row(
            f"{name} in-process CPU p50",
            dc50,
            None,
            len(dcpu),
            f"engine called directly, no HTTP (render + JSON body / find + treejson body); wall p50 {d50:.2f} ms",
        ),
    ]


def _render_case(client: httpx.Client, source: InstanceSource, target: str, n: int) -> tuple[tuple, tuple]:
    form = {**FORM, "target": target}

    def over_http() -> None:
        r = client.post("/render", data=form)
        r.raise_for_status()
        doc = r.json()
        if not doc or not doc[0]["datapoints"]:
            raise RuntimeError(f"empty render for {target}")

    def direct() -> None:
        render_json(render([target], "-24h", "now", 1000, source, 1, int(time.time())))

    over_http()
    doc = client.post("/render", data=form).json()
    nulls = sum(v is None for v, _ in doc[0]["datapoints"])
    if len(doc) != 1 or nulls > 3:  # the newest bucket may be empty (the clock moved on since the build)
        raise RuntimeError(f"{target}: {len(doc)} series, {nulls} null points: data is not all there")
    return _times_ms(over_http, n), _times_ms(direct, max(10, n // 4))


def _find_case(client: httpx.Client, source: InstanceSource, query: str, n: int) -> tuple[tuple, tuple, str]:
    def over_http() -> int:
        r = client.get("/metrics/find", params={"query": query})
        r.raise_for_status()
        return len(r.json())

    def direct() -> None:
        json.dumps(treejson(query, source.find(1, query)), separators=(",", ":")).encode()

    entries = over_http()
    matched = len(source.find(1, query))
    if entries == 0:
        raise RuntimeError(f"find {query} matched nothing")
    return (
        _times_ms(over_http, n),
        _times_ms(direct, max(10, n // 4)),
        f"{matched} nodes, {entries} treejson entries",
    )


ANCHORS = {  # Metrictank's p50 in ../shared/spec/anchors.md (2026-12-02, same machine type, same data shape)
    "mem.single.cpu": 1.8,
    "sumSeries(mem.host*.cpu)": 39.6,
}


def _anchor_case(port: int, source: InstanceSource, target: str, n: int) -> tuple[list[float], list[float]]:
    """(HTTP wall ms, in-process wall ms) of the anchors' request shape, interleaved one for one so that the
    machine's load drifts over both alike."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/render?target={target}&from=-50min&until=now&format=json"

    def over_http() -> bytes:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{target}: HTTP {r.status}: {body[:200]!r}")
        return body

    def direct() -> None:
        render_json(render([target], "-50min", "now", DEFAULT_MDP, source, 1, int(time.time())))

    doc = json.loads(over_http())
    if len(doc) != 1 or len(doc[0]["datapoints"]) not in (300, 301):
        raise RuntimeError(f"{target}: unexpected answer shape")
    for _ in range(2):  # the anchors' warm-ups
        over_http()
        direct()
    http_ms, direct_ms = [], []
    for _ in range(n):
        t = time.perf_counter()
        over_http()
        http_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        direct()
        direct_ms.append((time.perf_counter() - t) * 1e3)
    conn.close()
    return http_ms, direct_ms


def _anchor_rows(name: str, target: str, http_ms: list[float], direct_ms: list[float], goal: float) -> list:
    p50, d50 = statistics.median(http_ms), statistics.median(direct_ms)
    share = 1 - d50 / p50 if p50 > 0 else float("nan")
    mt = ANCHORS[target]
    return [
        _row(
            f"{name} p50",
            p50,
            goal,
            len(http_ms),
            f"wall ms per HTTP request (stdlib client); engine {d50:.2f} ms, HTTP layer {share:.0%} of the time; "
            f"Metrictank {mt} ms in anchors.md (py/Go {p50 / mt:.2f}x, not the same run)",
        ),
        _row(f"{name} p99", _p99(http_ms), None, len(http_ms), "wall ms per HTTP request"),
        _row(
            f"{name} engine p50",
            d50,
            None,
            len(direct_ms),
            "render + JSON body called in-process, interleaved with the HTTP requests",
        ),
    ]


DEFAULT_MDP = 800  # what /render uses when the request has no maxDataPoints (the anchors' requests had none)


def run(quick: bool = False) -> list[dict]:
    n_sum = 1000
    n_single, n_sum_req, n_find = (60, 10, 60) if quick else (300, 40, 200)
    n_find_series = 100_000 if quick else 1_000_000
    out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-query-api-") as tmp:
        data = _Data(Path(tmp), n_sum)
        srv = _Server(data.source)
        try:
            build = f"{data.npoints / 1e6:.1f}M points, {data.nchunks:,} chunks to SQLite, built in {data.build_s:.1f} s"
            n_anchor_single, n_anchor_sum = (20, 20) if quick else (200, 40)
            for name, target, n, goal in (
                ("render 1x50min memory (anchor)", "mem.single.cpu", n_anchor_single, 1.5),
                (
                    "render sumSeries 1000x50min memory (anchor)",
                    "sumSeries(mem.host*.cpu)",
                    n_anchor_sum,
                    30.0,
                ),
            ):
                out += _anchor_rows(name, target, *_anchor_case(srv.port, data.source, target, n), goal)
            with httpx.Client(base_url=srv.url, timeout=60.0) as client:
                cases = [
                    ("render 1x24h@10s memory", "mem.single.cpu", n_single, 5.0, "1 series, all in memory"),
                    (
                        "render 1x24h@10s store+memory",
                        "mix.single.cpu",
                        n_single,
                        None,
                        "18-20 h from SQLite, the rest from the tank",
                    ),
                    (
                        "render sumSeries 1000x24h memory",
                        "sumSeries(mem.host*.cpu)",
                        n_sum_req,
                        300.0,
                        f"8.64M points from the tank; {build}",
                    ),
                    (
                        "render sumSeries 1000x24h store+memory",
                        "sumSeries(mix.host*.cpu)",
                        n_sum_req,
                        300.0,
                        "18-20 h of each series from SQLite (one read_many = 1000 SQL queries), the rest from the tank",
                    ),
                ]
                for name, target, n, tgt, what in cases:
                    http, direct = _render_case(client, data.source, target, n)
                    out += _rows(name, http, direct, tgt, what)

                fsrc, fbuild = _find_source(n_find_series, data.tank, data.store, data.schemas)
                srv.source = fsrc
                size = f"{n_find_series // 1000}k" if n_find_series < 1_000_000 else "1M"
                for query in ("servers.*.host0001.cpu.*", "servers.dc1.*"):
                    http, direct, count = _find_case(client, fsrc, query, n_find)
                    out += _rows(
                        f"find {query} over {size}",
                        http,
                        direct,
                        50.0,
                        f"{count}; index of {n_find_series:,} series built in {fbuild:.1f} s",
                    )
        finally:
            srv.stop()
            data.store.close()
    return out


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(f"{row['name']:55s} {row['value']:10.3f} {row['unit']}  {row['note']}")
