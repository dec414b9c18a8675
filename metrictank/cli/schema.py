"""`metrictank schema`: create the store's keyspace and tables ahead of the first node, with Metrictank's
layout so both can share them."""

from __future__ import annotations

import click

from metrictank.cli._common import _load, _open_store, _schemas


def _tables(store) -> list[str]:
    if hasattr(store, "table_names"):
        return store.table_names()
    import sqlite3

    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'metric%'")
        return sorted(r[0] for r in rows)
    finally:
        conn.close()


@click.group()
def schema() -> None:
    """Create the chunk store's schema."""


@schema.command("init")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
def schema_init(config_path: str | None) -> None:
    """Create the keyspace and one table per retention TTL (Cassandra), or the SQLite file and tables.

    The tables follow Metrictank's schema, so Metrictank nodes and tools can share them. Idempotent.

    \b
    Examples:
      metrictank schema init --config /etc/metrictank/mt1.toml
      MT_CASSANDRA_ADDRS=cass1:9042 metrictank schema init --config mt1.toml
    """
    cfg = _load(config_path)
    schemas, _aggs = _schemas(cfg)
    ttls = schemas.all_ttls()
    store = _open_store(cfg, create=True, ttls=ttls)
    try:
        tables = _tables(store)
    finally:
        store.close()
    where = (
        f"sqlite {cfg.sqlite.path}"
        if cfg.store.backend == "sqlite"
        else f"cassandra keyspace {cfg.cassandra.keyspace} at {cfg.cassandra.addrs}"
    )
    click.echo(f"{where}: tables {', '.join(tables)}")
