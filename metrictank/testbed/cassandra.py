"""Apache Cassandra 5.0 as a single node from Maven jars, tuned to start fast on a small machine.

We run `CassandraDaemon` in the foreground with the Java 17 module flags of the distribution's
`jvm17-server.options`, a minimal yaml and our own logback config. JMX is left off (no port to clash
with other beds on the machine); nothing here needs nodetool.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import maven
from .process import java_binary, port_open
from .server import Server

CASSANDRA_VERSION = os.environ.get("METRICTANK_TESTBED_CASSANDRA_VERSION", maven.CASSANDRA_VERSION)
HEAP = os.environ.get("METRICTANK_TESTBED_CASSANDRA_HEAP", "768m")

ARTIFACT = maven.Artifact(
    name="cassandra",
    group_id="org.apache.cassandra",
    artifact_id="cassandra-all",
    version=CASSANDRA_VERSION,
)

JAVA17_MODULE_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={m}=ALL-UNNAMED"
        for m in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
        )
    ),
    *(
        f"--add-opens={m}=ALL-UNNAMED"
        for m in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
        )
    ),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

JVM_OPTS = [
    f"-Xms{HEAP}",
    f"-Xmx{HEAP}",
    "-Xss512k",
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:+UseThreadPriorities",
    "-XX:+PerfDisableSharedMem",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+ExitOnOutOfMemoryError",  # a wedged node would only make tests time out
    "-ea",
    "-da:net.openhft...",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
]

# Skip the waits that only make sense in a real cluster: nobody else will gossip with this node.
FAST_START_PROPS = [
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=100",
    "-Dcassandra.load_ring_state=false",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.skip_sync=true",  # no fsync: the data is throwaway
    "-Dchronicle.analytics.disable=true",
]

LOGBACK = """\
<configuration scan="false">
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.datastax" level="WARN"/>
  <logger name="io.netty" level="WARN"/>
  <logger name="net.openhft" level="WARN"/>
  <root level="INFO"><appender-ref ref="OUT"/></root>
</configuration>
"""


def render_yaml(d: Path, host: str, native_port: int, storage_port: int) -> str:
    """Minimal single-node config; small memtables and caches because the bed holds test data only."""
    return f"""\
cluster_name: metrictank-testbed
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{host}:{storage_port}"
listen_address: {host}
rpc_address: {host}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - {d / "data"}
commitlog_directory: {d / "commitlog"}
hints_directory: {d / "hints"}
saved_caches_directory: {d / "saved_caches"}
cdc_raw_directory: {d / "cdc_raw"}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
auto_snapshot: false
snapshot_before_compaction: false
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
row_cache_size: 0MiB
counter_cache_size: 0MiB
file_cache_size: 32MiB
prepared_statements_cache_size: 8MiB
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_compactors: 1
compaction_throughput: 0MiB/s
hinted_handoff_enabled: false
dynamic_snitch: false
"""


class CassandraServer(Server):
    name = "cassandra"
    artifact = ARTIFACT

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.storage_port = 0
        self._cluster = None
        self._session = None

    def ports_needed(self) -> int:
        return 2

    def assign_ports(self, ports: list[int]) -> None:
        self.port, self.storage_port = ports

    def write_config(self) -> None:
        (self.dir / "cassandra.yaml").write_text(
            render_yaml(self.dir, self.host, self.port, self.storage_port)
        )
        (self.dir / "logback.xml").write_text(LOGBACK)
        (self.dir / "triggers").mkdir()

    def command(self) -> list[str]:
        assert self.resolved is not None
        jamm = next((j for j in self.resolved.jars if j.name.startswith("jamm-")), None)
        return [
            java_binary(),
            *JVM_OPTS,
            *JAVA17_MODULE_FLAGS,
            *([f"-javaagent:{jamm}"] if jamm else []),
            *FAST_START_PROPS,
            f"-Dcassandra.config=file://{self.dir / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.dir}",
            f"-Dcassandra.logdir={self.dir}",
            f"-Dcassandra.triggers_dir={self.dir / 'triggers'}",
            f"-Dlogback.configurationFile={self.dir / 'logback.xml'}",
            "-cp",
            self.resolved.classpath,
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def probe(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        if self._session is None:
            self._cluster, self._session = connect(self.address)
        self._session.execute("SELECT release_version FROM system.local", timeout=5)
        return True

    def detect_version(self) -> str:
        if self._session is None:
            self._cluster, self._session = connect(self.address)
        return release_version(self._session)

    def extra_state(self) -> dict:
        return {"storage_port": self.storage_port}

    def close_clients(self) -> None:
        if self._cluster is not None:
            try:
                self._cluster.shutdown()
            finally:
                self._cluster = self._session = None


def connect(hostport: str, keyspace: str | None = None, timeout: float = 10.0, request_timeout: float = 10.0):
    """A cassandra-driver (Cluster, Session) pinned to the one node."""

    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    from .process import parse_hostport

    host, port = parse_hostport(hostport, 9042)
    cluster = Cluster(
        contact_points=[host],
        port=port,
        protocol_version=5,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=RoundRobinPolicy(), request_timeout=request_timeout
            )
        },
        connect_timeout=timeout,
        control_connection_timeout=timeout,
    )
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session


def release_version(session) -> str:
    return session.execute("SELECT release_version FROM system.local").one()[0]


def cassandra_healthy(hostport: str) -> str | None:
    """Return the server's release_version if it answers CQL, else None."""
    try:
        cluster, session = connect(hostport, timeout=3)
    except Exception:
        return None
    try:
        return release_version(session)
    except Exception:
        return None
    finally:
        cluster.shutdown()
