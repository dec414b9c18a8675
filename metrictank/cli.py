"""The `metrictank` command: run an instance, inspect and steer nodes, check configuration.

Exit codes are for scripts: 0 success, 1 the request was refused or the node is not in the asked state,
2 usage or configuration error, 3 the node could not be reached.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from metrictank import __version__
from metrictank.config import ConfigError, load_config, reference_markdown

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


@click.group()
@click.version_option(__version__, prog_name="metrictank")
def main() -> None:
    """metrictank-py: Kafka-fed metrics ingest, byte-compatible with Metrictank."""


def _load(path: str | None):
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(f"config error: {e}", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
def run(config_path: str | None) -> None:
    """Run an instance in the foreground.

    \b
    Example:
      metrictank run --config /etc/metrictank/metrictank.toml
      MT_CLUSTER_PRIMARY_NODE=true metrictank run --config mt.toml
    """
    cfg = _load(config_path)
    from metrictank.instance import Instance
    from metrictank.logsetup import setup_logging

    setup_logging(cfg.log.level, cfg.log.format)
    inst = Instance(cfg)
    stop = threading.Event()

    def _graceful(signum, _frame):
        click.echo(f"signal {signum}: stopping (demote, drain, exit)", err=True)
        stop.set()
        inst.stop_event.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    inst.start()
    try:
        inst.run()
    finally:
        if inst.node.primary:
            inst.node.set_primary(False)
        inst.stop()


# --- config ----------------------------------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Check and show configuration."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate a configuration file (and MT_* overrides); exit 2 naming the bad key.

    \b
    Example:
      metrictank config check config/metrictank.toml
    """
    _load(path)
    click.echo(f"{path}: OK")


@config.command("show")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
def config_show(config_path: str | None) -> None:
    """Print the effective configuration with where each value came from."""
    click.echo(_load(config_path).to_toml(), nl=False)


@config.command("doc")
def config_doc() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    click.echo(reference_markdown())


# --- node ------------------------------------------------------------------------------------------------------
def _headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _get(url: str, path: str) -> dict:
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + path, timeout=5)
        r.raise_for_status()
        return r.json()
    except httpx.HTTPError as e:
        click.echo(f"cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_UNREACHABLE)


def _node_table(n: dict) -> str:
    role = "primary" if n.get("primary") else "secondary"
    rows = [
        ("name", n.get("name")),
        ("role", role),
        ("state", n.get("state")),
        ("priority", n.get("priority")),
        ("promotion wait (metrictank)", f"{n.get('promotionWait', 0):.0f}s"),
        ("promotion wait (data-complete)", f"{n.get('dataCompletePromotionWait', 0):.0f}s"),
        ("persist backlog done", n.get("persistBacklogDone")),
        ("pending writes", n.get("pendingWrites")),
        ("partitions", ",".join(map(str, n.get("partitions", [])))),
    ]
    lags = n.get("partitionState") or {}
    if lags:
        rows.append(("lag", " ".join(f"{p}:{v.get('lag')}" for p, v in sorted(lags.items(), key=lambda x: int(x[0])))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@main.group()
def node() -> None:
    """Inspect, promote and demote a node over its HTTP API."""


@node.command("status")
@click.option("--url", default="http://127.0.0.1:6060", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print GET /node as JSON.")
def node_status(url: str, as_json: bool) -> None:
    """Show a node's role, state, priority, promotion waits and lag. Exit 1 when not ready.

    \b
    Example:
      metrictank node status --url http://10.0.0.2:6060
    """
    n = _get(url, "/node")
    click.echo(json.dumps(n, indent=2) if as_json else _node_table(n))
    sys.exit(0 if n.get("state") == "NodeReady" else EXIT_REFUSED)


def _post_node(url: str, primary: bool, force: bool, token: str | None) -> None:
    import httpx

    data = {"primary": "true" if primary else "false"}
    if force:
        data["force"] = "true"
    try:
        r = httpx.post(url.rstrip("/") + "/node", data=data, headers=_headers(token), timeout=120)
    except httpx.HTTPError as e:
        click.echo(f"cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if r.status_code == 200:
        click.echo(r.text)
        return
    if r.status_code == 409:
        body = r.json()
        click.echo("promotion refused:", err=True)
        for reason in body.get("reasons", []):
            click.echo(f"  - {reason}", err=True)
        sys.exit(EXIT_REFUSED)
    click.echo(f"HTTP {r.status_code}: {r.text}", err=True)
    sys.exit(EXIT_REFUSED if r.status_code < 500 else EXIT_UNREACHABLE)


@node.command("promote")
@click.option("--url", default="http://127.0.0.1:6060", show_default=True)
@click.option("--force", is_flag=True, help="Promote even when the safety checks fail (logged).")
@click.option("--token", envvar="MT_ADMIN_TOKEN", help="Admin token (or MT_ADMIN_TOKEN).")
def node_promote(url: str, force: bool, token: str | None) -> None:
    """Make a node primary; refused (exit 1, reasons listed) while it is not safe.

    \b
    Example:
      metrictank node promote --url http://10.0.0.3:6060
    """
    _post_node(url, True, force, token)


@node.command("demote")
@click.option("--url", default="http://127.0.0.1:6060", show_default=True)
@click.option("--token", envvar="MT_ADMIN_TOKEN", help="Admin token (or MT_ADMIN_TOKEN).")
def node_demote(url: str, token: str | None) -> None:
    """Make a node secondary; returns once its write queue is drained and persist messages are sent.

    \b
    Example:
      metrictank node demote --url http://10.0.0.2:6060
    """
    _post_node(url, False, False, token)


@main.group()
def cluster() -> None:
    """Look at the whole cluster."""


@cluster.command("members")
@click.option("--url", default="http://127.0.0.1:6060", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def cluster_members(url: str, as_json: bool) -> None:
    """List this node and its peers: name, address, role, state, partitions.

    \b
    Example:
      metrictank cluster members --url http://10.0.0.2:6060
    """
    c = _get(url, "/cluster")
    if as_json:
        click.echo(json.dumps(c, indent=2))
        return
    members = [dict(c["self"], url=url)] + c.get("peers", [])
    click.echo(f"{'NAME':<16} {'URL':<28} {'ROLE':<10} {'STATE':<16} PARTITIONS")
    for m in members:
        role = "primary" if m.get("primary") else ("secondary" if m.get("reachable", True) else "-")
        click.echo(
            f"{str(m.get('name', '?')):<16} {m.get('url', ''):<28} {role:<10} {str(m.get('state')):<16} "
            f"{','.join(map(str, m.get('partitions', [])))}"
        )


if __name__ == "__main__":
    main()
