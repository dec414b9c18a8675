"""Live membership and read colors on the real test bed: a writer and two readers (colors a and b) announce
themselves on a compacted topic and find each other without static peer lists; a reader that consumes only some
partitions gets the others from a member it learned there; `color set b` makes the a-reader answer /readyz 503
"standby color" within a heartbeat or two and back; a dead member turns suspect then gone, and `members remove`
clears it from every node's table."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from metrictank.fakemetrics import SeriesSet

from .cluster import InstanceProc, SimProducer, sim_start
from .helpers import free_port
from .reliability import check_render, consumed_through, topic_highs, wait, wait_saved_through

pytestmark = pytest.mark.integration

PARTS = 2
N_SERIES = 10
HEARTBEAT = 1.0
TOKEN = "tok"


def _compacted_topic(kafka: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": kafka})
    fut = admin.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})])[name]
    fut.result(30)
    return name


def _members(url: str) -> dict[str, str]:
    r = httpx.get(f"{url}/cluster/members", timeout=5)
    r.raise_for_status()
    return {m["name"]: m["member"] for m in r.json()["members"]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metrictank.cli", *args], capture_output=True, text=True, timeout=60
    )


def _ready(url: str) -> tuple[int, str]:
    r = httpx.get(f"{url}/readyz", timeout=5)
    return r.status_code, r.text


def test_members_find_each_other_colors_switch_and_a_dead_member_is_removed(
    tmp_path, kafka_bootstrap, new_topic
):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    members = _compacted_topic(kafka_bootstrap, f"members-{topic}")
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="members", interval=1)
    assert set(ss.partitions.tolist()) == {0, 1}
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=200)
    prod.step_to(T + 300)
    t_end = prod.stop()
    db = tmp_path / "chunks.db"

    def node(name: str, role: str, partitions: str = "", **cluster) -> InstanceProc:
        port = free_port()
        return InstanceProc(
            tmp_path / name,
            name,
            {
                "kafka-mdm-in": {
                    "brokers": kafka_bootstrap,
                    "topics": topic,
                    "offset": "oldest",
                    **({"partitions": partitions} if partitions else {}),
                },
                "kafka-cluster": {"brokers": kafka_bootstrap, "topic": persist, "offset": "oldest"},
                "cluster": {
                    "role": role,
                    "warm-up-period": "0s",
                    "max-priority": 10,
                    "membership-topic": members,
                    "heartbeat": f"{HEARTBEAT}s",
                    "advertise-url": f"http://127.0.0.1:{port}",
                    **cluster,
                },
                "store": {"backend": "sqlite"},
                "sqlite": {"path": str(db)},
            },
            token=TOKEN,
            port=port,
        )

    w = node("mt-w", "write", **{"primary-node": True})
    ra = node("mt-ra", "read", partitions="0", color="a")  # partition 1 only through a member
    rb = node("mt-rb", "read", color="b")
    procs = [w, ra, rb]
    try:
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p.wait_consuming(90)
        names = {p.name for p in procs}
        for p in procs:
            wait(lambda p=p: set(_members(p.url)) == names, 30, f"{p.name} sees every member", p)
            wait(lambda p=p: set(_members(p.url).values()) == {"alive"}, 30, f"{p.name}: all alive", p)
        highs = topic_highs(kafka_bootstrap, topic)
        wait(lambda: consumed_through(w.url, highs), 90, "writer caught up", w)
        wait(lambda: consumed_through(rb.url, highs), 90, "rb caught up", rb)
        wait(lambda: consumed_through(ra.url, {0: highs[0]}), 90, "ra caught up", ra)
        wait_saved_through(w, t_end, 90)

        # no static peers: ra answers partition 1 from rb, a member it learned on the topic
        check_render(ra.url, ss, range(N_SERIES), T, t_end).assert_exact()

        # colors: none active -> both readers ready; b active -> the a-reader is a standby; and back
        for r in (ra, rb):
            wait(lambda r=r: _ready(r.url)[0] == 200, 30, f"{r.name} ready", r)
        t0 = time.monotonic()
        out = _cli("cluster", "color", "set", "b", "--url", w.url, "--token", TOKEN)
        assert out.returncode == 0, out.stderr
        switch_s = wait(lambda: _ready(ra.url)[0] == 503, 10, "the a-reader standing by", ra)
        code, text = _ready(ra.url)
        assert code == 503 and "standby color" in text
        assert _ready(rb.url)[0] == 200
        assert _cli("cluster", "color", "show", "--url", ra.url).stdout.strip() == "b"
        out = _cli("cluster", "color", "set", "a", "--url", ra.url, "--token", TOKEN)
        assert out.returncode == 0, out.stderr
        back_s = wait(lambda: _ready(ra.url)[0] == 200 and _ready(rb.url)[0] == 503, 10, "switched back", rb)
        assert _cli("cluster", "color", "set", "none", "--url", w.url).returncode != 0  # no token: refused
        assert _cli("cluster", "color", "set", "none", "--url", w.url, "--token", TOKEN).returncode == 0
        wait(lambda: _ready(rb.url)[0] == 200, 10, "no active color: every reader serves", rb)
        color_s = time.monotonic() - t0

        # a member dies: suspect, then gone, everywhere; `members remove` clears it from every table
        rb.kill9()
        for p in (w, ra):
            wait(lambda p=p: _members(p.url).get("mt-rb") == "suspect", 15, f"{p.name}: rb suspect", p)
        gone_s = wait(lambda: _members(w.url).get("mt-rb") == "gone", 20, "rb gone", w)
        out = _cli("cluster", "members", "remove", "mt-rb", "--url", ra.url, "--token", TOKEN)
        assert out.returncode == 0, out.stdout + out.stderr
        for p in (w, ra):
            wait(lambda p=p: "mt-rb" not in _members(p.url), 10, f"{p.name}: rb removed", p)
        listing = _cli("cluster", "members", "--url", w.url)
        assert (
            "live members" in listing.stdout and "mt-ra" in listing.stdout and "mt-rb" not in listing.stdout
        )
        print(
            f"membership: color switch {switch_s:.2f}s, back {back_s:.2f}s, color phase {color_s:.1f}s, "
            f"suspect to gone {gone_s:.1f}s (heartbeat {HEARTBEAT}s)"
        )
    finally:
        for p in procs:
            p.kill9()


def test_a_node_knows_the_members_and_color_when_start_returns_and_starting_next_to_others_is_quick(
    kafka_bootstrap, new_topic
):
    """Six nodes started one after another, each next to the ones already running (their membership threads
    consuming): each start() returns within seconds, knowing every earlier node alive and the active color.
    Before, the backlog was read by a poll from the caller's thread while the membership thread consumed from
    the same client: librdkafka stalled that poll for ~30 s, so nodes of a cluster started together sat in their
    start-up for minutes, and start() itself read nothing."""
    from metrictank.cluster.members import Membership

    members = _compacted_topic(kafka_bootstrap, f"members-{new_topic(1)}")

    def me(i: int):
        return lambda: {
            "url": f"http://127.0.0.1:{7000 + i}",
            "role": "read",
            "color": "a",
            "partitions": [0],
        }

    started: list[Membership] = []
    try:
        for i in range(6):
            m = Membership(kafka_bootstrap, members, f"node-{i}", me(i), heartbeat=HEARTBEAT)
            t0 = time.monotonic()
            m.start()
            took = time.monotonic() - t0
            assert took < 5, f"node-{i}: start() took {took:.1f}s"
            known = {r["name"]: r["member"] for r in m.table()}
            want = {f"node-{j}": "alive" for j in range(i)}
            assert {k: v for k, v in known.items() if k != m.name} == want, f"node-{i} knows {known}"
            assert m.backlog_read
            if i == 0:
                m.set_color("a")
            else:
                assert m.active_color == "a", f"node-{i}: active color {m.active_color!r}"
            m._producer.flush(10)  # its first heartbeat is in the topic before the next node starts
            started.append(m)
    finally:
        for m in started:
            m.stop()
