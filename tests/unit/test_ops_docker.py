"""docker/: the compose stack cannot run on these machines, so its settings are checked here against the code.

Every MT_* variable must be a known option with a valid value (the instance refuses anything else at startup),
addresses and ports must agree between services, commands must parse with the real CLI, and the dashboard may
only query metric names the instance exports and Graphite functions the query layer has.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from metrictank.cli import main
from metrictank.cli.config import check_config
from metrictank.config import load_config
from metrictank.query.functions import FUNCTIONS
from metrictank.query.parser import find_calls, parse_target
from metrictank.retention import Schemas
from metrictank.stats import prom_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _dockerfile() -> list[str]:
    """Dockerfile instructions with continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _image_env() -> dict[str, str]:
    """ENV of the final stage of the instance image."""
    env: dict[str, str] = {}
    for ln in _dockerfile():
        if ln.startswith("FROM "):
            env = {}
        elif ln.startswith("ENV "):
            for tok in shlex.split(ln[4:]):
                k, _, v = tok.partition("=")
                env[k] = v
    return env


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {str(k): str(v) for k, v in env.items()}


def _builds_instance_image(svc: dict) -> bool:
    b = svc.get("build") or {}
    return b.get("dockerfile") == "docker/Dockerfile"


def _instances(services) -> dict[str, dict]:
    """Services that run `metrictank run` (the image's default command)."""
    return {n: s for n, s in services.items() if _builds_instance_image(s) and "command" not in s}


def _effective(svc: dict) -> dict[str, str]:
    return {**_image_env(), **_env(svc)}


def _local(path: str) -> Path:
    """An /etc/metrictank/<file> path in the image, as the repository file the Dockerfile copies there."""
    copied = {}
    for ln in _dockerfile():
        if ln.startswith("COPY ") and "--from" not in ln:
            *srcs, dest = ln.split()[1:]
            for s in srcs:
                copied[dest.rstrip("/") + "/" + Path(s).name] = ROOT / s
    assert path in copied, f"{path} is not copied into the image"
    return copied[path]


def _config_for(svc: dict):
    """The instance's effective configuration: the image's config file, then the image's and the service's env."""
    env = _effective(svc)
    cmd = _image_cmd()
    cfg_path = _local(cmd[cmd.index("--config") + 1])
    return load_config(cfg_path, env={k: v for k, v in env.items() if k.startswith("MT_")})


def _image_cmd() -> list[str]:
    for ln in reversed(_dockerfile()):
        if ln.startswith("CMD "):
            return json.loads(ln[4:])
    raise AssertionError("no CMD")


def _hostport(addr: str) -> tuple[str, int]:
    addr = addr.split("://", 1)[-1].rstrip("/")
    host, _, port = addr.rpartition(":")
    return host, int(port)


# --- the instances ---------------------------------------------------------------------------------------------
def test_two_instances_one_primary(services):
    inst = _instances(services)
    assert len(inst) == 2
    cfgs = {n: _config_for(s) for n, s in inst.items()}
    assert sorted(c.cluster.primary_node for c in cfgs.values()) == [False, True]
    assert len({c.instance for c in cfgs.values()}) == 2  # persist messages name their sender
    for c in cfgs.values():
        assert c.store.backend == "cassandra"
        assert c.kafka_cluster.enabled


def test_every_mt_variable_is_a_valid_option(services):
    """load_config raises on an unknown MT_* name? No: unknown env vars are ignored, so check names too."""
    from metrictank.config import OPTIONS, env_name

    known = {env_name(o.section, o.key) for o in OPTIONS}
    for name, svc in services.items():
        env = _effective(svc) if _builds_instance_image(svc) else _env(svc)
        mt = {k: v for k, v in env.items() if k.startswith("MT_")}
        unknown = set(mt) - known
        assert not unknown, f"{name}: unknown options {unknown}"
        if mt:
            cfg = load_config(env=mt)  # raises ConfigError naming the variable on a bad value
            assert check_config(_with_local_paths(cfg, mt)) == [], name


def _with_local_paths(cfg, mt: dict[str, str]):
    """Point the retention files at the repository copies so check_config can read them."""
    env = dict(mt)
    for var in ("MT_RETENTION_SCHEMAS_FILE", "MT_RETENTION_AGGREGATIONS_FILE"):
        if env.get(var):
            env[var] = str(_local(env[var]))
    return load_config(env=env)


def test_addresses_point_at_services(services):
    inst = _instances(services)
    kafka = services["kafka"]["environment"]
    advertised = {_hostport(a.split("://", 1)[1]) for a in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, svc in inst.items():
        cfg = _config_for(svc)
        _host, port = _hostport(cfg.http.listen)
        # published ports map to the port the API listens on
        assert all(int(p.split(":")[-1]) == port for p in svc["ports"]), name
        for b in cfg.kafka_mdm_in.brokers.split(","):
            assert _hostport(b) in advertised, name
        for a in cfg.cassandra.addrs.split(","):
            host, cport = _hostport(a)
            assert host in services and cport == 9042
        peers = [p for p in cfg.cluster.peers.split(",") if p]
        assert len(peers) == len(inst) - 1
        for p in peers:
            host, pport = _hostport(p)
            assert host in inst and host != name
            assert pport == _hostport(_config_for(inst[host]).http.listen)[1]
    published = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "two services publish the same host port"


def test_kafka_is_kraft_and_topics_fit(services):
    k = services["kafka"]
    assert k["image"].startswith("apache/kafka:")
    env = k["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    cmd = " ".join(services["kafka-init"]["command"])
    parts = dict(re.findall(r"--topic (\S+) --partitions (\d+)", cmd))
    cfg = _config_for(next(iter(_instances(services).values())))
    data, persist = cfg.kafka_mdm_in.topics, cfg.kafka_cluster.topic
    assert data in parts and persist in parts
    # a persist message goes to the partition number of its series' data partition
    assert int(parts[persist]) >= int(parts[data])
    # retention covers the replay the instances start with, which covers the largest chunkspan
    retention = float(env["KAFKA_LOG_RETENTION_HOURS"]) * 3600
    from metrictank.config import parse_duration

    replay = parse_duration(cfg.kafka_mdm_in.offset)
    schemas = Schemas.load(
        _local(_effective(next(iter(_instances(services).values())))["MT_RETENTION_SCHEMAS_FILE"])
    )
    assert schemas.max_chunkspan() < replay < retention


def test_cassandra_and_schema_init(services):
    assert services["cassandra"]["image"] == "cassandra:5.0"
    init = services["schema-init"]
    assert init["command"][:2] == ["schema", "init"]
    for name, svc in _instances(services).items():
        assert svc["depends_on"]["schema-init"]["condition"] == "service_completed_successfully", name
        # keyspace made once, by schema-init; the instances wait for the tables
        assert _config_for(svc).cassandra.create_keyspace is False


def _parse_cli(args: list[str]) -> click.Context:
    """Resolve and parse a command line with the real CLI (raises on unknown options or bad values)."""
    cmd: click.Command = main
    parent = click.Context(main, info_name="metrictank")
    rest = list(args)
    name = "metrictank"
    while isinstance(cmd, click.Group):  # the groups take no options: the first word is the subcommand
        name, rest = rest[0], rest[1:]
        sub = cmd.get_command(parent, name)
        assert sub is not None, f"unknown command {name!r} in {args}"
        if isinstance(sub, click.Group):
            parent = click.Context(sub, info_name=name, parent=parent)
        cmd = sub
    return cmd.make_context(name, rest, parent=parent)


def test_image_commands_parse(services):
    _parse_cli(_image_cmd())
    for name, svc in services.items():
        if _builds_instance_image(svc) and "command" in svc:
            ctx = _parse_cli(svc["command"])
            assert ctx.command.name in ("init", "feed"), name
    feed = _parse_cli(services["fakemetrics"]["command"]).params
    cfg = _config_for(next(iter(_instances(services).values())))
    assert feed["topic"] == cfg.kafka_mdm_in.topics
    assert feed["brokers"] == cfg.kafka_mdm_in.brokers


def test_dockerfile(services):
    lines = _dockerfile()
    for ln in lines:
        if ln.startswith("COPY ") and "--from" not in ln:
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert json.loads(next(ln for ln in lines if ln.startswith("ENTRYPOINT "))[11:]) == ["metrictank"]
    assert "STOPSIGNAL SIGTERM" in lines
    exposed = int(next(ln for ln in lines if ln.startswith("EXPOSE ")).split()[1])
    assert _hostport(_image_env()["MT_HTTP_LISTEN"])[1] == exposed
    from metrictank.config import parse_duration

    for name, svc in _instances(services).items():
        grace = parse_duration(svc["stop_grace_period"])
        assert grace > _config_for(svc).store.drain_timeout, name


# --- monitoring ------------------------------------------------------------------------------------------------
def _exported_metrics() -> set[str]:
    """Prometheus names of the registrations (`s.counter/gauge("...")` or `stats.counter/gauge("...")`), which
    each component makes beside the figures it owns, anywhere in the package."""
    src = "\n".join(p.read_text() for p in sorted((ROOT / "metrictank").rglob("*.py")))
    found = re.findall(r"\b(?:s|stats)\.(counter|gauge)\(\s*\"([^\"]+)\"", src)
    assert len(found) >= 10, "stat registrations not found: update this test"
    return {prom_name(n) + ("_total" if kind == "counter" else "") for kind, n in found}


def test_prometheus_scrapes_both_instances(services):
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert any(v.startswith("./prometheus/prometheus.yml:") for v in services["prometheus"]["volumes"])
    targets = {
        t: sc.get("labels", {}).get("node")
        for job in prom["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    want = {
        f"{n}:{_hostport(_config_for(s).http.listen)[1]}": _config_for(s).instance
        for n, s in _instances(services).items()
    }
    assert targets == want  # node label = instance name
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prom["scrape_configs"])


def _datasources() -> dict[str, dict]:
    doc = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    return {d["uid"]: d for d in doc["datasources"]}


def test_grafana_datasources(services):
    ds = _datasources()
    graphite = [d for d in ds.values() if d["type"] == "graphite"]
    assert len(graphite) == 1
    host, port = _hostport(graphite[0]["url"])
    inst = _instances(services)
    assert host in inst and port == _hostport(_config_for(inst[host]).http.listen)[1]
    prom = [d for d in ds.values() if d["type"] == "prometheus"]
    assert len(prom) == 1 and _hostport(prom[0]["url"]) == ("prometheus", 9090)
    vols = services["grafana"]["volumes"]
    for v in vols:
        src = v.split(":")[0]
        assert (DOCKER / src).is_dir(), v
    provider = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert any(v.split(":")[1] == path for v in vols)


def test_dashboard_queries_what_the_instance_exports():
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "metrictank-ops.json").read_text())
    ds = _datasources()
    exported = _exported_metrics()
    used: set[str] = set()
    graphite_targets = []
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] in ds, panel["title"]
        for t in panel["targets"]:
            kind = ds[t.get("datasource", panel["datasource"])["uid"]]["type"]
            if kind == "prometheus":
                names = set(re.findall(r"\bmetrictank_[a-z0-9_]+", t["expr"]))
                assert names, t["expr"]
                used |= names
            else:
                graphite_targets.append(t["target"])
    unknown = used - exported
    assert not unknown, f"dashboard uses metrics the instance does not export: {unknown}"
    # the panels the issue asks for
    for must in (
        "metrictank_tank_points_added_total",
        "metrictank_input_kafka_mdm_partition_lag",
        "metrictank_cluster_self_promotion_wait",
        "metrictank_cluster_self_state_primary",
    ):
        assert must in used, must
    assert graphite_targets
    for target in graphite_targets:
        for call in find_calls(parse_target(target)):
            assert call.name in FUNCTIONS, call.name
