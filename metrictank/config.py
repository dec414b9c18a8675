"""Instance configuration: a TOML file, overridden by `MT_<SECTION>_<KEY>` environment variables.

Section and key names follow Metrictank's `metrictank.ini` where an operator would look for them
(`[kafka-mdm-in] brokers`, `[cluster] primary-node`, `[cassandra] addrs` ...), so that its documentation and
habits carry over. Every option is declared once in `OPTIONS`: that single table drives parsing, validation,
the environment overrides, `metrictank config show` and the generated configuration reference, so the
documentation cannot drift from the code.

A bad file stops startup with a `ConfigError` whose message names the offending `section.key`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "Option",
    "OPTIONS",
    "Config",
    "load_config",
    "parse_duration",
    "env_name",
    "reference_markdown",
]


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key."""


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Parse a Go-style duration ("90s", "1h30m", "500ms") or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    s = str(value).strip()
    if not s:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"not a duration: {s!r} (use e.g. 30s, 10m, 1h30m)")
    return total


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "t", "true", "yes", "on"):
        return True
    if s in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    s = str(value).strip()
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"not an integer: {value!r}") from None


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise ValueError(f"not a string: {value!r}")


def _duration_or_auto(value: Any) -> float | str:
    return "auto" if value == "auto" else parse_duration(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _str,
    "int": _int,
    "bool": _bool,
    "duration": parse_duration,
    "duration|auto": _duration_or_auto,
}


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must not be negative"


def _max_nesting(v: int) -> str | None:
    return None if 0 < v <= 200 else "must be between 1 and 200"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"

    return check


def _identifier(v: str) -> str | None:
    """Keyspace and table names are put into CQL/SQL text: letters, digits and '_' only (as CQL allows)."""
    return None if v == "" or re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", v) else "must be a CQL identifier"


def _data_offset(v: str) -> str | None:
    return None if v == "auto" else _offset(v)


def _offset(v: str) -> str | None:
    if v in ("oldest", "newest"):
        return None
    try:
        parse_duration(v)
    except ValueError:
        return "must be oldest, newest or a duration such as 6h"
    return None


def _partitions(v: str) -> str | None:
    if v.strip() == "*":
        return None
    try:
        parts = [int(p) for p in v.split(",") if p.strip()]
    except ValueError:
        return "must be * or a comma-separated list of partition numbers"
    if not parts or min(parts) < 0:
        return "must be * or a comma-separated list of partition numbers >= 0"
    return None


def _replication(v: str) -> str | None:
    if re.fullmatch(r"\s*SimpleStrategy(\s+RF)?\s+\d+\s*", v, re.I) or re.fullmatch(
        r"\s*NetworkTopologyStrategy\s+[\w.-]+:\d+(\s*,\s*[\w.-]+:\d+)*\s*", v, re.I
    ):
        return None
    return "must be `SimpleStrategy <rf>` or `NetworkTopologyStrategy <dc>:<rf>,...`"


def _trust_list(v: str) -> str | None:
    for item in filter(None, (x.strip() for x in v.split(","))):
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as e:
                return f"bad regular expression {item[3:]!r}: {e}"
    return None


def _listen(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        return "must be host:port (e.g. 127.0.0.1:6060 or :6060)"
    return None


def _http_url(v: str) -> str | None:
    """Empty (off) or an absolute http(s) URL: the request is built from it, so a typo must stop startup."""
    if v == "" or re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
        return None
    return "must be empty or an http:// or https:// URL (e.g. http://graphite-web:8080)"


@dataclass(frozen=True)
class Option:
    """One configuration option: where it lives, its type, default and meaning."""

    section: str  # "" for top-level keys
    key: str
    type: str  # str | int | bool | duration
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key


def env_name(section: str, key: str) -> str:
    """`MT_<SECTION>_<KEY>` as Metrictank spells it: upper case, dashes and dots become underscores."""
    parts = [section, key] if section else [key]
    return "MT_" + "_".join(p.upper().replace("-", "_").replace(".", "_") for p in parts)


_o = Option
OPTIONS: tuple[Option, ...] = (
    _o(
        "",
        "instance",
        "str",
        "default",
        "Name of this instance; it is the `instance` of persist messages and "
        "the node name in the cluster. Must be unique within a cluster.",
    ),
    # --- logging
    _o("log", "level", "str", "info", "Log level.", _one_of("debug", "info", "warning", "error")),
    _o("log", "format", "str", "text", "Log line format: text or json.", _one_of("text", "json")),
    # --- http
    _o(
        "http",
        "listen",
        "str",
        "127.0.0.1:6060",
        "Address of the HTTP API (admin, Graphite query, /metrics).",
        _listen,
    ),
    _o(
        "http",
        "admin-token",
        "str",
        "",
        "When set, POST admin endpoints require `Authorization: Bearer <token>`. Never logged.",
    ),
    _o(
        "http",
        "max-points-per-req-soft",
        "int",
        1_000_000,
        "Points one render may read before it is consolidated harder: each series is then read with at most "
        "this / series-count points (a coarser archive where there is one) and returned with that many.",
        _positive,
    ),
    _o(
        "http",
        "max-points-per-req-hard",
        "int",
        20_000_000,
        "Points one render may read at all (after the soft limit's consolidation); more is a 400 naming the "
        "figure, decided before anything is read. About 8 bytes each, plus decoding.",
        _positive,
    ),
    _o(
        "http",
        "max-series-per-req",
        "int",
        100_000,
        "Series the targets of one render may select; more is a 400 before any data is read. Lower than "
        "Metrictank's 250000: a series costs Python a few KB per request however few points it has.",
        _positive,
    ),
    _o(
        "http",
        "query-timeout",
        "duration",
        60.0,
        "A render still running after this long is abandoned (its thread stops at the next check) and answered "
        "503.",
        _positive,
    ),
    _o(
        "http",
        "max-target-length",
        "int",
        65_536,
        "Characters of one render target; longer is a 400.",
        _positive,
    ),
    _o(
        "http",
        "max-nesting-depth",
        "int",
        100,
        "How deeply function calls (and pipes) may nest in a target; deeper is a 400. At most 200: the "
        "parser and evaluator recurse once per level.",
        _max_nesting,
    ),
    _o(
        "http",
        "max-request-body",
        "int",
        16 << 20,
        "Largest request body in bytes (a render POST form, an admin JSON body); larger is a 413.",
        _positive,
    ),
    # --- graphite (graphite-web fallback, Metrictank's graphite-proxy)
    _o(
        "graphite",
        "fallback-url",
        "str",
        "",
        "Base URL of a graphite-web (e.g. `http://graphite-web:8080`) that answers a /render whose target uses "
        "a function this project does not implement: the request is forwarded to `<url>/render` with the same "
        "parameters, held to `http.query-timeout`. Empty: such a request is a 400 naming the function.",
        _http_url,
    ),
    _o(
        "graphite",
        "fallback-max-response-size",
        "int",
        64 * 1024 * 1024,
        "Bytes of a fallback response relayed at most; a larger response is cut off (or a 502 when its "
        "Content-Length says so up front), so a runaway graphite-web cannot exhaust this node's memory.",
        _positive,
    ),
    # --- kafka-mdm-in
    _o("kafka-mdm-in", "enabled", "bool", True, "Consume metrics from Kafka."),
    _o("kafka-mdm-in", "brokers", "str", "localhost:9092", "Comma-separated Kafka bootstrap brokers."),
    _o(
        "kafka-mdm-in",
        "topics",
        "str",
        "mdm",
        "Comma-separated data topics; all must have the same partition count.",
    ),
    _o(
        "kafka-mdm-in",
        "partitions",
        "str",
        "*",
        "Partitions to consume: * or a comma-separated list.",
        _partitions,
    ),
    _o(
        "kafka-mdm-in",
        "offset",
        "str",
        "newest",
        "Where to start consuming: oldest, newest, a duration D meaning the offset of now - D, or auto (warm "
        "start): per partition, from the oldest data not yet saved, judged by the saved marks of the persist "
        "backlog (minus auto-offset-margin), while the saved chunks of the in-memory window are loaded from the "
        "store in the background. auto needs the persist backlog (kafka-cluster enabled, its offset oldest or "
        "a duration) and the index in the store (cassandra-idx); see docs/operations.md, restart modes.",
        _data_offset,
    ),
    _o(
        "kafka-mdm-in",
        "auto-offset-margin",
        "duration",
        300.0,
        "With offset = auto: replay this much earlier than the oldest unsaved data (covers producers whose "
        "Kafka message time runs ahead of the data time).",
        _non_negative,
    ),
    _o(
        "kafka-mdm-in",
        "auto-offset-fallback",
        "duration",
        0.0,
        "With offset = auto: how far back to replay a partition with no saved mark to judge by (a first start, "
        "a persist backlog that holds nothing for it). 0: the longest raw in-memory window of the storage "
        "schemas (numchunks x chunkspan).",
        _non_negative,
    ),
    _o(
        "kafka-mdm-in",
        "org-id",
        "int",
        0,
        "Org for MetricPoint messages without org (format 0x03); 0 rejects them.",
        _non_negative,
    ),
    _o(
        "kafka-mdm-in",
        "batch-size",
        "int",
        20000,
        "Messages consumed per call; larger batches cost less per point.",
        _positive,
    ),
    _o(
        "kafka-mdm-in",
        "fetch-max-wait",
        "duration",
        0.1,
        "How long the broker may wait to fill a fetch (librdkafka fetch.wait.max.ms).",
        _non_negative,
    ),
    _o(
        "kafka-mdm-in",
        "broker-unreachable-timeout",
        "duration",
        10.0,
        "A node whose data brokers have not answered (no fetched data and no metadata probe, which runs every 2s) "
        "for longer than this is not ready and reports priority 10000: its lag figures are stale. 0 disables.",
        _non_negative,
    ),
    _o(
        "kafka-mdm-in",
        "consumer-options",
        "str",
        "",
        "Extra librdkafka settings, `key=value` separated by commas.",
    ),
    _o(
        "kafka-mdm-in",
        "batch-consumer",
        "bool",
        True,
        "Read the data topics with the whole-batch consumer: librdkafka's batch call in C, a batch handed over "
        "as a few flat buffers instead of one Python object per message, read ahead by a thread of its own "
        "(the main loop's share of the work roughly halves at 100k series; docs/benchmarks.md). false: "
        "confluent_kafka's consume(). Falls back to it, with a warning, when librdkafka cannot be found "
        "through confluent_kafka.",
    ),
    _o(
        "kafka-mdm-in",
        "read-ahead-mb",
        "int",
        64,
        "Batch consumer: how far the reader thread may read ahead of ingest, in MB of queued batches (payloads "
        "plus ~25 bytes a message; two batches are always allowed). While the main loop is slow on a burst "
        "(new series cost 20-50 times a point) the reader keeps using the second core, and the loop catches up "
        "from memory afterwards. Nothing read ahead is committed; 0 reads two batches ahead only.",
        _non_negative,
    ),
    # --- kafka-cluster (persist notifications)
    _o("kafka-cluster", "enabled", "bool", True, "Send and receive persist notifications on Kafka."),
    _o(
        "kafka-cluster",
        "brokers",
        "str",
        "",
        "Brokers for the persist topic; empty means those of kafka-mdm-in.",
    ),
    _o("kafka-cluster", "topic", "str", "metricpersist", "Topic of persist notifications."),
    _o(
        "kafka-cluster",
        "offset",
        "str",
        "newest",
        "Where to start reading persist messages at startup: oldest, newest or a duration.",
        _offset,
    ),
    _o(
        "kafka-cluster",
        "backlog-process-timeout",
        "duration",
        60.0,
        "Longest wait for the persist backlog "
        "before data consumption starts (it ends as soon as it is caught up).",
        _non_negative,
    ),
    _o(
        "kafka-cluster",
        "trusted-instances",
        "str",
        "",
        "Other instances whose persist messages may raise saved marks, besides this instance and its peers "
        "(their names are learned from their /node): comma-separated names, shell globs (mt-*) or re:<regex>. "
        "Announcements of other instances are counted and ignored; * trusts everyone.",
        _trust_list,
    ),
    _o(
        "kafka-cluster",
        "max-future-t0",
        "duration",
        0.0,
        "Ignore saved marks whose chunk starts further than this ahead of the wall clock; 0 means 10% of the "
        "largest raw TTL plus the largest chunkspan (no chunk of ours can start later than that).",
        _non_negative,
    ),
    # --- cluster
    _o("cluster", "name", "str", "metrictank", "Cluster name."),
    _o(
        "cluster",
        "role",
        "str",
        "all",
        "all: ingest, persist when primary, answer queries. write: ingest and persist when primary, never answer "
        "Graphite queries (404 pointing to the read nodes). read: ingest the same partitions, keep only the last "
        "read-window in memory, answer queries from memory and the store, never write the store and never "
        "become primary.",
        _one_of("all", "write", "read"),
    ),
    _o(
        "cluster",
        "read-window",
        "duration|auto",
        "auto",
        "A read node keeps in memory only the chunks that cover this window (the open chunk plus enough closed "
        "ones, at least two per archive, never more than numchunks); older data is read from the store. A chunk "
        "must be saved before it leaves a reader's memory, so the window must exceed the writers' save delay. "
        "auto: measured at start-up from the persist backlog (the largest time from a raw chunk's t0 to its "
        "announcement in the last hour) plus read-window-margin; without announcements to measure, numchunks.",
        lambda v: None if v == "auto" or v > 0 else "must be auto or a duration greater than 0",
    ),
    _o(
        "cluster",
        "read-window-margin",
        "duration",
        600.0,
        "With read-window = auto: added to the measured save delay.",
        _non_negative,
    ),
    _o(
        "cluster",
        "color",
        "str",
        "",
        "Read nodes: the color (a or b) of this node's read cluster. While the cluster's active color (set with "
        '`metrictank cluster color set`) is the other one, it answers /readyz and GET / 503 "standby color", so a '
        "load balancer sends queries to the active color only. Empty: always serves. Needs membership-topic.",
        _one_of("", "a", "b"),
    ),
    _o(
        "cluster",
        "membership-topic",
        "str",
        "",
        "Live membership: a compacted Kafka topic (cleanup.policy=compact; not metricpersist) on which every "
        "instance announces itself each heartbeat and from which every node builds the member table (GET "
        "/cluster/members) and the active read color. Without static peers, the alive members are the peers. "
        "Empty: off.",
    ),
    _o(
        "cluster",
        "heartbeat",
        "duration",
        2.0,
        "Membership heartbeat; a member is suspect after 3, gone after 10.",
        _positive,
    ),
    _o(
        "cluster",
        "advertise-url",
        "str",
        "",
        "This node's HTTP base URL as other nodes reach it, announced on the membership topic. Empty: "
        "http://<listen address, or the host name when it listens on all addresses>:<port>.",
    ),
    _o(
        "cluster",
        "primary-node",
        "bool",
        False,
        "Start as primary: only the primary writes chunks to the store.",
    ),
    _o(
        "cluster",
        "max-priority",
        "int",
        10,
        "A node is ready only while its priority (seconds of Kafka lag) is at most this.",
        _non_negative,
    ),
    _o(
        "cluster",
        "warm-up-period",
        "duration",
        60.0,
        "Time a secondary waits after startup before it is ready.",
        _non_negative,
    ),
    _o(
        "cluster",
        "peers",
        "str",
        "",
        "Static peer list: comma-separated base URLs of the other instances' HTTP "
        "API (e.g. http://10.0.0.2:6060).",
    ),
    _o("cluster", "peer-timeout", "duration", 2.0, "Timeout of requests to peers.", _positive),
    _o(
        "cluster",
        "foreign-writer-window",
        "duration",
        10.0,
        "Promotion is refused while another instance (not a reachable, demoted peer) announced chunk writes on a "
        "shared partition within this window: it may still be primary. 0 disables the check.",
        _non_negative,
    ),
    _o(
        "cluster",
        "lease",
        "bool",
        True,
        "Hold the right to write a set of partitions as a lease in the store (Cassandra lightweight transactions, "
        "or a transaction on the shared SQLite file), with an epoch that rises at every change of holder. A "
        "primary that cannot prove it holds the lease writes nothing; promotion takes the lease (409 while "
        "another live node holds it, unless force). Turn off only for clusters whose writers cannot share it.",
    ),
    _o(
        "cluster",
        "lease-duration",
        "duration",
        10.0,
        "How long a lease lasts without renewal; the holder renews it every third of this. A dead primary is "
        "replaced after at most this plus lease-margin.",
        _positive,
    ),
    _o(
        "cluster",
        "lease-margin",
        "duration",
        2.0,
        "Safety margin for clock drift and pauses: the holder stops writing this long before its lease expires, "
        "and a candidate takes an expired lease only this long after. Must be less than half lease-duration.",
        _non_negative,
    ),
    _o(
        "cluster",
        "failover",
        "str",
        "manual",
        "manual: a person promotes (POST /node primary=true). auto: a qualifying secondary takes the lease "
        "and promotes itself when the primary's lease expires (the most caught-up first).",
        _one_of("manual", "auto"),
    ),
    _o(
        "cluster",
        "failover-hold-off",
        "duration",
        60.0,
        "In auto mode, a demoted node does not take the lease back within this time.",
        _non_negative,
    ),
    # --- store
    _o(
        "store",
        "backend",
        "str",
        "sqlite",
        "Chunk store: sqlite (embedded, single machine) or cassandra.",
        _one_of("sqlite", "cassandra"),
    ),
    _o(
        "store",
        "write-queues",
        "int",
        10,
        "Number of write queues; a series and its rollups share one.",
        _positive,
    ),
    _o(
        "store",
        "write-queue-size",
        "int",
        100000,
        "Chunks per write queue; a full queue slows ingest down.",
        _positive,
    ),
    _o(
        "store",
        "drain-timeout",
        "duration",
        60.0,
        "Longest wait for the write queues on demotion or shutdown.",
        _non_negative,
    ),
    _o("sqlite", "path", "str", "./data/chunks.db", "SQLite database file of the embedded store."),
    _o("cassandra", "addrs", "str", "localhost:9042", "Comma-separated Cassandra contact points host:port."),
    _o("cassandra", "keyspace", "str", "metrictank", "Keyspace of the chunk tables."),
    _o(
        "cassandra",
        "consistency",
        "str",
        "one",
        "Consistency level of reads and writes.",
        _one_of("one", "two", "three", "quorum", "local_quorum", "local_one", "all"),
    ),
    _o("cassandra", "timeout", "duration", 1.0, "Timeout of one query.", _positive),
    _o("cassandra", "write-concurrency", "int", 64, "Writes in flight per process.", _positive),
    _o("cassandra", "create-keyspace", "bool", True, "Create the keyspace and tables at startup."),
    _o(
        "cassandra",
        "replication",
        "str",
        "SimpleStrategy 1",
        "Replication of the keyspace when it is created: `SimpleStrategy <rf>` or "
        "`NetworkTopologyStrategy <dc>:<rf>,<dc>:<rf>`.",
        _replication,
    ),
    # --- the index in the store (Metrictank's [cassandra-idx]; also used with the SQLite store)
    _o(
        "cassandra-idx",
        "enabled",
        "bool",
        True,
        "Keep series definitions in the store (table `metric_idx`) and load them at startup, so MetricPoints "
        "of series whose last MetricData is older than the replay are not dropped.",
    ),
    _o(
        "cassandra-idx",
        "update-cassandra-index",
        "bool",
        True,
        "Write definitions to the store; when false this node only loads them (not every node needs to write).",
    ),
    _o(
        "cassandra-idx",
        "update-interval",
        "duration",
        10800.0,
        "A live series' row (its lastupdate) is rewritten at most once per interval; 0 writes on every batch.",
        _non_negative,
    ),
    _o(
        "cassandra-idx",
        "write-queue-size",
        "int",
        100000,
        "Definitions waiting to be written; when full, updates are dropped (counted) and retried later, "
        "ingest never waits.",
        _positive,
    ),
    _o(
        "cassandra-idx",
        "num-conns",
        "int",
        2,
        "Writer threads (and, with Cassandra, writes in flight each).",
        _positive,
    ),
    _o(
        "cassandra-idx",
        "keyspace",
        "str",
        "",
        "Keyspace of `metric_idx` with Cassandra; empty means `[cassandra] keyspace`.",
        _identifier,
    ),
    _o(
        "cassandra-idx",
        "table",
        "str",
        "metric_idx",
        "Table of the definitions.",
        lambda v: "must not be empty" if not v else _identifier(v),
    ),
    _o(
        "cassandra-idx",
        "archive-table",
        "str",
        "metric_idx_archive",
        "Table that archived series' rows move to (Metrictank's schema_archive_table; created beside the index "
        "table, as Metrictank's nodes and tools refuse to start without it).",
        lambda v: "must not be empty" if not v else _identifier(v),
    ),
    _o(
        "cassandra-idx",
        "max-stale",
        "duration",
        0.0,
        "Rows not updated for this long are neither loaded nor kept (deleted by the pruning); 0 keeps all.",
        _non_negative,
    ),
    _o(
        "cassandra-idx",
        "prune-interval",
        "duration",
        10800.0,
        "How often rows older than max-stale are deleted (only when max-stale > 0).",
        _positive,
    ),
    _o(
        "cassandra-idx",
        "init-load-concurrency",
        "int",
        1,
        "Partitions loaded concurrently at startup.",
        _positive,
    ),
    _o(
        "cassandra-idx",
        "init-load-retries",
        "int",
        3,
        "Attempts to load a partition at startup before the start fails.",
        _positive,
    ),
    # --- retention and tank
    _o(
        "retention",
        "schemas-file",
        "str",
        "",
        "storage-schemas.conf; empty uses the built-in default `1s:35d:10min:7`.",
    ),
    _o("retention", "aggregations-file", "str", "", "storage-aggregation.conf; empty means avg everywhere."),
    _o(
        "retention",
        "gc-interval",
        "duration",
        3660.0,
        "How often stale chunks and series are collected.",
        _positive,
    ),
    _o(
        "retention",
        "chunk-max-stale",
        "duration",
        3600.0,
        "A series idle this long has its open chunk finished.",
        _positive,
    ),
    _o(
        "retention",
        "metric-max-stale",
        "duration",
        10800.0,
        "A series idle this long is removed from memory.",
        _positive,
    ),
)
del _o

_BY_SECTION: dict[str, dict[str, Option]] = {}
for _opt in OPTIONS:
    _BY_SECTION.setdefault(_opt.section, {})[_opt.key] = _opt


def _attr(name: str) -> str:
    return name.replace("-", "_")


class Section(Mapping[str, Any]):
    """Values of one section, readable as `s["write-queues"]` or `s.write_queues`."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name.replace("_", "-")]
        except KeyError:
            raise AttributeError(f"no option {self._name}.{name}") from None


class Config:
    """The effective configuration, with the origin of each value (default, file or env)."""

    def __init__(self, values: dict[str, dict[str, Any]], origins: dict[str, str]) -> None:
        self._values = values
        self.origins = origins

    def section(self, name: str) -> Section:
        return Section(name, self._values[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        top = self._values[""]
        if name in top:
            return top[name]
        sec = name.replace("_", "-")
        if sec in self._values:
            return Section(sec, self._values[sec])
        raise AttributeError(f"no config section or option {name!r}")

    def get(self, dotted: str) -> Any:
        section, _, key = dotted.rpartition(".")
        return self._values[section][key]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self._values.items()}

    def to_toml(self, show_origin: bool = True) -> str:
        """Render the effective configuration as TOML (tokens are masked)."""
        lines: list[str] = []
        for section, values in self._values.items():
            if section:
                lines.append(f"\n[{section}]")
            for key, value in values.items():
                opt = _BY_SECTION[section][key]
                shown = "***" if key == "admin-token" and value else value
                line = f"{key} = {_toml_value(opt, shown)}"
                if show_origin:
                    line += f"  # {self.origins[opt.dotted]}"
                lines.append(line)
        return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(opt: Option, value: Any) -> str:
    if opt.type == "bool":
        return "true" if value else "false"
    if opt.type == "int":
        return str(value)
    if opt.type == "duration" or opt.type == "duration|auto" and value != "auto":
        return _format_duration(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_duration(seconds: float) -> str:
    if seconds == 0:
        return '"0s"'
    if seconds < 1 or not float(seconds).is_integer():
        return f'"{int(round(seconds * 1000))}ms"'
    s = int(seconds)
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return f'"{out}"'


def _convert(opt: Option, raw: Any, origin: str) -> Any:
    try:
        value = _CONVERTERS[opt.type](raw)
    except ValueError as e:
        raise ConfigError(f"{opt.dotted} ({origin}): {e}") from None
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            raise ConfigError(f"{opt.dotted} ({origin}): {value!r} {problem}")
    return value


def load_config(
    path: str | Path | Sequence[str | Path] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load defaults, then the TOML file(s) (if any; a later file overrides an earlier one key by key, so a
    shared base plus a per-instance fragment from `metrictank cluster plan` make one config), then `MT_*`
    environment overrides; validate everything.

    Unknown sections and keys are errors rather than warnings: a typo in a key that decides who writes to
    Cassandra must not be silently ignored.
    """
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {
        s: {k: o.default for k, o in opts.items()} for s, opts in _BY_SECTION.items()
    }
    origins = {o.dotted: "default" for o in OPTIONS}

    paths = [] if path is None else [path] if isinstance(path, str | Path) else list(path)
    for path in paths:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        for name, item in data.items():
            if isinstance(item, dict):
                if name not in _BY_SECTION or name == "":
                    raise ConfigError(f"[{name}]: unknown section in {p}")
                for key, raw in item.items():
                    opt = _BY_SECTION[name].get(key)
                    if opt is None:
                        raise ConfigError(f"{name}.{key}: unknown option in {p}")
                    values[name][key] = _convert(opt, raw, str(p))
                    origins[opt.dotted] = "file"
            else:
                opt = _BY_SECTION[""].get(name)
                if opt is None:
                    raise ConfigError(f"{name}: unknown top-level option in {p}")
                values[""][name] = _convert(opt, item, str(p))
                origins[opt.dotted] = "file"

    for opt in OPTIONS:
        var = env_name(opt.section, opt.key)
        if var in env:
            values[opt.section][opt.key] = _convert(opt, env[var], f"environment {var}")
            origins[opt.dotted] = f"env {var}"

    _check_cross(values)
    return Config(values, origins)


def _check_cross(values: dict[str, dict[str, Any]]) -> None:
    inst = values[""]["instance"]
    if not inst or not re.fullmatch(r"[A-Za-z0-9_.:-]+", inst):
        raise ConfigError(f"instance: {inst!r} must be non-empty letters, digits, '_', '.', ':' or '-'")
    if not values["kafka-mdm-in"]["topics"].strip():
        raise ConfigError("kafka-mdm-in.topics: at least one topic is needed")
    if values["kafka-mdm-in"]["offset"] == "auto":
        kc = values["kafka-cluster"]
        if not kc["enabled"] or kc["offset"] == "newest":
            raise ConfigError(
                "kafka-cluster.offset: kafka-mdm-in.offset = auto starts from the saved marks of the persist "
                "backlog; enable kafka-cluster and set its offset to oldest or a duration that covers the "
                "in-memory window (e.g. 6h)"
            )
        if not values["cassandra-idx"]["enabled"]:
            raise ConfigError(
                "cassandra-idx.enabled: kafka-mdm-in.offset = auto needs the index in the store (the series "
                "must be known before their saved marks can be judged)"
            )
    c = values["cluster"]
    if c["lease-margin"] * 2 >= c["lease-duration"]:
        raise ConfigError(
            f"cluster.lease-margin: {c['lease-margin']}s must be less than half cluster.lease-duration "
            f"({c['lease-duration']}s)"
        )
    if c["failover"] == "auto" and not c["lease"]:
        raise ConfigError("cluster.failover: auto needs cluster.lease = true")
    if c["color"] and not c["membership-topic"]:
        raise ConfigError(
            "cluster.color: colors are switched on the membership topic; set cluster.membership-topic"
        )
    if c["role"] == "read" and c["primary-node"]:
        raise ConfigError("cluster.primary-node: a read node (cluster.role = read) never becomes primary")
    if c["role"] == "read" and c["read-window"] == "auto" and not values["kafka-cluster"]["enabled"]:
        raise ConfigError(
            "cluster.read-window: auto measures the writers' save delay on the persist topic; enable kafka-cluster "
            "or give a duration"
        )
    if c["role"] == "read" and c["failover"] == "auto":
        raise ConfigError(
            "cluster.failover: auto makes nodes promote themselves; a read node (cluster.role = read) never does"
        )


def reference_markdown() -> str:
    """The configuration reference page (docs/configuration.md), generated from `OPTIONS`."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `metrictank/config.py` by `metrictank config doc`; a test checks that it is current.",
        "",
        "Options are read from the TOML file given with `--config`, then overridden by environment variables "
        "`MT_<SECTION>_<KEY>` (upper case, `-` as `_`). Durations take Go's form (`90s`, `10m`, `1h30m`) or "
        "seconds. An unknown key or a bad value stops startup with a message naming the key.",
        "",
    ]
    for section, opts in _BY_SECTION.items():
        out.append(f"## {'[' + section + ']' if section else 'Top level'}")
        out.append("")
        out.append("| key | type | default | environment | meaning |")
        out.append("|---|---|---|---|---|")
        for key, opt in opts.items():
            default = _toml_value(opt, opt.default).replace("|", "\\|")
            doc = opt.doc.replace("|", "\\|")
            out.append(f"| `{key}` | {opt.type} | `{default}` | `{env_name(section, key)}` | {doc} |")
        out.append("")
    return "\n".join(out)
