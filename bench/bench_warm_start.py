"""Warm start (issue 15): a restarted node with `[kafka-mdm-in] offset = "auto"` against a full replay of its
in-memory window, on the real Kafka and Cassandra of the test bed, in the same run.

What is measured, and how:
- The data: 100k series (10k with --quick) at 10 s on an 8-partition topic, one MetricPoint message per point
  (`bench_ingest.produce_backlog`: a MetricData with value 0.0 at the first timestamp, then `walk` values;
  message timestamp = data time), from the chunk boundary 2 hours before the open raw chunk to about now.
  Storage schema `10s:1d:10min:13` (raw only): 12 closed 10-minute chunks + the open one = the 2-hour window.
- The saved state, built directly (no first node run): every series' 12 closed chunks, encoded with
  `metrictank.chunk.encode_chunks` from exactly the produced points, written to a fresh Cassandra keyspace
  through the store the instance opens (`open_store("cassandra", ...)`, `submit` + `drain`); the `metric_idx`
  rows through `CassandraIndexStore.update` (lastupdate = the last data time); and on a persist topic (8
  partitions) one saved mark per series -- its newest saved chunk -- sent by `PersistNotifier` under the
  benchmarked node's own instance name, so the node trusts them.
- Each start is a fresh subprocess building `Instance(load_config(...))` (serve_http off, the main loop in a
  thread): a secondary (primary-node false, it writes nothing), kafka-cluster on with offset oldest,
  cassandra-idx on (update-cassandra-index off, so every run finds the same store), warm-up-period 0.
  `auto` (auto-offset-margin default) against a duration offset covering the whole data plus 60 s (2h10m when
  the run starts before the next chunk boundary; computed per run, since the data does not move with the
  clock). Order alternates per repeat (ABBA); rows are medians.
- Clock: from the parent's `Popen` (interpreter start and imports included) to the first `node.ready` seen by
  a 20 ms poll in the child (ready = persist backlog read, consuming, lag <= max-priority: the lag is in
  messages here, since the topic does not grow). Also timed: index load, persist backlog, the replay itself,
  the last replayed message, and for auto the warm load (until `inst.warm.state == "done"` and every loaded
  block applied by the main loop).
- Peak RSS: VmHWM of the child when it turns ready, and after the warm load (auto) / the replay (full).
- Correctness, in the child before it exits: for 100 series spread over the set, `tank.read(row, 0, None,
  window start, end)` must return exactly the produced points (timestamps and values, and memory must vouch for
  the whole window), after the warm load (auto) or after the replay (full). Any mismatch fails the bench.

Run alone: `python bench/bench_warm_start.py [--quick]` with METRICTANK_TEST_KAFKA (or KAFKA_BOOTSTRAP) and
METRICTANK_TEST_CASSANDRA (or CASSANDRA_HOSTS) set; `BENCH_WARM_REPEATS=n` changes the repeats.
"""

from __future__ import annotations

import json
import logging
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
from report import row as _row

HERE = Path(__file__).resolve().parent
SPAN = 600
NUMCHUNKS = 13
CLOSED = NUMCHUNKS - 1  # closed chunks of the window: saved in the store
SCHEMAS = f"[default]\npattern = .*\nretentions = 10s:1d:10min:{NUMCHUNKS}\n"
INSTANCE = "bench-warm"
SAMPLE = 100
LOG_DIR = Path(tempfile.gettempdir()) / "bench-warm-start-logs"


def _hosts() -> tuple[str, str]:
    from bench_ingest import bootstrap

    brokers = bootstrap()
    cass = os.environ.get("METRICTANK_TEST_CASSANDRA") or os.environ.get("CASSANDRA_HOSTS")
    if not cass:
        raise RuntimeError(
            "bench_warm_start needs Cassandra: set METRICTANK_TEST_CASSANDRA (or CASSANDRA_HOSTS); "
            "`scripts/testbed up` and `scripts/testbed env`"
        )
    return brokers, cass


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _expected(i: int, lo: int, hi: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """The produced points of series i in [lo, hi): walk values, 0.0 at the first timestamp (the MetricData)."""
    from metrictank.fakemetrics import values_for

    ts = np.arange(lo, hi, 10, dtype=np.int64)
    vals = values_for("walk", np.full(len(ts), i), ts)
    vals[ts == start] = 0.0
    return ts, vals


# ------------------------------------------------------------------------------------------------ child


def child(spec: dict) -> dict:
    """One start in this fresh process: Instance, start(), main loop; timings, RSS, correctness."""
    t_main = time.time()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    from bench_ingest import thread_cpu

    from metrictank.config import load_config
    from metrictank.instance import Instance

    t0 = spec["t_launch"]
    ev: dict[str, float] = {"imports": time.time() - t0, "main": t_main - t0}
    auto = spec["mode"] == "auto"
    inst = Instance(load_config(Path(spec["config"]), env={}))
    ev["constructed"] = time.time() - t0

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            s = time.time()
            try:
                return fn(*a, **kw)
            finally:
                ev[name + "_s"] = time.time() - s
                ev[name + "_end"] = time.time() - t0

        return wrapper

    inst._load_index = timed("index_load", inst._load_index)
    if inst.listener is not None:
        inst.listener.consume_backlog = timed("persist_backlog", inst.listener.consume_backlog)
    warm_cpu: dict[str, float] = {}
    if auto:
        inst._warm_start_times = timed("start_times", inst._warm_start_times)
        run_warm = inst.warm._run

        def warm_run() -> None:  # the loader thread's own CPU time (it is gone from /proc once it ends)
            try:
                run_warm()
            finally:
                warm_cpu["warm-load"] = time.thread_time()

        inst.warm._run = warm_run
    inst.start(serve_http=False)
    ev["started"] = time.time() - t0
    hwm_start = _status_kb("VmHWM")
    loop = threading.Thread(target=inst.run, name="ingest-loop", daemon=True)
    loop.start()

    highs = {int(p): int(h) for p, h in spec["highs"].items()}
    tr = inst.consumer.tracker
    expected_msgs: int | None = None
    out: dict = {"mode": spec["mode"]}
    deadline = time.monotonic() + spec["timeout"]
    ready_at = caught_at = warm_at = None
    try:
        while time.monotonic() < deadline:
            now = time.time() - t0
            if ready_at is None and inst.node.ready:
                ready_at = now
                out["ready_hwm_kb"] = _status_kb("VmHWM")
                out["ready_rss_kb"] = _status_kb("VmRSS")
                out["messages_at_ready"] = inst.handler.messages
                out["threads_at_ready"] = {k: round(v, 2) for k, v in thread_cpu().items() if v >= 0.05}
            if expected_msgs is None and tr.all_started:
                expected_msgs = sum(highs[p] - tr.first_offset[p] for p in highs)
            if caught_at is None and expected_msgs is not None and inst.handler.messages >= expected_msgs:
                caught_at = now
                out["caught_hwm_kb"] = _status_kb("VmHWM")
            if (
                auto
                and warm_at is None
                and inst.warm.state in ("done", "failed")
                and inst.loop.loaded_pending() == 0
            ):
                warm_at = now
                out["warm_hwm_kb"] = _status_kb("VmHWM")
            if ready_at is not None and caught_at is not None and (warm_at is not None or not auto):
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(
                f"{spec['mode']}: not done within {spec['timeout']}s: ready={ready_at} caught={caught_at} "
                f"warm={warm_at} ({inst.warm.status() if auto else ''}) messages={inst.handler.messages} "
                f"expected={expected_msgs}"
            )
        time.sleep(0.5)  # a block popped by the loop just before loaded_pending() read 0 is applied by now
        out["end_hwm_kb"] = _status_kb("VmHWM")
        out["end_rss_kb"] = _status_kb("VmRSS")
        # correctness: the sample, over the whole window, against the produced points
        lo, end, start = spec["window_lo"], spec["end"], spec["start"]
        mismatches, first_bad = 0, None
        with inst.lock:
            for i, sid in spec["sample"]:
                row = inst.index.row_of(sid)
                bad = None
                if row is None or row < 0:
                    bad = "series not in the index"
                else:
                    ts, vals, oldest = inst.tank.read(row, 0, None, lo, end)
                    ets, evals = _expected(i, lo, end, start)
                    ts = np.asarray(ts, np.int64)
                    if oldest > lo:
                        bad = f"memory vouches only from {oldest} (window from {lo})"
                    elif len(ts) != len(ets) or not np.array_equal(ts, ets):
                        bad = f"{len(ts)} timestamps, expected {len(ets)} ({ts[:3]}..{ts[-3:]})"
                    elif not np.array_equal(np.asarray(vals), evals):
                        k = int(np.flatnonzero(np.asarray(vals) != evals)[0])
                        bad = f"value at {ets[k]}: {vals[k]} != {evals[k]}"
                if bad:
                    mismatches += 1
                    first_bad = first_bad or f"series {i}: {bad}"
        out.update(
            {
                "events": ev,
                "ready_s": ready_at,
                "caught_s": caught_at,
                "warm_s": warm_at,
                "start_hwm_kb": hwm_start,
                "messages": inst.handler.messages,
                "expected_messages": expected_msgs,
                "points": inst.tank.points_added,
                "series": len(inst.index),
                "unknown_points": inst.handler.unknown_points,
                "chunks_written": inst.store.chunks_written,
                "mismatches": mismatches,
                "first_mismatch": first_bad,
                "warm_start": {str(p): v for p, v in inst.warm_start.items()},
                "warm": inst.warm.status() if auto else None,
                "warm_chunks_loaded": inst.loop.warm_chunks_loaded,
                "threads": {
                    **{k: round(v, 2) for k, v in thread_cpu().items() if v >= 0.05},
                    **{k: round(v, 2) for k, v in warm_cpu.items()},
                },
                "first_ts": {str(p): v for p, v in tr.first_ts.items()},
            }
        )
    finally:
        inst.stop_event.set()
        loop.join(15)
        inst.stop(drain_timeout=5)
    return out


def _run_child(spec: dict, log_name: str) -> dict:
    LOG_DIR.mkdir(exist_ok=True)
    spec = dict(spec, t_launch=time.time())
    r = subprocess.run(
        [sys.executable, str(HERE / "bench_warm_start.py"), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=spec["timeout"] + 120,
    )
    (LOG_DIR / f"{log_name}.log").write_text(r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"warm-start child failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ set-up


def _fill_store(cass: str, ks: str, schemas_path: Path, ss, start: int, cur: int, end: int, log) -> dict:
    """The 12 closed chunks of every series into the chunk store, the definitions into metric_idx."""
    from metrictank.chunk import encode_chunks
    from metrictank.index.defbatch import DefBatch
    from metrictank.retention import Schemas
    from metrictank.store import open_store
    from metrictank.store.base import ChunkWrite
    from metrictank.store.index import CassandraIndexStore

    t_open = time.perf_counter()
    schemas = Schemas.load(str(schemas_path))
    ttl = schemas.raw_retentions()[0].ttl
    store = open_store(
        "cassandra", addrs=cass, keyspace=ks, create_keyspace=True, timeout=30.0, ttls=schemas.all_ttls()
    )
    idx = CassandraIndexStore(store.session, ks, create=True, timeout=30.0, writers=2)
    n = len(ss)
    t_fill = time.perf_counter()
    log(f"  store opened (keyspace {ks}) in {t_fill - t_open:.1f}s")
    try:
        # index rows first (small), then the chunks
        for a in range(0, n, 10_000):
            b = min(n, a + 10_000)
            k = b - a
            batch = DefBatch(
                ss.ids[a:b],
                np.ones(k, np.int64),
                ss.names[a:b],
                np.full(k, 10, np.int64),
                [ss.unit] * k,
                [ss.mtype] * k,
                [()] * k,
                ss.partitions[a:b].astype(np.int64),
                np.full(k, end, np.int64),
            )
            while idx.room() < k:
                time.sleep(0.01)
            if idx.update(batch) != k:
                raise RuntimeError("index store dropped definitions during the fill")
        log(f"  index rows queued in {time.perf_counter() - t_fill:.1f}s")
        t0s_one = np.arange(start, cur, SPAN, dtype=np.int64)
        assert len(t0s_one) == CLOSED
        per = SPAN // 10
        chunks = nbytes = 0
        for a in range(0, n, 20_000):
            b = min(n, a + 20_000)
            k = b - a
            series = np.repeat(np.arange(a, b), CLOSED * per)
            ts = np.tile(np.arange(start, cur, 10, dtype=np.int64), k)
            from metrictank.fakemetrics import values_for

            vals = values_for("walk", series, ts)
            vals[ts == start] = 0.0  # the MetricData's value
            blobs = encode_chunks(
                np.tile(t0s_one, k).astype(np.uint32),
                SPAN,
                np.full(k * CLOSED, per, np.int64),
                ts.astype(np.uint32),
                vals,
            )
            writes = []
            parts = ss.partitions[a:b].tolist()
            # chunk-major: the store keeps one write per key in flight, so a key's 12 chunks in a row would
            # queue behind each other
            for c in range(CLOSED):
                t0c = int(t0s_one[c])
                for j in range(k):
                    blob = blobs[j * CLOSED + c]
                    nbytes += len(blob)
                    writes.append(ChunkWrite(ss.ids[a + j], 1, t0c, SPAN, ttl, blob, int(parts[j])))
            store.submit(writes)
            chunks += len(writes)
        log(f"  chunks encoded and submitted in {time.perf_counter() - t_fill:.1f}s")
        left = store.drain(1200)
        if left:
            raise RuntimeError(f"chunk store did not drain: {left} writes left")
        if idx.drain(600):
            raise RuntimeError("index store did not drain")
        errs = getattr(store, "write_errors", "?")
        log(
            f"  saved state: {chunks:,} chunks ({nbytes / chunks:.0f} B each) + {n:,} index rows in "
            f"{time.perf_counter() - t_fill:.1f}s (write errors {errs}, index insert errors {idx.insert_errors})"
        )
        return {"chunks": chunks, "bytes": nbytes, "seconds": time.perf_counter() - t_fill}
    finally:
        idx.close(30)
        store.close()


def _announce(brokers: str, topic: str, ss, t0: int) -> int:
    """One saved mark per series (its newest saved chunk), under the benchmarked node's name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from metrictank.cluster.persist import PersistNotifier

    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)])[topic].result(30)
    notifier = PersistNotifier(brokers, topic, INSTANCE, max_block=5.0)
    parts = ss.partitions.tolist()
    for a in range(0, len(ss), 20_000):
        notifier.notify((ss.ids[i], t0, int(parts[i])) for i in range(a, min(len(ss), a + 20_000)))
    left = notifier.flush(60)
    if left:
        raise RuntimeError(f"{left} persist messages not delivered")
    return notifier.messages_published


def _config(
    tmp: Path, name: str, brokers: str, cass: str, ks: str, topic: str, persist: str, offset: str
) -> Path:
    sections = {
        "http": {"listen": "127.0.0.1:0"},
        "kafka-mdm-in": {"brokers": brokers, "topics": topic, "offset": offset, "partitions": "*"},
        "kafka-cluster": {
            "enabled": True,
            "topic": persist,
            "offset": "oldest",
            "backlog-process-timeout": "120s",
        },
        "cluster": {"primary-node": False, "warm-up-period": "0s"},
        "retention": {"schemas-file": str(tmp / "schemas.conf")},
        "store": {"backend": "cassandra"},
        "cassandra": {"addrs": cass, "keyspace": ks, "create-keyspace": True, "timeout": "30s"},
        "cassandra-idx": {"enabled": True, "update-cassandra-index": False},
    }
    lines = [f'instance = "{INSTANCE}"']
    for s, vals in sections.items():
        lines.append(f"[{s}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in vals.items()]
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ parent


def _med(xs):
    return statistics.median(xs)


def run(quick: bool = False) -> list[dict]:
    import bench_ingest
    from bench_ingest import Case, delete_topics, produce_backlog

    from metrictank.fakemetrics import SeriesSet

    brokers, cass = _hosts()
    n = 10_000 if quick else 100_000
    label = f"{n // 1000}k"
    # 3 pairs at 10k; 2 at 100k, where one full replay takes minutes on the shared 2-core machine
    repeats = int(os.environ.get("BENCH_WARM_REPEATS", "3" if quick else "2"))
    run_id = uuid.uuid4().hex[:8]
    topic, persist = f"bench-warm-{label}-{run_id}", f"bench-warm-persist-{run_id}"
    ks = f"bench_warm_{run_id}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    (tmp / "schemas.conf").write_text(SCHEMAS)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    now0 = int(time.time())
    cur = now0 - now0 % SPAN  # the open raw chunk
    start = cur - CLOSED * SPAN  # the window's oldest chunk
    end = now0 - now0 % 10  # the last data timestamp
    points = (end - start) // 10 + 1
    prefix = f"bench.warm.s{n}"
    created: list[str] = []
    setup_session = None
    try:
        # the saved state (Cassandra) is written from a thread while the data topic is produced: the store's
        # work is mostly in the Cassandra JVM and the driver's I/O thread
        ss = SeriesSet.make(n, bench_ingest.PARTITIONS, prefix=prefix, interval=bench_ingest.INTERVAL)
        filled: dict = {}

        def fill_thread() -> None:
            try:
                filled["ok"] = _fill_store(cass, ks, tmp / "schemas.conf", ss, start, cur, end, log)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                filled["error"] = e

        ft = threading.Thread(target=fill_thread, name="fill")
        ft.start()
        # the data topic: produce_backlog with the first timestamp at the window's start
        orig = bench_ingest._base_time
        bench_ingest._base_time = lambda _points: start
        try:
            created.append(topic)
            prod = produce_backlog(brokers, topic, Case(f"warm {label}", n, points, 1), prefix=prefix)
        finally:
            bench_ingest._base_time = orig
        assert prod["start"] == start
        log(f"  produced {prod['messages']:,} messages ({n:,} series x {points}) in {prod['seconds']:.1f}s")
        ft.join()
        if "error" in filled:
            raise filled["error"]
        fill = filled["ok"]
        created.append(persist)
        pmsgs = _announce(brokers, persist, ss, cur - SPAN)
        log(f"  persist topic: {pmsgs} messages announcing {n:,} saved marks (t0 {cur - SPAN})")

        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-warm-{run_id}"})
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(8)}
        c.close()
        total = sum(highs.values())
        sample_idx = np.linspace(0, n - 1, SAMPLE).astype(int).tolist()
        base = {
            "highs": highs,
            "sample": [(i, ss.ids[i]) for i in sample_idx],
            "window_lo": start,
            "end": end + 10,
            "start": start,
            "timeout": 900,
        }
        res: dict[str, list[dict]] = {"auto": [], "full": []}
        for k in range(repeats):
            for mode in ("auto", "full") if k % 2 == 0 else ("full", "auto"):
                now = time.time()
                if mode == "auto":
                    offset = "auto"
                else:  # the whole data plus a 60 s margin: 2h10m while the open chunk is still `cur`
                    offset = f"{max(CLOSED * SPAN + SPAN, int(now) - start + 60)}s"
                cfg = _config(tmp, f"{mode}{k}", brokers, cass, ks, topic, persist, offset)
                r = _run_child({**base, "mode": mode, "config": str(cfg)}, f"{run_id}-{mode}{k}")
                r["offset"] = offset
                r["data_age_s"] = now - end
                res[mode].append(r)
                log(
                    f"  {mode} #{k}: ready {r['ready_s']:.1f}s, caught up {r['caught_s']:.1f}s"
                    + (f", warm load done {r['warm_s']:.1f}s" if r["warm_s"] else "")
                    + f", {r['messages']:,} messages, peak {r['end_hwm_kb'] / 1024:.0f} MB, "
                    f"mismatches {r['mismatches']}, events {json.dumps({k2: round(v, 2) for k2, v in r['events'].items()})}"
                )
        (LOG_DIR / f"{run_id}-raw.json").write_text(
            json.dumps(
                {
                    "res": res,
                    "n": n,
                    "points": points,
                    "total": total,
                    "fill": fill,
                    "pmsgs": pmsgs,
                    "cur": cur,
                }
            )
        )
        bad = [(m, r["mismatches"], r["first_mismatch"]) for m in res for r in res[m] if r["mismatches"]]
        if bad:
            raise RuntimeError(f"warm start bench: memory differs from the produced points: {bad}")
        for m in res:
            for r in res[m]:
                if r["unknown_points"] or r["chunks_written"]:
                    raise RuntimeError(
                        f"{m}: {r['unknown_points']} unknown points, {r['chunks_written']} chunks written"
                    )
        return _rows(res, n, label, points, total, fill, pmsgs, cur)
    finally:
        delete_topics(brokers, created)
        try:
            from metrictank.store.cassandra import CassandraStore

            setup_session = CassandraStore(cass, keyspace=ks, ttls=(), timeout=30.0)
            setup_session.session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)
        except Exception as e:  # noqa: BLE001 - cleanup only
            log(f"  could not drop keyspace {ks}: {e!r}")
        finally:
            if setup_session is not None:
                setup_session.close()


def _rows(
    res: dict, n: int, label: str, points: int, total: int, fill: dict, pmsgs: int, cur: int
) -> list[dict]:
    auto, full = res["auto"], res["full"]
    runs = min(len(auto), len(full))
    ready_a = [r["ready_s"] for r in auto]
    ready_f = [r["ready_s"] for r in full]
    # pairs in run order (ABBA): ratio per pair, and the ratio of medians as the headline
    pair = [f / a for a, f in zip(ready_a, ready_f, strict=False)]
    ratio = _med(ready_f) / _med(ready_a)

    def fmt(xs, d=1):
        return ", ".join(f"{x:.{d}f}" for x in xs)

    def ev(rs, key):
        return _med([r["events"].get(key, 0.0) for r in rs])

    a_mid = sorted(auto, key=lambda r: r["ready_s"])[len(auto) // 2]
    f_mid = sorted(full, key=lambda r: r["ready_s"])[len(full) // 2]
    back = sorted({v["secondsBack"] for r in auto for v in r["warm_start"].values()})
    before_open = sorted({round(cur - v["from"]) for r in auto for v in r["warm_start"].values()})
    why = sorted({v["why"] for r in auto for v in r["warm_start"].values()})
    msgs_a = [r["messages"] for r in auto]
    msgs_f = [r["messages"] for r in full]
    warm_load = [r["warm"]["seconds"] for r in auto]
    warm_done = [r["warm_s"] for r in auto]
    chunks = [r["warm_chunks_loaded"] for r in auto]
    hwm_ready_a = [r["ready_hwm_kb"] / 1024 for r in auto]
    hwm_end_a = [r["end_hwm_kb"] / 1024 for r in auto]
    hwm_ready_f = [r["ready_hwm_kb"] / 1024 for r in full]
    hwm_end_f = [r["end_hwm_kb"] / 1024 for r in full]
    age = [r["data_age_s"] for r in auto + full]

    def threads(r, wall, at_ready=False):
        src = r["threads_at_ready"] if at_ready else r["threads"]
        top = sorted(src.items(), key=lambda kv: -kv[1])[:6]
        return ", ".join(f"{k} {v:.1f}" for k, v in top) + f" CPU-s over {wall:.0f} s"

    setup = (
        f"{n:,} series x {points} points at 10 s (one-point messages, 8 partitions, {total:,} messages), "
        f"schema 10s:1d:10min:13 raw only; saved state built directly: {fill['chunks']:,} chunks "
        f"({fill['bytes'] / fill['chunks']:.0f} B) in Cassandra, {n:,} metric_idx rows, {pmsgs} persist "
        f"messages (newest saved chunk per series); secondary, fresh process per start, order alternating; "
        f"data {min(age):.0f}-{max(age):.0f} s old at the starts"
    )
    phases = (
        "index load {il:.1f}s, persist backlog {pb:.1f}s, consuming from {st:.1f}s after launch (imports "
        "{im:.1f}s, Instance() {co:.1f}s)"
    )
    rows = [
        _row(
            f"warm start {label}: ready, auto vs full replay",
            ratio,
            "ratio",
            5.0,
            runs,
            f"median full-replay ready time / median auto ready time ({_med(ready_f):.1f} s / "
            f"{_med(ready_a):.1f} s); per ABBA pair {fmt(pair, 2)}. {setup}",
        ),
        _row(
            f"warm start {label}: ready, offset auto",
            _med(ready_a),
            "s",
            None,
            len(auto),
            f"process launch to node ready; runs {fmt(ready_a)} s; "
            + phases.format(
                il=ev(auto, "index_load_s"),
                pb=ev(auto, "persist_backlog_s"),
                st=ev(auto, "started"),
                im=ev(auto, "imports"),
                co=ev(auto, "constructed") - ev(auto, "imports"),
            )
            + f"; replay start chosen by auto, every partition: {', '.join(f'{b:.0f}' for b in before_open)} s "
            f"before the open chunk's t0 (auto-offset-margin 300 s), i.e. {min(back):.0f}-{max(back):.0f} s "
            f"before the start (data {min(age):.0f}-{max(age):.0f} s old); why: {'; '.join(sorted({w.split(':')[0] for w in why}))}; last replayed message at {fmt([r['caught_s'] for r in auto])} s. "
            f"Threads (median run): the main loop (ingest-loop) ingests the replay and inserts the loaded "
            f"blocks, warm-load reads the store and decodes counts, event_loop is the Cassandra driver's I/O; "
            f"until ready: {threads(a_mid, a_mid['ready_s'], True)}; until the load is done: "
            f"{threads(a_mid, a_mid['warm_s'])}",
            higher=False,
        ),
        _row(
            f"warm start {label}: ready, full replay",
            _med(ready_f),
            "s",
            None,
            len(full),
            f"process launch to node ready, offset = duration covering the data + 60 s ({full[0]['offset']}"
            f"{'' if len({r['offset'] for r in full}) == 1 else ' ...'}); runs {fmt(ready_f)} s; "
            + phases.format(
                il=ev(full, "index_load_s"),
                pb=ev(full, "persist_backlog_s"),
                st=ev(full, "started"),
                im=ev(full, "imports"),
                co=ev(full, "constructed") - ev(full, "imports"),
            )
            + f"; last message at {fmt([r['caught_s'] for r in full])} s. Threads (median run): "
            f"{threads(f_mid, f_mid['caught_s'])}",
            higher=False,
        ),
        _row(
            f"warm start {label}: warm load done, offset auto",
            _med(warm_done),
            "s",
            None,
            len(auto),
            f"process launch until warm.state == done and every block applied (the load starts when the node "
            f"is ready); runs {fmt(warm_done)} s; the load itself {fmt(warm_load)} s; chunks put into the rings "
            f"{', '.join(f'{c:,}' for c in chunks)} (of {fill['chunks']:,} saved); sample of {SAMPLE} series "
            f"exact over the whole window afterwards in every run (0 mismatches)",
            higher=False,
        ),
        _row(
            f"warm start {label}: peak RSS, offset auto",
            _med(hwm_end_a),
            "MB",
            None,
            len(auto),
            f"VmHWM after the warm load; at ready {fmt(hwm_ready_a, 0)} MB, after the load {fmt(hwm_end_a, 0)} MB",
            higher=False,
        ),
        _row(
            f"warm start {label}: peak RSS, full replay",
            _med(hwm_end_f),
            "MB",
            None,
            len(full),
            f"VmHWM after the replay; at ready {fmt(hwm_ready_f, 0)} MB, at the end {fmt(hwm_end_f, 0)} MB; "
            f"sample of {SAMPLE} series exact over the whole window (0 mismatches)",
            higher=False,
        ),
        _row(
            f"warm start {label}: messages replayed, offset auto",
            _med(msgs_a),
            "messages",
            None,
            len(auto),
            f"runs {', '.join(f'{m:,}' for m in msgs_a)}; {_med(msgs_a) / total:.1%} of the topic",
            higher=False,
        ),
        _row(
            f"warm start {label}: messages replayed, full replay",
            _med(msgs_f),
            "messages",
            None,
            len(full),
            f"runs {', '.join(f'{m:,}' for m in msgs_f)} (the whole topic: {total:,})",
            higher=False,
        ),
    ]
    return rows


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE))
        print(json.dumps(child(json.loads(sys.argv[2]))), flush=True)
        return
    sys.path.insert(0, str(HERE))
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']}: {r['value']:,.4g} {r['unit']} (target {r['target']}) - {r['note']}")


if __name__ == "__main__":
    main()
