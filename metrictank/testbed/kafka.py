"""Apache Kafka 4.x as KRaft nodes (combined broker + controller) from Maven jars.

One node by default; a multi-node bed runs N combined nodes, each on its own loopback address with the same
ports, forming an N-voter controller quorum (static `controller.quorum.voters`), internal topics replicated 3
ways with `min.insync.replicas` 2, as production clusters run.

The distribution's shell scripts are thin wrappers around `kafka.tools.StorageTool` (format) and
`kafka.Kafka` (server); we call those main classes directly with our own properties and log4j2 config.
"""

from __future__ import annotations

import base64
import os
import uuid

from . import maven
from .process import grep_last, java_binary, port_open, run_checked
from .server import Server

KAFKA_VERSION = os.environ.get("METRICTANK_TESTBED_KAFKA_VERSION", maven.KAFKA_VERSION)
# Log4j version of the Kafka release's own log4j-core; the slf4j 1.x binding is not a Kafka dependency
# (the distribution ships it in libs/), without it the broker would log nothing at all.
LOG4J_VERSION = "2.25.4"

ARTIFACT = maven.Artifact(
    name="kafka",
    group_id="org.apache.kafka",
    artifact_id="kafka_2.13",
    version=KAFKA_VERSION,
    extras=(f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",),
)

# Single-node settings: every internal topic must fit on one broker, and tests want many partitions
# without asking (Metrictank's mdm topic is partitioned) and no 3 s wait before group rebalances.
SINGLE_NODE_SETTINGS = {
    "num.partitions": "8",
    "default.replication.factor": "1",
    "auto.create.topics.enable": "true",
    "delete.topic.enable": "true",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "min.insync.replicas": "1",
    # Tests produce data with old timestamps (e.g. golden vectors); time-based retention must not eat it.
    "log.retention.ms": "-1",
    # Two shared cores: fewer threads start faster and leave CPU for the code under test.
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    "background.threads": "4",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
}

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

JVM_OPTS = [
    "-Xms512m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
]


def random_cluster_id() -> str:
    """Same shape as Kafka's Uuid.randomUuid(): url-safe base64 of 16 random bytes, never starting '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def cluster_settings(nodes: int) -> dict[str, str]:
    """What differs for N nodes: replication 3 (or N) with one replica allowed to be down (min ISR RF-1)."""
    rf = min(3, nodes)
    min_isr = str(max(1, rf - 1))
    return {
        "default.replication.factor": str(rf),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": min_isr,
        "min.insync.replicas": min_isr,
        # a stopped replica that comes back catches up and rejoins the ISR; leadership returns to it soon
        "leader.imbalance.check.interval.seconds": "10",
    }


class KafkaServer(Server):
    kind = "kafka"
    artifact = ARTIFACT

    def __init__(
        self,
        *args,
        node_id: int = 1,
        voters: list[tuple[int, str]] | None = None,
        cluster_id: str | None = None,
        **kwargs,
    ) -> None:
        """`voters`: (node id, host) of every node of a multi-node bed (all use the same two ports)."""
        super().__init__(*args, **kwargs)
        self.controller_port = 0
        self.node_id = node_id
        self.voters = voters or [(node_id, self.host)]
        self.cluster_id = cluster_id or random_cluster_id()
        self._admin = None

    def ports_needed(self) -> int:
        return 2

    def assign_ports(self, ports: list[int]) -> None:
        self.port, self.controller_port = ports

    @property
    def props_path(self):
        return self.dir / "server.properties"

    def properties(self) -> dict[str, str]:
        h = self.host
        voters = ",".join(f"{i}@{vh}:{self.controller_port}" for i, vh in self.voters)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{h}:{self.port},CONTROLLER://{h}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{h}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
        }
        props.update(SINGLE_NODE_SETTINGS)
        if len(self.voters) > 1:
            props.update(cluster_settings(len(self.voters)))
        return props

    def write_config(self) -> None:
        self.props_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.dir / "log4j2.properties").write_text(LOG4J2)

    def _java(self, main: str, *args: str) -> list[str]:
        assert self.resolved is not None
        return [
            java_binary(),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            self.resolved.classpath,
            main,
            *args,
        ]

    def before_launch(self) -> None:
        """KRaft refuses to start on an unformatted log dir; format it with a fresh cluster id."""
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(self.props_path)
        )
        # A one-second tool: small heap, no optimising JIT, simplest GC start fastest.
        cmd = [a for a in cmd if a not in JVM_OPTS]
        cmd[1:1] = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        run_checked(cmd, self.log_path, self.dir)

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.props_path))

    def probe(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(
                {
                    "bootstrap.servers": self.address,
                    "reconnect.backoff.max.ms": 500,
                    "socket.connection.setup.timeout.ms": 2000,
                    "log_level": 2,  # a half-started or stopping broker makes librdkafka chatty
                }
            )
        md = self._admin.list_topics(timeout=2)
        return self.node_id in md.brokers  # registered with the controller quorum and unfenced

    def detect_version(self) -> str:
        """The version the broker itself logs at start-up ("Kafka version: x.y.z")."""
        line = grep_last(self.log_path, "Kafka version: ")
        if line:
            return line.split("Kafka version: ", 1)[1].split()[0]
        return self.artifact.version

    def extra_state(self) -> dict:
        return {
            "controller_port": self.controller_port,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
        }

    def close_clients(self) -> None:
        self._admin = None


def kafka_healthy(bootstrap: str, timeout: float = 3.0) -> bool:
    """Used by `status` and for reusing an already running bed: a metadata request must succeed."""
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient(
            {"bootstrap.servers": bootstrap, "reconnect.backoff.max.ms": 500, "log_level": 2}
        ).list_topics(timeout=timeout)
    except Exception:
        return False
    return len(md.brokers) >= 1
