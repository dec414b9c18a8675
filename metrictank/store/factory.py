"""Pick a chunk store by name, so configuration and the CLI need not import backend modules."""

from __future__ import annotations

from typing import Any

from metrictank.store.base import ChunkStore

KINDS = ("sqlite", "cassandra")


def open_store(kind: str, **options: Any) -> ChunkStore:
    """`open_store("sqlite", path=...)` or `open_store("cassandra", addrs="h:p", ...)`.

    Backends are imported lazily: a SQLite-only install never loads the Cassandra driver.
    """
    k = kind.strip().lower()
    if k == "sqlite":
        from metrictank.store.sqlite import SQLiteStore

        return SQLiteStore(**options)
    if k == "cassandra":
        from metrictank.store.cassandra import CassandraStore

        return CassandraStore(**options)
    raise ValueError(f"unknown chunk store {kind!r}; expected one of {', '.join(KINDS)}")
