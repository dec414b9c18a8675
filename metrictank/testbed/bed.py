"""The test bed: Kafka and/or Cassandra started together, tracked in a JSON state file, stopped by PID.

A bed lives in one directory. `start()` is idempotent per directory (healthy servers recorded in the
state file are reused), so `up` can be repeated and a later `down` from another process finds the PIDs.

One node of each by default. `kafka_nodes`/`cassandra_nodes` > 1 give a multi-node bed as production runs
it: node i on loopback address 127.0.0.i (Linux routes all of 127/8 to `lo` without configuration), every
node of a kind on the same ports, named "kafka-1", "kafka-2", ... in the state file and the endpoints.
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .cassandra import CassandraServer, cassandra_healthy
from .kafka import KafkaServer, kafka_healthy, random_cluster_id
from .process import free_ports_on, parse_hostport, pid_alive, stop_pid
from .server import HOST, Server, ServerFailed, ServerState

__all__ = [
    "Endpoints",
    "TestBed",
    "ServerFailed",
    "default_dir",
    "node_host",
    "node_names",
    "parse_hostport",
    "private_dir",
]

STATE_FILE = "state.json"
SERVER_CLASSES: dict[str, type[Server]] = {"cassandra": CassandraServer, "kafka": KafkaServer}
START_ORDER = ("cassandra", "kafka")  # slowest first; Kafka's storage format then overlaps its boot


def node_host(i: int, nodes: int) -> str:
    """Address of node i (1-based) of a kind with `nodes` nodes: 127.0.0.1 alone, 127.0.0.i in a cluster."""
    return HOST if nodes == 1 else f"127.0.0.{i}"


def node_names(kind: str, nodes: int) -> list[str]:
    """ "kafka" for a single node (the state file and directories of the default bed are unchanged), else
    "kafka-1" ... "kafka-N"."""
    return [kind] if nodes == 1 else [f"{kind}-{i}" for i in range(1, nodes + 1)]


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


def node_order(name: str) -> tuple[str, int]:
    kind, _, i = name.partition("-")
    return kind, int(i) if i.isdigit() else 0


def _wait_ready(srv: Server, deadline: float) -> tuple[float, float]:
    """(seconds from launch to ready, the monotonic time it was ready)."""
    return srv.wait_ready(deadline), time.monotonic()


@dataclass(frozen=True)
class Endpoints:
    """Where the servers answer; `None` for a server that is not part of this bed."""

    kafka: str | None = None  # "host:port", or "h1:p,h2:p,h3:p" for a multi-node bed
    cassandra: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    ready_seconds: dict[str, float] = field(default_factory=dict)  # per kind, and per node of a cluster
    nodes: dict[str, str] = field(default_factory=dict)  # server name -> address

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
        servers = dict(sorted(self.running().items(), key=lambda kv: node_order(kv[0])))
        by_kind: dict[str, list[ServerState]] = {}
        for s in servers.values():
            by_kind.setdefault(s.kind, []).append(s)
        ready = {k: s.ready_seconds for k, s in servers.items()}
        for kind, ss in by_kind.items():  # a ring starts node after node: its time is the last node's
            ready[kind] = max(s.extra.get("bed_ready_seconds", s.ready_seconds) for s in ss)
        return Endpoints(
            kafka=",".join(s.address for s in by_kind["kafka"]) if "kafka" in by_kind else None,
            cassandra=",".join(s.address for s in by_kind["cassandra"]) if "cassandra" in by_kind else None,
            versions={kind: ss[0].version for kind, ss in by_kind.items()},
            ready_seconds=ready,
            nodes={k: s.address for k, s in servers.items()},
        )

    def status(self) -> dict[str, dict]:
        """Per recorded server: running (PID alive) and healthy (answers a client request)."""
        out = {}
        for name, s in self.load_state().items():
            alive = s.alive()
            healthy = alive and self._healthy(s)
            out[name] = {"address": s.address, "pid": s.pid, "running": alive, "healthy": healthy}
            out[name].update(version=s.version, log=s.log, ready_seconds=s.ready_seconds)
        return out

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(
        self,
        kafka: bool = True,
        cassandra: bool = True,
        timeout: float = 240.0,
        partial_ok: bool = False,
        *,
        kafka_nodes: int = 1,
        cassandra_nodes: int = 1,
    ) -> Endpoints:
        """Start (or reuse) the requested servers; they are ready to serve clients when this returns.

        On failure every server this call started is stopped again and ServerFailed raised, unless
        `partial_ok`, where the servers that did come up are kept and the others listed in `failures`
        (by kind: "kafka", "cassandra"). A kind is reused only when every one of its nodes is healthy and
        the recorded layout is the one asked for; otherwise all its nodes are replaced.
        """
        nodes = {"kafka": kafka_nodes, "cassandra": cassandra_nodes}
        if min(nodes.values()) < 1:
            raise ValueError(f"node counts must be >= 1: {nodes}")
        wanted = [k for k in START_ORDER if {"kafka": kafka, "cassandra": cassandra}[k]]
        self.failures = {}
        with self._locked():
            state = self.load_state()
            to_start = []
            for kind in wanted:
                names = node_names(kind, nodes[kind])
                recorded = {n: s for n, s in state.items() if s.kind == kind}
                if set(recorded) == set(names) and all(
                    s.ready_seconds > 0 and s.alive() and self._healthy(s) for s in recorded.values()
                ):
                    for s in recorded.values():
                        self.log(f"testbed: {s.name} already up at {s.address} (pid {s.pid})")
                    continue
                for n, s in recorded.items():  # stale, sick or another layout: replace them all
                    stop_pid(s.pid, s.marker)
                    state.pop(n)
                to_start.append(kind)
            if to_start:
                self._start_servers(to_start, nodes, timeout, partial_ok, state)
        return self.endpoints()

    def _healthy(self, s: ServerState) -> bool:
        return kafka_healthy(s.address) if s.kind == "kafka" else cassandra_healthy(s.address) is not None

    def _plan(self, kind: str, nodes: int) -> list[Server]:
        """The Server objects of one kind: a single node, or a cluster's nodes (seed/first node first)."""
        names = node_names(kind, nodes)
        hosts = [node_host(i, nodes) for i in range(1, nodes + 1)]
        if nodes == 1:
            return [SERVER_CLASSES[kind](self.dir)]
        if kind == "kafka":
            cid = random_cluster_id()
            voters = list(enumerate(hosts, start=1))
            return [
                KafkaServer(self.dir, host=h, name=n, node_id=i, voters=voters, cluster_id=cid)
                for (i, h), n in zip(voters, names, strict=True)
            ]
        return [
            CassandraServer(self.dir, host=h, name=n, ring=hosts, index=i)
            for i, (h, n) in enumerate(zip(hosts, names, strict=True))
        ]

    def _start_servers(
        self,
        kinds: list[str],
        nodes: dict[str, int],
        timeout: float,
        partial_ok: bool,
        state: dict[str, ServerState],
    ) -> None:
        """Launch, record PIDs at once (so `down` finds them even if we die), wait, record readiness.

        Kafka nodes all start at once (a controller quorum forms only once a majority runs); Cassandra nodes
        one after the other, each launched once the one before is ready (two nodes joining a ring at the same
        time is what Cassandra forbids)."""
        groups = {kind: self._plan(kind, nodes[kind]) for kind in kinds}
        servers = [srv for group in groups.values() for srv in group]
        pool = ThreadPoolExecutor(len(servers))
        futures: dict[str, Future] = {}
        try:
            for group in groups.values():
                resolved = group[0].resolve(log=self.log)
                hosts = [srv.host for srv in group]
                try:
                    ports = free_ports_on(group[0].ports_needed(), hosts)
                except OSError as e:
                    raise ServerFailed(f"cannot bind ports on {', '.join(hosts)}: {e}") from e
                for srv in group:
                    srv.resolved = resolved
                    srv.assign_ports(list(ports))
                    srv.prepare()
            t0 = time.monotonic()
            deadline = t0 + timeout

            # Launch from this thread (the JVMs' parent-death signal is tied to the launching thread),
            # then wait for readiness concurrently.
            def launch(srv: Server) -> None:
                self.log(f"testbed: starting {srv.name} on {srv.address} (log {srv.log_path})")
                self._started[srv.name] = srv
                srv.launch(tie_to_parent=not self.detached)
                state[srv.name] = srv.state(ready_seconds=0.0)
                self._save_state(state)
                futures[srv.name] = pool.submit(_wait_ready, srv, deadline)

            for group in groups.values():
                for srv in group if group[0].kind == "kafka" else group[:1]:
                    launch(srv)
            for group in groups.values():
                if group[0].kind != "cassandra":
                    continue
                for i in range(1, len(group)):
                    try:
                        futures[group[i - 1].name].result()
                    except ServerFailed:
                        break  # reported below
                    group[i].expect_peers = [srv.host for srv in group[:i]]
                    launch(group[i])
            for kind, group in groups.items():
                for srv in group:
                    if srv.name not in futures:
                        self.failures.setdefault(kind, f"{srv.name} not started: an earlier node failed")
                        continue
                    try:
                        seconds, ready_at = futures[srv.name].result()
                    except ServerFailed as e:
                        self.failures[kind] = str(e)
                        continue
                    state[srv.name] = srv.state(seconds)
                    if len(group) > 1:
                        state[srv.name].extra["bed_ready_seconds"] = round(ready_at - t0, 2)
                    self.log(
                        f"testbed: {srv.name} {srv.version} ready at {srv.address} in {seconds:.1f}s "
                        f"(pid {srv.pid})"
                    )
            if self.failures and (not partial_ok or len(self.failures) == len(groups)):
                raise ServerFailed("; ".join(self.failures.values()))
            for srv in servers:
                if srv.kind in self.failures:
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
