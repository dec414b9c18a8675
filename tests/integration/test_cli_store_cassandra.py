"""`metrictank schema init` and `metrictank store cat` on the test bed's Cassandra: Metrictank's tables appear, and
the chunks a store wrote come back as the same points."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from metrictank.chunk import encode_chunk
from metrictank.cli import main
from metrictank.schema import series_id, table_for_ttl
from metrictank.store import ChunkWrite, open_store

SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d:10min:2,1min:35d:1h:2\n"


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), env={k: None for k in os.environ if k.startswith("MT_")})


def test_schema_init_and_store_cat(tmp_path: Path, cassandra_hosts, new_keyspace, cassandra_session):
    ks = new_keyspace()
    (tmp_path / "schemas.conf").write_text(SCHEMAS)
    cfg = tmp_path / "mt.toml"
    cfg.write_text(
        f'[store]\nbackend = "cassandra"\n[cassandra]\naddrs = "{cassandra_hosts}"\nkeyspace = "{ks}"\n'
        f'[retention]\nschemas-file = "{tmp_path / "schemas.conf"}"\n'
    )
    r = _cli("schema", "init", "--config", str(cfg))
    assert r.exit_code == 0, r.output
    rows = cassandra_session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (ks,)
    )
    tables = {row.table_name for row in rows}
    want = {table_for_ttl(86400)[0], table_for_ttl(35 * 86400)[0]}
    assert want <= tables
    assert all(t in r.output for t in want)
    assert _cli("schema", "init", "--config", str(cfg)).exit_code == 0  # idempotent

    sid = series_id(1, "cli.cass.cat", "ms", "gauge", 10, [])
    now = int(time.time())
    t0 = now - now % 600 - 600
    ts = np.arange(t0 + 10, t0 + 600, 10, dtype=np.uint32)
    vals = np.round(np.linspace(1.5, 99.25, len(ts)), 2)
    store = open_store("cassandra", addrs=cassandra_hosts, keyspace=ks, create_keyspace=False, ttls=[86400])
    store.submit([ChunkWrite(sid, 1, t0, 600, 86400, encode_chunk(t0, 600, ts, vals), 0)])
    assert store.drain(30) == 0
    store.close()

    r = _cli("store", "cat", "--config", str(cfg), "--id", sid, "--from", str(t0 - 600))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"## {table_for_ttl(86400)[0]} {sid} t0={t0} ")
    got = np.array([[float(x) for x in ln.split()] for ln in lines[1:]])
    np.testing.assert_array_equal(got[:, 0], ts)
    np.testing.assert_array_equal(got[:, 1], vals)


def test_store_cat_on_a_missing_keyspace_is_unreachable(tmp_path: Path, cassandra_hosts):
    cfg = tmp_path / "mt.toml"
    cfg.write_text(
        f'[store]\nbackend = "cassandra"\n[cassandra]\naddrs = "{cassandra_hosts}"\nkeyspace = "no_such_ks_x"\n'
    )
    r = _cli("store", "cat", "--config", str(cfg), "--id", series_id(1, "a", "ms", "gauge", 10, []))
    assert r.exit_code == 3
    assert "no_such_ks_x" in r.output
