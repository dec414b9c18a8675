"""`metrictank store`: read what was really persisted for a series, chunk by chunk, when a graph and the store
disagree (like Metrictank's mt-store-cat)."""

from __future__ import annotations

import json
import time

import click

from metrictank.cli._common import EXIT_USAGE, _fail, _load, _open_store, _schemas, _when


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


@click.group()
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
