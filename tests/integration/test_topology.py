"""The full read/write topology on the real test bed (issue 17): 2 writers (primary + standby) and 4 readers
(colors a and b, 2 per color, each color replicating every partition twice) over 8 partitions, configured from
`cluster plan` fragments, finding each other on a compacted membership topic, all processes on one host over a
shared SQLite store.

Checked, with data produced all along: every partition reads back exactly through every active reader; the
color switch flips /readyz within a heartbeat and back; `cluster rollout --concurrency 1` restarts every member
in HM-API order (standby readers, active readers, the standby writer, the primary after a handover) while a
sampler reads the active readers' /readyz every 100 ms and never finds a partition without a ready active reader,
and loses no point; a SIGKILLed active reader leaves its replica answering exactly; `cluster members remove`
clears the dead member from every node's table."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from metrictank.cluster.plan import constant_no_overlap
from metrictank.fakemetrics import SeriesSet

from .cluster import InstanceProc, SimProducer, sim_start
from .helpers import free_port
from .reliability import check_render, consumed_through, topic_highs, wait, wait_saved_through

pytestmark = pytest.mark.integration

PARTS = 8
N_SERIES = 16
HEARTBEAT = 1.0
TOKEN = "tok"
RATE = 8  # simulated seconds per wall second while the cluster runs
ORDER = ["read-b-0", "read-b-1", "read-a-0", "read-a-1", "write-1", "write-0"]


def _compacted_topic(kafka: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})])[name].result(30)
    return name


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metrictank.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _members(url: str) -> dict[str, str]:
    r = httpx.get(f"{url}/cluster/members", timeout=5)
    r.raise_for_status()
    return {m["name"]: m["member"] for m in r.json()["members"]}


def _status(client: httpx.Client, url: str) -> int:
    try:
        return client.get(f"{url}/readyz").status_code
    except httpx.HTTPError:
        return 0


def _flip_seconds(client: httpx.Client, want: dict[str, int], limit: float) -> float:
    """Seconds until every URL answers /readyz with its wanted status, polled every 20 ms."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if all(_status(client, u) == s for u, s in want.items()):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"/readyz did not flip to {want} within {limit}s")


class Restarter:
    """Does what `systemctl restart` would for the rollout's --exec: the helper script asks for a restart by
    creating <dir>/<name>.restart and waits for <name>.done; this thread stops the process (SIGTERM, a clean
    shutdown), starts it again on the same configuration and port, and answers. Like a unit with Type=simple, it
    does not wait for readiness: the rollout must."""

    def __init__(self, d: Path, procs: dict[str, InstanceProc]) -> None:
        self.dir = d
        self.procs = procs
        self.restarted: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.script = d / "restart.sh"
        self.script.write_text(
            "#!/bin/sh\n"
            f'd="{d}"\n'
            'rm -f "$d/$1.done"\n'
            'touch "$d/$1.restart"\n'
            "n=0\n"
            'while [ ! -e "$d/$1.done" ]; do sleep 0.1; n=$((n+1)); [ $n -lt 900 ] || exit 7; done\n'
            'echo "restarted $1"\n'
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # a failure before the rollout leaves it unstarted
            self._thread.join(90)

    def _run(self) -> None:
        while not self._stop.is_set():
            for req in sorted(self.dir.glob("*.restart")):
                name = req.name.removesuffix(".restart")
                req.unlink()
                try:
                    p = self.procs[name]
                    p.stop()
                    p.start(wait=False)
                    self.restarted.append(name)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"{name}: {e!r}")
                (self.dir / f"{name}.done").touch()
            time.sleep(0.05)


class ReadySampler:
    """Samples /readyz of the active readers every 100 ms; per sample, per partition, how many of them answer
    200. The rollout promises this never reaches 0."""

    def __init__(self, readers: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        self.readers = readers
        self.samples: list[dict[int, int]] = []
        self.down_seen: dict[str, int] = dict.fromkeys(readers, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                ready = {}
                for name, (url, _parts) in self.readers.items():
                    ready[name] = _status(client, url) == 200
                    if not ready[name]:
                        self.down_seen[name] += 1
                per_part = {p: 0 for p in range(PARTS)}
                for name, (_url, parts) in self.readers.items():
                    for p in parts:
                        per_part[p] += int(ready[name])
                self.samples.append(per_part)
                self._stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

    @property
    def minimum(self) -> int:
        return min(min(s.values()) for s in self.samples)


def test_two_writers_four_readers_two_colors_switch_roll_out_and_lose_a_reader(
    tmp_path, kafka_bootstrap, new_topic
):
    t_test = time.monotonic()
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    members_topic = _compacted_topic(kafka_bootstrap, f"members-{topic}")
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="topology", interval=1)
    assert set(ss.partitions.tolist()) == set(range(PARTS)), "every partition needs series"
    db = tmp_path / "chunks.db"

    # the plan: one per color, over the same writers (the second run's writer fragments are the same)
    plans = {c: constant_no_overlap(PARTS, 2, 2, 2, prefix_read=f"read-{c}") for c in "ab"}
    assert plans["a"].table().splitlines()[1:3] == plans["b"].table().splitlines()[1:3]
    plan_members = {m.name: m for p in plans.values() for m in p.members}
    assert sorted(plan_members) == sorted(ORDER)
    ports = {n: free_port() for n in plan_members}
    url_of = {n: f"http://127.0.0.1:{port}" for n, port in ports.items()}

    procs: dict[str, InstanceProc] = {}
    for name, m in plan_members.items():
        color = name.split("-")[1] if m.role == "read" else ""
        procs[name] = InstanceProc(
            tmp_path / name,
            name,
            {
                "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
                "kafka-cluster": {"brokers": kafka_bootstrap, "topic": persist, "offset": "oldest"},
                "cluster": {
                    "warm-up-period": "0s",
                    "max-priority": 10,
                    "membership-topic": members_topic,
                    "heartbeat": f"{HEARTBEAT}s",
                    "advertise-url": url_of[name],
                    **({"color": color, "read-window": "120s"} if color else {}),
                },
                "store": {"backend": "sqlite", "drain-timeout": "20s"},
                "sqlite": {"path": str(db)},
            },
            token=TOKEN,
            port=ports[name],
            fragment=m.toml(url_of),
        )
    writers = [procs["write-0"], procs["write-1"]]
    ra = [procs["read-a-0"], procs["read-a-1"]]
    rb = [procs["read-b-0"], procs["read-b-1"]]

    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=RATE)
    prod.step_to(T + 300)
    t_first = prod.t
    highs_first = topic_highs(kafka_bootstrap, topic)
    restarter = Restarter(tmp_path, procs)
    sampler: ReadySampler | None = None
    client = httpx.Client(timeout=2.0)
    figures: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        for p in procs.values():
            p.start(wait=False)
        for p in procs.values():
            p.wait_consuming(120)
        prod.run_background()  # data keeps flowing through everything below
        w0 = procs["write-0"]
        for p in procs.values():
            wait(
                lambda p=p: set(_members(p.url).values()) == {"alive"} and len(_members(p.url)) == 6,
                30,
                p.name,
                p,
            )
        figures["start_s"] = round(time.monotonic() - t0, 1)

        # color a active: the b-readers stand by
        out = _cli("cluster", "color", "set", "a", "--url", w0.url, "--token", TOKEN)
        assert out.returncode == 0, out.stderr
        for p in ra + rb + writers:
            wait(lambda p=p: consumed_through(p.url, highs_first), 90, f"{p.name} caught up", p)
        _flip_seconds(client, {p.url: 200 for p in ra} | {p.url: 503 for p in rb}, 30)
        assert "standby color" in client.get(f"{rb[0].url}/readyz").text

        # every partition, exactly, through every active reader (memory and store together)
        wait_saved_through(w0, t_first, 90)
        for r in ra:
            check_render(r.url, ss, range(N_SERIES), T, t_first).assert_exact()
        # write nodes answer no query
        assert httpx.get(f"{w0.url}/render", params={"target": ss.names[0]}, timeout=10).status_code == 404

        # the color switch flips readiness within a heartbeat, and back
        out = _cli("cluster", "color", "set", "b", "--url", ra[0].url, "--token", TOKEN)
        assert out.returncode == 0, out.stderr
        flip = _flip_seconds(client, {p.url: 503 for p in ra} | {p.url: 200 for p in rb}, 10)
        for r in rb:  # the b-readers serve every partition exactly as well
            check_render(r.url, ss, range(N_SERIES), T, t_first).assert_exact()
        out = _cli("cluster", "color", "set", "a", "--url", rb[1].url, "--token", TOKEN)
        assert out.returncode == 0, out.stderr
        back = _flip_seconds(client, {p.url: 200 for p in ra} | {p.url: 503 for p in rb}, 10)
        figures |= {"color_flip_s": round(flip, 3), "color_back_s": round(back, 3)}
        # measured from the command's return (the color is produced then): every reader follows within a heartbeat
        assert flip < HEARTBEAT and back < HEARTBEAT, figures

        # the rollout: its plan first, then the real thing with readiness sampled all along
        dry = _cli("cluster", "rollout", "--url", w0.url, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        planned = [
            next(tok for tok in ln.split() if re.fullmatch(r"(read-[ab]|write)-\d", tok))
            for ln in dry.stdout.splitlines()[2:]
        ]
        assert planned == ORDER, dry.stdout
        started_before = {n: p.node()["started"] for n, p in procs.items()}
        restarter.start()
        sampler = ReadySampler({p.name: (p.url, plan_members[p.name].partitions) for p in ra})
        sampler.start()
        t_roll = time.monotonic()
        roll = _cli(
            "cluster",
            "rollout",
            "--url",
            w0.url,
            "--concurrency",
            "1",
            "--exec",
            f"sh {restarter.script} {{name}}",
            "--ready-timeout",
            "120s",
            "--handover-timeout",
            "60s",
            "--token",
            TOKEN,
            timeout=600,
        )
        figures["rollout_s"] = round(time.monotonic() - t_roll, 1)
        sampler.stop()
        assert roll.returncode == 0, roll.stdout + roll.stderr
        assert restarter.errors == []
        assert restarter.restarted == ORDER
        done = re.findall(r"^(\S+): ready after", roll.stdout, re.M)
        assert done == ORDER, roll.stdout
        assert "handover: write-0 -> write-1" in roll.stdout and "rollout done: 6 members" in roll.stdout
        for n, p in procs.items():  # a new process each
            assert p.node()["started"] != started_before[n], n
        assert procs["write-1"].node()["primary"] is True and w0.node()["primary"] is False
        # every partition had a ready active reader at every sample, and each active reader was seen down
        figures |= {
            "samples": len(sampler.samples),
            "min_ready_active_readers_per_partition": sampler.minimum,
        }
        assert len(sampler.samples) > 5 * figures["rollout_s"], figures  # ~10 a second
        assert sampler.minimum >= 1, figures
        assert all(sampler.down_seen[p.name] > 0 for p in ra), sampler.down_seen
        assert min(sampler.samples[0].values()) == 2 and min(sampler.samples[-1].values()) == 2

        # no point lost: stop producing, read everything back through both active readers
        t_end = prod.stop()
        highs = topic_highs(kafka_bootstrap, topic)
        for p in procs.values():
            wait(lambda p=p: consumed_through(p.url, highs), 90, f"{p.name} caught up at the end", p)
        wait_saved_through(procs["write-1"], t_end, 90)
        sent = N_SERIES * (t_end - T)
        read_back = []
        for r in ra:
            ex = check_render(r.url, ss, range(N_SERIES), T, t_end)
            ex.assert_exact()
            read_back.append(ex.points_read)
        figures |= {"points_sent": sent, "points_read_per_active_reader": read_back}
        assert read_back == [sent, sent], figures

        # an active reader dies: its replica answers every partition, exactly
        ra[1].kill9()
        assert _status(client, ra[1].url) == 0
        check_render(ra[0].url, ss, range(N_SERIES), T, t_end).assert_exact()

        # ...and `members remove` clears it from every node's table
        others = [p for n, p in procs.items() if n != "read-a-1"]
        wait(lambda: _members(w0.url).get("read-a-1") == "suspect", 15, "read-a-1 suspect", w0)
        out = _cli("cluster", "members", "remove", "read-a-1", "--url", ra[0].url, "--token", TOKEN)
        assert out.returncode == 0, out.stdout + out.stderr
        for p in others:
            wait(lambda p=p: "read-a-1" not in _members(p.url), 10, f"{p.name}: read-a-1 removed", p)
            assert len(_members(p.url)) == 5
        figures["wall_s"] = round(time.monotonic() - t_test, 1)
        print(f"topology: {figures}")
        print(roll.stdout)
    finally:
        if sampler is not None:
            sampler.stop()
        restarter.stop()
        prod.stop()
        client.close()
        for p in procs.values():
            p.kill9()
