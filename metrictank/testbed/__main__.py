"""Command line: `python -m metrictank.testbed up|down|status|env|run -- CMD...|resolve`.

`run` is what `make test`/`make bench`/`make run` use: a private bed for the duration of one command,
always stopped afterwards, and the command's exit code passed through.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from . import maven
from .bed import Endpoints, ServerFailed, TestBed, default_dir, node_order, private_dir
from .cassandra import ARTIFACT as CASSANDRA_ARTIFACT
from .kafka import ARTIFACT as KAFKA_ARTIFACT

ENV_KAFKA = "METRICTANK_TEST_KAFKA"
ENV_CASSANDRA = "METRICTANK_TEST_CASSANDRA"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _wanted(only: str | None) -> dict[str, bool]:
    return {"kafka": only in (None, "kafka"), "cassandra": only in (None, "cassandra")}


def _print_exports(env: dict[str, str]) -> None:
    for k, v in env.items():
        print(f"export {k}={shlex.quote(v)}")


def _nodes(args: argparse.Namespace) -> dict[str, int]:
    return {"kafka_nodes": args.kafka_brokers, "cassandra_nodes": args.cassandra_nodes}


def cmd_up(args: argparse.Namespace) -> int:
    bed = TestBed(args.dir, detached=True)
    try:
        ep = bed.start(**_wanted(args.only), timeout=args.timeout, **_nodes(args))
    except ServerFailed as e:
        _err(f"testbed: FAILED: {e}")
        return 1
    _print_exports(ep.env())
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    results = TestBed(args.dir).stop(timeout=args.timeout)
    for name, how in results.items():
        _err(f"testbed: {name}: {how}")
    if not results:
        _err(f"testbed: nothing recorded in {args.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = TestBed(args.dir).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        if not status:
            print(f"no test bed recorded in {args.dir}")
        for name, s in sorted(status.items(), key=lambda kv: node_order(kv[0])):
            health = "healthy" if s["healthy"] else ("running, NOT answering" if s["running"] else "stopped")
            print(
                f"{name:12s} {s['address']:22s} pid {s['pid']:<8d} {health:24s} {s['version']}  log {s['log']}"
            )
    return 0 if status and all(s["healthy"] for s in status.values()) else 1


def cmd_env(args: argparse.Namespace) -> int:
    ep = TestBed(args.dir).endpoints()
    if not (ep.kafka or ep.cassandra):
        _err(f"testbed: no running bed in {args.dir}; start one with `up`")
        return 1
    _print_exports(ep.env())
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """Fill the jar cache only (e.g. a CI warm-up step)."""
    wanted = _wanted(args.only)
    for artifact in (KAFKA_ARTIFACT, CASSANDRA_ARTIFACT):
        if wanted[artifact.name]:
            r = maven.resolve(artifact, log=_err)
            how = f"downloaded in {r.seconds:.1f}s" if r.downloaded else "cached"
            _err(f"testbed: {artifact.cache_key}: {len(r.jars)} jars, {how}: {r.lib_dir}")
    return 0


def _external_endpoints(wanted: dict[str, bool]) -> tuple[Endpoints, dict[str, bool]]:
    """Servers already given through the environment, and which wanted ones still need starting."""
    kafka = os.environ.get(ENV_KAFKA) if wanted["kafka"] else None
    cassandra = os.environ.get(ENV_CASSANDRA) if wanted["cassandra"] else None
    versions = {
        k: v
        for k, v in (
            ("kafka", os.environ.get("METRICTANK_TEST_KAFKA_VERSION")),
            ("cassandra", os.environ.get("METRICTANK_TEST_CASSANDRA_VERSION")),
        )
        if v
    }
    missing = {"kafka": wanted["kafka"] and not kafka, "cassandra": wanted["cassandra"] and not cassandra}
    return Endpoints(kafka=kafka, cassandra=cassandra, versions=versions), missing


def _merge(a: Endpoints, b: Endpoints) -> Endpoints:
    return Endpoints(
        kafka=a.kafka or b.kafka,
        cassandra=a.cassandra or b.cassandra,
        versions={**b.versions, **a.versions},
        ready_seconds={**b.ready_seconds, **a.ready_seconds},
    )


class _Child:
    """The command under `run`; SIGTERM/SIGHUP sent to us are passed on so it can clean up too."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def on_signal(self, signum: int, _frame) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
        else:
            raise SystemExit(128 + signum)  # still starting the bed: unwind, which stops the servers

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        try:
            self.proc = subprocess.Popen(argv, env=env)
        except OSError as e:
            _err(f"testbed: cannot run {argv[0]!r}: {e}")
            return 127
        try:
            rc = self.proc.wait()
        except KeyboardInterrupt:  # the terminal sent SIGINT to the child as well; give it time to exit
            try:
                rc = self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                self.proc.kill()
                rc = self.proc.wait()
        return 128 - rc if rc < 0 else rc


def cmd_run(args: argparse.Namespace) -> int:
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _err("testbed: run needs a command: run -- CMD ...")
        return 2
    child = _Child()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, child.on_signal)

    external, missing = _external_endpoints(_wanted(args.only))
    bed = None
    rc = 1
    try:
        if any(missing.values()):
            bed = TestBed(private_dir(Path(args.dir), "run"))
            try:
                started = bed.start(**missing, timeout=args.timeout, **_nodes(args))
            except ServerFailed as e:
                _err(f"testbed: FAILED: {e}")
                return 1
            endpoints = _merge(external, started)
        else:
            _err(f"testbed: using servers from the environment: {external.env()}")
            endpoints = external
        env = {**os.environ, **endpoints.env()}
        rc = child.run(argv, env)
        return rc
    except KeyboardInterrupt:
        rc = 130
        return rc
    finally:
        if bed is not None:
            _err("testbed: stopping the bed")
            bed.stop(remove_dir=rc == 0)
            if rc != 0:
                _err(f"testbed: logs kept in {bed.dir}")


def _count(v: str) -> int:
    n = int(v)
    if not 1 <= n <= 9:
        raise argparse.ArgumentTypeError("must be 1..9 (node i runs on 127.0.0.i)")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        default=str(default_dir()),
        help="run directory for data, logs and state.json (default: %(default)s, or $METRICTANK_TESTBED_DIR)",
    )
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument("--only", choices=["kafka", "cassandra"], help="start just one of the servers")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument("--timeout", type=float, default=240.0, help="seconds to wait (default %(default)s)")
    nodes = argparse.ArgumentParser(add_help=False)
    nodes.add_argument(
        "--kafka-brokers",
        type=_count,
        default=1,
        metavar="N",
        help="Kafka nodes (default %(default)s); N > 1: combined KRaft nodes on 127.0.0.1..N, an N-voter "
        "quorum, replication min(3, N), min.insync.replicas one less",
    )
    nodes.add_argument(
        "--cassandra-nodes",
        type=_count,
        default=1,
        metavar="N",
        help="Cassandra nodes (default %(default)s); N > 1: a ring on 127.0.0.1..N, started one after the other",
    )

    p = argparse.ArgumentParser(prog="python -m metrictank.testbed", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", parents=[common, only, timeout, nodes], help="start (or reuse) a detached bed"
    ).set_defaults(func=cmd_up)
    sub.add_parser("down", parents=[common, timeout], help="stop the bed in --dir").set_defaults(
        func=cmd_down
    )
    st = sub.add_parser("status", parents=[common], help="print health; exit 1 unless all healthy")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    sub.add_parser("env", parents=[common], help="print export lines for the running bed").set_defaults(
        func=cmd_env
    )
    sub.add_parser("resolve", parents=[only], help="download the jars into the cache only").set_defaults(
        func=cmd_resolve
    )
    run = sub.add_parser(
        "run",
        parents=[common, only, timeout, nodes],
        help="start a private bed (unless $METRICTANK_TEST_KAFKA/_CASSANDRA are set), run CMD, stop it",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Health probes hit half-started servers; the driver's connection warnings are expected noise here.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
