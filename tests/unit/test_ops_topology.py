"""The files of the read/write walk-through (docs/operations.md): the HAProxy fragment health-checks every reader of
both colors on /readyz and lists no writer, under the names `cluster plan --read-prefix read-a|read-b` gives; the
systemd unit reads the plan's environment file before the instance's own."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from metrictank.cli import main
from metrictank.cluster.plan import constant_no_overlap

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = ROOT / "config" / "haproxy-colors.cfg"
UNIT = ROOT / "config" / "metrictank@.service"


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            cur = line.strip()
            out[cur] = []
        else:
            out[cur].append(" ".join(line.split()))
    return out


def test_haproxy_fragment_checks_readyz_on_every_reader_of_both_colors():
    s = _sections(HAPROXY.read_text())
    backend = s["backend metrictank_readers"]
    assert "option httpchk GET /readyz" in backend
    assert "http-check expect status 200" in backend
    servers = [ln.split() for ln in backend if ln.startswith("server ")]
    names = [sv[1] for sv in servers]
    readers = sorted(
        m.name
        for c in "ab"
        for m in constant_no_overlap(8, 2, 2, 2, prefix_read=f"read-{c}").members
        if m.role == "read"
    )
    assert sorted(names) == readers == ["read-a-0", "read-a-1", "read-b-0", "read-b-1"]
    for sv in servers:
        assert "check" in sv[3:], sv  # no check: a standby or replaying reader would get queries
        assert sv[2].endswith(":6060")
    assert not any("write" in n for n in names)  # write nodes answer queries 404
    assert "default_backend metrictank_readers" in s["frontend metrictank_query"]
    # a 503 (also a render over query-timeout) must not be retried: it would run the render again
    retry = next(ln for ln in s["defaults"] if ln.startswith("retry-on"))
    assert "503" not in retry.split() and "conn-failure" in retry.split()


def test_unit_reads_the_plan_environment_before_the_instance_overrides():
    files = re.findall(r"^EnvironmentFile=(.*)$", UNIT.read_text(), re.M)
    assert files == ["-/etc/metrictank/plan/%i.env", "-/etc/metrictank/%i.env"]


def test_plan_read_prefix_names_a_second_read_cluster(tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "cluster",
            "plan",
            "--partitions",
            "8",
            "--writers",
            "2",
            "--readers",
            "2",
            "--replication",
            "2",
            "--read-prefix",
            "read-b",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("*.env")) == [
        "read-b-0.env",
        "read-b-1.env",
        "write-0.env",
        "write-1.env",
    ]
    env = (tmp_path / "read-b-0.env").read_text()
    assert "MT_INSTANCE=read-b-0\n" in env and "MT_CLUSTER_ROLE=read\n" in env
    assert "MT_CLUSTER_PEERS=http://read-b-1:6060\n" in env
