"""`metrictank config check|show|sample`: exit codes a script can use, messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from metrictank.cli import EXIT_USAGE, main


def _run(args: list[str], env: dict | None = None):
    # CliRunner's env adds to os.environ: make sure no MT_* of the caller leaks in
    import os

    clean = {k: None for k in os.environ if k.startswith("MT_")}
    clean.update(env or {})
    return CliRunner().invoke(main, args, env=clean)


def test_check_good_file(tmp_path: Path):
    f = tmp_path / "mt1.toml"
    f.write_text('instance = "mt1"\n[cluster]\nprimary-node = true\nwarm-up-period = "30s"\n')
    r = _run(["config", "check", str(f)])
    assert r.exit_code == 0
    assert "OK" in r.output


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[cluster]\nprimary-nod = true\n", "cluster.primary-nod"),
        ('[kafka-mdm-in]\noffset = "yesterday"\n', "kafka-mdm-in.offset"),
        ('[store]\nbackend = "mysql"\n', "store.backend"),
        ("[cluster\n", "not valid TOML"),
    ],
)
def test_check_bad_file_exits_2_naming_the_key(tmp_path: Path, text: str, needle: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    r = _run(["config", "check", str(f)])
    assert r.exit_code == EXIT_USAGE
    assert needle in r.output


def test_check_missing_file(tmp_path: Path):
    r = _run(["config", "check", str(tmp_path / "nope.toml")])
    assert r.exit_code == EXIT_USAGE
    assert "does not exist" in r.output


def test_check_bad_env_override(tmp_path: Path):
    f = tmp_path / "mt1.toml"
    f.write_text('instance = "mt1"\n')
    r = _run(["config", "check", str(f)], env={"MT_CLUSTER_MAX_PRIORITY": "high"})
    assert r.exit_code == EXIT_USAGE
    assert "MT_CLUSTER_MAX_PRIORITY" in r.output


def test_check_follows_the_retention_files(tmp_path: Path):
    """A schema file the instance cannot parse would stop it at startup: `config check` says so first."""
    schemas = tmp_path / "storage-schemas.conf"
    schemas.write_text("[default]\npattern = .*\nretentions = 10s:1d:7min:2\n")  # 7min is no chunk span
    f = tmp_path / "mt1.toml"
    f.write_text(f'[retention]\nschemas-file = "{schemas}"\n')
    r = _run(["config", "check", str(f)])
    assert r.exit_code == EXIT_USAGE
    assert "retention.schemas-file" in r.output and "chunkspan" in r.output

    f.write_text(f'[retention]\naggregations-file = "{tmp_path / "missing.conf"}"\n')
    r = _run(["config", "check", str(f)])
    assert r.exit_code == EXIT_USAGE
    assert "retention.aggregations-file" in r.output


def test_check_cassandra_replication(tmp_path: Path):
    f = tmp_path / "mt1.toml"
    f.write_text('[store]\nbackend = "cassandra"\n[cassandra]\nreplication = "EverywhereStrategy"\n')
    r = _run(["config", "check", str(f)])
    assert r.exit_code == EXIT_USAGE
    assert "cassandra.replication" in r.output
    f.write_text(
        '[store]\nbackend = "cassandra"\n[cassandra]\nreplication = "NetworkTopologyStrategy dc1:3"\n'
    )
    assert _run(["config", "check", str(f)]).exit_code == 0


def test_show_effective_config_with_origins(tmp_path: Path):
    f = tmp_path / "mt1.toml"
    f.write_text('instance = "mt1"\n[http]\nadmin-token = "s3cret"\n')
    r = _run(["config", "show", "--config", str(f)], env={"MT_CLUSTER_PRIMARY_NODE": "true"})
    assert r.exit_code == 0
    assert 'instance = "mt1"  # file' in r.output
    assert "primary-node = true  # env MT_CLUSTER_PRIMARY_NODE" in r.output
    assert "max-priority = 10  # default" in r.output
    assert "s3cret" not in r.output and '"***"' in r.output
    r = _run(["config", "show", "--config", str(f), "--no-origin"])
    assert 'instance = "mt1"\n' in r.output


def test_doc_is_the_reference():
    r = _run(["config", "doc"])
    assert r.exit_code == 0
    assert r.output.startswith("# Configuration reference")


def test_every_command_has_help_with_examples():
    """The issue asks for `--help` with examples on each command."""
    for args in (
        ["run"],
        ["config", "check"],
        ["config", "show"],
        ["config", "doc"],
        ["config", "sample"],
        ["node", "status"],
        ["node", "promote"],
        ["node", "demote"],
        ["cluster", "members"],
        ["fakemetrics", "feed"],
        ["fakemetrics", "backfill"],
        ["store", "cat"],
        ["schema", "init"],
    ):
        r = _run([*args, "--help"])
        assert r.exit_code == 0, args
        assert "Example" in r.output, args
        assert "metrictank " + args[0] in r.output, args
