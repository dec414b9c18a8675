"""Ordered restarts of a whole cluster (`metrictank cluster rollout`), in HM-API's order.

The order: the readers of the standby color first (nobody queries them), then the readers of the active color,
then the secondaries (write or all nodes that are not primary), and each primary last, after a handover to a
ready secondary of its partitions (demote it, promote the secondary: `POST /node`). At most `concurrency`
members restart at once, and never two replicas of the same partitions: a member goes down only while every
other member of its kind (active readers, standby readers of its color, writers) that shares a partition with it
answers ready. With an active reader that means every partition stays served by a ready active reader.

`plan_rollout` is the pure part: from the member table (GET /cluster/members) to the waves, refusing what cannot
be done safely (a member that is not alive, a partition with a single active reader, a primary without a
secondary of all its partitions). `Runner` executes a plan: per member it runs the command, waits for /readyz
(and, by default, for a new process: `started` in GET /node changes), and stops at the first failure with a
report of what finished, what failed and why, and what was not started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PHASES",
    "Outcome",
    "Report",
    "RolloutError",
    "RolloutPlan",
    "Runner",
    "Target",
    "Wave",
    "plan_rollout",
    "ranges_text",
    "substitute",
]

PHASES = ("standby readers", "active readers", "secondaries", "primaries")
STALL_LIMIT = 15.0  # seconds without a main-loop turn after which /readyz says "main loop stalled"


class RolloutError(ValueError):
    """The rollout cannot be done safely; the message says why and what to do."""


def ranges_text(nums: Iterable[int]) -> str:
    """`0,1,2,3,5,7,8` as `0-3,5,7-8`: partition lists are long (the CLI prints them the same way)."""
    vals = sorted(set(int(n) for n in nums))
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(out) or "-"


@dataclass(frozen=True)
class Target:
    """One member as the rollout sees it."""

    name: str
    url: str
    role: str  # all | write | read
    color: str
    partitions: tuple[int, ...]
    primary: bool
    group: str  # "active", "standby-<color>" (readers) or "write" (write and all nodes): replicas share one
    phase: str
    replicas: tuple[str, ...] = ()  # same group, a shared partition: must be ready before this one goes down
    candidates: tuple[str, ...] = ()  # primaries: the secondaries that hold all of its partitions

    @property
    def standby(self) -> bool:
        return self.group.startswith("standby-")


@dataclass(frozen=True)
class Wave:
    phase: str
    members: tuple[Target, ...]


@dataclass(frozen=True)
class RolloutPlan:
    active_color: str
    concurrency: int
    waves: tuple[Wave, ...]
    targets: Mapping[str, Target]

    @property
    def order(self) -> list[str]:
        return [t.name for w in self.waves for t in w.members]

    def table(self) -> str:
        """The waves, one member per line, for --dry-run and the start of a run."""
        rows = [("WAVE", "PHASE", "MEMBER", "ROLE", "COLOR", "PARTITIONS", "BEFORE IT GOES DOWN")]
        for i, w in enumerate(self.waves, 1):
            for t in w.members:
                if t.primary:
                    gate = "hand over to the first ready of " + ",".join(t.candidates)
                elif t.replicas:
                    gate = "ready: " + ",".join(t.replicas)
                else:
                    gate = "-"
                phase = w.phase
                if w.phase == "active readers" and self.active_color:
                    phase += f" ({self.active_color})"
                if w.phase == "standby readers":
                    phase += f" ({t.color})"
                rows.append((str(i), phase, t.name, t.role, t.color or "-", ranges_text(t.partitions), gate))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
        head = (
            f"rollout of {len(self.targets)} members in {len(self.waves)} waves, concurrency {self.concurrency}, "
            f"active color {self.active_color or '-'}"
        )
        return "\n".join([head, *lines])


def _group(m: Mapping[str, Any], active_color: str) -> str:
    if m.get("role") == "read":
        color = m.get("color") or ""
        if active_color and color and color != active_color:
            return f"standby-{color}"
        return "active"
    return "write"


def _phase(m: Mapping[str, Any], group: str) -> str:
    if group.startswith("standby-"):
        return PHASES[0]
    if group == "active":
        return PHASES[1]
    return PHASES[3] if m.get("primary") else PHASES[2]


def plan_rollout(
    members: Sequence[Mapping[str, Any]],
    active_color: str,
    concurrency: int,
    only: Iterable[str] | None = None,
) -> RolloutPlan:
    """The waves of a rollout of `members` (rows of GET /cluster/members); RolloutError when it is unsafe.

    `only` restricts the members restarted (the others still count as replicas and handover targets)."""
    if concurrency < 1:
        raise RolloutError(f"--concurrency {concurrency}: at least 1 member restarts at a time")
    if not members:
        raise RolloutError("the member table is empty: nothing to roll out (is membership-topic set?)")
    dead = [f"{m.get('name')} ({m.get('member')})" for m in members if m.get("member", "alive") != "alive"]
    if dead:
        raise RolloutError(
            f"members not alive: {', '.join(dead)}. The rollout counts on every replica being up; bring them back "
            "or remove the ones that will not return (`metrictank cluster members remove NAME`)"
        )
    rows = sorted(members, key=lambda m: str(m.get("name")))
    primary_of = {str(m["name"]): bool(m.get("primary")) for m in rows}
    groups = {str(m["name"]): _group(m, active_color) for m in rows}
    parts = {str(m["name"]): frozenset(int(p) for p in m.get("partitions") or ()) for m in rows}

    def replicas(name: str) -> tuple[str, ...]:
        return tuple(o for o in groups if o != name and groups[o] == groups[name] and parts[o] & parts[name])

    problems: list[str] = []
    primaries = [str(m["name"]) for m in rows if groups[str(m["name"])] == "write" and m.get("primary")]
    for i, a in enumerate(primaries):
        for b in primaries[i + 1 :]:
            if parts[a] & parts[b]:
                problems.append(
                    f"partitions {ranges_text(parts[a] & parts[b])} have two primaries ({a}, {b}): demote one first"
                )
    wanted = set(groups) if only is None else set(only)
    unknown = wanted - set(groups)
    if unknown:
        problems.append(f"not in the member table: {', '.join(sorted(unknown))}")
    targets: dict[str, Target] = {}
    for m in rows:
        name = str(m["name"])
        g = groups[name]
        phase = _phase(m, g)
        cands: tuple[str, ...] = ()
        if g == "active" and name in wanted:
            covered = set().union(*(parts[r] for r in replicas(name))) if replicas(name) else set()
            alone = parts[name] - covered
            if alone:
                problems.append(
                    f"partitions {ranges_text(alone)} are served by {name} alone among the active readers: restarting "
                    "it would leave them unserved; give them a second active reader, or restart the standby color "
                    "and switch colors (`metrictank cluster color set`)"
                )
        if phase == PHASES[3]:
            cands = tuple(
                o
                for o in groups
                if o != name and groups[o] == "write" and not primary_of[o] and parts[name] <= parts[o]
            )
            if not cands and name in wanted:
                problems.append(
                    f"no secondary holds all of primary {name}'s partitions {ranges_text(parts[name])}: no handover "
                    "is possible, and restarting it would leave them without a writer"
                )
        targets[name] = Target(
            name=name,
            url=str(m.get("url", "")).rstrip("/"),
            role=str(m.get("role", "all")),
            color=str(m.get("color") or ""),
            partitions=tuple(sorted(parts[name])),
            primary=bool(m.get("primary")),
            group=g,
            phase=phase,
            replicas=replicas(name),
            candidates=cands,
        )
    if problems:
        raise RolloutError("; ".join(problems))

    waves: list[Wave] = []
    for phase in PHASES:
        mine: list[list[Target]] = []
        for t in (t for t in targets.values() if t.phase == phase and t.name in wanted):
            for w in mine:
                if len(w) < concurrency and not any(o.name in t.replicas for o in w):
                    w.append(t)
                    break
            else:
                mine.append([t])
        waves += [Wave(phase, tuple(w)) for w in mine]
    return RolloutPlan(active_color, concurrency, tuple(waves), targets)


def substitute(template: str, target: Target) -> str:
    """The command for one member: `{name}` and `{url}` replaced, shell-quoted (the rest of the template is left
    as it is, so `${VAR}` and other braces in a shell command survive)."""
    return template.replace("{name}", shlex.quote(target.name)).replace("{url}", shlex.quote(target.url))


# --- running a plan --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    output: str = ""


@dataclass
class Report:
    plan: RolloutPlan
    done: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    handovers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def text(self) -> str:
        lines = []
        if self.ok:
            lines.append(f"rollout done: {len(self.done)} members restarted in {self.seconds:.1f}s")
        else:
            lines.append(f"ROLLOUT STOPPED after {self.seconds:.1f}s")
        lines.append(
            f"  finished ({len(self.done)}): "
            + (", ".join(f"{o.name} {o.seconds:.1f}s" for o in self.done) or "-")
        )
        for o in self.failed:
            lines.append(f"  FAILED: {o.name}: {o.detail}")
            if o.output.strip():
                tail = o.output.strip().splitlines()[-15:]
                lines += [f"    | {ln}" for ln in tail]
        if not self.ok:
            lines.append(f"  not started ({len(self.not_started)}): " + (", ".join(self.not_started) or "-"))
        for h in self.handovers:
            lines.append(f"  handover: {h}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)


class Http:
    """The few HTTP calls of a rollout (an object so that tests can answer them)."""

    def __init__(self, timeout: float = 10.0) -> None:
        import httpx

        self._client = httpx.Client(timeout=timeout)
        self._errors = (httpx.HTTPError,)

    def get(self, url: str) -> tuple[int, str]:
        try:
            r = self._client.get(url)
        except self._errors as e:
            return 0, f"unreachable: {e}"
        return r.status_code, r.text

    def post(self, url: str, data: dict[str, str], token: str | None, timeout: float) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = self._client.post(url, data=data, headers=headers, timeout=timeout)
        except self._errors as e:
            return 0, f"unreachable: {e}"
        return r.status_code, r.text


def run_shell(command: str, env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    """Run a command through the shell: (exit status, stdout and stderr); 124 with a note on timeout."""
    try:
        p = subprocess.run(
            command,
            shell=True,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(command still running after {timeout:.0f}s: killed)"
    return p.returncode, p.stdout


def _json(text: str) -> dict:
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Runner:
    """Executes a RolloutPlan wave by wave; stops at the first failure."""

    def __init__(
        self,
        plan: RolloutPlan,
        command: str,
        *,
        token: str | None = None,
        ready_timeout: float = 600.0,
        handover_timeout: float = 300.0,
        require_restart: bool = True,
        poll: float = 0.5,
        http: Any = None,
        run_command: Callable[[str, Mapping[str, str], float], tuple[int, str]] = run_shell,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.plan = plan
        self.command = command
        self.token = token
        self.ready_timeout = ready_timeout
        self.handover_timeout = handover_timeout
        self.require_restart = require_restart
        self.poll = poll
        self.http = http if http is not None else Http()
        self.run_command = run_command
        self.clock = clock
        self.sleep = sleep
        self._echo = echo
        self._echo_lock = threading.Lock()

    def echo(self, msg: str) -> None:
        with self._echo_lock:
            self._echo(msg)

    # --- probes ----------------------------------------------------------------------------------------------
    def node(self, t: Target) -> dict | None:
        code, text = self.http.get(t.url + "/node")
        return _json(text) if code == 200 else None

    def probe(self, t: Target) -> tuple[bool, str]:
        """(ready, why). A reader of the standby color answers /readyz 503 "standby color" whether or not it is
        caught up: for it, GET /node says whether the node itself is ready."""
        code, text = self.http.get(t.url + "/readyz")
        if code == 200:
            return True, "ready"
        text = text.strip()
        if code == 503 and text.startswith("standby color"):
            n = self.node(t)
            if n is None:
                return False, "standby color, GET /node failed"
            stalled = float(n.get("mainLoopStalledSeconds") or 0.0)
            if n.get("state") == "NodeReady" and stalled < STALL_LIMIT:
                return True, "ready (standby color)"
            return False, f"standby color, state {n.get('state')}"
        return False, (f"{code} {text[:200]}" if code else text[:200])

    def serving(self, t: Target) -> tuple[bool, str]:
        """Ready in the sense its replicas need: an active reader must answer /readyz 200 itself."""
        ok, why = self.probe(t)
        if ok and t.group == "active" and why != "ready":
            return False, f"not serving: {why}"
        return ok, why

    # --- steps -----------------------------------------------------------------------------------------------
    def gate(self, t: Target) -> tuple[bool, str]:
        """Wait (up to ready-timeout) until every replica of t is ready: t may go down only then."""
        deadline = self.clock() + self.ready_timeout
        while True:
            waiting = []
            for r in t.replicas:
                ok, why = self.serving(self.plan.targets[r])
                if not ok:
                    waiting.append((r, why))
            if not waiting:
                return True, ""
            if self.clock() >= deadline:
                r, why = waiting[0]
                shared = set(t.partitions) & set(self.plan.targets[r].partitions)
                return False, (
                    f"not taken down: its replica {r} (partitions {ranges_text(shared)}) is not ready after "
                    f"{self.ready_timeout:.0f}s ({why})"
                )
            self.sleep(self.poll)

    def check_token(self) -> tuple[bool, str]:
        """Before anything restarts: the primaries accept the admin token (a POST /node without fields answers
        422 when authorized, 401 when not), so a handover cannot fail on it at the very end."""
        for t in self.plan.targets.values():
            if not t.primary:
                continue
            code, text = self.http.post(t.url + "/node", {}, self.token, 30.0)
            if code == 401:
                return False, f"{t.name} refuses the admin token (401): pass --token or --token-file"
            if code == 0:
                return False, f"{t.name}: {text}"
        return True, ""

    def handover(self, t: Target) -> tuple[bool, str, str]:
        """Demote primary t and promote the best ready secondary of its partitions: (ok, detail, new primary)."""
        cands = []
        refused = []
        for c in t.candidates:
            ct = self.plan.targets[c]
            ok, why = self.probe(ct)
            n = self.node(ct) if ok else None
            if n is None:
                refused.append(f"{c}: {why if not ok else 'GET /node failed'}")
                continue
            wait = float(n.get("dataCompletePromotionWait") or 0.0)
            cands.append((wait, int(n.get("priority") or 0), c))
        if not cands:
            return False, f"no ready secondary to hand over to ({'; '.join(refused)})", ""
        new = sorted(cands)[0][2]
        nt = self.plan.targets[new]
        self.echo(f"{t.name}: handing over to {new}: demoting {t.name}")
        code, text = self.http.post(t.url + "/node", {"primary": "false"}, self.token, 300.0)
        if code != 200:
            return False, f"demotion of {t.name} failed: {code} {text.strip()[:300]}", ""
        if text.strip() != "OK":
            self.echo(f"{t.name}: {text.strip()}")
        ok, last = self._promote(
            nt, self.handover_timeout, others=[self.plan.targets[c] for c in t.candidates]
        )
        if ok is not None:
            return True, f"{t.name} -> {ok}", ok
        self.echo(
            f"{t.name}: promotion of {new} refused for {self.handover_timeout:.0f}s; promoting {t.name} back"
        )
        back, why = self._promote(t, min(self.handover_timeout, 60.0), others=[])
        return (
            False,
            f"promotion of {new} refused for {self.handover_timeout:.0f}s ({last}); "
            + (
                f"{t.name} is primary again"
                if back
                else f"{t.name} could NOT be promoted back ({why}): promote a node"
            ),
            "",
        )

    def _promote(self, t: Target, timeout: float, others: list[Target]) -> tuple[str | None, str]:
        """Promote t, retrying refusals until timeout; a secondary in `others` that became primary meanwhile
        (automatic failover) counts as done. Returns (the new primary or None, the last refusal)."""
        deadline = self.clock() + timeout
        last = ""
        while True:
            code, text = self.http.post(t.url + "/node", {"primary": "true"}, self.token, 120.0)
            if code == 200:
                return t.name, ""
            doc = _json(text)
            last = "; ".join(map(str, doc.get("reasons") or [])) or f"{code} {text.strip()[:300]}"
            if code in (400, 401, 422):
                return None, last
            for o in others:
                n = self.node(o)
                if n is not None and n.get("primary") is True:
                    return o.name, ""
            if self.clock() >= deadline:
                return None, last
            self.sleep(1.0)

    def restart(self, t: Target) -> Outcome:
        """Run the command for t, then wait until t is ready again (and, unless told otherwise, a new process)."""
        t0 = self.clock()
        before = self.node(t)
        started = before.get("started") if before else None
        cmd = substitute(self.command, t)
        self.echo(f"{t.name}: running {cmd}")
        rc, out = self.run_command(
            cmd, {"MT_ROLLOUT_NAME": t.name, "MT_ROLLOUT_URL": t.url}, self.ready_timeout
        )
        if rc != 0:
            return Outcome(t.name, False, self.clock() - t0, f"command exited with status {rc}", out)
        deadline = self.clock() + self.ready_timeout
        why = ""
        while True:
            ok, why = self.probe(t)
            if ok and self.require_restart and started is not None:
                n = self.node(t)
                if n is None or n.get("started") == started:
                    ok = False
                    why = f"still the process started at {started}: the command did not restart it"
            if ok:
                secs = self.clock() - t0
                self.echo(f"{t.name}: ready after {secs:.1f}s")
                return Outcome(t.name, True, secs, why, out)
            if self.clock() >= deadline:
                return Outcome(
                    t.name,
                    False,
                    self.clock() - t0,
                    f"not ready {self.ready_timeout:.0f}s after the command ({why})",
                    out,
                )
            self.sleep(self.poll)

    def after_primary(self, t: Target, new: str, report: Report) -> None:
        """A restarted primary whose configuration says primary-node = true comes back primary (fenced: the
        new primary holds the lease). Demote it, so that each partition has one primary."""
        n = self.node(t)
        if n is None or n.get("primary") is not True:
            return
        code, text = self.http.post(t.url + "/node", {"primary": "false"}, self.token, 300.0)
        if code == 200:
            report.notes.append(
                f"{t.name} came back as primary (primary-node = true in its configuration): demoted it, {new} "
                f"stays primary; to hand back: metrictank node demote --url {self.plan.targets[new].url} && "
                f"metrictank node promote --url {t.url}"
            )
        else:
            report.notes.append(
                f"{t.name} came back as primary and could not be demoted: {code} {text[:200]}"
            )

    # --- the whole run ----------------------------------------------------------------------------------------
    def run(self) -> Report:
        report = Report(self.plan)
        t_start = self.clock()
        waves = self.plan.waves

        def stop(failed: list[Outcome], from_wave: int, skip: Iterable[str] = ()) -> Report:
            report.failed += failed
            skipped = set(skip) | {o.name for o in failed} | {o.name for o in report.done}
            rest = [t.name for w in waves[from_wave:] for t in w.members if t.name not in skipped]
            report.not_started = rest
            report.seconds = self.clock() - t_start
            return report

        if any(t.primary for w in waves for t in w.members):
            ok, why = self.check_token()
            if not ok:
                return stop([Outcome("(admin token)", False, 0.0, why)], 0)
        for i, wave in enumerate(waves):
            names = ", ".join(t.name for t in wave.members)
            self.echo(f"wave {i + 1}/{len(waves)} ({wave.phase}): {names}")
            for t in wave.members:
                ok, why = self.gate(t)
                if not ok:
                    return stop([Outcome(t.name, False, 0.0, why)], i)
            new_primary: dict[str, str] = {}
            for t in wave.members:
                if t.primary:
                    ok, detail, new = self.handover(t)
                    if not ok:
                        return stop([Outcome(t.name, False, 0.0, f"handover failed: {detail}")], i)
                    report.handovers.append(detail)
                    new_primary[t.name] = new
            if len(wave.members) == 1:
                outcomes = [self.restart(wave.members[0])]
            else:
                with ThreadPoolExecutor(len(wave.members), thread_name_prefix="rollout") as ex:
                    outcomes = list(ex.map(self.restart, wave.members))
            report.done += [o for o in outcomes if o.ok]
            failed = [o for o in outcomes if not o.ok]
            if failed:
                return stop(failed, i)
            for t in wave.members:
                if t.primary:
                    self.after_primary(t, new_primary[t.name], report)
        report.seconds = self.clock() - t_start
        return report
