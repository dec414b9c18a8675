"""Apache Cassandra 5.0 from Maven jars, tuned to start fast on a small machine: one node, or a ring.

We run `CassandraDaemon` in the foreground with the Java 17 module flags of the distribution's
`jvm17-server.options`, a minimal yaml and our own logback config. JMX is left off (no port to clash
with other beds on the machine); nothing here needs nodetool.

A multi-node bed runs N nodes on their own loopback addresses with the same ports, the first one the seed,
one token each spread evenly over the ring, `auto_bootstrap: false` (empty ring, nothing to stream) and
hinted handoff on as in production. They are started one after the other: a node is ready once it answers
CQL and sees every node started before it, and itself, NORMAL in gossip with one schema version
(`system_views.gossip_info`, the driver-side equivalent of `nodetool status` + `describecluster`).
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


def ring_token(i: int, nodes: int) -> int:
    """Node i's (0-based) token: one each, spread evenly over Murmur3's range; 0 for a single node."""
    return 0 if nodes == 1 else -(2**63) + i * (2**64 // nodes)


def render_yaml(
    d: Path,
    host: str,
    native_port: int,
    storage_port: int,
    seed: str | None = None,
    token: int = 0,
    cluster: bool = False,
) -> str:
    """Minimal config; small memtables and caches because the bed holds test data only."""
    ring = (
        "auto_bootstrap: false\nhinted_handoff_enabled: true\nmax_hint_window: 1h\n"
        if cluster
        else "hinted_handoff_enabled: false\n"
    )
    return f"""\
cluster_name: metrictank-testbed
num_tokens: 1
initial_token: {token}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seed or host}:{storage_port}"
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
{ring}dynamic_snitch: false
"""


class CassandraServer(Server):
    kind = "cassandra"
    artifact = ARTIFACT

    def __init__(self, *args, ring: list[str] | None = None, index: int = 0, **kwargs) -> None:
        """`ring`: the hosts of every node of a multi-node bed, the seed first; this node is `ring[index]`.
        All nodes use the same two ports."""
        super().__init__(*args, **kwargs)
        self.storage_port = 0
        self.ring = ring or [self.host]
        self.index = index
        self.expect_peers: list[str] = []  # hosts this node must see NORMAL before it counts as ready
        self._cluster = None
        self._session = None

    @property
    def clustered(self) -> bool:
        return len(self.ring) > 1

    def ports_needed(self) -> int:
        return 2

    def assign_ports(self, ports: list[int]) -> None:
        self.port, self.storage_port = ports

    def write_config(self) -> None:
        (self.dir / "cassandra.yaml").write_text(
            render_yaml(
                self.dir,
                self.host,
                self.port,
                self.storage_port,
                seed=self.ring[0],
                token=ring_token(self.index, len(self.ring)),
                cluster=self.clustered,
            )
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
            # a ring node restarted on its data keeps its saved view of the ring, as in production
            *(
                p
                for p in FAST_START_PROPS
                if not (self.clustered and p.startswith("-Dcassandra.load_ring_state"))
            ),
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
            self._cluster, self._session = connect(self.address, pin=self.clustered)
        self._session.execute("SELECT release_version FROM system.local", timeout=5)
        if self.clustered:
            return ring_settled(self._session, [self.host, *self.expect_peers])
        return True

    def detect_version(self) -> str:
        if self._session is None:
            self._cluster, self._session = connect(self.address, pin=self.clustered)
        return release_version(self._session)

    def extra_state(self) -> dict:
        return {"storage_port": self.storage_port}

    def close_clients(self) -> None:
        if self._cluster is not None:
            try:
                self._cluster.shutdown()
            finally:
                self._cluster = self._session = None


def connect(
    hostport: str,
    keyspace: str | None = None,
    timeout: float = 10.0,
    request_timeout: float = 10.0,
    *,
    consistency: str | None = None,
    pin: bool = False,
):
    """A cassandra-driver (Cluster, Session) on the bed: `hostport` is "h:p" or, for a multi-node bed,
    "h1:p,h2:p,..." (all nodes on the same port). `consistency` ("quorum", ...) is the session's default
    (the driver's LOCAL_ONE otherwise); `pin` sends every request to the first node only (what a health
    probe of that node needs)."""

    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy, WhiteListRoundRobinPolicy

    from .process import parse_hostport

    hosts = [parse_hostport(hp, 9042) for hp in hostport.split(",") if hp.strip()]
    port = hosts[0][1]
    policy = WhiteListRoundRobinPolicy([hosts[0][0]]) if pin else RoundRobinPolicy()
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=request_timeout)
    if consistency:
        profile.consistency_level = ConsistencyLevel.name_to_value[consistency.upper()]
    cluster = Cluster(
        contact_points=[h for h, _ in hosts],
        port=port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout,
        control_connection_timeout=timeout,
    )
    try:
        session = cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise
    return cluster, session


def ring_settled(session, hosts: list[str]) -> bool:
    """The node `session` is pinned to sees each of `hosts` NORMAL in gossip, serving CQL, all on one schema.

    (A seed publishes only STATUS_WITH_PORT, the others STATUS as well; `schema` is the schema version UUID.)"""
    rows = session.execute(
        'SELECT address, status, status_with_port, "schema", rpc_ready FROM system_views.gossip_info',
        timeout=5,
    ).all()
    seen = {str(r.address): r for r in rows}
    want = [seen.get(h) for h in hosts]
    if any(
        r is None or not (r.status_with_port or r.status or "").startswith("NORMAL") or r.rpc_ready != "true"
        for r in want
    ):
        return False
    return len({r.schema for r in want}) == 1


def release_version(session) -> str:
    return session.execute("SELECT release_version FROM system.local").one()[0]


def cassandra_healthy(hostport: str) -> str | None:
    """Return the server's release_version if it answers CQL (itself, not another node of its ring), else None."""
    try:
        cluster, session = connect(hostport, timeout=3, pin=True)
    except Exception:
        return None
    try:
        return release_version(session)
    except Exception:
        return None
    finally:
        cluster.shutdown()
