"""The `metrictank` command: run an instance, steer nodes, generate load, read the store, check configuration.

Exit codes are for scripts, the same for every command:
  0  success (for `node status`: the node is ready)
  1  refused, or not in the asked state (promotion refused, node not ready, demoted but not drained,
     no primary or two primaries in `cluster members`, HTTP 401/4xx)
  2  usage or configuration error (click's own usage errors are 2 as well)
  3  a node, Kafka or the store could not be reached
Heavy modules (numpy, Kafka, Cassandra drivers) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click

from metrictank import __version__
from metrictank.config import OPTIONS, ConfigError, env_name, load_config, parse_duration, reference_markdown

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:6060"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="metrictank")
def main() -> None:
    """metrictank-py: Kafka-fed metrics ingest, byte-compatible with Metrictank.

    \b
    Exit codes: 0 ok, 1 refused / not in the asked state, 2 usage or configuration error,
    3 node, Kafka or store unreachable.
    """


def _fail(msg: str, code: int) -> NoReturn:
    click.echo(msg, err=True)
    sys.exit(code)


def _load(path: str | None):
    try:
        return load_config(path)
    except ConfigError as e:
        _fail(f"config error: {e}", EXIT_USAGE)


def _duration(value: str, what: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=what) from None


def _when(value: str, now: int, what: str) -> int:
    """A Graphite time (`-6h`, `now`, epoch seconds, `HH:MM_YYYYMMDD`) as epoch seconds."""
    from metrictank.query.errors import QueryError
    from metrictank.query.timeparse import parse_time

    try:
        return parse_time(value, now)
    except QueryError as e:
        raise click.BadParameter(e.message, param_hint=what) from None


# --- run -------------------------------------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
def run(config_path: str | None) -> None:
    """Run an instance in the foreground; SIGTERM demotes it, drains writes and exits.

    Under systemd (Type=notify) it reports READY=1 once the node is ready, pings the watchdog and sends
    STOPPING=1 on shutdown.

    \b
    Examples:
      metrictank run --config /etc/metrictank/mt1.toml
      MT_CLUSTER_PRIMARY_NODE=true metrictank run --config mt.toml
    """
    cfg = _load(config_path)
    from metrictank.instance import Instance
    from metrictank.logsetup import setup_logging
    from metrictank.systemd import SystemdNotifier

    setup_logging(cfg.log.level, cfg.log.format)
    inst = Instance(cfg)
    notifier = getattr(inst, "systemd", None)
    monitor_stop = threading.Event()
    if notifier is None:
        # The instance does not drive the notifier from its main loop: do it from here, once a second.
        notifier = SystemdNotifier()
        if notifier.enabled:

            def monitor() -> None:
                while not monitor_stop.wait(1.0):
                    notifier.tick(inst.node)

            threading.Thread(target=monitor, name="systemd-notify", daemon=True).start()

    def _graceful(signum, _frame):
        click.echo(f"signal {signum}: stopping (demote, drain, exit)", err=True)
        notifier.stopping()
        inst.stop_event.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    inst.start()
    try:
        inst.run()
    finally:
        monitor_stop.set()
        notifier.stopping()
        with notifier.keepalive(limit=cfg.store.drain_timeout + 60):
            if inst.node.primary:
                inst.node.set_primary(False)
            inst.stop()


# --- config ----------------------------------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Check, show, document and generate configuration."""


def check_config(cfg) -> list[str]:
    """Problems a config has beyond its own syntax: referenced files that would stop the instance at start."""
    from metrictank.retention import Aggregations, RetentionError, Schemas

    problems: list[str] = []
    for key, loader in (("schemas-file", Schemas.load), ("aggregations-file", Aggregations.load)):
        path = cfg.retention[key]
        if path:
            try:
                loader(path)
            except RetentionError as e:
                problems.append(f"retention.{key}: {e}")
    return problems


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate a configuration file, its MT_* overrides and the retention files it names.

    Exits 2 with a message naming the bad key.

    \b
    Examples:
      metrictank config check /etc/metrictank/mt1.toml
      MT_CLUSTER_MAX_PRIORITY=5 metrictank config check mt1.toml
    """
    cfg = _load(path)
    problems = check_config(cfg)
    if problems:
        _fail("\n".join(f"config error: {p}" for p in problems), EXIT_USAGE)
    click.echo(f"{path}: OK")


@config.command("show")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--no-origin", is_flag=True, help="Leave out where each value came from.")
def config_show(config_path: str | None, no_origin: bool) -> None:
    """Print the effective configuration (defaults, file, MT_* environment) as TOML; the token is masked.

    \b
    Example:
      metrictank config show --config /etc/metrictank/mt1.toml
    """
    click.echo(_load(config_path).to_toml(show_origin=not no_origin), nl=False)


@config.command("doc")
def config_doc() -> None:
    """Print the configuration reference in Markdown.

    \b
    Example:
      metrictank config doc > docs/configuration.md
    """
    click.echo(reference_markdown())


SAMPLE_HEADER = """\
# metrictank-py configuration (TOML)
#
# Generated by `metrictank config sample` from the option table in metrictank/config.py; a test keeps this file
# equal to that output. Every option is listed with its default, commented out: uncomment what you change.
# Each option can also be set by the environment variable named above it (MT_<SECTION>_<KEY>), which
# overrides the file. Durations take Go's form (90s, 10m, 1h30m) or a number of seconds. Unknown keys and bad
# values stop startup with a message naming the key.
#
#   metrictank config check /etc/metrictank/mt1.toml       validate a file
#   metrictank config show --config /etc/metrictank/mt1.toml   effective values and where each came from"""


def sample_toml() -> str:
    """Every option, commented out with its doc, environment variable and default (config/metrictank.toml)."""
    defaults = load_config(env={}).to_toml(show_origin=False).splitlines()
    by_key = {(o.section, o.key): o for o in OPTIONS}
    out = [SAMPLE_HEADER]
    section = ""
    for line in defaults:
        if not line.strip():
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.append(f"\n{line}")
            continue
        key = line.split(" = ", 1)[0]
        opt = by_key[(section, key)]
        out.append("")
        out.extend(textwrap.wrap(opt.doc, 108, initial_indent="# ", subsequent_indent="# "))
        out.append(f"# env: {env_name(section, key)}")
        out.append(f"# {line}")
    return "\n".join(out) + "\n"


@config.command("sample")
def config_sample() -> None:
    """Print a configuration file documenting every option with its default.

    \b
    Example:
      metrictank config sample > /etc/metrictank/mt1.toml
    """
    click.echo(sample_toml(), nl=False)


# --- node ------------------------------------------------------------------------------------------------------
def _url_option(f):
    return click.option(
        "--url",
        default=DEFAULT_URL,
        show_default=True,
        envvar="METRICTANK_URL",
        help="Base URL of the node's HTTP API (or $METRICTANK_URL).",
    )(f)


def _token_options(f):
    f = click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False),
        help="Read the admin token from a file (keeps it out of `ps`).",
    )(f)
    return click.option(
        "--token",
        envvar=["MT_ADMIN_TOKEN", "MT_HTTP_ADMIN_TOKEN"],
        help="Admin token (or $MT_ADMIN_TOKEN / $MT_HTTP_ADMIN_TOKEN).",
    )(f)


def _token(token: str | None, token_file: str | None) -> str | None:
    if token_file:
        return Path(token_file).read_text().strip() or None
    return token or None


def _get(url: str, path: str) -> dict:
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + path, timeout=10)
    except httpx.HTTPError as e:
        _fail(f"cannot reach {url}: {e}", EXIT_UNREACHABLE)
    if r.status_code != 200:
        _fail(f"GET {path} on {url}: HTTP {r.status_code}: {r.text.strip()}", EXIT_UNREACHABLE)
    try:
        return r.json()
    except ValueError:
        _fail(f"GET {path} on {url}: not JSON: {r.text[:200]!r}", EXIT_UNREACHABLE)


def _ranges(nums: Iterable[int]) -> str:
    """`0,1,2,3,5,7,8` as `0-3,5,7-8`: partition lists are long."""
    vals = sorted(int(n) for n in nums)
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(out) or "-"


def _secs(v: Any) -> str:
    return "-" if v is None else f"{float(v):.0f}s"


def _role(n: dict) -> str:
    return "primary" if n.get("primary") else "secondary"


def node_table(n: dict) -> str:
    """GET /node as aligned `field  value` lines. Fields a Metrictank (Go) node lacks are shown as `-`."""
    backlog = n.get("persistBacklogDone")
    rows = [
        ("name", n.get("name", "-")),
        ("version", n.get("version", "-")),
        ("role", f"{_role(n)} (since {n.get('primaryChange', '-')})"),
        ("state", f"{n.get('state', '-')} (since {n.get('stateChange', '-')})"),
        ("priority", n.get("priority", "-")),
        (
            "promotion wait",
            f"{_secs(n.get('promotionWait'))}  (Metrictank's: next chunk boundary after start)",
        ),
        (
            "data-complete wait",
            f"{_secs(n.get('dataCompletePromotionWait'))}  (until every chunk it would save was seen whole)",
        ),
        ("persist backlog", "-" if backlog is None else ("consumed" if backlog else "NOT consumed")),
        ("pending writes", n.get("pendingWrites", "-")),
        ("series in memory", n.get("metricsActive", "-")),
        ("partitions", _ranges(n.get("partitions") or [])),
    ]
    others = n.get("otherWriters") or {}
    if others:
        rows.append(
            (
                "other writers",
                "; ".join(
                    f"{name} wrote {_ranges(w.get('partitions') or [])} {w.get('secondsAgo', '?')}s ago"
                    for name, w in sorted(others.items())
                ),
            )
        )
    state = n.get("partitionState") or {}
    if state:
        lags = [(int(p), v.get("lag")) for p, v in state.items()]
        rows.append(
            ("lag (messages)", " ".join(f"{p}:{'-' if lag is None else lag}" for p, lag in sorted(lags)))
        )
    rows.append(("started", n.get("started", "-")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@main.group()
def node() -> None:
    """Inspect, promote and demote one node over its HTTP API."""


@node.command("status")
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /node as JSON.")
def node_status(url: str, as_json: bool) -> None:
    """Show a node's role, state, priority, both promotion waits, partitions and lag.

    Exits 0 when the node is ready (NodeReady), 1 when it is not, 3 when it cannot be reached.

    \b
    Examples:
      metrictank node status --url http://10.0.0.2:6060
      metrictank node status --url http://10.0.0.2:6060 --json | jq .dataCompletePromotionWait
      until metrictank node status --url http://10.0.0.3:6060 >/dev/null; do sleep 5; done
    """
    n = _get(url, "/node")
    click.echo(json.dumps(n, indent=2) if as_json else node_table(n))
    sys.exit(0 if n.get("state") == "NodeReady" else EXIT_REFUSED)


def _post_node(url: str, primary: bool, force: bool, token: str | None) -> tuple[int, dict]:
    """POST /node; returns (exit code, result for --json)."""
    import httpx

    data = {"primary": "true" if primary else "false"}
    if force:
        data["force"] = "true"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # demotion drains the write queue before it answers: allow for the node's drain-timeout
        r = httpx.post(url.rstrip("/") + "/node", data=data, headers=headers, timeout=300)
    except httpx.HTTPError as e:
        return EXIT_UNREACHABLE, {"ok": False, "status": None, "message": f"cannot reach {url}: {e}"}
    text = r.text.strip()
    if r.status_code == 200:
        drained = text == "OK"
        return (0 if drained else EXIT_REFUSED), {"ok": drained, "status": 200, "message": text}
    if r.status_code == 409:
        try:
            reasons = list(r.json().get("reasons", []))
        except ValueError:
            reasons = [text]
        return EXIT_REFUSED, {"ok": False, "status": 409, "message": "promotion refused", "reasons": reasons}
    code = EXIT_REFUSED if r.status_code < 500 else EXIT_UNREACHABLE
    return code, {"ok": False, "status": r.status_code, "message": text}


def _report(action: str, url: str, code: int, result: dict, as_json: bool) -> NoReturn:
    result = {"url": url, "action": action, **result}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif code == 0:
        click.echo(f"{url}: {action}d" if action != "promote" else f"{url}: promoted to primary")
    else:
        status = result.get("status")
        head = result["message"] if status in (None, 200, 409) else f"HTTP {status}: {result['message']}"
        click.echo(f"{url}: {action} failed: {head}", err=True)
        for reason in result.get("reasons", []):
            click.echo(f"  - {reason}", err=True)
    sys.exit(code)


@node.command("promote")
@_url_option
@click.option("--force", is_flag=True, help="Promote even when the safety checks fail (logged on the node).")
@click.option(
    "--wait",
    "wait_for",
    default="0s",
    show_default=True,
    help="Keep retrying a refused promotion for up to this long (e.g. 15m), every 5 s.",
)
@_token_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def node_promote(
    url: str, force: bool, wait_for: str, token: str | None, token_file: str | None, as_json: bool
) -> None:
    """Make a node primary. Refused (exit 1, every failing check listed) while it is not safe:

    \b
    - data-complete wait > 0: chunks in memory began before the node saw their start;
    - persist backlog not consumed: it does not yet know what was saved;
    - priority > max-priority: it lags behind Kafka;
    - a reachable peer sharing a partition is primary: demote it first;
    - another instance announced chunk writes on a shared partition within
      foreign-writer-window and is not a reachable demoted peer: it may still be primary.

    \b
    Examples:
      metrictank node promote --url http://10.0.0.3:6060
      metrictank node promote --url http://10.0.0.3:6060 --wait 15m   # until the checks pass
      metrictank node promote --url http://10.0.0.3:6060 --force      # old primary is gone for good
    """
    tok = _token(token, token_file)
    deadline = time.monotonic() + _duration(wait_for, "--wait")
    shown: list[str] | None = None
    while True:
        code, result = _post_node(url, True, force, tok)
        if result.get("status") != 409 or time.monotonic() >= deadline:
            _report("promote", url, code, result, as_json)
        if result.get("reasons") != shown and not as_json:
            shown = result.get("reasons")
            click.echo("promotion refused, retrying:", err=True)
            for reason in shown or []:
                click.echo(f"  - {reason}", err=True)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


@node.command("demote")
@_url_option
@_token_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def node_demote(url: str, token: str | None, token_file: str | None, as_json: bool) -> None:
    """Make a node secondary. It answers once its write queue is drained and its persist messages are sent.

    Exits 0 when demoted and drained, 1 when demoted but writes or persist messages were left after the
    node's drain-timeout (wait before promoting another node), 3 when unreachable.

    \b
    Example:
      metrictank node demote --url http://10.0.0.2:6060
    """
    code, result = _post_node(url, False, False, _token(token, token_file))
    _report("demote", url, code, result, as_json)


# --- cluster ---------------------------------------------------------------------------------------------------
@main.group()
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


@cluster.command("members")
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print GET /cluster as JSON.")
def cluster_members(url: str, as_json: bool) -> None:
    """List the node and its configured peers: name, URL, role, state, priority, waits, partitions.

    Exits 1 when a partition has two primaries or none among the reachable members.

    \b
    Example:
      metrictank cluster members --url http://10.0.0.2:6060
    """
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
        for p in problems:
            click.echo(f"WARNING: {p}", err=True)
    sys.exit(EXIT_REFUSED if problems else 0)


# --- fakemetrics -----------------------------------------------------------------------------------------------
@main.group()
def fakemetrics() -> None:
    """Generate load like Metrictank's mt-fakemetrics.

    Each series is announced with a MetricData message, then sent as MetricPoint (0x02) or MetricPointArray
    (0x05) messages, routed with Metrictank's partitioners; values follow deterministic shapes.
    """


# Spelled out rather than imported so that `metrictank --help` does not load numpy; a unit test keeps them equal
# to metrictank.fakemetrics.SHAPES and metrictank.schema.PARTITION_METHODS.
SHAPES = ("walk", "counter", "constant", "noise")
PARTITIONERS = ("byOrg", "bySeries", "bySeriesWithTags", "bySeriesWithTagsFnv")


def _fake_options(f):
    opts = [
        click.option(
            "--brokers", default="localhost:9092", show_default=True, envvar="MT_KAFKA_MDM_IN_BROKERS"
        ),
        click.option("--topic", default="mdm", show_default=True),
        click.option("--series", default=1000, show_default=True, type=click.IntRange(min=1)),
        click.option(
            "--interval", default=10, show_default=True, type=click.IntRange(min=1), help="Seconds."
        ),
        click.option(
            "--array-size",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="1: one MetricPoint (0x02) per message; K > 1: MetricPointArray (0x05) of up to K points.",
        ),
        click.option("--partitioner", type=click.Choice(PARTITIONERS), default="bySeries", show_default=True),
        click.option(
            "--partitions",
            type=click.IntRange(min=1),
            help="Partition count to route with (default: the topic's, looked up on the brokers).",
        ),
        click.option("--shape", type=click.Choice(SHAPES), default="walk", show_default=True),
        click.option(
            "--prefix", default="some.id.of.a.metric", show_default=True, help="Series are <prefix>.<i>."
        ),
        click.option("--org", default=1, show_default=True, type=click.IntRange(min=1)),
        click.option("--tag", "tags", multiple=True, help="A k=v tag on every series (repeatable)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of the value shapes."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _series_set(brokers: str, topic: str, partitions: int | None, partitioner: str, **kw):
    """(SeriesSet, partition count): routed with the topic's real partition count unless one is given."""
    from metrictank.fakemetrics import SeriesSet, topic_partitions

    if partitions is None:
        try:
            partitions = topic_partitions(brokers, topic)
        except RuntimeError as e:
            _fail(str(e), EXIT_UNREACHABLE)
    for t in kw.get("tags") or []:
        k, sep, v = t.partition("=")
        if not sep or not k or not v:
            raise click.BadParameter(f"tag {t!r} is not k=v", param_hint="--tag")
    ss = SeriesSet.make(
        kw["series"],
        partitions,
        prefix=kw["prefix"],
        org=kw["org"],
        interval=kw["interval"],
        tags=list(kw.get("tags") or []),
        method=partitioner,
    )
    return ss, partitions


@fakemetrics.command("feed")
@_fake_options
@click.option("--duration", default=None, help="Stop after this long (e.g. 10m); default: until Ctrl-C.")
@click.option(
    "--metricdata-every",
    default=360,
    show_default=True,
    type=click.IntRange(min=0),
    help="Resend the full MetricData every N intervals (0: only at start).",
)
def fakemetrics_feed(
    brokers: str,
    topic: str,
    partitions: int | None,
    partitioner: str,
    array_size: int,
    shape: str,
    seed: int,
    duration: str | None,
    metricdata_every: int,
    **kw,
) -> None:
    """Feed N series in real time: one point per series per interval, on interval boundaries.

    \b
    Examples:
      metrictank fakemetrics feed --brokers kafka:9092 --series 100000 --interval 10
      metrictank fakemetrics feed --series 5000 --interval 1 --array-size 100 --duration 10m
    """
    from metrictank.fakemetrics import Producer

    ss, nparts = _series_set(brokers, topic, partitions, partitioner, **kw)
    limit = None if duration is None else _duration(duration, "--duration")
    t_end = None if limit is None else time.monotonic() + limit
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = Producer(brokers, topic)
    click.echo(
        f"feeding {len(ss)} series every {ss.interval}s to {topic} on {brokers} "
        f"({nparts} partitions, {partitioner}, {'points' if array_size == 1 else f'arrays of {array_size}'})",
        err=True,
    )
    report_every = max(1, 60 // ss.interval)
    k = 0
    try:
        for t in producer.feed(
            ss,
            lambda: stop.is_set() or (t_end is not None and time.monotonic() >= t_end),
            shape,
            seed,
            resend_metricdata_every=metricdata_every,
            array_size=array_size,
        ):
            k += 1
            if k % report_every == 0:
                click.echo(f"t={t}: {k * len(ss)} points in {producer.sent} messages", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    left = producer.flush(30)
    click.echo(f"sent {k * len(ss)} points in {producer.sent} messages", err=True)
    if left:
        _fail(f"{left} messages not delivered", EXIT_UNREACHABLE)


@fakemetrics.command("backfill")
@_fake_options
@click.option("--from", "from_", default="-6h", show_default=True, help="Start (Graphite time: -6h, epoch).")
@click.option("--to", "to", default="now", show_default=True, help="End, exclusive.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fakemetrics_backfill(
    brokers: str,
    topic: str,
    partitions: int | None,
    partitioner: str,
    array_size: int,
    shape: str,
    seed: int,
    from_: str,
    to: str,
    quiet: bool,
    **kw,
) -> None:
    """Write a time range of history at full speed: MetricData at the start, then points every interval.

    Kafka message timestamps are the data timestamps, so a node started with `offset = "6h"` finds them.

    \b
    Examples:
      metrictank fakemetrics backfill --brokers kafka:9092 --series 10000 --from -6h --to now
      metrictank fakemetrics backfill --series 100 --interval 1 --from=-1h --array-size 50 --shape counter
    """
    from metrictank.fakemetrics import Producer

    now = int(time.time())
    start, end = _when(from_, now, "--from"), _when(to, now, "--to")
    ss, _nparts = _series_set(brokers, topic, partitions, partitioner, **kw)
    start -= start % ss.interval
    if end <= start:
        raise click.BadParameter(f"--to ({end}) must be after --from ({start})", param_hint="--to")
    producer = Producer(brokers, topic)
    steps = len(range(start + ss.interval, end, ss.interval))
    if quiet:
        sent = producer.backfill(ss, start, end, shape, seed, array_size=array_size)
    else:
        with click.progressbar(length=steps, label=f"backfill {len(ss)} series", file=sys.stderr) as bar:
            sent = producer.backfill(
                ss, start, end, shape, seed, array_size=array_size, progress=lambda _k, _n: bar.update(1)
            )
    left = producer.flush(60)
    click.echo(
        f"sent {sent} points in {producer.sent} messages: {len(ss)} series, {start}..{end} every {ss.interval}s",
        err=True,
    )
    if left:
        _fail(f"{left} messages not delivered", EXIT_UNREACHABLE)


# --- store and schema ------------------------------------------------------------------------------------------
def _schemas(cfg):
    from metrictank.retention import Aggregations, RetentionError, Schemas

    try:
        return Schemas.load(cfg.retention.schemas_file or None), Aggregations.load(
            cfg.retention.aggregations_file or None
        )
    except RetentionError as e:
        _fail(f"config error: {e}", EXIT_USAGE)


def _open_store(cfg, create: bool, ttls: list[int]):
    """The configured store for a tool: no write queue work, schema created only when asked."""
    from metrictank.store import open_store

    s = cfg.store
    if s.backend == "sqlite":
        path = Path(cfg.sqlite.path)
        if not create and not path.exists():
            _fail(f"sqlite store {path} does not exist", EXIT_UNREACHABLE)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_store(
            "sqlite", path=path, write_queues=1, write_queue_size=1, ttls=ttls if create else ()
        )
    c = cfg.cassandra
    try:
        return open_store(
            "cassandra",
            addrs=c.addrs,
            keyspace=c.keyspace,
            consistency=c.consistency,
            timeout=max(c.timeout, 10.0),
            write_queues=1,
            write_queue_size=1,
            create_keyspace=create,
            replication=c.replication,
            ttls=ttls if create else (),
            verify_timeout=5.0,
        )
    except Exception as e:  # driver NoHostAvailable, missing keyspace ...
        _fail(f"cannot open the cassandra store at {c.addrs} (keyspace {c.keyspace}): {e}", EXIT_UNREACHABLE)


def _tables(store) -> list[str]:
    if hasattr(store, "table_names"):
        return store.table_names()
    import sqlite3

    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'metric%'")
        return sorted(r[0] for r in rows)
    finally:
        conn.close()


@main.group()
def schema() -> None:
    """Create the chunk store's schema."""


@schema.command("init")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
def schema_init(config_path: str | None) -> None:
    """Create the keyspace and one table per retention TTL (Cassandra), or the SQLite file and tables.

    The tables follow Metrictank's schema, so Metrictank nodes and tools can share them. Idempotent.

    \b
    Examples:
      metrictank schema init --config /etc/metrictank/mt1.toml
      MT_CASSANDRA_ADDRS=cass1:9042 metrictank schema init --config mt1.toml
    """
    cfg = _load(config_path)
    schemas, _aggs = _schemas(cfg)
    ttls = schemas.all_ttls()
    store = _open_store(cfg, create=True, ttls=ttls)
    try:
        tables = _tables(store)
    finally:
        store.close()
    where = (
        f"sqlite {cfg.sqlite.path}"
        if cfg.store.backend == "sqlite"
        else f"cassandra keyspace {cfg.cassandra.keyspace} at {cfg.cassandra.addrs}"
    )
    click.echo(f"{where}: tables {', '.join(tables)}")


def _span_of_blob(blob: bytes) -> int | None:
    from metrictank.chunk import span_of_code

    if len(blob) >= 2 and blob[0] in (1, 2):
        try:
            return span_of_code(blob[1])
        except ValueError:
            return None
    return None


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@main.group()
def store() -> None:
    """Read the chunk store."""


@store.command("cat")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--id", "series_id", required=True, help="Series id <org>.<32 hex>.")
@click.option(
    "--archive",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="0: raw data; N: the Nth retention of the series' schema (a rollup).",
)
@click.option(
    "--method",
    type=click.Choice(["sum", "cnt", "min", "max", "lst"]),
    help="Rollup series to read (avg is stored as sum and cnt). Needed with --archive N > 0.",
)
@click.option("--name", help="Series name: picks its storage-schemas section (default: try every section).")
@click.option("--from", "from_", default=None, help="Start (Graphite time); default: the archive's TTL ago.")
@click.option("--to", "to", default="now", show_default=True, help="End, exclusive.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["points", "chunks", "json"]),
    default="points",
    show_default=True,
    help="points: a header per chunk, then `ts value` lines; chunks: one line per chunk; json.",
)
def store_cat(
    config_path: str | None,
    series_id: str,
    archive: int,
    method: str | None,
    name: str | None,
    from_: str | None,
    to: str,
    fmt: str,
) -> None:
    """Print a series' chunks from the configured store (like Metrictank's mt-store-cat).

    \b
    Examples:
      metrictank store cat --config mt1.toml --id 1.2a0d8bd4cd3b5d8a25fdd88c1e3c4b25
      metrictank store cat --config mt1.toml --id 1.2a0d... --archive 1 --method max --from -2d
      metrictank store cat --config mt1.toml --id 1.2a0d... --format chunks
    """
    import numpy as np

    from metrictank.chunk import ChunkError, decode_chunk
    from metrictank.schema import parse_mkey, table_for_ttl

    cfg = _load(config_path)
    try:
        parse_mkey(series_id)
    except Exception as e:  # noqa: BLE001 - any parse failure is a usage error
        raise click.BadParameter(f"{series_id!r} is not a series id: {e}", param_hint="--id") from None
    if archive and not method:
        raise click.BadParameter("a rollup archive needs --method", param_hint="--method")
    schemas, _aggs = _schemas(cfg)
    sections = [*schemas.schemas, schemas.default]
    if name is not None:
        sections = [schemas.match(name, 0)[1]]
    rets = [s.retentions[archive] for s in sections if archive < len(s.retentions)]
    if not rets:
        _fail(f"no storage schema has an archive {archive}", EXIT_USAGE)
    if archive == 0:
        # a raw series may live in any section's first archive (its name, which we may not know, decides)
        candidates = sorted({(r.ttl, 0) for r in rets})
    else:
        candidates = sorted({(r.ttl, r.interval) for r in rets})
    max_span = schemas.max_chunkspan()
    now = int(time.time())
    end = _when(to, now, "--to") if to != "now" else now + 1
    start = _when(from_, now, "--from") if from_ else now - max(t for t, _ in candidates) - max_span

    st = _open_store(cfg, create=False, ttls=[])
    found: list[tuple[int, str, str, bytes]] = []  # t0, table, amkey, blob
    try:
        for ttl, interval in candidates:
            amkey = series_id if archive == 0 else f"{series_id}_{method}_{interval}"
            for t0, blob in st.read(amkey, ttl, start, end, max_span):
                found.append((int(t0), table_for_ttl(ttl)[0], amkey, bytes(blob)))
    finally:
        st.close()
    found.sort()

    chunks_out = []
    total = 0
    for t0, table, amkey, blob in found:
        span = _span_of_blob(blob)
        try:
            ts, vals = decode_chunk(t0, blob)
            err = None
        except ChunkError as e:
            ts, vals, err = np.empty(0, np.uint32), np.empty(0, np.float64), str(e)
        keep = (ts >= start) & (ts < end)
        chunks_out.append(
            {
                "table": table,
                "key": amkey,
                "t0": t0,
                "span": span,
                "bytes": len(blob),
                "points": int(len(ts)),
                "error": err,
                "ts": ts[keep].tolist(),
                "values": vals[keep].tolist(),
            }
        )
        total += int(keep.sum())

    if fmt == "json":
        click.echo(json.dumps({"id": series_id, "from": start, "to": end, "chunks": chunks_out}, indent=1))
    else:
        for c in chunks_out:
            head = (
                f"{c['table']} {c['key']} t0={c['t0']} ({_iso(c['t0'])}) span={c['span'] or '?'} "
                f"bytes={c['bytes']} points={c['points']}"
            )
            if c["error"]:
                head += f" UNDECODABLE: {c['error']}"
            if fmt == "chunks":
                click.echo(head)
                continue
            click.echo(f"## {head}")
            click.echo("\n".join(f"{t} {v!r}" for t, v in zip(c["ts"], c["values"], strict=True)))
    click.echo(f"{len(chunks_out)} chunks, {total} points in [{start}, {end})", err=True)


if __name__ == "__main__":
    main()
