"""CQL text of Metrictank's chunk store (spec §5), kept apart so it can be checked without a server.

The statements are Metrictank's own (its `schema-store-cassandra.toml` and table.go): a Metrictank node
and this project must be able to share a keyspace, so the schema and queries are not ours to improve.
"""

from __future__ import annotations

import re

TABLE_OPTIONS = {
    "compaction_class": "org.apache.cassandra.db.compaction.TimeWindowCompactionStrategy",
    "compaction_window_unit": "HOURS",
    "tombstone_threshold": "0.2",
    "tombstone_compaction_interval": "86400",
    "compression_class": "org.apache.cassandra.io.compress.LZ4Compressor",
}


def parse_replication(spec: str | dict) -> dict[str, str]:
    """Replication map from a short form.

    Accepted: a ready map; "SimpleStrategy RF <n>" (also "SimpleStrategy <n>");
    "NetworkTopologyStrategy dc1:3,dc2:2". The short forms keep command-line flags readable.
    """
    if isinstance(spec, dict):
        return {str(k): str(v) for k, v in spec.items()}
    s = spec.strip()
    m = re.fullmatch(r"SimpleStrategy(?:\s+RF)?\s+(\d+)", s, re.IGNORECASE)
    if m:
        return {"class": "SimpleStrategy", "replication_factor": m.group(1)}
    m = re.fullmatch(r"NetworkTopologyStrategy\s+(.+)", s, re.IGNORECASE)
    if m:
        out = {"class": "NetworkTopologyStrategy"}
        for part in m.group(1).split(","):
            dc, _, rf = part.strip().partition(":")
            if not dc or not rf.strip().isdigit():
                raise ValueError(f"bad replication entry {part!r} in {spec!r}")
            out[dc] = rf.strip()
        return out
    raise ValueError(f"unsupported replication spec {spec!r}")


def _cql_map(m: dict[str, str]) -> str:
    def lit(v: str) -> str:
        return "'" + str(v).replace("'", "''") + "'"

    return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in m.items()) + "}"


def create_keyspace(keyspace: str, replication: str | dict = "SimpleStrategy RF 1") -> str:
    return (
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{_cql_map(parse_replication(replication))} AND durable_writes = true"
    )


def create_table(keyspace: str, table: str, window_hours: int) -> str:
    """Metrictank's table: TWCS with a window of `window_hours`, gc_grace equal to one window."""
    return (
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{table} (key ascii, ts int, data blob, PRIMARY KEY (key, ts)) "
        "WITH CLUSTERING ORDER BY (ts DESC) "
        "AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', "
        f"'compaction_window_size': '{int(window_hours)}', 'tombstone_threshold': '0.2', "
        "'tombstone_compaction_interval': '86400'} "
        "AND compression = {'class': 'LZ4Compressor'} "
        f"AND gc_grace_seconds = {int(window_hours) * 3600}"
    )


def insert(keyspace: str, table: str) -> str:
    return f"INSERT INTO {keyspace}.{table} (key, ts, data) VALUES (?, ?, ?) USING TTL ?"


def select(keyspace: str, table: str) -> str:
    """Reads all row-key buckets of the range in one query; both t0 bounds are bound."""
    return f"SELECT ts, data FROM {keyspace}.{table} WHERE key IN ? AND ts >= ? AND ts < ?"
