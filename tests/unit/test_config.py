"""Configuration: defaults, TOML file, MT_ overrides, errors that name the key, generated reference."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from metrictank.cli import main
from metrictank.config import OPTIONS, ConfigError, env_name, load_config, parse_duration, reference_markdown


def test_defaults_follow_metrictank_names():
    cfg = load_config(env={})
    assert cfg.kafka_mdm_in.topics == "mdm"
    assert cfg.kafka_mdm_in.offset == "newest"
    assert cfg.kafka_cluster.topic == "metricpersist"
    assert cfg.cluster.max_priority == 10
    assert cfg.cluster.primary_node is False
    assert cfg.store.backend == "sqlite"


def test_file_then_env_override(tmp_path: Path):
    f = tmp_path / "mt.toml"
    f.write_text(
        'instance = "mt1"\n[cluster]\nprimary-node = true\nwarm-up-period = "2m"\n[kafka-mdm-in]\nbrokers = "a:1"\n'
    )
    cfg = load_config(f, env={"MT_KAFKA_MDM_IN_BROKERS": "b:2", "MT_CLUSTER_MAX_PRIORITY": "3"})
    assert cfg.instance == "mt1"
    assert cfg.cluster.primary_node is True
    assert cfg.cluster.warm_up_period == 120
    assert cfg.kafka_mdm_in.brokers == "b:2"
    assert cfg.cluster.max_priority == 3
    assert cfg.origins["kafka-mdm-in.brokers"] == "env MT_KAFKA_MDM_IN_BROKERS"
    assert cfg.origins["cluster.primary-node"] == "file"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[cluster]\nprimary-nod = true\n", "cluster.primary-nod"),
        ("[clusterr]\nx = 1\n", "clusterr"),
        ('[cluster]\nmax-priority = "high"\n', "cluster.max-priority"),
        ('[kafka-mdm-in]\noffset = "yesterday"\n', "kafka-mdm-in.offset"),
        ('[kafka-mdm-in]\npartitions = "1,x"\n', "kafka-mdm-in.partitions"),
        ('[store]\nbackend = "mysql"\n', "store.backend"),
        ('[http]\nlisten = "6060"\n', "http.listen"),
        ("bogus = 1\n", "bogus"),
        ("[cluster\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        load_config(f, env={})


def test_bad_env_override_names_the_variable():
    with pytest.raises(ConfigError, match="MT_CLUSTER_WARM_UP_PERIOD"):
        load_config(env={"MT_CLUSTER_WARM_UP_PERIOD": "soon"})


def test_durations():
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration(7) == 7
    for bad in ("", "1x", "h", "-5s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_env_names():
    assert env_name("kafka-mdm-in", "brokers") == "MT_KAFKA_MDM_IN_BROKERS"
    assert env_name("", "instance") == "MT_INSTANCE"


def test_show_masks_token():
    cfg = load_config(env={"MT_HTTP_ADMIN_TOKEN": "s3cret"})
    assert cfg.http.admin_token == "s3cret"
    assert "s3cret" not in cfg.to_toml()


def test_show_roundtrips_through_load(tmp_path: Path):
    cfg = load_config(env={"MT_CLUSTER_WARM_UP_PERIOD": "90s", "MT_INSTANCE": "x1"})
    f = tmp_path / "shown.toml"
    f.write_text(cfg.to_toml())
    again = load_config(f, env={})
    assert again.as_dict() == cfg.as_dict()


def test_reference_covers_every_option_and_is_current():
    ref = reference_markdown()
    for opt in OPTIONS:
        assert f"`{env_name(opt.section, opt.key)}`" in ref
    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text().strip() == ref.strip(), "run: metrictank config doc > docs/configuration.md"


def test_cli_config_check(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text("[cluster]\nprimary-node = true\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nprimary = true\n")
    r = CliRunner().invoke(main, ["config", "check", str(good)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert r.exit_code == 2
    assert "cluster.primary" in r.output


@pytest.mark.parametrize(
    "env, key",
    [
        ({"MT_CLUSTER_LEASE_DURATION": "4s", "MT_CLUSTER_LEASE_MARGIN": "2s"}, "cluster.lease-margin"),
        ({"MT_CLUSTER_FAILOVER": "auto", "MT_CLUSTER_LEASE": "false"}, "cluster.failover"),
        ({"MT_CLUSTER_FAILOVER": "sometimes"}, "cluster.failover"),
        ({"MT_KAFKA_CLUSTER_TRUSTED_INSTANCES": "mt-1,re:(["}, "kafka-cluster.trusted-instances"),
        ({"MT_KAFKA_MDM_IN_BROKER_UNREACHABLE_TIMEOUT": "-1s"}, "kafka-mdm-in.broker-unreachable-timeout"),
        ({"MT_HTTP_MAX_REQUEST_BODY": "0"}, "http.max-request-body"),
        ({"MT_CLUSTER_ROLE": "reader"}, "cluster.role"),
        ({"MT_CLUSTER_ROLE": "read", "MT_CLUSTER_PRIMARY_NODE": "true"}, "cluster.primary-node"),
        ({"MT_CLUSTER_ROLE": "read", "MT_CLUSTER_FAILOVER": "auto"}, "cluster.failover"),
        ({"MT_CLUSTER_READ_WINDOW": "0s"}, "cluster.read-window"),
        ({"MT_CLUSTER_READ_WINDOW_MARGIN": "-1s"}, "cluster.read-window-margin"),
        ({"MT_KAFKA_MDM_IN_AUTO_OFFSET_MARGIN": "-5m"}, "kafka-mdm-in.auto-offset-margin"),
        ({"MT_KAFKA_MDM_IN_AUTO_OFFSET_FALLBACK": "forever"}, "kafka-mdm-in.auto-offset-fallback"),
        ({"MT_CASSANDRA_IDX_ARCHIVE_TABLE": "idx; DROP TABLE x"}, "cassandra-idx.archive-table"),
        ({"MT_CASSANDRA_IDX_ARCHIVE_TABLE": ""}, "cassandra-idx.archive-table"),
        ({"MT_CLUSTER_COLOR": "a"}, "cluster.color"),  # a color without a membership topic to switch it on
        ({"MT_CLUSTER_COLOR": "green", "MT_CLUSTER_MEMBERSHIP_TOPIC": "m"}, "cluster.color"),
        ({"MT_CLUSTER_HEARTBEAT": "0s"}, "cluster.heartbeat"),
        ({"MT_KAFKA_MDM_IN_READ_AHEAD_MB": "-1"}, "kafka-mdm-in.read-ahead-mb"),
        ({"MT_KAFKA_MDM_IN_READ_AHEAD_MB": "64MB"}, "kafka-mdm-in.read-ahead-mb"),
        ({"MT_KAFKA_MDM_IN_BATCH_CONSUMER": "maybe"}, "kafka-mdm-in.batch-consumer"),
    ],
)
def test_bad_cluster_and_limit_settings_name_their_key(env, key):
    with pytest.raises(ConfigError) as e:
        load_config(env=env)
    assert key in str(e.value)


def test_warm_start_offset_auto_needs_the_persist_backlog_and_the_index():
    auto = {"MT_KAFKA_MDM_IN_OFFSET": "auto"}
    with pytest.raises(ConfigError, match=r"^kafka-cluster\.offset: .*auto"):
        load_config(env=auto)  # the persist backlog defaults to newest: no saved marks to judge by
    with pytest.raises(ConfigError, match=r"^kafka-cluster\.offset"):
        load_config(env={**auto, "MT_KAFKA_CLUSTER_ENABLED": "false", "MT_KAFKA_CLUSTER_OFFSET": "6h"})
    with pytest.raises(ConfigError, match=r"^cassandra-idx\.enabled"):
        load_config(env={**auto, "MT_KAFKA_CLUSTER_OFFSET": "6h", "MT_CASSANDRA_IDX_ENABLED": "false"})
    cfg = load_config(
        env={**auto, "MT_KAFKA_CLUSTER_OFFSET": "6h", "MT_KAFKA_MDM_IN_AUTO_OFFSET_MARGIN": "90s"}
    )
    assert (cfg.kafka_mdm_in.offset, cfg.kafka_mdm_in.auto_offset_margin) == ("auto", 90.0)
    with pytest.raises(ConfigError, match=r"^kafka-mdm-in\.offset .*must be"):
        load_config(env={"MT_KAFKA_MDM_IN_OFFSET": "autox"})
    with pytest.raises(ConfigError, match=r"^kafka-cluster\.offset .*must be"):
        load_config(env={"MT_KAFKA_CLUSTER_OFFSET": "auto"})  # only the data topic has a warm start
