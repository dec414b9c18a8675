"""Pytest fixtures for tests against real Kafka and Cassandra.

Where the servers come from, in order: the METRICTANK_TEST_KAFKA / METRICTANK_TEST_CASSANDRA environment
variables (what `python -m metrictank.testbed run` sets); testcontainers when a Docker engine answers;
else a private local JVM bed, started on first use and stopped at session end. When none of these works
the fixtures raise, so the tests ERROR: an integration test must never pass by being skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .bed import Endpoints, TestBed, default_dir, private_dir
from .cassandra import CassandraServer
from .process import spawn

log = logging.getLogger("metrictank.testbed")

ENV = {"kafka": "METRICTANK_TEST_KAFKA", "cassandra": "METRICTANK_TEST_CASSANDRA"}
ENV_VERSION = {"kafka": "METRICTANK_TEST_KAFKA_VERSION", "cassandra": "METRICTANK_TEST_CASSANDRA_VERSION"}
PRIVATE_FIXTURES = {"private_kafka", "private_cassandra", "private_bed", "private_cluster_bed"}
MULTINODE_FIXTURES = {"private_cluster_bed"}
ROOT_FIXTURE = {"kafka": "kafka_bootstrap", "cassandra": "cassandra_hosts"}

# Docker path (not exercised on machines without an engine). cp-kafka 8.0 is Apache Kafka 4.0.
DOCKER_KAFKA_IMAGE = ("confluentinc/cp-kafka:8.0.0", "4.0.0")
DOCKER_CASSANDRA_IMAGE = "cassandra:5.0"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


class ServerProvider:
    """Hands out server addresses for the session; starts things lazily and only once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.needed: set[str] = set()  # from the selected tests, so one start covers both servers
        self.addresses: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.ready_seconds: dict[str, float] = {}
        self.source: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._bed: TestBed | None = None
        self._containers: list = []
        for name, var in ENV.items():
            if os.environ.get(var):
                self.addresses[name] = os.environ[var]
                self.source[name] = f"${var}"
                if os.environ.get(ENV_VERSION[name]):
                    self.versions[name] = os.environ[ENV_VERSION[name]]

    def address(self, name: str) -> str:
        if name in self.addresses:
            return self.addresses[name]
        if name in self.errors:
            raise RuntimeError(self.errors[name])
        todo = sorted((self.needed | {name}) - set(self.addresses))
        try:
            if _docker_answers():
                self._start_docker(todo)
                for n in todo:
                    self._say(f"testbed: {self.describe(n)}")
            else:
                self._start_local(todo)  # the bed reports its own progress through _say
        except Exception as e:  # Ctrl-C still aborts the session (the bed stops what it started)
            msg = (
                f"metrictank test bed: could not provide {', '.join(todo)}: {type(e).__name__}: {e}\n"
                f"Set {ENV['kafka']}/{ENV['cassandra']} to running servers, or check Java 17 + Maven."
            )
            for n in todo:
                self.errors[n] = msg
            raise RuntimeError(msg) from e
        if name in self.errors:
            raise RuntimeError(self.errors[name])
        return self.addresses[name]

    def _start_local(self, names: list[str]) -> None:
        """One bed for the session; a server that fails only fails the tests that need it."""
        if self._bed is None:
            self._bed = TestBed(private_dir(default_dir(), "pytest"), log=self._say)
        ep: Endpoints = self._bed.start(
            kafka="kafka" in names, cassandra="cassandra" in names, partial_ok=True
        )
        for n in names:
            if n in self._bed.failures:
                self.errors[n] = f"metrictank test bed: {n} did not start: {self._bed.failures[n]}"
                continue
            self.addresses[n] = getattr(ep, n)
            self.versions[n] = ep.versions.get(n, "")
            self.ready_seconds[n] = ep.ready_seconds.get(n, 0.0)
            self.source[n] = f"local JVM bed in {self._bed.dir}"

    def _start_docker(self, names: list[str]) -> None:
        if "kafka" in names:
            from testcontainers.community.kafka import KafkaContainer

            image, version = DOCKER_KAFKA_IMAGE
            c = KafkaContainer(image).with_kraft().start()
            self._containers.append(c)
            self.addresses["kafka"] = c.get_bootstrap_server()
            self.versions["kafka"] = version
            self.source["kafka"] = f"testcontainers {image}"
        if "cassandra" in names:
            from testcontainers.community.cassandra import CassandraContainer

            c = CassandraContainer(DOCKER_CASSANDRA_IMAGE).start()
            self._containers.append(c)
            host, port = c.get_contact_points()[0]
            self.addresses["cassandra"] = f"{host}:{port}"
            self.source["cassandra"] = f"testcontainers {DOCKER_CASSANDRA_IMAGE}"

    def _say(self, msg: str) -> None:
        """Progress lines while a test waits for the bed (can take a while): shown live, not captured."""
        log.info(msg)
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None or self.config.get_verbosity() < 0:
            return
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            tr.ensure_newline()
            tr.write_line(msg)

    def describe(self, name: str) -> str:
        ready = f", ready in {self.ready_seconds[name]:.1f}s" if self.ready_seconds.get(name) else ""
        version = self.versions.get(name) or "version unknown"
        return f"{name} {version} at {self.addresses[name]} ({self.source[name]}{ready})"

    def close(self) -> None:
        if self._bed is not None:
            self._bed.stop(remove_dir=not self.errors)  # keep the logs the error messages point to
            self._bed = None
        for c in self._containers:
            with contextlib.suppress(Exception):
                c.stop()
        self._containers.clear()


_PROVIDER = pytest.StashKey[ServerProvider]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the real Kafka and Cassandra of the test bed")
    config.addinivalue_line("markers", "multinode: needs a multi-node bed (3 brokers, 3 Cassandra nodes)")
    config.stash[_PROVIDER] = ServerProvider(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    provider = config.stash.get(_PROVIDER, None)
    if provider is not None:
        provider.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    provider = config.stash[_PROVIDER]
    lines = [f"testbed: {provider.describe(n)}" for n in provider.addresses]
    missing = [n for n in ENV if n not in provider.addresses]
    if missing:
        lines.append(
            f"testbed: {', '.join(missing)} started on first use (docker if it answers, else local JVMs)"
        )
    return lines


def _servers_used(item: pytest.Item) -> list[str]:
    names = getattr(item, "fixturenames", ())
    return [server for server, fx in ROOT_FIXTURE.items() if fx in names]


@pytest.hookimpl(tryfirst=True)  # before -m deselection, so `-m "not integration"` sees the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _servers_used(item) or PRIVATE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
        if MULTINODE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.multinode)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    provider = config.stash[_PROVIDER]
    if provider.addresses:
        terminalreporter.section("metrictank test bed", sep="-")
        for n in provider.addresses:
            terminalreporter.write_line(provider.describe(n))


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _testbed(request: pytest.FixtureRequest) -> Iterator[ServerProvider]:
    provider = request.config.stash[_PROVIDER]
    # The selected tests (after -k/-m) tell which servers to start together in one go.
    for item in request.session.items:
        provider.needed.update(_servers_used(item))
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(_testbed: ServerProvider) -> str:
    """Kafka bootstrap address "host:port" (single broker, auto topic creation on, 8 default partitions)."""
    return _testbed.address("kafka")


@pytest.fixture(scope="session")
def cassandra_hosts(_testbed: ServerProvider) -> str:
    """Cassandra CQL contact point "host:port" (single node)."""
    return _testbed.address("cassandra")


@pytest.fixture(scope="session")
def testbed_versions(_testbed: ServerProvider) -> dict[str, str]:
    """Server versions known for the session ({"kafka": "4.3.1", ...}); may lack servers not started."""
    return dict(_testbed.versions)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def new_topic(kafka_admin) -> Iterator[Callable[..., str]]:
    """Factory: `new_topic(partitions=8, name=None) -> name`; the topic exists with leaders when it returns."""
    from confluent_kafka.admin import NewTopic

    created: list[str] = []

    def make(partitions: int = 8, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        futures = kafka_admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=30)
        created.append(name)
        deadline = time.monotonic() + 30
        while True:
            md = kafka_admin.list_topics(timeout=5).topics.get(name)
            if (
                md is not None
                and md.error is None
                and len(md.partitions) == partitions
                and all(p.leader >= 0 for p in md.partitions.values())
            ):
                return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not ready with {partitions} partitions after 30s")
            time.sleep(0.1)

    yield make
    if created:
        with contextlib.suppress(Exception):
            for f in kafka_admin.delete_topics(created, operation_timeout=10).values():
                f.result(timeout=15)


@pytest.fixture(scope="session")
def cassandra_session(cassandra_hosts: str):
    """A cassandra-driver Session on the bed (no keyspace set); generous timeout for 2-core machines."""
    from .cassandra import connect

    cluster, session = connect(cassandra_hosts, timeout=30, request_timeout=60)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def new_keyspace(cassandra_session) -> Iterator[Callable[..., str]]:
    """Factory: `new_keyspace(name=None) -> name`, a fresh SimpleStrategy RF 1 keyspace, dropped at the end."""
    created: list[str] = []

    def make(name: str | None = None) -> str:
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        cassandra_session.execute(
            f"CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(Exception):
            cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}")


class PrivateServers:
    """Servers of a bed of their own, for tests that freeze or restart them (never the shared bed's servers,
    which other tests and other test processes use at the same time).

    With `kafka_nodes`/`cassandra_nodes` > 1 a multi-node bed: `kafka`/`cassandra` are then comma-separated
    lists of every node, and the methods below take a node's name ("kafka-2", "cassandra-3"; see `names`)."""

    def __init__(
        self,
        base: Path,
        kafka: bool,
        cassandra: bool,
        kafka_nodes: int = 1,
        cassandra_nodes: int = 1,
        timeout: float = 240.0,
    ) -> None:
        self.bed = TestBed(private_dir(base, "faults"), log=lambda m: log.info(m))
        t0 = time.monotonic()
        try:
            self.endpoints = self.bed.start(
                kafka=kafka,
                cassandra=cassandra,
                kafka_nodes=kafka_nodes,
                cassandra_nodes=cassandra_nodes,
                timeout=timeout,
            )
        except BaseException:
            self.bed.stop(timeout=5)  # logs kept: the error names them
            raise
        self.start_seconds = round(time.monotonic() - t0, 2)  # the whole bed, as the test waited for it
        self.kafka = self.endpoints.kafka
        self.cassandra = self.endpoints.cassandra
        self.kafka_nodes = kafka_nodes

    def names(self, kind: str) -> list[str]:
        """The node names of one kind, in order ("kafka" alone, or "kafka-1", "kafka-2", ...)."""
        return [n for n in self.endpoints.nodes if n.partition("-")[0] == kind]

    def address(self, name: str) -> str:
        return self.endpoints.nodes[name]

    def pid(self, name: str) -> int:
        return self.bed.running()[name].pid

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a hung server, a long GC pause)."""
        os.kill(self.pid(name), signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def restart(self, name: str, timeout: float = 240.0) -> float:
        """Stop the server (SIGTERM, SIGKILL after 30 s) and start it again on the SAME data directory, port
        and configuration: a broker or database that goes away and comes back with its data. Returns the
        seconds until it answered again. (TestBed.start always begins from a fresh directory, so this relaunches
        the Server object without `prepare`/`before_launch`, which would wipe or re-format its storage.)"""
        srv = self.bed._started[name]
        with contextlib.suppress(Exception):
            self.thaw(name)
        srv.kill(timeout=30)
        if isinstance(srv, CassandraServer) and srv.clustered:  # ready once it sees the ring NORMAL again
            srv.expect_peers = [h for h in srv.ring if h != srv.host]
        srv.launched_at = time.monotonic()
        srv.proc = spawn(srv.command(), srv.log_path, srv.dir, tie_to_parent=True)
        state = self.bed.load_state()
        state[name] = srv.state(ready_seconds=0.0)
        self.bed._save_state(state)  # the new PID at once, so the bed's stop finds it whatever happens
        seconds = srv.wait_ready(time.monotonic() + timeout)
        srv.close_clients()
        state[name] = srv.state(seconds)
        self.bed._save_state(state)
        return seconds

    def stop_server(self, name: str) -> None:
        """Stop the server (for a test that keeps it down a while before `start_server`)."""
        srv = self.bed._started[name]
        with contextlib.suppress(Exception):
            self.thaw(name)
        srv.kill(timeout=30)

    def start_server(self, name: str, timeout: float = 240.0) -> float:
        """Start a server stopped by `stop_server` again on the same data directory."""
        return self.restart(name, timeout)

    def new_topic(
        self, partitions: int = 2, replication_factor: int | None = None, config: dict | None = None
    ) -> str:
        """A topic with leaders for every partition. On a multi-node bed replicated 3 ways (or once per node)
        with `min.insync.replicas` one less by default, as the brokers' defaults are."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.kafka})
        name = f"test-{uuid.uuid4().hex[:12]}"
        rf = replication_factor or min(3, self.kafka_nodes)
        cfg = dict(config or {})
        if rf > 1:
            cfg.setdefault("min.insync.replicas", str(rf - 1))
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=cfg)])[
            name
        ].result(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=5).topics.get(name)
            if (
                md is not None
                and md.error is None
                and all(p.leader >= 0 and len(p.isrs) == rf for p in md.partitions.values())
            ):
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leaders after 30s")

    def close(self, keep_logs: bool = False) -> None:
        for name in self.endpoints.nodes:
            with contextlib.suppress(Exception):
                self.thaw(name)  # a frozen JVM does not stop on SIGTERM
        self.bed.stop(remove_dir=not keep_logs)


@contextlib.contextmanager
def _private(
    factory: pytest.TempPathFactory, name: str, kafka: bool, cassandra: bool
) -> Iterator[PrivateServers]:
    servers = PrivateServers(factory.mktemp(name), kafka=kafka, cassandra=cassandra)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServers]:
    """A Kafka broker of this test module's own (a local JVM, started in ~6 s), which tests may freeze."""
    with _private(tmp_path_factory, "private-kafka", kafka=True, cassandra=False) as servers:
        yield servers


@pytest.fixture(scope="module")
def private_cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServers]:
    """A Cassandra of this test module's own (a local JVM), which tests may freeze, stop and restart."""
    with _private(tmp_path_factory, "private-cassandra", kafka=False, cassandra=True) as servers:
        yield servers


@pytest.fixture(scope="module")
def private_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServers]:
    """Kafka and Cassandra of this test module's own, for faults on both."""
    with _private(tmp_path_factory, "private-bed", kafka=True, cassandra=True) as servers:
        yield servers


@pytest.fixture(scope="module")
def private_cluster_bed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A multi-node bed of this test module's own, as production runs: 3 Kafka brokers (combined KRaft nodes,
    a 3-voter quorum; replication 3, min.insync.replicas 2) and a 3-node Cassandra ring, node i on 127.0.0.i.
    Tests stop and start single nodes by name (`stop_server("kafka-2")`, `start_server("cassandra-3")`).
    A bed that cannot start makes the tests ERROR with the reason; the logs of a failed module are kept."""
    servers = PrivateServers(
        tmp_path_factory.mktemp("private-cluster-bed"),
        kafka=True,
        cassandra=True,
        kafka_nodes=3,
        cassandra_nodes=3,
        timeout=300,
    )
    failed_before = request.session.testsfailed
    try:
        yield servers
    finally:
        servers.close(keep_logs=request.session.testsfailed > failed_before)
