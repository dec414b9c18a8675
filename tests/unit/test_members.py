"""Live membership: announcements are validated (the topic is input from every instance), members age from alive
to suspect to gone, a tombstone removes one, the active color is one key, and the table is bounded."""

from __future__ import annotations

import json

import pytest

from metrictank.cluster.members import COLOR_KEY, MAX_MEMBERS, BadAnnouncement, Membership, parse_announcement


def _doc(name: str, **kw) -> bytes:
    d = {
        "name": name,
        "url": f"http://{name}:6060",
        "role": "read",
        "color": "a",
        "partitions": [0, 1],
        "ts": 100.0,
    }
    d.update(kw)
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    "key, value, reason",
    [
        (None, _doc("a"), "no-key"),
        (b"\xff", _doc("a"), "bad-key"),
        (b"a b", _doc("a"), "bad-key"),
        (b"a", b"x" * 70_000, "too-large"),
        (b"a", b"{nope", "invalid-json"),
        (b"a", b"[" * 30_000 + b"]" * 30_000, "invalid-json"),
        (b"a", b"[1]", "not-an-object"),
        (b"a", _doc("b"), "bad-fields"),  # the key and the name disagree
        (b"a", _doc("a", url="file:///etc/passwd"), "bad-fields"),
        (b"a", _doc("a", role="boss"), "bad-fields"),
        (b"a", _doc("a", color="c"), "bad-fields"),
        (b"a", _doc("a", partitions=[-1]), "bad-fields"),
        (b"a", _doc("a", partitions=[True]), "bad-fields"),
        (b"a", _doc("a", partitions="0-3"), "bad-fields"),
        (b"a", _doc("a", ts="now"), "bad-fields"),
        (COLOR_KEY.encode(), json.dumps({"active": "z"}).encode(), "bad-color"),
    ],
)
def test_bad_announcements_are_refused_by_reason(key, value, reason):
    with pytest.raises(BadAnnouncement) as e:
        parse_announcement(key, value)
    assert e.value.reason == reason


def test_a_good_announcement_is_normalised():
    name, doc = parse_announcement(b"r1", _doc("r1", partitions=[3, 1, 3], priority=2**40, epoch=-1))
    assert name == "r1" and doc["partitions"] == [1, 3] and doc["priority"] == 0 and doc["epoch"] == 0
    assert parse_announcement(b"r1", None) == ("r1", None)  # a tombstone


class _Msg:
    def __init__(self, key, value):
        self._k, self._v = key, value

    def key(self):
        return self._k

    def value(self):
        return self._v

    def error(self):
        return None


class _Consumer:
    def __init__(self, _cfg):
        self.batches: list[list[_Msg]] = []

    def consume(self, num_messages=1, timeout=0):
        return self.batches.pop(0) if self.batches else []

    def close(self):
        pass


class _Producer:
    def __init__(self, _cfg):
        self.sent: list[tuple[bytes | None, bytes | None]] = []

    def produce(self, topic, value=None, key=None):
        self.sent.append((key, value))

    def poll(self, _t=0):
        return 0

    def flush(self, _t=0):
        return 0


def _membership(clock):
    return Membership(
        "b",
        "members",
        "me",
        lambda: {"url": "http://me:1"},
        heartbeat=2.0,
        consumer_factory=_Consumer,
        producer_factory=_Producer,
        clock=clock,
    )


def test_members_age_and_tombstones_remove_them():
    now = [1000.0]
    m = _membership(lambda: now[0])
    m._consumer.batches = [[_Msg(b"r1", _doc("r1", ts=999.0)), _Msg(b"r2", _doc("r2", ts=999.0))]]
    assert m.poll() == 2
    assert {r["name"]: r["member"] for r in m.table()} == {"r1": "alive", "r2": "alive"}
    assert m.peer_urls() == ["http://r1:6060", "http://r2:6060"]
    now[0] = 1006.0
    assert {r["member"] for r in m.table()} == {"suspect"}
    assert m.peer_urls() == []
    now[0] = 1030.0
    assert {r["member"] for r in m.table()} == {"gone"}
    assert m.remove("r1") and not m.remove("nobody") and not m.remove("me")
    assert m._producer.sent[-1] == (b"r1", None)
    m._consumer.batches = [[_Msg(b"r2", None)]]  # another node's tombstone
    m.poll()
    assert m.table() == []


def test_an_old_heartbeat_read_from_the_backlog_is_not_alive_and_a_future_one_not_younger_than_now():
    now = [1000.0]
    m = _membership(lambda: now[0])
    m._consumer.batches = [[_Msg(b"old", _doc("old", ts=10.0)), _Msg(b"fut", _doc("fut", ts=99999.0))]]
    m.poll()
    states = {r["name"]: (r["member"], r["heartbeatAge"]) for r in m.table()}
    assert states["old"][0] == "gone" and states["fut"] == ("alive", 0.0)


def test_the_active_color_and_bad_messages():
    m = _membership(lambda: 1000.0)
    m._consumer.batches = [
        [
            _Msg(COLOR_KEY.encode(), json.dumps({"active": "b", "by": "x"}).encode()),
            _Msg(b"r1", b"garbage"),
            _Msg(None, b"{}"),
        ]
    ]
    m.poll()
    assert m.active_color == "b"
    assert m.dropped == {"invalid-json": 1, "no-key": 1}
    m.set_color("a")
    assert m.active_color == "a" and json.loads(m._producer.sent[-1][1])["active"] == "a"
    with pytest.raises(ValueError):
        m.set_color("c")


def test_the_table_is_bounded():
    m = _membership(lambda: 1000.0)
    m._consumer.batches = [[_Msg(f"n{i}".encode(), _doc(f"n{i}", ts=999.0)) for i in range(MAX_MEMBERS + 50)]]
    m.poll()
    assert len(m.table()) == MAX_MEMBERS and m.dropped["table-full"] == 50


def test_admin_routes_refuse_bad_colors_unknown_members_and_missing_tokens():
    from fastapi.testclient import TestClient

    from metrictank.api import create_app

    from .test_cluster_source import FakeNode

    node = FakeNode("me", [0])
    node.admin_token = "tok"
    node.membership = _membership(lambda: 1000.0)
    c = TestClient(create_app(node, None))
    good = {"Authorization": "Bearer tok"}
    assert c.post("/cluster/color", data={"color": "green"}, headers=good).status_code == 400
    assert (
        c.post(
            "/cluster/color", content=b"[" * 100_000, headers={**good, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert c.post("/cluster/color", data={"color": "b"}).status_code == 401
    assert c.delete("/cluster/members/nobody", headers=good).status_code == 404
    assert c.delete("/cluster/members/me", headers=good).status_code == 409
    assert c.post("/cluster/color", data={"color": "b"}, headers=good).status_code == 200
    assert c.get("/cluster/color").json() == {"active": "b"}
    off = TestClient(create_app(FakeNode("x", [0]), None))
    assert off.get("/cluster/members").status_code == 404
