"""The node CLI against a real instance (a `metrictank run` subprocess on the test bed's Kafka): status, promotion
refused while the data-complete check fails and allowed with --force, demotion, --json, the admin token, cluster
members, and a clean SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from metrictank.cli import EXIT_REFUSED, main
from metrictank.fakemetrics import Producer, SeriesSet

from .helpers import free_port, instance_config, wait_for

PARTS = 2
TOKEN = "s3cret-admin-token"
DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _cli(*args: str):
    env = {k: None for k in os.environ if k.startswith("MT_")}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def running(tmp_path, kafka_bootstrap, new_topic):
    """A secondary whose first consumed message is mid-chunk, so its data-complete promotion wait is > 0."""
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(20, PARTS, prefix="cli.node")
    assert len(set(ss.partitions.tolist())) == PARTS
    prod = Producer(kafka_bootstrap, topic)
    now = int(time.time())
    # an hour-old message first on every partition, so the instance does not start at the log start ...
    for p in range(PARTS):
        row = int(np.flatnonzero(ss.partitions == p)[0])
        prod._send(ss.metricdata(row, now - 3600, 1.0), p, (now - 3600) * 1000)
    # ... then data whose message time lies after the start of the current chunk: chunks seen partially
    first = now - now % 600 + 1
    prod.send_metricdata(ss, first)
    prod.send_points(ss, first + 10, message_ts_ms=first * 1000 + 10)
    assert prod.flush(30) == 0

    port = free_port()
    cfg = instance_config(
        tmp_path,
        "mt-cli",
        kafka_bootstrap,
        topic,
        persist_topic=persist,
        offset="15m",  # the offset of now-15m: after the old message, at the current-chunk data
        port=port,
        extra={"http": {"admin-token": TOKEN}},
    )
    log = open(tmp_path / "instance.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrictank.cli", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MT_", "NOTIFY_SOCKET", "WATCHDOG_"))},
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"instance exited with {proc.returncode}: {(tmp_path / 'instance.log').read_text()}"
            )
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, "/healthz")
        yield url, proc, tmp_path / "instance.log"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def _status(url: str) -> dict:
    r = _cli("node", "status", "--url", url, "--json")
    return json.loads(r.stdout)


def test_node_commands_against_a_running_instance(running):
    url, proc, logfile = running

    # ready once the partitions are consumed and lag is known (warm-up 0s)
    wait_for(lambda: _cli("node", "status", "--url", url).exit_code == 0, 60, "node ready")
    r = _cli("node", "status", "--url", url)
    for field in ("role", "state", "priority", "promotion wait", "data-complete wait", "partitions", "lag"):
        assert re.search(rf"^{field}\s", r.stdout, re.M), field
    assert re.search(r"^role\s+secondary", r.stdout, re.M)
    assert re.search(r"^state\s+NodeReady", r.stdout, re.M)
    assert re.search(r"^partitions\s+0-1$", r.stdout, re.M)
    n = _status(url)
    assert n["primary"] is False and n["state"] == "NodeReady"
    assert n["dataCompletePromotionWait"] > 0  # chunks in memory began before the first consumed message

    # without the token: 401, exit 1
    r = _cli("node", "promote", "--url", url)
    assert r.exit_code == EXIT_REFUSED and "401" in r.output

    # with it: refused by the data-complete check, every reason listed
    r = _cli("node", "promote", "--url", url, "--token", TOKEN)
    assert r.exit_code == EXIT_REFUSED, r.output
    assert "promotion refused" in r.output and "data-complete promotion wait" in r.output
    r = _cli("node", "promote", "--url", url, "--token", TOKEN, "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["status"] == 409
    assert any("data-complete" in reason for reason in doc["reasons"])
    assert _status(url)["primary"] is False

    # alone, a secondary leaves its partitions without a primary: cluster members says so
    r = _cli("cluster", "members", "--url", url)
    assert r.exit_code == EXIT_REFUSED and "no reachable primary" in r.output
    assert "mt-cli" in r.stdout and "secondary" in r.stdout

    # --force overrides the checks
    r = _cli("node", "promote", "--url", url, "--token", TOKEN, "--force")
    assert r.exit_code == 0, r.output
    assert _status(url)["primary"] is True
    r = _cli("cluster", "members", "--url", url, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["problems"] == []
    assert "FORCED promotion" in logfile.read_text()

    # promoting a primary again is a no-op success
    assert _cli("node", "promote", "--url", url, "--token", TOKEN).exit_code == 0

    # demote: drained and persist messages sent -> exit 0
    r = _cli("node", "demote", "--url", url, "--token", TOKEN)
    assert r.exit_code == 0, r.output
    assert _status(url)["primary"] is False
    r = _cli("node", "demote", "--url", url, "--token", TOKEN, "--json")
    assert json.loads(r.stdout) == {
        "url": url,
        "action": "demote",
        "ok": True,
        "status": 200,
        "message": "OK",
    }

    # stop = demote, drain, exit 0 (as systemd's KillSignal=SIGTERM does it), from primary
    assert _cli("node", "promote", "--url", url, "--token", TOKEN, "--force").exit_code == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert "stopping (demote, drain, exit)" in logfile.read_text()
    r = _cli("node", "status", "--url", url)
    assert r.exit_code == 3  # unreachable


def test_dashboard_metrics_are_exported_by_a_running_instance(running):
    """The Grafana dashboard's Prometheus expressions name metrics a real /metrics scrape has."""
    url, _proc, _log = running
    text = httpx.get(url + "/metrics", timeout=10).text
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    # prometheus_client spells a counter's TYPE line with or without `_total` depending on its version
    names = {n + ("_total" if kind == "counter" and not n.endswith("_total") else "") for n, kind in exported}
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "metrictank-ops.json").read_text())
    used = {
        m
        for panel in dash["panels"]
        for t in panel["targets"]
        if "expr" in t
        for m in re.findall(r"\bmetrictank_[a-z0-9_]+", t["expr"])
    }
    assert used and used <= names, used - names


def test_systemd_notifications_of_a_running_instance(tmp_path, kafka_bootstrap, new_topic):
    """Under systemd (Type=notify): READY=1 once the node is ready, status lines, watchdog pings, STOPPING=1."""
    import socket

    topic = new_topic(PARTS)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    port = free_port()
    cfg = instance_config(tmp_path, "mt-sd", kafka_bootstrap, topic, port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"})
    log = open(tmp_path / "instance.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrictank.cli", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    got: list[str] = []

    def receive(until: float, want) -> None:
        while time.monotonic() < until and not want():
            try:
                got.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                assert proc.poll() is None or want(), (tmp_path / "instance.log").read_text()

    try:
        receive(time.monotonic() + 60, lambda: "READY=1" in got and got.count("WATCHDOG=1") >= 2)
        assert "READY=1" in got, got
        assert any(m.startswith("STATUS=secondary, NodeReady") for m in got), got
        assert got.count("WATCHDOG=1") >= 2  # every WATCHDOG_USEC/2 = 1 s
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # READY=1 means ready
        proc.send_signal(signal.SIGTERM)
        receive(time.monotonic() + 30, lambda: "STOPPING=1" in got)
        assert "STOPPING=1" in got
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        sock.close()
