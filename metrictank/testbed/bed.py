"""The test bed: Kafka and/or Cassandra started together, tracked in a JSON state file, stopped by PID.

A bed lives in one directory. `start()` is idempotent per directory (healthy servers recorded in the
state file are reused), so `up` can be repeated and a later `down` from another process finds the PIDs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .cassandra import CassandraServer, cassandra_healthy
from .kafka import KafkaServer, kafka_healthy
from .process import free_ports, parse_hostport, pid_alive, stop_pid
from .server import Server, ServerFailed, ServerState

__all__ = ["Endpoints", "TestBed", "ServerFailed", "default_dir", "parse_hostport", "private_dir"]

STATE_FILE = "state.json"
SERVER_CLASSES: dict[str, type[Server]] = {"cassandra": CassandraServer, "kafka": KafkaServer}
START_ORDER = ("cassandra", "kafka")  # slowest first; Kafka's storage format then overlaps its boot


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_dir() -> Path:
    """`<repo>/.testbed` (gitignored) when running from a checkout, else a directory under /tmp."""
    env = os.environ.get("METRICTANK_TESTBED_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / ".testbed"
    return Path("/tmp") / f"metrictank-testbed-{os.getuid()}"


def private_dir(base: Path, prefix: str) -> Path:
    """A bed directory owned by this process, so concurrent test sessions never share servers.

    Leftovers of dead owners are removed on the way, stopping any JVM of theirs that somehow survived:
    with its owner gone, nobody else would.
    """
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        m = re.fullmatch(r"[a-z]+-(\d+)", old.name)
        if m and (old / ".lock").exists() and not pid_alive(int(m.group(1))):
            TestBed(old, log=lambda _msg: None).stop(timeout=5, remove_dir=True)
    return base / f"{prefix}-{os.getpid()}"


@dataclass(frozen=True)
class Endpoints:
    """Where the servers answer; `None` for a server that is not part of this bed."""

    kafka: str | None = None
    cassandra: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    ready_seconds: dict[str, float] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The variables `run` and `env` hand to commands (tests read the METRICTANK_TEST_* ones)."""
        out: dict[str, str] = {}
        if self.kafka:
            out.update(KAFKA_BOOTSTRAP=self.kafka, METRICTANK_TEST_KAFKA=self.kafka)
            if self.versions.get("kafka"):
                out["METRICTANK_TEST_KAFKA_VERSION"] = self.versions["kafka"]
        if self.cassandra:
            out.update(CASSANDRA_HOSTS=self.cassandra, METRICTANK_TEST_CASSANDRA=self.cassandra)
            if self.versions.get("cassandra"):
                out["METRICTANK_TEST_CASSANDRA_VERSION"] = self.versions["cassandra"]
        return out


class TestBed:
    """Start/stop servers in `dir`. Use as a context manager to stop on exit, whatever happens."""

    __test__ = False  # not a pytest test class, even when imported into a test module

    def __init__(
        self, dir: Path | str | None = None, *, detached: bool = False, log: Callable[[str], None] = _stderr
    ) -> None:
        self.dir = Path(dir).expanduser().resolve() if dir else default_dir()
        self.detached = detached  # True for `up`: servers must outlive this process
        self.log = log
        self._started: dict[str, Server] = {}
        self.failures: dict[str, str] = {}  # name -> why, from the last start()

    # -- state file ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def load_state(self) -> dict[str, ServerState]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: ServerState.from_json(v) for k, v in data.get("servers", {}).items()}

    def _save_state(self, servers: dict[str, ServerState]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        payload = {
            "dir": str(self.dir),
            "owner_pid": None if self.detached else os.getpid(),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "servers": {k: v.to_json() for k, v in servers.items()},
        }
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop of one directory across processes (two `up`s at once, `down` during `up`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- queries ------------------------------------------------------------------------------------
    def running(self) -> dict[str, ServerState]:
        """Servers whose JVM is alive and that were seen ready (ready_seconds is set once they were)."""
        return {k: s for k, s in self.load_state().items() if s.ready_seconds > 0 and s.alive()}

    def endpoints(self) -> Endpoints:
        servers = self.running()
        return Endpoints(
            kafka=servers["kafka"].address if "kafka" in servers else None,
            cassandra=servers["cassandra"].address if "cassandra" in servers else None,
            versions={k: s.version for k, s in servers.items()},
            ready_seconds={k: s.ready_seconds for k, s in servers.items()},
        )

    def status(self) -> dict[str, dict]:
        """Per recorded server: running (PID alive) and healthy (answers a client request)."""
        out = {}
        for name, s in self.load_state().items():
            alive = s.alive()
            if not alive:
                healthy = False
            elif name == "kafka":
                healthy = kafka_healthy(s.address)
            else:
                healthy = cassandra_healthy(s.address) is not None
            out[name] = {"address": s.address, "pid": s.pid, "running": alive, "healthy": healthy}
            out[name].update(version=s.version, log=s.log, ready_seconds=s.ready_seconds)
        return out

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(
        self, kafka: bool = True, cassandra: bool = True, timeout: float = 240.0, partial_ok: bool = False
    ) -> Endpoints:
        """Start (or reuse) the requested servers; they are ready to serve clients when this returns.

        On failure every server this call started is stopped again and ServerFailed raised, unless
        `partial_ok`, where the servers that did come up are kept and the others listed in `failures`.
        """
        wanted = [n for n in START_ORDER if {"kafka": kafka, "cassandra": cassandra}[n]]
        self.failures = {}
        with self._locked():
            state = self.load_state()
            reused = {}
            for name in wanted:
                s = state.get(name)
                if s and s.ready_seconds > 0 and s.alive() and self._healthy(s):
                    reused[name] = s
                    self.log(f"testbed: {name} already up at {s.address} (pid {s.pid})")
                elif s:
                    stop_pid(s.pid, s.marker)  # stale or sick: replace it
                    state.pop(name)
            to_start = [n for n in wanted if n not in reused]
            if to_start:
                self._start_servers(to_start, timeout, partial_ok, state)
        return self.endpoints()

    def _healthy(self, s: ServerState) -> bool:
        return kafka_healthy(s.address) if s.name == "kafka" else cassandra_healthy(s.address) is not None

    def _start_servers(
        self, names: list[str], timeout: float, partial_ok: bool, state: dict[str, ServerState]
    ) -> None:
        """Launch, record PIDs at once (so `down` finds them even if we die), wait, record readiness."""
        servers = [SERVER_CLASSES[n](self.dir) for n in names]
        pool = ThreadPoolExecutor(len(servers))
        try:
            for srv in servers:
                srv.resolve(log=self.log)
            ports = free_ports(sum(s.ports_needed() for s in servers))
            for srv in servers:
                srv.assign_ports(ports[: srv.ports_needed()])
                del ports[: srv.ports_needed()]
                srv.prepare()
            t0 = time.monotonic()
            deadline = t0 + timeout
            # Launch from this thread (the JVMs' parent-death signal is tied to the launching thread),
            # then wait for readiness concurrently.
            for srv in servers:
                self.log(f"testbed: starting {srv.name} on {srv.address} (log {srv.log_path})")
                self._started[srv.name] = srv
                srv.launch(tie_to_parent=not self.detached)
                state[srv.name] = srv.state(ready_seconds=0.0)
                self._save_state(state)
            futures = {srv.name: pool.submit(srv.wait_ready, deadline) for srv in servers}
            for srv in servers:
                try:
                    seconds = futures[srv.name].result()
                except ServerFailed as e:
                    self.failures[srv.name] = str(e)
                    continue
                state[srv.name] = srv.state(seconds)
                self.log(
                    f"testbed: {srv.name} {srv.version} ready at {srv.address} in {seconds:.1f}s (pid {srv.pid})"
                )
            if self.failures and (not partial_ok or len(self.failures) == len(servers)):
                raise ServerFailed("; ".join(self.failures.values()))
            for srv in servers:
                if srv.name in self.failures:
                    self._forget(srv, state)
                srv.close_clients()
            self.log(f"testbed: ready in {time.monotonic() - t0:.1f}s")
        except BaseException:
            for srv in servers:  # a killed JVM also ends its waiting thread
                self._forget(srv, state)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._save_state(state)

    def _forget(self, srv: Server, state: dict[str, ServerState]) -> None:
        srv.kill(timeout=5)
        self._started.pop(srv.name, None)
        state.pop(srv.name, None)

    def stop(self, timeout: float = 15.0, remove_dir: bool = False) -> dict[str, str]:
        """Stop every server recorded in this directory (ours or another process's `up`)."""
        with self._locked():
            state = self.load_state()
            jobs: dict[str, Callable[[], str]] = {}
            for name, s in state.items():
                srv = self._started.pop(name, None)
                if srv is not None and srv.pid == s.pid:
                    jobs[name] = partial(srv.kill, timeout)
                else:
                    jobs[name] = partial(stop_pid, s.pid, s.marker, timeout)
            for srv in self._started.values():  # started but never recorded (failed start)
                jobs[srv.name] = partial(srv.kill, timeout)
            self._started.clear()
            # In parallel: each server's graceful shutdown takes seconds.
            with ThreadPoolExecutor(max(1, len(jobs))) as pool:
                futures = {name: pool.submit(job) for name, job in jobs.items()}
                results = {name: f.result() for name, f in futures.items()}
            self._save_state({})
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return results

    def __enter__(self) -> TestBed:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
