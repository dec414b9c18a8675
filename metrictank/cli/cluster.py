"""`metrictank cluster`: every member as one node sees it, to spot a partition with two primaries or none
before it costs data."""

from __future__ import annotations

import json
import sys

import click

from metrictank.cli._common import EXIT_REFUSED, _get, _ranges, _role, _secs, _url_option
from metrictank.cli.node import _token, _token_options


@click.group()
def cluster() -> None:
    """Look at the whole cluster through one node."""


def _lease(m: dict) -> str:
    """The primary lease as this member last saw it: holder@epoch, `*` when it holds a valid lease itself,
    `!` when it is a primary that cannot prove its lease (fenced)."""
    f = m.get("failover") or {}
    lease = f.get("lease")
    if not lease:
        return "-"
    if not lease.get("holder"):
        return f"free@{lease.get('epoch', 0)}"
    mark = "*" if lease.get("valid") else ("!" if f.get("fenced") else "")
    return f"{lease['holder']}@{lease.get('epoch', 0)}{mark}"


def cluster_problems(members: list[dict]) -> list[str]:
    """Partitions with two reachable primaries (both write) or with none (nothing is saved)."""
    primaries: dict[int, list[str]] = {}
    seen: set[int] = set()
    for m in members:
        if not m.get("reachable", True):
            continue
        for p in m.get("partitions") or []:
            seen.add(int(p))
            if m.get("primary"):
                primaries.setdefault(int(p), []).append(str(m.get("name", m.get("url", "?"))))
    out = []
    double = {p: names for p, names in primaries.items() if len(names) > 1}
    if double:
        for names in sorted({tuple(v) for v in double.values()}):
            parts = [p for p, v in double.items() if tuple(v) == names]
            out.append(f"partitions {_ranges(parts)} have more than one primary: {', '.join(names)}")
    orphan = sorted(seen - set(primaries))
    if orphan:
        out.append(f"partitions {_ranges(orphan)} have no reachable primary: their chunks are not saved")
    return out


@cluster.group("members", invoke_without_command=True)
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /cluster as JSON.")
@click.pass_context
def cluster_members(ctx: click.Context, url: str, as_json: bool) -> None:
    """List the node and its peers: name, URL, role, state, priority, waits, partitions; with live membership
    (`[cluster] membership-topic`) also every member the topic knows: alive, suspect or gone.

    Exits 1 when a partition has two primaries or none among the reachable members.

    \b
    Examples:
      metrictank cluster members --url http://10.0.0.2:6060
      metrictank cluster members remove mt-old --url http://10.0.0.2:6060
    """
    if ctx.invoked_subcommand is not None:
        return
    c = _get(url, "/cluster")
    members = [dict(c.get("self", {}), url=url.rstrip("/"), reachable=True)] + list(c.get("peers", []))
    problems = cluster_problems(members)
    if as_json:
        click.echo(json.dumps({**c, "problems": problems}, indent=2))
    else:
        header = ("NAME", "URL", "ROLE", "STATE", "PRIORITY", "DATA-WAIT", "LEASE", "PARTITIONS")
        rows = [header]
        for m in members:
            reachable = m.get("reachable", True)
            rows.append(
                (
                    str(m.get("name", "?")),
                    str(m.get("url", "")),
                    _role(m) if reachable else "-",
                    str(m.get("state", "-")),
                    str(m.get("priority", "-")) if reachable else "-",
                    _secs(m.get("dataCompletePromotionWait")) if reachable else "-",
                    _lease(m) if reachable else "-",
                    _ranges(m.get("partitions") or []) if reachable else m.get("error", ""),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        for r in rows:
            click.echo("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
        live = _live_members(url)
        if live is not None:
            click.echo("")
            click.echo(f"live members (membership topic; active color: {live.get('activeColor') or '-'}):")
            rows = [("NAME", "MEMBER", "AGE", "URL", "ROLE", "COLOR", "STATE", "PRIMARY", "PARTITIONS")]
            for m in live.get("members", []):
                rows.append(
                    (
                        str(m.get("name")),
                        str(m.get("member")),
                        f"{m.get('heartbeatAge', 0):.0f}s",
                        str(m.get("url")),
                        str(m.get("role")),
                        str(m.get("color") or "-"),
                        str(m.get("state")),
                        "yes" if m.get("primary") else "",
                        _ranges(m.get("partitions") or []),
                    )
                )
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                click.echo("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip())
        for p in problems:
            click.echo(f"WARNING: {p}", err=True)
    sys.exit(EXIT_REFUSED if problems else 0)


def _live_members(url: str) -> dict | None:
    """GET /cluster/members, or None when the node has no membership topic (or is an older version)."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/cluster/members", timeout=10)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _admin(method: str, url: str, path: str, token: str | None, **kw) -> None:
    """An admin request whose answer is the exit status: 0 on 200, EXIT_REFUSED otherwise, with its message."""
    import httpx

    from metrictank.cli._common import EXIT_UNREACHABLE, _fail

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=30, **kw)
    except httpx.HTTPError as e:
        _fail(f"cannot reach {url}: {e}", EXIT_UNREACHABLE)
    if r.status_code != 200:
        _fail(f"{r.status_code}: {r.text.strip()}", EXIT_REFUSED)
    click.echo(r.text.strip())


@cluster_members.command("remove")
@click.argument("name")
@_url_option
@_token_options
def members_remove(name: str, url: str, token: str | None, token_file: str | None) -> None:
    """Tombstone a member that will not return: every node drops it from its table (a live member that
    announces itself again reappears).

    \b
    Example:
      metrictank cluster members remove mt-old --url http://10.0.0.2:6060
    """
    _admin("DELETE", url, f"/cluster/members/{name}", _token(token, token_file))


@cluster.group("color")
def cluster_color() -> None:
    """The active read color: read nodes of the other color answer /readyz 503 ("standby color")."""


@cluster_color.command("show")
@_url_option
def color_show(url: str) -> None:
    """Print the active color (`-`: none, every reader serves)."""
    c = _get(url, "/cluster/color")
    click.echo(c.get("active") or "-")


@cluster_color.command("set")
@click.argument("color", type=click.Choice(["a", "b", "none"]))
@_url_option
@_token_options
def color_set(color: str, url: str, token: str | None, token_file: str | None) -> None:
    """Make COLOR the active read color (`none`: every reader serves); every node follows within a heartbeat.

    \b
    Example:
      metrictank cluster color set b --url http://10.0.0.2:6060
    """
    _admin(
        "POST",
        url,
        "/cluster/color",
        _token(token, token_file),
        data={"color": "" if color == "none" else color},
    )


@cluster.command("plan")
@click.option("--partitions", type=int, required=True, help="Partitions of the data topic.")
@click.option("--writers", type=int, required=True, help="Write nodes (sets of --write-replication).")
@click.option("--readers", type=int, required=True, help="Read nodes (groups of --replication).")
@click.option("--replication", type=int, required=True, help="Readers per partition.")
@click.option(
    "--write-replication", type=int, default=2, show_default=True, help="Writers per partition set."
)
@click.option(
    "--policy", type=click.Choice(["constant-no-overlap"]), default="constant-no-overlap", show_default=True
)
@click.option(
    "--url-template",
    default="http://{name}:6060",
    show_default=True,
    help="Each instance's HTTP base URL, for peer lists; {name} is the instance name.",
)
@click.option(
    "--read-prefix",
    default="read",
    show_default=True,
    help="Read nodes are named <prefix>-0, <prefix>-1, ... (e.g. read-a for the readers of color a).",
)
@click.option("--write-prefix", default="write", show_default=True, help="Write nodes' name prefix.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write <name>.toml (for `run --config base.toml --config <name>.toml`) and <name>.env (for systemd "
    "EnvironmentFile=) per instance into this directory.",
)
def cluster_plan(
    partitions: int,
    writers: int,
    readers: int,
    replication: int,
    write_replication: int,
    policy: str,
    url_template: str,
    read_prefix: str,
    write_prefix: str,
    out_dir: str | None,
) -> None:
    """Assign partitions to write and read nodes; refuse a plan that leaves a partition without its readers or
    a writer set without a standby (exit 2, with the reason).

    \b
    Example:
      metrictank cluster plan --partitions 8 --writers 4 --readers 4 --replication 2 --out /etc/metrictank/plan
      metrictank cluster plan --partitions 8 --writers 2 --readers 2 --replication 2 --read-prefix read-b \\
          --out /etc/metrictank/plan        # a second read cluster (color b) over the same writers
    """
    from pathlib import Path

    from metrictank.cli._common import EXIT_USAGE, _fail
    from metrictank.cluster.plan import PlanError, constant_no_overlap

    try:
        plan = constant_no_overlap(
            partitions,
            writers,
            readers,
            replication,
            write_replication,
            prefix_write=write_prefix,
            prefix_read=read_prefix,
        )
    except PlanError as e:
        _fail(f"impossible plan: {e}", EXIT_USAGE)
    url_of = {m.name: url_template.format(name=m.name) for m in plan.members}
    click.echo(plan.table())
    if out_dir:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        for m in plan.members:
            (d / f"{m.name}.toml").write_text(m.toml(url_of))
            (d / f"{m.name}.env").write_text(m.env(url_of))
        click.echo(f"wrote {len(plan.members)} fragments (.toml and .env) to {d}", err=True)


@cluster.command("rollout")
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Shell command that restarts one member; {name} and {url} are replaced by the member's (also in "
    "$MT_ROLLOUT_NAME, $MT_ROLLOUT_URL). It may return before the member is ready: the rollout waits for /readyz.",
)
@click.option(
    "--concurrency", type=int, default=1, show_default=True, help="Members restarting (not ready) at once."
)
@click.option("--dry-run", is_flag=True, help="Print the waves and exit 0; restart nothing.")
@click.option(
    "--ready-timeout",
    default="10m",
    show_default=True,
    help="Per member: how long its command may run, and then how long it may take to answer /readyz 200.",
)
@click.option(
    "--handover-timeout",
    default="5m",
    show_default=True,
    help="How long a primary's handover retries a refused promotion of its secondary.",
)
@click.option(
    "--require-restart/--no-require-restart",
    default=True,
    show_default=True,
    help="A member counts as done only once GET /node shows a new process (`started` changed).",
)
@click.option(
    "--only", "only", multiple=True, metavar="NAME", help="Restart only these members (repeatable)."
)
@_url_option
@_token_options
def cluster_rollout(
    command: str | None,
    concurrency: int,
    dry_run: bool,
    ready_timeout: str,
    handover_timeout: str,
    require_restart: bool,
    only: tuple[str, ...],
    url: str,
    token: str | None,
    token_file: str | None,
) -> None:
    """Restart every member in order: readers of the standby color, readers of the active color, secondaries,
    then each primary after a handover to a ready secondary (demote, promote).

    The members come from the live member table of the node at --url (`[cluster] membership-topic`). At most
    --concurrency members restart at once, and a member goes down only while every other replica of its
    partitions (of its kind: active readers, standby readers, writers) is ready, so every partition stays served
    by a ready active reader. Per member: run --exec, then wait for /readyz 200 (a standby-color reader: its node
    state) within --ready-timeout. The first failure (command exit status, not ready in time, a refused
    handover) stops the rollout with a report (finished, failed and why, not started) and exit 1. Exit 2: the
    rollout would be unsafe (a member not alive, a partition with one active reader, a primary without a
    secondary), with the reason.

    \b
    Examples:
      metrictank cluster rollout --url http://write-0:6060 --dry-run
      metrictank cluster rollout --url http://write-0:6060 --token-file /etc/metrictank/token \\
          --exec 'ssh {name}.mt.internal sudo systemctl restart metrictank@{name}'
    """
    from metrictank.cli._common import EXIT_USAGE, _duration, _fail
    from metrictank.cluster.rollout import RolloutError, Runner, plan_rollout

    if not dry_run and not command:
        _fail("--exec CMD is required (or --dry-run to print the plan)", EXIT_USAGE)
    ready_s = _duration(ready_timeout, "--ready-timeout")
    handover_s = _duration(handover_timeout, "--handover-timeout")
    live = _live_members(url)
    if live is None:
        _get(url, "/cluster")  # exits 3 when the node cannot be reached at all
        _fail(f"{url} has no member table: set [cluster] membership-topic on every node", EXIT_USAGE)
    try:
        plan = plan_rollout(
            live.get("members") or [], live.get("activeColor") or "", concurrency, only or None
        )
    except RolloutError as e:
        _fail(f"rollout refused: {e}", EXIT_USAGE)
    click.echo(plan.table())
    if command:
        click.echo(f"command: {command}")
    if dry_run:
        return
    runner = Runner(
        plan,
        command or "",
        token=_token(token, token_file),
        ready_timeout=ready_s,
        handover_timeout=handover_s,
        require_restart=require_restart,
        echo=lambda s: click.echo(s),
    )
    report = runner.run()
    click.echo(report.text(), err=not report.ok)
    sys.exit(0 if report.ok else EXIT_REFUSED)
