"""End-to-end ingest from a real Kafka: a backlog consumed from `oldest` through DataConsumer -> IngestHandler ->
MemoryIndex -> Tank, the path an instance's main loop runs.

How it is measured, and why:
- Each backlog (N series, MetricData first, then one message per point or MetricPointArrays of 100 points) is
  produced once per run and cached by topic name: producing from Python is slower than consuming, and we want
  to time consumption only. Topics are deleted at the end.
- Each consumption runs in a fresh subprocess, so its RSS holds that case only. The clock starts when the first
  batch arrives (connection set-up excluded) and stops when every message up to the high watermarks seen at
  start has been ingested. "points/s" is wall-clock; "per CPU-second" divides by the CPU time of the whole
  process (getrusage: the main thread plus librdkafka's fetch/decompress threads) - the machine has 2 cores
  shared with other jobs, so wall-clock rates are noisy and CPU-based rates are the steadier comparison.
- RSS per series is the VmRSS growth from just before consumption until the replay caught up, divided by the
  series in the index (what the index, the tank and the client's buffers left behind cost). The loop hands
  freed heap back to the OS as Instance.run does (metrictank.heap.HeapTrimmer: malloc_trim after every 64 MB
  of payload, at most once a second, and once more when the replay catches up); the note gives how many trims
  that took and their time, and the RSS at the last batch, before the catch-up trim (it holds the freed batches
  and read-ahead of the replay's last second: up to `[kafka-mdm-in] read-ahead-mb`), and the peak.
- New series cost far more than points (MetricData decode, validation, index, tank slots), and a backlog starts
  with one MetricData per series: the note of each rate also gives the rate after the last MetricData.
- The ceiling: the same subprocess also reads the backlog with a bare consume loop (same client settings
  and batch size, values extracted, nothing else; after the pipeline, and for one-point cases before it too),
  so "share of ceiling" says how much of the budget the Kafka client itself takes.
- A secondary case runs the real `Instance` (store: a throwaway sqlite file, kafka-cluster disabled, no HTTP),
  to show the main loop adds nothing beyond the pipeline (its clock starts at the first consumed batch and
  includes the last poll's timeout).

Targets (per process): >= 1.5 M points/s for one-point messages at 10k series, >= 1.3 M/s at 100k, >= 5 M/s for
arrays of 100 points, <= 2.8 KB RSS per series at 100k series x ~140 points. Metrictank, measured side by side
on this machine type (../shared/spec/anchors.md, 2026-12-02: same topic contents, non-primary, shared machine):
see `ANCHORS`; compare ratios, not these absolute rates.

Share of the bare consume loop (issue 12): each child process of a one-point case reads the backlog with the
bare loop, then through the pipeline, then with the bare loop again (the ceiling is the mean of the two bare
passes, so load drifting on the shared machine moves both sides alike), and the row is the median of those
per-process ratios (targets 0.8 / 0.75 / 0.7 at 10k / 100k / 1M series); the note gives the cores each thread used (`thread_cpu`: MainThread = poll + decode +
index + tank, `rdk:broker*` = librdkafka's fetch and decompression, `rdk:main` = its bookkeeping).

Run alone: `python bench/bench_ingest.py [--quick]` with METRICTANK_TEST_KAFKA (or KAFKA_BOOTSTRAP) set.
`BENCH_INGEST_CASES=points` keeps the cases whose name contains one of the comma-separated words;
`BENCH_INGEST_BASELINE=/path` (a directory holding another checkout's `metrictank` package, C extensions built)
alternates its children with this tree's and adds before/after rows measured in the same run.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from report import row as _row

PARTITIONS = 8
INTERVAL = 10
ARRAY_SIZE = 100
BATCH_SIZE = 20000
#: Metrictank beside metrictank-py in ../shared/spec/anchors.md (2026-12-02, same machine type, same Kafka topic
#: contents, both non-primary, machine shared with other work): one-point messages, wall-clock rates and RSS.
ANCHORS = {
    10_000: "anchors.md 2026-12-02: Metrictank 343k-470k points/s (packaged config; 835k tuned), metrictank-py "
    "671k-815k, side by side",
    100_000: "anchors.md 2026-12-02: Metrictank 216k-323k points/s, metrictank-py 723k-765k, side by side",
}
ANCHOR_RSS = {
    10_000: "Metrictank 12.3-12.9 KB/series above idle with ~396 points held (anchors.md 2026-12-02)",
    100_000: "Metrictank 7.6-7.8 KB/series above idle with 216 points held (anchors.md 2026-12-02)",
}


@dataclass(frozen=True)
class Case:
    name: str
    series: int
    points: int  # per series, the MetricData included
    array: int  # points per message: 1 = MetricPoint messages, >1 = MetricPointArray
    rate_target: float | None = None
    mem_target: float | None = None
    share_target: float | None = None  # of the bare consume loop's message rate (issue 12)

    @property
    def topic_key(self) -> str:
        return f"{self.series}x{self.points}a{self.array}"


def _cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("points 10k series", 10_000, 240, 1, 1.5e6, share_target=0.8),
            Case("arrays 10k series", 10_000, 240, ARRAY_SIZE, 5e6),
        ]
    return [
        Case("points 10k series", 10_000, 240, 1, 1.5e6, share_target=0.8),
        Case("points 100k series", 100_000, 240, 1, 1.3e6, share_target=0.75),
        Case("points 1M series", 1_000_000, 24, 1, share_target=0.7),
        Case("arrays 10k series", 10_000, 240, ARRAY_SIZE, 5e6),
        Case("arrays 100k series x 140", 100_000, 140, ARRAY_SIZE, 5e6, 2800.0),
        # 24 points per series: the million MetricData that announce the series dominate (no target)
        Case("arrays 1M series", 1_000_000, 24, ARRAY_SIZE),
    ]


def bootstrap() -> str:
    addr = os.environ.get("METRICTANK_TEST_KAFKA") or os.environ.get("KAFKA_BOOTSTRAP")
    if not addr:
        raise RuntimeError(
            "bench_ingest needs a real Kafka: set METRICTANK_TEST_KAFKA (or KAFKA_BOOTSTRAP); `make bench` "
            "starts one, or `python -m metrictank.testbed up --only kafka` and `... testbed env`"
        )
    return addr


# ------------------------------------------------------------------------------------------------ producing


def _base_time(points: int) -> int:
    """The first timestamp: the backlog ends about now, so no point is dropped as too far in the future."""
    now = int(time.time())
    return now - now % 600 - points * INTERVAL


def produce_backlog(
    brokers: str, topic: str, case: Case, prefix: str | None = None, create: bool = True
) -> dict:
    """Create `topic` and fill it: every series' MetricData, then its other points oldest first.

    `prefix` names the series (default: by series count); `create=False` appends to an existing topic, so
    a benchmark can put a small, complete set of series ahead of a big backlog (bench_ingest_load.py).

    A tight produce loop over pre-encoded messages (the fakemetrics Producer sends one Python call deep per
    message; this one is a bare bound-method call), with large lz4 batches and linger so the broker sees few
    big requests.
    """
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient, NewTopic

    from metrictank.fakemetrics import SeriesSet, values_for
    from metrictank.schema import POINT_DTYPE, encode_metricpoints_many

    t_start = time.perf_counter()
    if create:
        admin = AdminClient({"bootstrap.servers": brokers})
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(
            30
        )
    ss = SeriesSet.make(
        case.series, PARTITIONS, prefix=prefix or f"bench.ingest.s{case.series}", interval=INTERVAL
    )
    p = KafkaProducer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,  # per-partition order survives retries (see fakemetrics.Producer)
            "linger.ms": 50,
            "batch.num.messages": 1_000_000,
            "batch.size": 16 * 1024 * 1024,
            "queue.buffering.max.messages": 5_000_000,
            "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            "compression.type": "lz4",
            "log_level": 3,
        }
    )
    produce = p.produce
    parts = ss.partitions.tolist()
    start = _base_time(case.points)
    messages = 0

    def send(value: bytes, partition: int, ts_ms: int) -> None:
        while True:
            try:
                produce(topic, value, partition=partition, timestamp=ts_ms)
                return
            except BufferError:
                p.poll(0.05)

    for i in range(case.series):
        send(ss.metricdata(i, start, 0.0), parts[i], start * 1000)
    messages += case.series
    rows = np.arange(case.series)
    by_part = np.argsort(ss.partitions, kind="stable")
    for k in range(1, case.points):
        ts = start + k * INTERVAL
        pts = np.zeros(case.series, dtype=POINT_DTYPE)
        pts["k0"], pts["k1"], pts["org"], pts["time"] = ss.k0, ss.k1, ss.org, ts
        pts["value"] = values_for("walk", rows, np.full(case.series, ts))
        ts_ms = ts * 1000
        if case.array <= 1:
            for m, part in zip(encode_metricpoints_many(pts), parts, strict=True):
                try:
                    produce(topic, m, partition=part, timestamp=ts_ms)
                except BufferError:
                    send(m, part, ts_ms)
            messages += case.series
        else:
            # one contiguous run of wire bodies per partition, cut into arrays of `array` points
            sp = ss.partitions[by_part]
            body = encode_metricpoints_many(pts[by_part])  # 33-byte single messages; strip their format byte
            raw = b"".join(body)
            bodies = np.frombuffer(raw, np.uint8).reshape(case.series, 33)[:, 1:].tobytes()
            bounds = np.flatnonzero(np.diff(sp)) + 1
            for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), case.series], strict=True):
                part = int(sp[lo])
                for a in range(lo, hi, case.array):
                    b = min(hi, a + case.array)
                    send(b"\x05\x02" + bodies[a * 32 : b * 32], part, ts_ms)
                    messages += 1
        p.poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} messages of the {topic} backlog were not delivered")
    return {
        "topic": topic,
        "messages": messages,
        "points": case.series * case.points,
        "seconds": time.perf_counter() - t_start,
        "start": start,
    }


def delete_topics(brokers: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            f.result(30)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


# ------------------------------------------------------------------------------------------------ the consumer side


def _rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _trimmed_rss_kb() -> int:
    """VmRSS after glibc's malloc_trim(0) (heap kept free but not returned is not in use); plain VmRSS elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _rss_kb()


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of every thread of this process, summed by name.

    Python threads are named by their `threading` name, the others by the kernel's (`rdk:main`,
    `rdk:broker1`, ... for librdkafka): this is how the benchmarks say which thread does what, since a
    sampling profiler sees only the Python threads."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid)) or comm
        if name.startswith("rdk:broker"):
            name = "rdk:broker*"  # one per broker connection (and bootstrap); summed
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _threads_since(before: dict[str, float]) -> dict[str, float]:
    return {
        k: round(v - before.get(k, 0.0), 3) for k, v in thread_cpu().items() if v - before.get(k, 0.0) > 0.005
    }


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _pipeline(
    brokers: str, topic: str, batch_size: int, options: str, series: int = 0, batch_consumer: bool = True
) -> dict:
    """What Instance.run does per batch, minus the store, HTTP and lock: the production ingest path.

    `series`: how many MetricData the backlog starts with; the time by which all of them were ingested is
    reported too, since a new series costs far more than a point (decode, validation, index, tank slots)."""
    from metrictank.heap import HeapTrimmer
    from metrictank.index import MemoryIndex
    from metrictank.input.handler import IngestHandler
    from metrictank.input.kafka import DataConsumer
    from metrictank.retention import Aggregations, Schemas
    from metrictank.tank import Tank

    index = MemoryIndex()
    tank = Tank(Schemas.load(None), Aggregations.load(None), row_of_id=index.row_of)
    consumer = DataConsumer(
        brokers,
        [topic],
        None,
        "oldest",
        batch_size=batch_size,
        extra_options=options,
        client_id="bench",
        batch_consumer=batch_consumer,
    )
    if batch_consumer and not consumer.packed:
        raise RuntimeError("the batch consumer is not available here (see the log)")
    handler = IngestHandler(index, tank, 0)
    heap = HeapTrimmer()  # as Instance.run: freed batch memory goes back to the OS as the replay goes
    total = sum(hi - lo for lo, hi in consumer.watermarks().values())
    rss0 = _rss_kb()
    consumer.start()
    started: set[int] = set()
    points = completed = 0
    md_done: tuple[float, int] | None = None  # (seconds, points) when the last new series was announced
    batch = consumer.poll(timeout=5.0)
    while not batch.values:
        batch = consumer.poll(timeout=5.0)
    t0, c0, th0 = time.perf_counter(), _cpu(), time.thread_time()
    threads0 = thread_cpu()
    while True:
        if batch.values:
            tr = consumer.tracker
            for p, ts in tr.first_ts.items():
                if p not in started:
                    started.add(p)
                    tank.set_partition_start(p, 0 if tr.from_log_start(p) else int(ts))
            points += handler.process(batch.values, batch.partition_source)
            completed += len(tank.take_completed())
            heap.consumed(batch.nbytes)
            if md_done is None and series and handler.metricdata_received >= series:
                md_done = (time.perf_counter() - t0, points)
        if handler.messages >= total:
            break
        # ask for no more than is left: the last, partial batch would otherwise wait out the poll timeout
        consumer.batch_size = min(batch_size, total - handler.messages)
        batch = consumer.poll(timeout=0.1)
    wall, cpu, main = time.perf_counter() - t0, _cpu() - c0, time.thread_time() - th0
    threads = _threads_since(threads0)
    rss_end = _rss_kb()
    hwm = _rss_kb("VmHWM")
    # the replay caught up: Instance's loop hands the freed heap back at that moment (IngestLoop, "backlog
    # replay caught up"); what stays is what the series hold, not the batches (and read-ahead) of the replay
    t_trim = time.perf_counter()
    heap.now()
    t_trim = time.perf_counter() - t_trim
    rss1 = trimmed = _rss_kb()
    out = {
        "wall": wall,
        "cpu": cpu,
        "main_cpu": main,
        "messages": handler.messages,
        "points": points,
        "tank_points": tank.points_added,
        "discarded": sum(tank.discarded.values()),
        "unknown": handler.unknown_points,
        "series": len(index),
        "completed_chunks": completed,
        "md_done": md_done,
        "rss_before_kb": rss0,
        "rss_after_kb": rss1,
        "rss_end_kb": rss_end,
        "rss_trimmed_kb": trimmed,
        "trim_seconds": t_trim,
        "trims": heap.trims,
        "trims_seconds": heap.seconds,
        "hwm_kb": hwm,
        "tank_bytes": tank.memory_bytes(),
        "threads": threads,
    }
    consumer.close()
    return out


def _raw(brokers: str, topic: str, batch_size: int, options: str, reader: str = "batch") -> dict:
    """The ceiling: the least any consumer built on that client must do. `batch` (what DataConsumer uses):
    the batch consumer's read-ahead thread hands over packed batches, the main thread only takes them;
    `confluent`: confluent_kafka's consume() and the payload list (GC paused while Messages exist, as
    DataConsumer's fallback does)."""
    from confluent_kafka import Consumer, Message

    from metrictank.input.kafka import consumer_config

    if reader == "batch":
        return _raw_batch(brokers, topic, batch_size, options)

    c = Consumer(consumer_config(brokers, options, client_id="bench-raw"))
    total = _assign_all(c, topic)
    value = Message.value
    msgs = c.consume(num_messages=batch_size, timeout=10.0)
    t0, c0, th0 = time.perf_counter(), _cpu(), time.thread_time()
    threads0 = thread_cpu()
    n = 0
    gc.disable()  # as DataConsumer.poll does while Message objects exist
    try:
        while True:
            values = list(map(value, msgs))
            n += len(values)
            del msgs, values
            if n >= total:
                break
            msgs = c.consume(num_messages=min(batch_size, total - n), timeout=1.0)
    finally:
        gc.enable()
    out = _bare_result(t0, c0, th0, threads0, n)
    c.close()
    return out


def _assign_all(c, topic: str) -> int:
    """Assign every partition of `topic` from its start; returns the messages it holds."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
    total = 0
    for p in parts:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += hi - lo
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    return total


def _bare_result(t0: float, c0: float, th0: float, threads0: dict[str, float], n: int) -> dict:
    return {
        "wall": time.perf_counter() - t0,
        "cpu": _cpu() - c0,
        "main_cpu": time.thread_time() - th0,
        "messages": n,
        "threads": _threads_since(threads0),
    }


def _raw_batch(brokers: str, topic: str, batch_size: int, options: str) -> dict:
    from metrictank.input.batch_consumer import BatchConsumer, Prefetcher
    from metrictank.input.kafka import READ_AHEAD_BYTES, consumer_config

    c = BatchConsumer(consumer_config(brokers, options, client_id="bench-raw"))
    total = _assign_all(c, topic)
    reader = Prefetcher(c, batch_size, max_bytes=READ_AHEAD_BYTES)  # as DataConsumer sets it
    b = reader.get(10.0)
    t0, c0, th0 = time.perf_counter(), _cpu(), time.thread_time()
    threads0 = thread_cpu()
    n = len(b)
    while n < total:
        reader.size = min(batch_size, total - n)
        n += len(reader.get(1.0))
    out = _bare_result(t0, c0, th0, threads0, n)
    reader.stop()
    c.close()
    return out


def _instance(brokers: str, topic: str, batch_size: int, options: str, series: int = 0) -> dict:
    """The real Instance main loop in a thread; waits for the backlog from the calling thread."""
    from metrictank.config import load_config
    from metrictank.instance import Instance

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    kin = {"brokers": brokers, "topics": topic, "offset": "oldest", "batch-size": batch_size}
    if options:
        kin["consumer-options"] = options
    lines = ['instance = "bench-ingest"']
    for section, values in {
        "http": {"listen": "127.0.0.1:0"},
        "kafka-mdm-in": kin,
        "kafka-cluster": {"enabled": False},
        "store": {"backend": "sqlite"},
        # as in anchors.md's side-by-side runs: no index in the store (Metrictank ran with its memory index)
        "cassandra-idx": {"enabled": False},
        "sqlite": {"path": str(tmp / "chunks.db")},
    }.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    cfg_path = tmp / "bench.toml"
    cfg_path.write_text("\n".join(lines) + "\n")
    inst = Instance(load_config(cfg_path, env={}))
    total = sum(hi - lo for lo, hi in inst.consumer.watermarks().values())
    rss0 = _rss_kb()
    inst.start(serve_http=False)
    thread = threading.Thread(target=inst.run, daemon=True)
    thread.start()
    while not inst.consumer.tracker.first_offset:  # set as soon as the first batch is consumed
        time.sleep(0.001)
    t0, c0 = time.perf_counter(), _cpu()
    while inst.handler.messages < total:
        time.sleep(0.002)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    rss1 = _rss_kb()
    out = {
        "wall": wall,
        "cpu": cpu,
        "messages": inst.handler.messages,
        "points": inst.tank.points_added,
        "series": len(inst.index),
        "rss_before_kb": rss0,
        "rss_after_kb": rss1,
    }
    inst.stop(drain_timeout=5)
    thread.join(5)
    return out


def _child(args: dict) -> dict:
    """One consumption; with `raw`, the bare loop re-reads the backlog after it, and with `sandwich` before it
    as well: the ceiling is then the mean of the two, so a machine whose load drifts during the process (other
    jobs on the 2 shared cores) moves both sides of the ratio alike. The heap is trimmed after the first bare
    pass, so the pipeline's RSS growth does not reuse memory that pass freed."""
    fn = {"pipeline": _pipeline, "instance": _instance}[args["mode"]]
    conn = (args["brokers"], args["topic"], args["batch_size"], args["options"])
    before = None
    if args.get("raw") and args.get("sandwich"):
        before = _raw(*conn)
        _trimmed_rss_kb()
    out = {args["mode"]: fn(*conn, args.get("series", 0))}
    if args.get("raw"):
        after = _raw(*conn)
        out["raw"] = after if before is None else _mean_raw(before, after)
        if before is not None:
            out["raw_before"], out["raw_after"] = before, after
    if args.get("legacy"):
        # confluent_kafka's consume(): its bare loop (the ceiling before the batch consumer) and the pipeline
        # on it, in the same process, for a before/after ratio that machine load cannot skew much
        _trimmed_rss_kb()
        out["raw_confluent"] = _raw(*conn, reader="confluent")
        _trimmed_rss_kb()
        out["pipeline_confluent"] = _pipeline(*conn, args.get("series", 0), batch_consumer=False)
    return out


def _mean_raw(a: dict, b: dict) -> dict:
    """The two bare passes of a sandwich as one: mean wall and CPU times, the later pass's thread split."""
    out = dict(b)
    for k in ("wall", "cpu", "main_cpu"):
        out[k] = (a[k] + b[k]) / 2
    return out


def consume_in_subprocess(
    brokers: str,
    topic: str,
    mode: str = "pipeline",
    raw: bool = True,
    batch_size: int = BATCH_SIZE,
    options: str = "",
    series: int = 0,
    timeout: float = 600,
    pythonpath: str | None = None,
    sandwich: bool = False,
    legacy: bool = False,
) -> dict:
    """One consumption in a fresh process; `pythonpath` runs it with another checkout's `metrictank` package
    (a baseline for a before/after ratio measured in the same run)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    args = {
        "series": series,
        "mode": mode,
        "raw": raw,
        "sandwich": sandwich,
        "legacy": legacy,
        "brokers": brokers,
        "topic": topic,
        "batch_size": batch_size,
        "options": options,
    }
    r = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if r.returncode != 0:
        raise RuntimeError(f"consumer subprocess failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the benchmark


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _share(result: dict) -> float:
    """Pipeline message rate / bare consume loop message rate, both measured in the same child process."""
    p, r = result["pipeline"], result["raw"]
    return (p["messages"] / p["wall"]) / (r["messages"] / r["wall"])


def _threads_note(threads: dict[str, float], wall: float) -> str:
    top = sorted(threads.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{k} {v / wall:.2f}" for k, v in top)


def measure_case(brokers: str, topic: str, case: Case, repeats: int, instance: bool = False) -> list[dict]:
    # BENCH_INGEST_BASELINE: the directory holding another checkout's `metrictank` package (C extensions built);
    # its children alternate with this tree's (ABBA), so code changes are judged by a ratio from the same run.
    baseline = os.environ.get("BENCH_INGEST_BASELINE")
    results: list[dict] = []
    base_results: list[dict] = []
    for k in range(repeats):
        order = [False, True] if k % 2 == 0 else [True, False]
        for use_base in order if baseline else [False]:
            r = consume_in_subprocess(
                brokers,
                topic,
                series=case.series,
                pythonpath=baseline if use_base else None,
                sandwich=case.share_target is not None,
                legacy=case.share_target is not None and not use_base,
            )
            (base_results if use_base else results).append(r)
    pipe = [r["pipeline"] for r in results]
    raw = [r["raw"] for r in results]
    expect = case.series * case.points
    for r in pipe + [b["pipeline"] for b in base_results]:
        if r["points"] != expect or r["tank_points"] != expect or r["series"] != case.series:
            raise RuntimeError(
                f"{case.name}: ingested {r['points']} points ({r['tank_points']} in the tank) of "
                f"{r['series']} series; expected {expect} of {case.series}"
            )
    msgs = pipe[0]["messages"]
    rate = _med([r["points"] / r["wall"] for r in pipe])
    cpu_rate = _med([r["points"] / r["cpu"] for r in pipe])
    main_rate = _med([r["points"] / r["main_cpu"] for r in pipe])
    cpu_s = _med([r["cpu"] for r in pipe])
    raw_rate = _med([r["messages"] / r["wall"] for r in raw])
    raw_cpu_rate = _med([r["messages"] / r["cpu"] for r in raw])
    msg_rate = _med([r["messages"] / r["wall"] for r in pipe])
    per_series = _med([(r["rss_after_kb"] - r["rss_before_kb"]) * 1024 / r["series"] for r in pipe])
    at_end = _med(
        [(r.get("rss_end_kb", r["rss_after_kb"]) - r["rss_before_kb"]) * 1024 / r["series"] for r in pipe]
    )
    hwm = _med([r["hwm_kb"] / 1024 for r in pipe])
    total_per_series = _med([r["rss_after_kb"] * 1024 / r["series"] for r in pipe])
    tank_per_series = _med([r["tank_bytes"] / r["series"] for r in pipe])
    trims = _med([r["trims"] for r in pipe])
    trim_ms = _med([r["trims_seconds"] * 1000 for r in pipe])
    after_md = [
        (r["points"] - r["md_done"][1]) / (r["wall"] - r["md_done"][0])
        for r in pipe
        if r.get("md_done") and r["wall"] > r["md_done"][0]
    ]
    md_note = (
        f"; after the last MetricData (all {case.series:,} series known): {_med(after_md):,.0f} points/s, "
        f"MetricData phase {_med([r['md_done'][0] for r in pipe if r.get('md_done')]):.2f}s"
        if after_md
        else ""
    )
    n = len(pipe)
    kind = "one-point messages" if case.array <= 1 else f"MetricPointArrays of {case.array}"
    size = f"{case.series:,} series x {case.points} points ({msgs:,} {kind})"
    go = ANCHORS.get(case.series) if case.array <= 1 else None
    go_note = f"; {go}" if go else ""
    shares = [_share(r) for r in results]
    cpu_shares = [
        (r["pipeline"]["messages"] / r["pipeline"]["cpu"]) / (r["raw"]["messages"] / r["raw"]["cpu"])
        for r in results
    ]
    mid = sorted(results, key=lambda r: r["pipeline"]["wall"])[len(results) // 2]
    rows = [
        _row(
            f"ingest {case.name}: points/s",
            rate,
            "points/s",
            case.rate_target,
            n,
            f"{size}, offset=oldest, wall clock; messages/s {msg_rate:,.0f}{go_note}{md_note}",
        ),
        _row(
            f"ingest {case.name}: points per CPU-second",
            cpu_rate,
            "points/cpu-s",
            None,
            n,
            f"whole process (main thread + librdkafka threads), {cpu_s:.2f} CPU-s used; "
            f"main thread alone {main_rate:,.0f} points/cpu-s",
        ),
        _row(
            f"ingest {case.name}: share of raw-consume ceiling",
            _med(shares),
            "ratio",
            case.share_target,
            n,
            f"median of per-process ratios {', '.join(f'{x:.2f}' for x in shares)} (pipeline msgs/s over a bare "
            f"loop of the same reader - the batch consumer's read-ahead thread, the main thread only taking its "
            f"batches - reading the backlog in the same process and settings, "
            f"{'before and after the pipeline (mean)' if case.share_target is not None else 'after it'}: "
            f"{raw_rate:,.0f} "
            f"msgs/s wall, {raw_cpu_rate:,.0f} msgs/cpu-s); per CPU-second {_med(cpu_shares):.2f}; cores by "
            f"thread, pipeline: {_threads_note(mid['pipeline']['threads'], mid['pipeline']['wall'])}; bare "
            f"loop: {_threads_note(mid['raw']['threads'], mid['raw']['wall'])}",
        ),
        _row(
            f"ingest {case.name}: RSS per series",
            per_series,
            "bytes",
            case.mem_target,
            n,
            f"RSS growth over the backlog / series once the replay caught up (the main loop's periodic heap trim, "
            f"{trims:.0f} trims, {trim_ms:,.0f} ms in all, then the trim Instance does when a replay catches up); "
            f"{at_end:,.0f} at the last batch, before that trim (freed batches and read-ahead); whole-process RSS "
            f"{total_per_series:,.0f} B/series (peak {hwm:,.0f} MB); tank's own estimate "
            f"{tank_per_series:,.0f} B/series"
            + (f"; {ANCHOR_RSS[case.series]}" if case.array <= 1 and case.series in ANCHOR_RSS else ""),
            higher=False,
        ),
    ]
    legacy = [r for r in results if "pipeline_confluent" in r]
    if legacy:
        old_share = [_share({"pipeline": r["pipeline"], "raw": r["raw_confluent"]}) for r in legacy]
        old_old = [_share({"pipeline": r["pipeline_confluent"], "raw": r["raw_confluent"]}) for r in legacy]
        speed = [
            (r["pipeline"]["messages"] / r["pipeline"]["wall"])
            / (r["pipeline_confluent"]["messages"] / r["pipeline_confluent"]["wall"])
            for r in legacy
        ]
        cpu_speed = [
            (r["pipeline"]["messages"] / r["pipeline"]["cpu"])
            / (r["pipeline_confluent"]["messages"] / r["pipeline_confluent"]["cpu"])
            for r in legacy
        ]
        main_speed = [
            (r["pipeline"]["messages"] / r["pipeline"]["main_cpu"])
            / (r["pipeline_confluent"]["messages"] / r["pipeline_confluent"]["main_cpu"])
            for r in legacy
        ]
        lmid = sorted(legacy, key=lambda r: r["pipeline_confluent"]["wall"])[len(legacy) // 2]
        rows += [
            _row(
                f"ingest {case.name}: share of confluent_kafka's bare consume loop",
                _med(old_share),
                "ratio",
                None,
                len(old_share),
                f"the pipeline (batch consumer) over confluent_kafka's consume()+values loop, the ceiling of the "
                f"earlier measurements, same process: per process {', '.join(f'{x:.2f}' for x in old_share)}; "
                f"the pipeline on confluent_kafka's consume() in the same processes: "
                f"{', '.join(f'{x:.2f}' for x in old_old)}",
            ),
            _row(
                f"ingest {case.name}: batch consumer / confluent_kafka consume(), pipeline msgs/s",
                _med(speed),
                "ratio",
                None,
                len(speed),
                f"the same pipeline on both readers in the same process: per process "
                f"{', '.join(f'{x:.2f}' for x in speed)}; per CPU-second (whole process) "
                f"{_med(cpu_speed):.2f}; per main-thread CPU-second {_med(main_speed):.2f}; cores by thread on "
                f"consume(): {_threads_note(lmid['pipeline_confluent']['threads'], lmid['pipeline_confluent']['wall'])}",
            ),
        ]
    if base_results:
        bshares = [_share(r) for r in base_results]
        speed = [
            (r["pipeline"]["points"] / r["pipeline"]["cpu"])
            / (b["pipeline"]["points"] / b["pipeline"]["cpu"])
            for r, b in zip(results, base_results, strict=True)
        ]
        rows += [
            _row(
                f"ingest {case.name}: share of raw-consume ceiling, baseline code",
                _med(bshares),
                "ratio",
                None,
                len(bshares),
                f"{os.environ.get('BENCH_INGEST_BASELINE_NAME') or baseline}; per process "
                f"{', '.join(f'{x:.2f}' for x in bshares)}; this tree "
                f"{_med(shares):.2f} in the same run (alternating ABBA)",
            ),
            _row(
                f"ingest {case.name}: points per CPU-second, this tree / baseline",
                _med(speed),
                "ratio",
                None,
                len(speed),
                f"whole process; pairs {', '.join(f'{x:.2f}' for x in speed)}",
            ),
        ]
    if instance:
        inst = [
            consume_in_subprocess(brokers, topic, mode="instance", raw=False)["instance"] for _ in range(n)
        ]
        irate = _med([r["points"] / r["wall"] for r in inst])
        rows.append(
            _row(
                f"ingest {case.name}: points/s, real Instance",
                irate,
                "points/s",
                None,
                len(inst),
                f"Instance.run main loop (sqlite store, no HTTP, kafka-cluster off); "
                f"{_med([r['points'] / r['cpu'] for r in inst]):,.0f} points/cpu-s",
            )
        )
    return rows


_PRODUCED: dict[str, dict] = {}


def run(quick: bool = False) -> list[dict]:
    brokers = bootstrap()
    run_id = uuid.uuid4().hex[:8]
    repeats = 3
    rows: list[dict] = []
    created: list[str] = []
    only = os.environ.get("BENCH_INGEST_CASES", "")  # e.g. "points": cases whose name contains a word
    cases = [c for c in _cases(quick) if not only or any(w in c.name for w in only.split(","))]
    try:
        for case in cases:
            topic = f"bench-ingest-{case.topic_key}-{run_id}"
            if topic not in _PRODUCED:
                _PRODUCED[topic] = produce_backlog(brokers, topic, case)
                created.append(topic)
            prod = _PRODUCED[topic]
            print(
                f"  produced {prod['messages']:,} messages for {case.name} in {prod['seconds']:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            rows += measure_case(brokers, topic, case, repeats, instance=case.series == 10_000 and not quick)
    finally:
        delete_topics(brokers, created)
        for t in created:
            _PRODUCED.pop(t, None)
    return rows


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))), flush=True)
        return
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']}: {r['value']:,.4g} {r['unit']} (target {r['target']}) - {r['note']}")


if __name__ == "__main__":
    main()
