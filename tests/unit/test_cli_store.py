"""`metrictank schema init` and `metrictank store cat` on the SQLite store: what was written is what is printed."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metrictank.chunk import encode_chunk
from metrictank.cli import EXIT_UNREACHABLE, main
from metrictank.schema import series_id, table_for_ttl
from metrictank.store import ChunkWrite, open_store

SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d:10min:2,1min:7d:1h:2\n"
SID = series_id(1, "cli.store.cat", "ms", "gauge", 10, [])


def _config(tmp_path: Path) -> Path:
    (tmp_path / "schemas.conf").write_text(SCHEMAS)
    f = tmp_path / "mt.toml"
    f.write_text(
        f'[sqlite]\npath = "{tmp_path / "db" / "chunks.db"}"\n'
        f'[retention]\nschemas-file = "{tmp_path / "schemas.conf"}"\n'
    )
    return f


def _run(args: list[str]):
    import os

    return CliRunner().invoke(main, args, env={k: None for k in os.environ if k.startswith("MT_")})


def _chunk(t0: int, span: int, step: int, seed: int):
    ts = np.arange(t0 + step, t0 + span + 1, step, dtype=np.uint32)  # Metrictank-style: (t0, t0+span]
    ts = ts[ts < t0 + span]
    vals = np.round(np.random.default_rng(seed).normal(100, 5, len(ts)), 3)
    return ts, vals, encode_chunk(t0, span, ts, vals)


@pytest.fixture
def filled(tmp_path: Path):
    cfg = _config(tmp_path)
    r = _run(["schema", "init", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    now = int(time.time())
    t0a = now - now % 600 - 1200
    raw = [_chunk(t0a, 600, 10, 1), _chunk(t0a + 600, 600, 10, 2)]
    t0r = now - now % 3600 - 3600
    rollup = _chunk(t0r, 3600, 60, 3)
    store = open_store("sqlite", path=tmp_path / "db" / "chunks.db")
    writes = [ChunkWrite(SID, 1, t0a + 600 * i, 600, 86400, c[2], 0) for i, c in enumerate(raw)]
    writes.append(ChunkWrite(f"{SID}_max_60", 1, t0r, 3600, 7 * 86400, rollup[2], 0))
    store.submit(writes)
    assert store.drain(10) == 0
    store.close()
    return cfg, t0a, raw, t0r, rollup


def test_schema_init_creates_the_sqlite_tables(tmp_path: Path):
    cfg = _config(tmp_path)
    r = _run(["schema", "init", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    conn = sqlite3.connect(tmp_path / "db" / "chunks.db")
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    want = {table_for_ttl(86400)[0], table_for_ttl(7 * 86400)[0]}
    assert want <= tables
    assert all(t in r.output for t in want)
    # idempotent
    assert _run(["schema", "init", "--config", str(cfg)]).exit_code == 0


def test_store_cat_prints_the_points_of_each_chunk(filled):
    cfg, t0a, raw, _t0r, _rollup = filled
    r = _run(["store", "cat", "--config", str(cfg), "--id", SID, "--from", str(t0a - 3600)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    heads = [ln for ln in lines if ln.startswith("## ")]
    assert len(heads) == 2
    assert f"t0={t0a} " in heads[0] and f"t0={t0a + 600} " in heads[1]
    assert "span=600" in heads[0] and f"points={len(raw[0][0])}" in heads[0]
    got = [ln.split() for ln in lines if not ln.startswith("## ")]
    want_ts = np.concatenate([raw[0][0], raw[1][0]])
    want_v = np.concatenate([raw[0][1], raw[1][1]])
    assert [int(t) for t, _ in got] == want_ts.tolist()
    np.testing.assert_array_equal([float(v) for _, v in got], want_v)


def test_store_cat_trims_to_the_range_and_speaks_json(filled):
    cfg, t0a, raw, _t0r, _rollup = filled
    frm, to = t0a + 300, t0a + 900
    r = _run(
        [
            "store",
            "cat",
            "--config",
            str(cfg),
            "--id",
            SID,
            "--from",
            str(frm),
            "--to",
            str(to),
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["from"] == frm and doc["to"] == to
    ts = [t for c in doc["chunks"] for t in c["ts"]]
    all_ts = np.concatenate([raw[0][0], raw[1][0]])
    assert ts == all_ts[(all_ts >= frm) & (all_ts < to)].tolist()
    assert [c["points"] for c in doc["chunks"]] == [len(raw[0][0]), len(raw[1][0])]  # whole chunks decoded


def test_store_cat_reads_a_rollup_archive(filled):
    cfg, _t0a, _raw, t0r, rollup = filled
    r = _run(
        [
            "store",
            "cat",
            "--config",
            str(cfg),
            "--id",
            SID,
            "--archive",
            "1",
            "--method",
            "max",
            "--format",
            "chunks",
        ]
    )
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.splitlines()
    assert f"{SID}_max_60 t0={t0r} " in line
    assert table_for_ttl(7 * 86400)[0] in line
    assert f"points={len(rollup[0])}" in line

    r = _run(["store", "cat", "--config", str(cfg), "--id", SID, "--archive", "1"])
    assert r.exit_code == 2 and "--method" in r.output
    r = _run(["store", "cat", "--config", str(cfg), "--id", SID, "--archive", "1", "--method", "min"])
    assert r.exit_code == 0 and r.stdout == ""  # nothing stored for min


def test_store_cat_errors(tmp_path: Path):
    cfg = _config(tmp_path)
    r = _run(["store", "cat", "--config", str(cfg), "--id", SID])
    assert r.exit_code == EXIT_UNREACHABLE  # the database file does not exist; it is not created
    assert not (tmp_path / "db" / "chunks.db").exists()
    r = _run(["store", "cat", "--config", str(cfg), "--id", "not-an-id"])
    assert r.exit_code == 2
