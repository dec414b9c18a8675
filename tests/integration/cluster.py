"""Test harness for multi-process cluster tests: instance processes, a simulated-time producer, Cassandra checks.

Data is produced in *simulated time*: points carry timestamps from two hours ago onwards, one step per second of
data, at many steps per wall-clock second, with the Kafka message timestamp equal to the point's. Chunks of one
minute therefore complete every fraction of a second, so a failover in the middle of a chunk, many completed chunks
and their persist messages all happen within a test's few seconds, on the same code paths as real time.
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
import numpy as np

from metrictank.chunk import decode_chunk
from metrictank.fakemetrics import Producer, SeriesSet, values_for
from metrictank.schema import row_key, table_for_ttl

from .helpers import free_port, write_config

SCHEMAS = """[default]
pattern = .*
retentions = 1s:1d:1min:6,1min:2d:10min:2
"""
AGGREGATIONS = """[default]
pattern = .*
xFilesFactor = 0.5
aggregationMethod = avg,max
"""
RAW_TTL = 86400
SPAN = 60


class InstanceProc:
    """A `metrictank run` child process with its own config."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        sections: dict[str, dict],
        token: str = "",
        port: int | None = None,
        fragment: str | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "schemas.conf").write_text(SCHEMAS)
        (tmp / "aggregations.conf").write_text(AGGREGATIONS)
        base = {
            "http": {"listen": f"127.0.0.1:{self.port}", "admin-token": token},
            "retention": {
                "schemas-file": str(tmp / "schemas.conf"),
                "aggregations-file": str(tmp / "aggregations.conf"),
            },
            "log": {"level": "info"},
        }
        for k, v in sections.items():
            base.setdefault(k, {}).update(v)
        self.cfg = write_config(tmp / f"{name}.toml", base, {"instance": name})
        self.configs = [str(self.cfg)]
        if fragment is not None:  # layered over the base, as `run --config base --config fragment` does
            frag = tmp / f"{name}.fragment.toml"
            frag.write_text(fragment)
            self.configs.append(str(frag))
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> InstanceProc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metrictank.cli",
                "run",
                *(a for c in self.configs for a in ("--config", c)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if wait:
            self.wait_consuming()
        return self

    def node(self) -> dict:
        return httpx.get(f"{self.url}/node", timeout=5).json()

    def wait_consuming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.node().get("persistBacklogDone"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not start:\n{self.tail()}")

    def post_node(self, token: str | None = None, **fields) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(
            f"{self.url}/node",
            data={k: str(v).lower() for k, v in fields.items()},
            headers=headers,
            timeout=120,
        )

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class SimProducer:
    """Produces one point per series per simulated second, `rate` simulated seconds per wall second."""

    def __init__(
        self, kafka: str, topic: str, ss: SeriesSet, t_start: int, rate: float = 40.0, idempotent: bool = True
    ) -> None:
        self.p = Producer(kafka, topic, idempotent=idempotent)
        self.ss = ss
        self.t = t_start  # next timestamp to produce
        self.t_start = t_start
        self.rate = rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.p.send_metricdata(ss, t_start)
        self.p.flush(10)
        self.t += 1

    def _one(self) -> None:
        # like real producers, resend the full MetricData every 30 s so that a node joining late learns the series
        if (self.t - self.t_start) % 30 == 0:
            self.p.send_metricdata(self.ss, self.t)
        else:
            self.p.send_points(self.ss, self.t, message_ts_ms=self.t * 1000)
        self.t += 1

    def step_to(self, t_end: int) -> None:
        """Produce synchronously up to (excluding) t_end."""
        while self.t < t_end:
            self._one()
        self.p.flush(30)

    def run_background(self) -> None:
        def loop():
            t0 = time.monotonic()
            produced = 0
            while not self._stop.is_set():
                due = int((time.monotonic() - t0) * self.rate)
                while produced < due and not self._stop.is_set():
                    self._one()
                    produced += 1
                self.p.flush(5)
                time.sleep(0.02)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop; returns the first timestamp not produced."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.p.flush(30)
        return self.t


def sim_start(now: float | None = None) -> int:
    now = int(time.time() if now is None else now)
    return now - now % 3600 - 2 * 3600


def expected_chunk(
    ss: SeriesSet, i: int, t0: int, first_ts: int, last_ts: int
) -> tuple[np.ndarray, np.ndarray]:
    """The points series i has in chunk t0, given it was produced for every second in [first_ts, last_ts]."""
    lo, hi = max(t0, first_ts), min(t0 + SPAN - 1, last_ts)
    ts = np.arange(lo, hi + 1, dtype=np.int64)
    return ts, values_for("walk", np.full(len(ts), i), ts)


def read_chunks(
    session, keyspace: str, amkey: str, t0s: list[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    table, _ = table_for_ttl(RAW_TTL)
    out = {}
    for t0 in t0s:
        rows = list(
            session.execute(
                f"SELECT ts, data FROM {keyspace}.{table} WHERE key = %s AND ts = %s",
                (row_key(amkey, t0), t0),
            )
        )
        if rows:
            ts, vals = decode_chunk(t0, rows[0].data)
            out[t0] = (np.asarray(ts, np.int64), np.asarray(vals))
    return out


def wait_until(cond, timeout: float, what: str, proc: InstanceProc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    state = ""
    if proc is not None:
        try:
            n = proc.node()
            state = "\nnode: " + str(
                {
                    k: n.get(k)
                    for k in (
                        "primary",
                        "state",
                        "pendingWrites",
                        "savedMarks",
                        "chunksQueued",
                        "chunksSkippedPartial",
                        "failover",
                    )
                }
            )
        except Exception as e:  # noqa: BLE001 - diagnostics only
            state = f"\nnode: unavailable ({e})"
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{proc.tail()}{state}" if proc else ""))
