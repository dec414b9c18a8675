"""`metrictank cluster rollout`: the order and waves from a member table (pure), and the runner against a simulated
cluster whose invariants are checked at every command: at most N members down, never two replicas down together,
every partition served by a ready active reader, one primary per partition, handover before the primary goes
down. The real thing is tests/integration/test_topology.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

import httpx
import pytest
from click.testing import CliRunner

from metrictank.cli import EXIT_REFUSED, EXIT_USAGE, main
from metrictank.cluster import rollout as rollout_mod
from metrictank.cluster.rollout import PHASES, RolloutError, Runner, plan_rollout, substitute

ALL = list(range(8))


def member(name, role, parts=ALL, color="", primary=False, state="alive"):
    return {
        "name": name,
        "url": f"http://{name}:6060",
        "role": role,
        "color": color,
        "partitions": list(parts),
        "state": "NodeReady",
        "priority": 0,
        "primary": primary,
        "epoch": 1,
        "member": state,
        "heartbeatAge": 0.5,
    }


def topology(readers_per_color=2, groups=1):
    """2 writers over 8 partitions; per color `readers_per_color` readers in `groups` groups."""
    out = [member("write-0", "write", primary=True), member("write-1", "write")]
    per_group = readers_per_color // groups
    for color in "ab":
        for i in range(readers_per_color):
            g = i // per_group
            parts = ALL[g * 8 // groups : (g + 1) * 8 // groups]
            out.append(member(f"read-{color}-{i}", "read", parts, color=color))
    return out


# --- the plan ----------------------------------------------------------------------------------------------------
def test_order_standby_readers_then_active_readers_then_secondaries_then_the_primary():
    plan = plan_rollout(topology(), "a", 1)
    assert plan.order == ["read-b-0", "read-b-1", "read-a-0", "read-a-1", "write-1", "write-0"]
    assert [w.phase for w in plan.waves] == [PHASES[0]] * 2 + [PHASES[1]] * 2 + [PHASES[2], PHASES[3]]
    t = plan.targets
    assert t["read-a-0"].replicas == ("read-a-1",)  # not the b-readers: they are not serving
    assert t["read-b-0"].replicas == ("read-b-1",) and t["read-b-0"].standby
    assert t["write-1"].replicas == ("write-0",)
    assert t["write-0"].candidates == ("write-1",)
    # the other color active: the other way round
    assert plan_rollout(topology(), "b", 1).order[:4] == ["read-a-0", "read-a-1", "read-b-0", "read-b-1"]
    table = plan.table()
    assert "standby readers (b)" in table and "active readers (a)" in table
    assert "hand over to the first ready of write-1" in table and "ready: read-a-1" in table


def test_concurrency_never_puts_two_replicas_in_one_wave():
    members = topology(readers_per_color=4, groups=2)  # read-x-0,1: 0-3; read-x-2,3: 4-7
    plan = plan_rollout(members, "a", 2)
    for w in plan.waves:
        assert len(w.members) <= 2
        for x in w.members:
            assert not any(y.name in x.replicas for y in w.members)
    active = [[t.name for t in w.members] for w in plan.waves if w.phase == PHASES[1]]
    assert active == [["read-a-0", "read-a-2"], ["read-a-1", "read-a-3"]]
    # one group of replicas: concurrency cannot help
    plan = plan_rollout(topology(), "a", 5)
    assert all(len(w.members) == 1 for w in plan.waves if w.phase != PHASES[2])
    assert len(plan_rollout(members, "a", 4).waves) == 6  # 2 standby, 2 active, 1 secondary, 1 primary


def test_without_an_active_color_every_reader_serves_and_replicates_the_others():
    plan = plan_rollout(topology(), "", 1)
    assert [w.phase for w in plan.waves].count(PHASES[0]) == 0
    assert set(plan.targets["read-a-0"].replicas) == {"read-a-1", "read-b-0", "read-b-1"}


@pytest.mark.parametrize(
    ("members", "active", "conc", "why"),
    [
        (topology(), "a", 0, "--concurrency 0"),
        ([], "a", 1, "empty"),
        (
            [*topology()[:2], member("read-a-0", "read", color="a"), member("read-b-0", "read", color="b")],
            "a",
            1,
            "served by read-a-0 alone",
        ),
        ([member("write-0", "write", primary=True), *topology()[2:]], "a", 1, "no secondary holds all"),
        (
            [member("write-0", "write", primary=True), member("write-1", "write", [0, 1]), *topology()[2:]],
            "a",
            1,
            "no secondary holds all",
        ),
        ([*topology()[:-1], member("read-b-1", "read", color="b", state="gone")], "a", 1, "read-b-1 (gone)"),
        (
            [member("write-0", "write", primary=True), member("write-1", "write", primary=True)],
            "",
            1,
            "two prim",
        ),
    ],
)
def test_unsafe_rollouts_are_refused_with_the_reason(members, active, conc, why):
    with pytest.raises(RolloutError, match=why.replace("(", r"\(").replace(")", r"\)")):
        plan_rollout(members, active, conc)


def test_only_restricts_the_members_restarted():
    plan = plan_rollout(topology(), "a", 1, only=["read-a-1", "write-0"])
    assert plan.order == ["read-a-1", "write-0"]
    assert plan.targets["read-a-1"].replicas == ("read-a-0",)
    with pytest.raises(RolloutError, match="not in the member table: nope"):
        plan_rollout(topology(), "a", 1, only=["nope"])


def test_substitute_quotes_name_and_url_and_leaves_other_braces():
    t = plan_rollout(topology(), "a", 1).targets["read-a-0"]
    assert substitute("systemctl restart metrictank@{name}; echo ${HOME} {url}", t) == (
        "systemctl restart metrictank@read-a-0; echo ${HOME} http://read-a-0:6060"
    )
    odd = plan_rollout([{**member("x", "read"), "url": "http://h/$(id)"}], "", 1, only=[]).targets["x"]
    # a lone reader is refused in a real plan; `only=[]` still builds its target
    assert substitute("curl {url}", odd) == "curl 'http://h/$(id)'"


# --- the runner against a simulated cluster -------------------------------------------------------------------
class Sim:
    """Nodes with a ready flag, a process start stamp and a primary flag; `restart` (the command) takes a node
    down and brings it up `delay` polls later. Every command checks the invariants the rollout promises."""

    def __init__(self, members, active="a", concurrency=1, delay=3, token="tok"):
        self.members = {m["name"]: dict(m) for m in members}
        self.active = active
        self.concurrency = concurrency
        self.delay = delay
        self.token = token
        self.up = dict.fromkeys(self.members, True)
        self.started = dict.fromkeys(self.members, 1)
        self.primary = {n: bool(m["primary"]) for n, m in self.members.items()}
        self.primary_node = dict(self.primary)  # the configuration: what a restart comes back as
        self.down_for: dict[str, int] = {}
        self.events: list[str] = []
        self.now = 0.0
        self.lock = threading.Lock()
        self.fail_command: set[str] = set()
        self.never_ready: set[str] = set()
        self.no_restart: set[str] = set()
        self.refuse_promotion: set[str] = set()
        self.violations: list[str] = []

    # what the runner sees
    def clock(self):
        return self.now

    def sleep(self, s):
        with self.lock:
            self.now += s
            for n in list(self.down_for):
                self.down_for[n] -= 1
                if self.down_for[n] <= 0 and n not in self.never_ready:
                    del self.down_for[n]
                    self.up[n] = True
                    self.primary[n] = self.primary_node[n]

    def _name(self, url):
        return url.split("//")[1].split(":")[0]

    def get(self, url):
        n = self._name(url)
        path = "/" + url.split("/", 3)[3]
        if not self.up[n]:
            return 0, "unreachable: connection refused"
        m = self.members[n]
        standby = m["role"] == "read" and self.active and m["color"] and m["color"] != self.active
        if path == "/readyz":
            return (503, "standby color: ...") if standby else (200, "OK")
        if path == "/node":
            doc = {"state": "NodeReady", "primary": self.primary[n], "started": self.started[n]}
            return 200, json.dumps({**doc, "priority": 0, "dataCompletePromotionWait": 0.0})
        raise AssertionError(path)

    def post(self, url, data, token, timeout):
        n = self._name(url)
        if not self.up[n]:
            return 0, "unreachable"
        if token != self.token:
            return 401, "unauthorized"
        if "primary" not in data:
            return 422, "missing field: primary"
        if data["primary"] == "false":
            self.events.append(f"demote {n}")
            self.primary[n] = False
            return 200, "OK"
        others = [o for o, p in self.primary.items() if p and o != n and self.up[o]]
        if n in self.refuse_promotion or others:
            return 409, json.dumps({"error": "promotion refused", "reasons": [f"peer {others} is primary"]})
        self.events.append(f"promote {n}")
        self.primary[n] = True
        return 200, "OK"

    def run_command(self, cmd, env: Mapping[str, str], timeout):
        n = env["MT_ROLLOUT_NAME"]
        assert cmd == f"restart {n}" and env["MT_ROLLOUT_URL"] == f"http://{n}:6060"
        with self.lock:
            self.events.append(f"restart {n}")
            if n in self.fail_command:
                return 3, "boom\nno such unit"
            if n in self.no_restart:
                return 0, ""
            self.up[n] = False
            self.started[n] += 1
            self.down_for[n] = self.delay
            self.check()
        return 0, f"restarted {n}"

    def check(self):
        down = [n for n, u in self.up.items() if not u]
        if len(down) > self.concurrency:
            self.violations.append(f"{down} down at once")
        for p in ALL:
            serving = [
                n
                for n, m in self.members.items()
                if m["role"] == "read"
                and (not self.active or m["color"] == self.active)
                and p in m["partitions"]
            ]
            if serving and not any(self.up[n] for n in serving):
                self.violations.append(f"partition {p} unserved ({down} down)")
            writers = [n for n, m in self.members.items() if m["role"] != "read" and p in m["partitions"]]
            if not any(self.up[n] and self.primary[n] for n in writers):
                self.violations.append(f"partition {p} without a live primary ({down} down)")

    def runner(self, plan, **kw):
        return Runner(
            plan,
            "restart {name}",
            token=kw.pop("token", self.token),
            ready_timeout=kw.pop("ready_timeout", 30.0),
            handover_timeout=kw.pop("handover_timeout", 5.0),
            poll=0.5,
            http=self,
            run_command=self.run_command,
            clock=self.clock,
            sleep=self.sleep,
            echo=lambda s: None,
            **kw,
        )


@pytest.mark.parametrize(("readers", "groups", "conc"), [(2, 1, 1), (2, 1, 3), (4, 2, 2), (4, 2, 1)])
def test_a_rollout_keeps_every_partition_served_and_hands_over_before_the_primary(readers, groups, conc):
    members = topology(readers, groups)
    sim = Sim(members, "a", conc)
    plan = plan_rollout(members, "a", conc)
    report = sim.runner(plan).run()
    assert report.ok, report.text()
    assert sim.violations == []
    restarts = [e.split()[1] for e in sim.events if e.startswith("restart")]
    assert sorted(restarts) == sorted(m["name"] for m in members)
    assert restarts.index("write-0") == len(restarts) - 1
    assert [e for e in sim.events if not e.startswith("restart")] == [
        "demote write-0",
        "promote write-1",
        "demote write-0",  # it came back primary (its configuration): demoted again, write-1 stays primary
    ]
    assert sim.events.index("promote write-1") < sim.events.index("restart write-0")
    assert sim.primary == {n: n == "write-1" for n in sim.primary}
    assert [o.name for o in report.done] == restarts
    assert report.handovers == ["write-0 -> write-1"]
    assert "came back as primary" in report.text() and "rollout done: " in report.text()


def test_a_failing_command_stops_the_rollout_with_a_report():
    members = topology()
    sim = Sim(members)
    sim.fail_command = {"read-a-0"}
    report = sim.runner(plan_rollout(members, "a", 1)).run()
    assert not report.ok
    assert [o.name for o in report.done] == ["read-b-0", "read-b-1"]
    assert [(o.name, o.detail) for o in report.failed] == [("read-a-0", "command exited with status 3")]
    assert report.not_started == ["read-a-1", "write-1", "write-0"]
    text = report.text()
    assert "ROLLOUT STOPPED" in text and "FAILED: read-a-0: command exited with status 3" in text
    assert "| no such unit" in text and "not started (3): read-a-1, write-1, write-0" in text
    assert not any(e.startswith(("demote", "promote")) for e in sim.events)


def test_a_member_not_ready_in_time_stops_the_rollout():
    members = topology()
    sim = Sim(members)
    sim.never_ready = {"read-b-1"}
    report = sim.runner(plan_rollout(members, "a", 1), ready_timeout=10.0).run()
    assert [o.name for o in report.failed] == ["read-b-1"]
    assert "not ready 10s after the command (unreachable" in report.failed[0].detail
    assert report.not_started == ["read-a-0", "read-a-1", "write-1", "write-0"]


def test_a_command_that_does_not_restart_the_member_is_caught():
    members = topology()
    sim = Sim(members)
    sim.no_restart = {"read-b-0"}
    report = sim.runner(plan_rollout(members, "a", 1), ready_timeout=5.0).run()
    assert "the command did not restart it" in report.failed[0].detail
    sim = Sim(members)
    sim.no_restart = {"read-b-0"}
    report = sim.runner(plan_rollout(members, "a", 1), require_restart=False).run()
    assert report.ok, report.text()


def test_a_replica_that_is_not_ready_keeps_its_partner_up():
    members = topology()
    sim = Sim(members)
    sim.up["read-a-1"] = False  # crashed after the plan was made
    sim.never_ready = {"read-a-1"}
    report = sim.runner(plan_rollout(members, "a", 1), ready_timeout=5.0).run()
    assert [o.name for o in report.done] == ["read-b-0", "read-b-1"]
    assert report.failed[0].name == "read-a-0"
    assert "its replica read-a-1 (partitions 0-7) is not ready" in report.failed[0].detail
    assert "restart read-a-0" not in sim.events


def test_a_wrong_token_fails_before_anything_restarts():
    members = topology()
    sim = Sim(members)
    report = sim.runner(plan_rollout(members, "a", 1), token="wrong").run()
    assert not report.ok and "refuses the admin token (401)" in report.failed[0].detail
    assert sim.events == [] and len(report.not_started) == 6


def test_a_refused_handover_promotes_the_old_primary_back_and_stops():
    members = topology()
    sim = Sim(members)
    sim.refuse_promotion = {"write-1"}
    report = sim.runner(plan_rollout(members, "a", 1)).run()
    assert report.failed[0].name == "write-0"
    assert "promotion of write-1 refused" in report.failed[0].detail
    assert "write-0 is primary again" in report.failed[0].detail
    assert sim.primary["write-0"] and "restart write-0" not in sim.events
    assert report.not_started == []


# --- the command -------------------------------------------------------------------------------------------------
class Canned:
    def __init__(self, body, status=200):
        self.body, self.status = body, status

    def get(self, url, timeout=None):
        return httpx.Response(self.status, json=self.body, request=httpx.Request("GET", url))


def _cli(args, monkeypatch, body, status=200):
    monkeypatch.setattr(httpx, "get", Canned(body, status).get)
    return CliRunner().invoke(
        main, ["cluster", "rollout", "--url", "http://n:6060", *args], env={"MT_ADMIN_TOKEN": None}
    )


def test_cli_dry_run_prints_the_waves(monkeypatch):
    r = _cli(["--dry-run"], monkeypatch, {"activeColor": "b", "members": topology()})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "rollout of 6 members in 6 waves, concurrency 1, active color b"
    order = [ln.split()[0:2] + [ln.split()[ln.split().index("readers") + 2]] for ln in lines[2:6]]
    assert [o[2] for o in order] == ["read-a-0", "read-a-1", "read-b-0", "read-b-1"]
    assert lines[-1].split()[:4] == ["6", "primaries", "write-0", "write"]


def test_cli_refuses_unsafe_and_incomplete_invocations(monkeypatch):
    lone = [*topology()[:2], member("read-a-0", "read", color="a"), member("read-b-0", "read", color="b")]
    r = _cli(["--dry-run"], monkeypatch, {"activeColor": "a", "members": lone})
    assert (
        r.exit_code == EXIT_USAGE
        and "rollout refused: partitions 0-7 are served by read-a-0 alone" in r.output
    )
    r = _cli([], monkeypatch, {"activeColor": "a", "members": topology()})
    assert r.exit_code == EXIT_USAGE and "--exec CMD is required" in r.output


def test_cli_runs_the_plan_and_exits_1_on_failure(monkeypatch):
    members = topology()
    sim = Sim(members)
    sim.fail_command = {"write-1"}
    seen = {}

    def runner(plan, command, **kw):
        seen.update(kw)
        fakes = {"http": sim, "run_command": sim.run_command, "clock": sim.clock, "sleep": sim.sleep}
        return Runner(plan, command, **{**kw, **fakes})

    monkeypatch.setattr(rollout_mod, "Runner", runner)
    r = _cli(
        ["--exec", "restart {name}", "--token", "tok"], monkeypatch, {"activeColor": "a", "members": members}
    )
    assert r.exit_code == EXIT_REFUSED, r.output
    assert "FAILED: write-1: command exited with status 3" in r.output
    assert "not started (1): write-0" in r.output
    assert "wave 5/6 (secondaries): write-1" in r.output
    assert seen["token"] == "tok" and seen["ready_timeout"] == 600 and seen["handover_timeout"] == 300
