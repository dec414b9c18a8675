"""systemd integration: sd_notify over a real AF_UNIX datagram socket, the watchdog, and the shipped unit file."""

from __future__ import annotations

import configparser
import os
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from metrictank.config import parse_duration
from metrictank.systemd import SystemdNotifier, notify, watchdog_interval

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "metrictank@.service"


@pytest.fixture
def sock_path(tmp_path):
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    yield str(path), s
    s.close()


@pytest.fixture
def abstract_sock():
    name = f"mtpy-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    yield "@" + name, s
    s.close()


def _drain(s: socket.socket) -> list[str]:
    out = []
    s.settimeout(0.2)
    while True:
        try:
            out.append(s.recv(4096).decode())
        except TimeoutError:
            return out


def test_notify_sends_to_a_path_socket(sock_path):
    path, s = sock_path
    assert notify("READY=1\nSTATUS=up", env={"NOTIFY_SOCKET": path})
    assert s.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_sends_to_an_abstract_socket(abstract_sock):
    name, s = abstract_sock
    assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": name})
    assert s.recv(4096) == b"WATCHDOG=1"


def test_notify_without_systemd_is_a_noop():
    assert notify("READY=1", env={}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": "relative/path"}) is False


def test_notify_failure_is_not_fatal(tmp_path):
    # nobody listens there: the send fails, the caller just gets False
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval():
    assert watchdog_interval(env={}) is None
    assert watchdog_interval(env={"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval(env={"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval(env={"WATCHDOG_USEC": "junk"}) is None
    pid = os.getpid()
    assert watchdog_interval(env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid)}) == 2.0
    # meant for another process (we inherited the variables): not ours to ping
    assert watchdog_interval(env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid + 1)}) is None


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_notifier_lifecycle_over_a_real_socket(sock_path):
    """Until ready: the start timeout is extended; then READY=1 once; watchdog at half its timeout; stop."""
    path, s = sock_path
    clock = _Clock()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    n = SystemdNotifier(env=env, clock=clock)
    node = SimpleNamespace(ready=False, primary=False, state="NodeNotReady", priority=10000)

    n.tick(node)
    msgs = _drain(s)
    assert msgs[0].splitlines()[0].startswith("EXTEND_TIMEOUT_USEC=")
    assert "STATUS=secondary, NodeNotReady, priority 10000" in msgs[0]
    assert msgs[1] == "WATCHDOG=1"

    clock.t += 1
    n.tick(node)
    assert _drain(s) == ["EXTEND_TIMEOUT_USEC=30000000"]  # status unchanged, watchdog not due (5 s)

    node.ready, node.state, node.priority = True, "NodeReady", 0
    clock.t += 1
    n.tick(node)
    (msg,) = _drain(s)
    assert msg.splitlines() == ["READY=1", "STATUS=secondary, NodeReady, priority 0"]

    clock.t += 4  # 6 s after the first ping: due
    n.tick(node)
    assert _drain(s) == ["WATCHDOG=1"]
    clock.t += 1
    n.tick(node)
    assert _drain(s) == []  # READY=1 is sent once; nothing changed

    node.primary = True
    n.tick(node)
    assert _drain(s) == ["STATUS=primary, NodeReady, priority 0"]

    assert n.stopping()
    (msg,) = _drain(s)
    assert msg.startswith("STOPPING=1\nSTATUS=")
    assert not n.stopping()  # once
    n.tick(node)
    assert _drain(s) == []  # nothing after STOPPING=1


def test_notifier_keepalive_pings_while_draining(sock_path):
    path, s = sock_path
    n = SystemdNotifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    import time

    with n.keepalive(limit=5, every=0.05):
        time.sleep(0.3)
    msgs = _drain(s)
    assert "WATCHDOG=1" in msgs
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in msgs)


def test_notifier_disabled_without_socket():
    sent = []
    n = SystemdNotifier(env={}, send=sent.append)
    node = SimpleNamespace(ready=True, primary=True, state="NodeReady", priority=0)
    n.tick(node)
    n.stopping()
    with n.keepalive(limit=1):
        pass
    assert not n.enabled and sent == []


# --- the unit file ---------------------------------------------------------------------------------------------
def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def _seconds(v: str) -> float:
    """systemd time spans as used in the unit (30s, 2min, 5min)."""
    return parse_duration(v.replace("min", "m"))


def test_unit_file_runs_one_instance_per_config():
    svc = _unit()["Service"]
    assert svc["ExecStart"] == "/usr/local/bin/metrictank run --config /etc/metrictank/%i.toml"
    assert svc["ExecStartPre"].endswith("metrictank config check /etc/metrictank/%i.toml")
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["Restart"] == "on-failure"
    assert "2" in svc["RestartPreventExitStatus"].split()  # config errors are not retried
    assert int(svc["LimitNOFILE"]) >= 65536
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_file_timeouts_fit_the_instance():
    from metrictank.config import load_config

    svc = _unit()["Service"]
    cfg = load_config(env={})
    # stop = demote + drain (drain-timeout) + persist flush (10 s): the unit must wait for it
    assert _seconds(svc["TimeoutStopSec"]) >= cfg.store.drain_timeout + 30
    # the watchdog is pinged once a second at most every WatchdogSec/2: leave a wide margin
    assert _seconds(svc["WatchdogSec"]) >= 10
    # start includes the persist backlog (bounded by backlog-process-timeout) before the main loop runs
    assert _seconds(svc["TimeoutStartSec"]) >= cfg.kafka_cluster.backlog_process_timeout + 30


def test_unit_file_is_hardened():
    svc = _unit()["Service"]
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
    }.items():
        assert svc[key] == want, key
    assert svc["CapabilityBoundingSet"] == ""
    # AF_UNIX is needed for $NOTIFY_SOCKET, INET for Kafka, Cassandra and HTTP
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert svc["User"] == "metrictank"
    # ProtectSystem=strict leaves the state directory writable: the SQLite store's relative default path
    assert svc["StateDirectory"] == "metrictank/%i"
    assert svc["WorkingDirectory"] == "/var/lib/metrictank/%i"
