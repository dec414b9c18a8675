"""`metrictank fakemetrics`: realistic load and history for tests and benchmarks, in Metrictank's wire format
and partitioning (like mt-fakemetrics)."""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from metrictank.cli._common import EXIT_UNREACHABLE, _duration, _fail, _when


@click.group()
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
