"""What several command groups share, so they fail and parse alike: exit codes, the configuration, durations
and Graphite times as options, a node's HTTP API (node, cluster), the store a tool opens (schema, store)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from metrictank.cluster.rollout import ranges_text
from metrictank.config import ConfigError, load_config, parse_duration

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:6060"


def _fail(msg: str, code: int) -> NoReturn:
    click.echo(msg, err=True)
    sys.exit(code)


def _load(path: str | list[str] | None):
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


# --- a node's HTTP API (node, cluster) -------------------------------------------------------------------------
def _url_option(f):
    return click.option(
        "--url",
        default=DEFAULT_URL,
        show_default=True,
        envvar="METRICTANK_URL",
        help="Base URL of the node's HTTP API (or $METRICTANK_URL).",
    )(f)


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


_ranges = ranges_text  # the CLI modules print partition lists with it


def _secs(v: Any) -> str:
    return "-" if v is None else f"{float(v):.0f}s"


def _role(n: dict) -> str:
    """primary/secondary, and the node's cluster.role when it is not the default `all` (e.g. `secondary/read`)."""
    kind = "primary" if n.get("primary") else "secondary"
    role = n.get("role")
    return f"{kind}/{role}" if isinstance(role, str) and role not in ("", "all") else kind


# --- the store a tool opens (schema, store) --------------------------------------------------------------------
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
