"""Ingest keeps going while queries run (issue 12): a real Instance replays a backlog from a real Kafka while
Graphite renders hit its HTTP API, and its ingest rate is compared with a replay of the same backlog without
renders, in the same run.

Why it is built this way:
- The instance is the real `metrictank.instance.Instance` (main loop in a thread, uvicorn serving its API, the
  tank lock of docs/concurrency.md), in a fresh subprocess per replay, so what is measured is the lock design
  and the GIL sharing between the loop and the HTTP threads, not the bench pipeline of bench_ingest.py.
- The render load comes from *this* process (a separate process: the load generator's own CPU and GIL are not
  the instance's; on a 2-core machine it still competes for a core, which the note says).
  It is open-loop: a request is due every 1/rate seconds whatever the previous one is doing, sent from a small
  thread pool over keep-alive connections, so a slow render does not lower the offered load.
  Latency is measured from the moment a request was due (a request that could not even be sent in time counts
  its wait), so p99 includes queueing.
- The render is `sumSeries` over 1000 series, 301 points each (50 minutes at 10 s, absolute from/until), the
  query of ../shared/spec/anchors.md. Those 1000 series are produced *first* in the topic (MetricData and all
  their points), then the backlog (100k series: MetricData, then one-point messages oldest first). The child
  waits until every point of the 1000 series is in (their lastupdate in the index reaches the last timestamp),
  says so, and only then does the parent start the load; both the loaded and the unloaded replay measure from
  that moment to the end of the backlog. Every answer is checked against the sum computed here.
- Replays alternate unloaded/loaded in an ABBA order (drift on a shared machine cancels out); the headline is
  the median over pairs of (loaded rate / unloaded rate) of the same backlog. The process CPU and the main loop
  thread's own CPU are reported too: the loop's CPU per point staying flat while its wall rate falls means the
  loop waited (for the GIL or the tank lock), not that it did more work.

`replay(..., switch_interval=0.001)` runs the instance with another GIL switch interval (a diagnosis, not
part of the figures: it did not raise the ratio, see docs/benchmarks.md).

Run alone: `python bench/bench_ingest_load.py [--quick]` with METRICTANK_TEST_KAFKA (or KAFKA_BOOTSTRAP) set.
"""

from __future__ import annotations

import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_ingest import INTERVAL, Case, bootstrap, delete_topics, produce_backlog, thread_cpu
from report import row as _row

QUERY_SERIES = 1000
QUERY_POINTS = 301  # 50 minutes at 10 s, as in anchors.md
QUERY_PREFIX = "bench.load.q"
BACKLOG_PREFIX = "bench.load.b"
#: the storage schema of anchors.md's side-by-side runs
SCHEMA = "[default]\npattern = .*\nretentions = 10s:35d:10min:7\n"
RATE = 10.0  # renders per second
P99_TARGET_MS = 1000.0
RATIO_TARGET = 0.8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_sum(first: int) -> np.ndarray:
    """sumSeries of the query series as produced: the MetricData carries 0.0, the points `walk` values."""
    from metrictank.fakemetrics import values_for

    ts = first + INTERVAL * np.arange(QUERY_POINTS)
    s = np.repeat(np.arange(QUERY_SERIES), QUERY_POINTS - 1)
    t = np.tile(ts[1:], QUERY_SERIES)
    out = np.zeros(QUERY_POINTS)
    out[1:] = values_for("walk", s, t).reshape(QUERY_SERIES, QUERY_POINTS - 1).sum(axis=0)
    return out


# ------------------------------------------------------------------------------------------------ the instance


def _child(args: dict) -> None:
    """One replay in this (fresh) process: the real Instance with its HTTP API; events go to stdout as JSON lines."""
    from metrictank.config import load_config
    from metrictank.instance import Instance

    def say(**kw) -> None:
        print(json.dumps(kw), flush=True)

    if args.get("switch_interval"):
        sys.setswitchinterval(args["switch_interval"])  # diagnosis only: the instance keeps Python's 5 ms
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-load-"))
    (tmp / "storage-schemas.conf").write_text(SCHEMA)
    sections = {
        "retention": {"schemas-file": str(tmp / "storage-schemas.conf")},
        "http": {"listen": f"127.0.0.1:{args['port']}"},
        "kafka-mdm-in": {"brokers": args["brokers"], "topics": args["topic"], "offset": "oldest"},
        "kafka-cluster": {"enabled": False},
        "cluster": {"primary-node": False},  # as in anchors.md: no chunk writes
        "store": {"backend": "sqlite"},
        # as in anchors.md's side-by-side runs: no index in the store (Metrictank ran with its memory index)
        "cassandra-idx": {"enabled": False},
        "sqlite": {"path": str(tmp / "chunks.db")},
    }
    lines = ['instance = "bench-ingest-load"']
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    cfg_path = tmp / "bench.toml"
    cfg_path.write_text("\n".join(lines) + "\n")
    inst = Instance(load_config(cfg_path, env={}))
    total = sum(hi - lo for lo, hi in inst.consumer.watermarks().values())
    loop_tid: list[int] = []

    def loop() -> None:
        loop_tid.append(threading.get_native_id())
        inst.run()

    inst.start(serve_http=True)
    thread = threading.Thread(target=loop, name="main-loop", daemon=True)
    thread.start()
    say(event="started", total=total)

    # the query series: all their points are in once their lastupdate (raised by every point) reaches `last`
    ids: list[str] = args["query_ids"]
    last = int(args["query_last"])
    rows: list[int | None] = [None] * len(ids)
    while True:
        missing = [i for i, r in enumerate(rows) if r is None]
        for i in missing:
            rows[i] = inst.index.row_of(ids[i])
        if all(r is not None for r in rows):
            # the index's own column, read without its lock (a bench-only peek; touch() writes it lock-free too)
            if int(inst.index._lastupdate[np.asarray(rows, np.int64)].min()) >= last:
                break
        time.sleep(0.005)
    t0, p0, m0 = time.perf_counter(), inst.tank.points_added, inst.handler.messages
    c0 = time.process_time()
    threads0 = thread_cpu()
    say(event="query-ready", points=p0, messages=m0)
    while inst.handler.messages < total:
        time.sleep(0.005)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    threads1 = thread_cpu()
    p1 = inst.tank.points_added
    by_thread = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
    loop_cpu = by_thread.get("main-loop", 0.0)
    say(
        event="done",
        wall=wall,
        cpu=cpu,
        loop_cpu=loop_cpu,
        points=p1 - p0,
        messages=inst.handler.messages - m0,
        series=len(inst.index),
        total_points=p1,
        threads={k: round(v, 3) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v > 0.005},
    )
    sys.stdin.readline()  # the parent checks a render after the clock stopped, then closes our stdin
    inst.stop(drain_timeout=5)
    thread.join(5)


# ------------------------------------------------------------------------------------------------ the load


class RenderLoad:
    """Open-loop renders at `rate`/s from a thread pool; latencies from the moment each request was due."""

    def __init__(
        self, url: str, form: dict, expect: np.ndarray, rate: float = RATE, workers: int = 8
    ) -> None:
        import httpx

        self.client = httpx.Client(
            base_url=url,
            timeout=60.0,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )
        self.form, self.expect, self.rate = form, expect, rate
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-load")
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.late = 0  # requests sent more than one period after they were due (the pool was saturated)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="render-scheduler", daemon=True)
        self._lock = threading.Lock()

    def check(self) -> None:
        """One render, checked value for value against the expected sum (raises when it differs)."""
        self._one(time.perf_counter(), record=False)
        if self.errors:
            raise RuntimeError(f"render check failed: {self.errors[0]}")

    def _one(self, due: float, record: bool = True) -> None:
        try:
            sent = time.perf_counter()
            r = self.client.post("/render", data=self.form)
            r.raise_for_status()
            doc = r.json()
            done = time.perf_counter()
            got = np.array([np.nan if v is None else v for v, _t in doc[0]["datapoints"]])
            if len(doc) != 1 or len(got) != len(self.expect) or not np.allclose(got, self.expect, rtol=1e-9):
                raise RuntimeError(
                    f"{len(doc)} series, {len(got)} points, differing from the expected sum: "
                    f"{doc[0]['datapoints'][:3]} ... vs {self.expect[:3]}"
                )
            if record:
                with self._lock:
                    self.latencies.append((done - due) * 1e3)
                    if sent - due > 1.0 / self.rate:
                        self.late += 1
        except Exception as e:  # noqa: BLE001 - reported with the figures
            with self._lock:
                self.errors.append(repr(e))

    def _schedule(self) -> None:
        t0 = time.perf_counter()
        k = 0
        while not self._stop.is_set():
            due = t0 + k / self.rate
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                break
            self.pool.submit(self._one, due)
            k += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.pool.shutdown(wait=True)
        self.client.close()


def replay(
    brokers: str,
    topic: str,
    query_ids: list[str],
    first: int,
    loaded: bool,
    switch_interval: float = 0.0,
    timeout: float = 900,
) -> dict:
    """One replay of the whole topic by a fresh instance process, with or without the render load
    (`switch_interval`: the instance process's sys.setswitchinterval, 0 = Python's default)."""
    last = first + (QUERY_POINTS - 1) * INTERVAL
    port = _free_port()
    args = {
        "brokers": brokers,
        "topic": topic,
        "port": port,
        "query_ids": query_ids,
        "query_last": last,
        "switch_interval": switch_interval,
    }
    # the child's log goes to a file: a pipe read only at the end blocks a child that logs more than its
    # buffer (64 KB), and with it the replay under measurement
    errlog = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errlog,
        text=True,
    )
    events: queue.Queue = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                events.put(json.loads(line))
        events.put(None)

    threading.Thread(target=read, daemon=True).start()
    form = {
        "target": f"sumSeries({QUERY_PREFIX}.*)",
        "from": str(first - 1),
        "until": str(last + 1),
        "format": "json",
    }
    load: RenderLoad | None = None
    out: dict = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            ev = events.get(timeout=max(1.0, deadline - time.monotonic()))
            if ev is None:
                break
            if ev["event"] == "query-ready":
                out["ready"] = ev
                if loaded:
                    load = RenderLoad(f"http://127.0.0.1:{port}", form, expected_sum(first))
                    load.check()
                    load.start()
            elif ev["event"] == "done":
                if load is not None:
                    load.stop()
                out.update(ev)
                if load is None:  # the answer is checked in unloaded replays too, after the clock stopped
                    check = RenderLoad(f"http://127.0.0.1:{port}", form, expected_sum(first))
                    check.check()
                    check.stop()
                break
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)
    finally:
        if load is not None and not load._stop.is_set():
            load.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    errlog.seek(0)
    err = errlog.read()
    errlog.close()
    if "wall" not in out:
        raise RuntimeError(f"instance replay failed ({proc.returncode}):\n{err[-4000:]}")
    if len(err) > 10_000:
        print(
            f"  the instance logged {len(err):,} characters; the last ones:\n{err[-1500:]}", file=sys.stderr
        )
    if load is not None:
        out.update(latencies=load.latencies, errors=load.errors, late=load.late)
    return out


# ------------------------------------------------------------------------------------------------ the benchmark


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run(quick: bool = False) -> list[dict]:
    from metrictank.fakemetrics import SeriesSet

    brokers = bootstrap()
    series, points, pairs = (100_000, 40, 1) if quick else (100_000, 120, 3)
    topic = f"bench-ingest-load-{uuid.uuid4().hex[:8]}"
    qcase = Case("query", QUERY_SERIES, QUERY_POINTS, 1)
    bcase = Case("backlog", series, points, 1)
    query_ids = SeriesSet.make(QUERY_SERIES, 8, prefix=QUERY_PREFIX, interval=INTERVAL).ids
    try:
        t = time.perf_counter()
        q = produce_backlog(brokers, topic, qcase, prefix=QUERY_PREFIX)
        b = produce_backlog(brokers, topic, bcase, prefix=BACKLOG_PREFIX, create=False)
        first = int(q["start"])
        print(
            f"  produced {q['messages'] + b['messages']:,} messages in {time.perf_counter() - t:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        order = [False, True, True, False] * ((pairs + 1) // 2)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for loaded in order[: 2 * pairs]:
            r = replay(brokers, topic, query_ids, first, loaded)
            runs[loaded].append(r)
            print(
                f"  {'loaded' if loaded else 'unloaded'}: {r['points'] / r['wall']:,.0f} points/s over "
                f"{r['wall']:.1f}s" + (f", {len(r['latencies'])} renders" if loaded else ""),
                file=sys.stderr,
                flush=True,
            )
    finally:
        delete_topics(brokers, [topic])
    un, lo = runs[False], runs[True]
    for r in lo:
        if r["errors"]:
            raise RuntimeError(f"{len(r['errors'])} renders failed, e.g. {r['errors'][0]}")
    rate = [r["points"] / r["wall"] for r in un]
    lrate = [r["points"] / r["wall"] for r in lo]
    ratios = [x / y for x, y in zip(lrate, rate, strict=True)]  # pair k: the k-th loaded and unloaded runs
    loop_pp = [r["loop_cpu"] / r["points"] * 1e9 for r in un]
    lloop_pp = [r["loop_cpu"] / r["points"] * 1e9 for r in lo]
    lat = [x for r in lo for x in r["latencies"]]
    late = sum(r["late"] for r in lo)
    med = statistics.median
    size = (
        f"{series:,}-series backlog x {points} points ({series * points:,} one-point messages) behind "
        f"{QUERY_SERIES} query series x {QUERY_POINTS} points, 8 partitions, real Instance (non-primary, "
        f"sqlite store, no chunk writes) in a fresh process per replay; rates from the moment the query series "
        f"are in memory to the end of the backlog"
    )
    threads = lo[len(lo) // 2]["threads"]
    top = ", ".join(f"{k} {v:.1f}" for k, v in list(threads.items())[:6])
    return [
        _row(
            "ingest under render load: loaded / unloaded rate",
            med(ratios),
            "ratio",
            RATIO_TARGET,
            len(ratios),
            f"{size}; per pair {', '.join(f'{x:.2f}' for x in ratios)}; load: {RATE:.0f} renders/s of "
            f"sumSeries over {QUERY_SERIES} series x {QUERY_POINTS} points over HTTP from the bench process "
            f"(open loop, 8 client threads)",
        ),
        _row(
            "ingest under render load: unloaded points/s",
            med(rate),
            "points/s",
            None,
            len(rate),
            f"{', '.join(f'{x:,.0f}' for x in rate)}; main loop thread "
            f"{med(loop_pp):.0f} ns CPU per point; process {med([r['cpu'] / r['wall'] for r in un]):.2f} cores",
        ),
        _row(
            "ingest under render load: loaded points/s",
            med(lrate),
            "points/s",
            None,
            len(lrate),
            f"{', '.join(f'{x:,.0f}' for x in lrate)}; main loop thread {med(lloop_pp):.0f} ns CPU per point; "
            f"process {med([r['cpu'] / r['wall'] for r in lo]):.2f} cores; CPU-s by thread (median run): {top}",
        ),
        _row(
            "ingest under render load: render p50",
            _pct(lat, 0.5),
            "ms",
            None,
            len(lat),
            "wall ms from the moment the request was due; anchors.md: Metrictank 39.6 ms, metrictank-py "
            "45.4 ms idle",
            higher=False,
        ),
        _row(
            "ingest under render load: render p99",
            _pct(lat, 0.99),
            "ms",
            P99_TARGET_MS,
            len(lat),
            f"max {max(lat):,.0f} ms; {late} of {len(lat)} requests sent later than one period after due",
            higher=False,
        ),
    ]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(json.loads(sys.argv[2]))
        return
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']}: {r['value']:,.4g} {r['unit']} (target {r['target']}) - {r['note']}")


if __name__ == "__main__":
    main()
