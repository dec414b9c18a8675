"""`metrictank node`: look at one node and change its role (promote, demote) through its HTTP API, refusing
what would make two primaries write the same chunks."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from metrictank.cli._common import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    _duration,
    _get,
    _ranges,
    _role,
    _secs,
    _url_option,
)


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


@click.group()
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
