"""`make run`: the whole idea on one machine.

Starts the test bed's Kafka (and Cassandra with STORE=cassandra), two instances as separate processes (mt1 primary,
mt2 secondary, each other's peer) on a shared store, and a fake-metrics feed; then prints the URLs, a render query
and the commands to fail over by hand. Ctrl-C stops everything it started.

Stopping: SIGINT (Ctrl-C, sent to the whole process group), SIGTERM and SIGHUP all stop the demo, its instances and
the test bed it started. The handlers are installed explicitly: a process started with SIGINT ignored (a background
job of a non-interactive shell, some IDE and make setups) would otherwise ignore Ctrl-C while its instances, which
install their own handler, stop -- leaving a demo that reports exited instances forever. The demo also ends by
itself once every instance has exited.

Environment: METRICTANK_TEST_KAFKA / METRICTANK_TEST_CASSANDRA use running servers instead of starting a test bed;
STORE (sqlite or cassandra), DEMO_DIR, DEMO_SERIES, DEMO_PORT (mt1's HTTP port, mt2 uses the next one) and
DEMO_TOPIC_PREFIX (prefix of the `mdm` and `metricpersist` topics).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

DEMO_DIR = Path(os.environ.get("DEMO_DIR", ".demo")).resolve()
SERIES = int(os.environ.get("DEMO_SERIES", "1000"))
PORT = int(os.environ.get("DEMO_PORT", "6060"))
TOPIC_PREFIX = os.environ.get("DEMO_TOPIC_PREFIX", "")
MDM_TOPIC = TOPIC_PREFIX + "mdm"
PERSIST_TOPIC = TOPIC_PREFIX + "metricpersist"
PARTITIONS = 8

SCHEMAS = """# demo: short chunks so that chunks complete (and get saved) every 2 minutes
[default]
pattern = .*
retentions = 1s:1d:2min:6,1min:7d:10min:2
"""

AGGREGATIONS = """[default]
pattern = .*
xFilesFactor = 0.5
aggregationMethod = avg,max
"""


def _config(name: str, port: int, peer_port: int, primary: bool, kafka: str, cassandra: str | None) -> str:
    store = (
        f'[store]\nbackend = "cassandra"\n\n[cassandra]\naddrs = "{cassandra}"\nkeyspace = "metrictank_demo"\n'
        if cassandra
        else f'[store]\nbackend = "sqlite"\n\n[sqlite]\npath = "{DEMO_DIR / "chunks.db"}"\n'
    )
    return f"""instance = "{name}"

[http]
listen = "127.0.0.1:{port}"

[kafka-mdm-in]
brokers = "{kafka}"
topics = "{MDM_TOPIC}"
offset = "oldest"

[kafka-cluster]
topic = "{PERSIST_TOPIC}"
offset = "oldest"
backlog-process-timeout = "30s"

[cluster]
primary-node = {"true" if primary else "false"}
warm-up-period = "10s"
peers = "http://127.0.0.1:{peer_port}"

[retention]
schemas-file = "{DEMO_DIR / "storage-schemas.conf"}"
aggregations-file = "{DEMO_DIR / "storage-aggregation.conf"}"

{store}"""


def _create_topics(kafka: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka})
    existing = admin.list_topics(timeout=10).topics
    new = [NewTopic(t, PARTITIONS, 1) for t in (MDM_TOPIC, PERSIST_TOPIC) if t not in existing]
    if new:
        for f in admin.create_topics(new).values():
            f.result(30)


def _wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up; see {DEMO_DIR}/*.log")


def _guide(store: str) -> str:
    u1, u2 = f"http://127.0.0.1:{PORT}", f"http://127.0.0.1:{PORT + 1}"
    mt = (
        "metrictank"
        if Path(sys.executable).parent.joinpath("metrictank").exists()
        else "python -m metrictank.cli"
    )
    mt = str(Path(sys.executable).parent / "metrictank") if mt == "metrictank" else mt
    return f"""
==============================================================================================
 metrictank-py demo is running ({SERIES} fake series at 1 s, store: {store}, logs in {DEMO_DIR})

 mt1 (primary)   {u1}      mt2 (secondary)   {u2}

 Look:
   {mt} cluster members --url {u1}
   {mt} node status --url {u2}
   curl -s '{u1}/render?target=some.id.of.a.metric.1&from=-5min&format=json'
   curl -s '{u1}/render?target=sumSeries(some.id.of.a.metric.*)&from=-10min'
   curl -s {u1}/metrics | grep promotion_wait

 Fail over by hand:
   {mt} node promote --url {u2}      # refused: mt1 is primary (409 and the reasons)
   {mt} node demote  --url {u1}      # drains mt1's writes, sends its persist messages
   {mt} node promote --url {u2}      # allowed once mt2's checks pass
   {mt} node status  --url {u2}

 Ctrl-C stops everything this demo started.
==============================================================================================
"""


class _Stopper:
    """SIGINT/SIGTERM/SIGHUP handler: the first signal sets `stop` and interrupts whatever the main thread waits
    for (test bed start-up, HTTP waits) with KeyboardInterrupt; later ones are ignored so that the clean-up
    (stopping the instances and the test bed) always runs to the end."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.signum: int | None = None

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self)

    def __call__(self, signum: int, _frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        self.stop.set()
        raise KeyboardInterrupt


def main() -> int:
    from metrictank.fakemetrics import Producer, SeriesSet

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "storage-schemas.conf").write_text(SCHEMAS)
    (DEMO_DIR / "storage-aggregation.conf").write_text(AGGREGATIONS)
    store = os.environ.get("STORE", "sqlite")
    bed = None
    kafka = os.environ.get("METRICTANK_TEST_KAFKA")
    cassandra = os.environ.get("METRICTANK_TEST_CASSANDRA") if store == "cassandra" else None
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    stopper = _Stopper(stop)
    stopper.install()
    try:
        if not kafka or (store == "cassandra" and not cassandra):
            from metrictank.testbed.bed import TestBed

            print(
                "starting the test bed (first run downloads Kafka and Cassandra from Maven Central) ...",
                flush=True,
            )
            bed = TestBed(DEMO_DIR / "testbed")
            ep = bed.start(kafka=True, cassandra=store == "cassandra")
            kafka = ep.kafka
            cassandra = ep.cassandra if store == "cassandra" else None
        _create_topics(kafka)
        for name, port, peer, primary in (("mt1", PORT, PORT + 1, True), ("mt2", PORT + 1, PORT, False)):
            cfg = DEMO_DIR / f"{name}.toml"
            cfg.write_text(_config(name, port, peer, primary, kafka, cassandra))
            log = open(DEMO_DIR / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "metrictank.cli", "run", "--config", str(cfg)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in (PORT, PORT + 1):
            _wait_http(f"http://127.0.0.1:{port}")
        ss = SeriesSet.make(SERIES, PARTITIONS, interval=1)
        producer = Producer(kafka, MDM_TOPIC)
        feeder = threading.Thread(target=lambda: [None for _ in producer.feed(ss, stop.is_set)], daemon=True)
        feeder.start()
        print(_guide(store), flush=True)
        reported: set[int] = set()
        while not stop.is_set():
            for i, p in enumerate(procs):
                if p.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"an instance exited with {p.returncode}; see {DEMO_DIR}/*.log", flush=True)
            if len(reported) == len(procs):
                print("every instance has exited", flush=True)
                break
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        stopper.signum = stopper.signum or -1  # from here on, signals must not interrupt the clean-up
        stop.set()
        print("\nstopping ...", flush=True)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if bed is not None:
            bed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
