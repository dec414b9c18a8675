"""The shipped configuration files: the sample TOML is generated from the option table and loads; the retention
files parse as the instance parses them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

from metrictank.cli import main
from metrictank.cli.config import sample_toml
from metrictank.config import OPTIONS, env_name, load_config
from metrictank.retention import Aggregations, Schemas

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


def test_sample_toml_is_current():
    """config/metrictank.toml is exactly `metrictank config sample` (regenerate it when an option changes)."""
    r = CliRunner().invoke(main, ["config", "sample"])
    assert r.exit_code == 0, r.output
    assert r.output == sample_toml()
    assert (CONFIG / "metrictank.toml").read_text() == r.output, (
        "config/metrictank.toml is stale: run `metrictank config sample > config/metrictank.toml`"
    )


def test_sample_toml_loads_as_defaults():
    cfg = load_config(CONFIG / "metrictank.toml", env={})
    assert cfg.as_dict() == load_config(env={}).as_dict()


def test_sample_documents_every_option_and_its_defaults_round_trip(tmp_path: Path):
    text = (CONFIG / "metrictank.toml").read_text()
    for opt in OPTIONS:
        assert f"# env: {env_name(opt.section, opt.key)}\n# {opt.key} = " in text, opt.dotted
        assert opt.doc.split()[0] in text
    # uncommenting every option gives a valid file whose values are the defaults, each now from the file
    uncommented = re.sub(r"^# ([a-z][a-z0-9-]*) = ", r"\1 = ", text, flags=re.M)
    f = tmp_path / "all.toml"
    f.write_text(uncommented)
    data = tomllib.loads(uncommented)
    assert sum(len(v) if isinstance(v, dict) else 1 for v in data.values()) == len(OPTIONS)
    cfg = load_config(f, env={})
    assert cfg.as_dict() == load_config(env={}).as_dict()
    assert set(cfg.origins.values()) == {"file"}


def test_storage_schemas_conf_parses():
    schemas = Schemas.load(CONFIG / "storage-schemas.conf")
    assert len(schemas.schemas) >= 1
    idx, s = schemas.match("some.id.of.a.metric.1", 10)
    assert s.name == "default"
    assert s.raw.interval == 10
    assert len(s.retentions) >= 2  # raw plus at least one rollup
    # every TTL is a Cassandra table the instance (and `schema init`) creates
    assert schemas.all_ttls() == sorted(
        {r.ttl for x in [*schemas.schemas, schemas.default] for r in x.retentions}
    )


def test_storage_aggregation_conf_parses():
    aggs = Aggregations.load(CONFIG / "storage-aggregation.conf")
    _, default = aggs.match("some.id.of.a.metric.1")
    assert default.name == "default" and default.default_method == "avg"
    _, counter = aggs.match("requests_total")
    assert counter.name == "counters" and counter.default_method == "lst"


def test_config_check_accepts_the_shipped_files_together(tmp_path: Path):
    f = tmp_path / "mt1.toml"
    f.write_text(
        f'instance = "mt1"\n[retention]\nschemas-file = "{CONFIG / "storage-schemas.conf"}"\n'
        f'aggregations-file = "{CONFIG / "storage-aggregation.conf"}"\n'
    )
    r = CliRunner().invoke(main, ["config", "check", str(f)], env={})
    assert r.exit_code == 0, r.output
