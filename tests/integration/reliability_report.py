"""Regenerate docs/reliability.md from the reliability suite's JSON lines (the newest line of each scenario).

    python -m tests.integration.reliability_report [REPORT.jsonl] [OUT.md]

Defaults: the file `METRICTANK_RELIABILITY_REPORT` names (else build/reliability-report.jsonl) and
docs/reliability.md. `make reliability` runs the scenarios and then this. The prose of each scenario (what it
does and asserts) lives here, next to the figure names it explains, so the document cannot drift from the tests'
output without this file changing too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .reliability import REPO, report_path

SCENARIOS: dict[str, tuple[str, str]] = {
    "failover-cassandra": (
        "1. Repeated failover (Cassandra)",
        "Three instance processes; the primary is killed with SIGKILL at seeded random phases of the chunk "
        "(every third kill the moment `/node` shows chunk writes queued or in flight); a secondary is promoted "
        "through `POST /node primary=true` without force, retrying on 409 like an operator script (bounded: "
        "60 rounds); the dead node is restarted as a secondary. Asserts: every point of every series in every "
        "completed chunk is in Cassandra exactly once with its value, no chunk is partial, every point of 8 "
        "series reads back through `/render`, at least one kill hit queued writes.",
    ),
    "failover-sqlite": (
        "1b. Repeated failover (SQLite, one database file shared by the three nodes)",
        "As above with `[store] backend = sqlite` and one file. SQLite commits a batch in about a millisecond, "
        "so queued writes are rarely seen; when not seen within 15 s the kill happens at a chunk boundary.",
    ),
    "restart-during-replay": (
        "2. Restart during replay",
        "A lone primary under load is killed (SIGKILL), restarted, killed again while it replays the data topic "
        "(messages behind > 0), and restarted. Asserts: no chunk whose save was announced on the persist topic "
        "before the first kill is written again (Cassandra `writetime(data)` unchanged), every point of every "
        "completed chunk read back exactly (store and `/render`). Reports time to ready and to catch up.",
    ),
    "store-outage": (
        "3. Store outage",
        "A private Cassandra is frozen (SIGSTOP) under load, then stopped and restarted on the same data "
        "directory. Asserts: writes queue, fail, are retried and drain; the store counters show the failures "
        "and retries; every point read back exactly.",
    ),
    "broker-faults": (
        "4. Broker faults",
        "A private Kafka is frozen (SIGSTOP) under ingest, then stopped and restarted on the same data "
        "directory. Asserts: `GET /node` says NodeNotReady while the broker is frozen (after "
        "`broker-unreachable-timeout`), ingest resumes, every point read back exactly.",
    ),
    "bad-input": (
        "5. Bad input",
        "A seeded stream of malformed messages on `mdm` (0x02/0x03 of wrong lengths, 0x05 too short, with bad "
        "sub-formats or a partial last point, legacy 0x00/0x01, bad 0x04, empty, points without org or at "
        "time 0 / >= 2^31, msgpack that is not a map, truncated, or a bomb announcing 4G entries or 4 GB "
        "strings or nesting 100k deep, MetricData with org 0, interval 0, empty or all-dots names, bad mtype, "
        "bad tags, bad times, bad ids) and on `metricpersist` (empty, unknown version, bad JSON, bad entries, "
        "a well-formed claim from an untrusted instance), interleaved with good data, plus seeded chaos "
        "(random bytes, bit flips of points of never-announced series) and valid oddities (NaN, +-inf, a "
        "100 kB name). Asserts: every deterministic bad message counted under its reason exactly (mdm decode "
        "errors at least, as chaos adds to them), good data exact in the store and through `/render`, no "
        "failed batch or loop step, one process start.",
    ),
    "automatic-failover": (
        "6. Automatic failover on the primary lease",
        "Two instance processes with `[cluster] failover = auto` (lease 4 s, margin 1 s, Cassandra lightweight "
        "transactions); the primary is killed with SIGKILL ten times at seeded phases of the chunk and nobody "
        "acts: the other node must take the lease and promote itself; the dead one restarts as a secondary. "
        "Asserts: each takeover within lease + margin + 10 s, one primary at a time, the epoch rose at every "
        "change, every point of every completed chunk read back exactly.",
    ),
    "split-brain-attempts": (
        "7. Split brain attempts",
        "A live primary whose URL is a blackhole for the candidate (peer checks cannot see it): promotion "
        "without force is refused across chunk boundaries (the lease is held); with force the lease is stolen "
        "(epoch 2) and the old primary steps down at its next renewal. A primary paused (SIGSTOP) past its lease "
        "is replaced, wakes up fenced, writes nothing more and demotes itself. The lease store itself frozen "
        "past the lease: the primary fences itself, keeps ingesting, nobody takes over, writing resumes. "
        "Asserts: every point read back exactly in each case.",
    ),
    "hostile-http": (
        "8. Hostile HTTP",
        "A primary under ingest (real Kafka, SQLite store, `query-timeout` 20 s, `max-points-per-req-hard` 5M) "
        "takes 30 s of generated requests from 6 concurrent clients (rounds of 480, each seeded; the worst "
        "cases once per round): `/render` GET and POST "
        "with hostile targets (nesting past the limit, 70 kB targets, brace explosions, catastrophic regexes, "
        "functions with bad arguments, summarize to 1 s over ten years), times and limits; `/metrics/find`, "
        "`/metrics/expand`, `/metrics/index.json`, `/tags/*`, `/functions`; the peers' `/internal` API with "
        "garbage and msgpack bombs; the admin API without a token, with a wrong one, and with the right one and "
        "malformed bodies (100k-deep JSON, 1 MB strings, bad booleans); a 17 MB body; unknown paths and "
        "methods. Asserts: no 5xx, every answer within 30 s, admin changes without the token refused (401), "
        "peak RSS (VmHWM) at most 512 MB over the RSS before the storm, the consumer never more than 5 s of "
        "production behind and ingest within 10 % of the production rate during the storm, the node still "
        "primary and ready, and every produced point exact in the store and through `/render` afterwards.",
    ),
    "scale-out-faults": (
        "9. Scale-out faults (multi-node bed)",
        "A multi-node bed of the test module's own, as production clusters run (fixture `private_cluster_bed`, "
        "marker `multinode`, part of `make test`): 3 Kafka brokers (combined KRaft nodes, a 3-voter quorum) and a "
        "3-node Cassandra ring, node i on loopback address 127.0.0.i; data and persist topics with replication "
        "factor 3 and `min.insync.replicas=2`, producers with acks=all (idempotent); the keyspace SimpleStrategy 3, "
        "chunks written and read at QUORUM. A primary and a secondary are given all brokers and all contact "
        "points. Under ingest: the broker leading most partitions of the two topics is stopped (SIGTERM), then "
        "a Cassandra node (the seed, the first contact point of every client); with both down the primary is "
        "killed with SIGKILL (the moment `/node` shows chunk writes pending, if within 15 s) and the secondary "
        "promoted through `POST /node primary=true`, retrying on 409 (bounded: 60 tries); ingest goes on, both "
        "servers are started again on their data directories (the broker back in every ISR, a read at "
        "consistency ALL answered). Asserts: saves go on with each fault, every point of every series in every "
        "completed chunk is in Cassandra exactly (read at QUORUM), no chunk is partial, every point of 8 series "
        "reads back through `/render`. Figures include the bed's start (`server_ready_seconds`: per node from "
        "its launch, per kind from the bed's start) and the store and persist error counters of both nodes.",
    ),
}

FIGURE_NOTES = {
    "points_checked": "points produced in completed chunks and compared with the store",
    "points_lost": "produced points missing from the store",
    "points_duplicated": "timestamps stored twice within a chunk",
    "points_wrong": "stored points with a wrong value or a timestamp never produced",
    "partial_chunks": "chunks holding fewer points than produced for them",
    "promote_seconds": "SIGKILL of the primary to the 200 of a promotion",
    "restart_to_ready_seconds": "process start to ready",
}


def load(path: Path) -> dict[str, list[dict]]:
    """The newest figures of each scenario, one row per `case` where a scenario has several."""
    latest: dict[str, dict[str, dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest.setdefault(row["scenario"], {})[str(row.get("case", ""))] = row
    return {k: list(v.values()) for k, v in latest.items()}


def fmt(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {fmt(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def render(latest: dict[str, list[dict]]) -> str:
    out = [
        "# Reliability",
        "",
        "<!-- generated by `python -m tests.integration.reliability_report` (`make reliability`); do not edit -->",
        "",
        "The reliability suite (`tests/integration/test_reliability_*.py`, marker `integration`, part of "
        "`make test`) drives deterministic producers in simulated time (tests/integration/cluster.py), injects "
        "faults, then reads back **every** produced point and compares exactly. Each scenario appends its "
        "figures as a JSON line to `$METRICTANK_RELIABILITY_REPORT` (default `build/reliability-report.jsonl`); "
        "this page shows the newest run of each. Fault injection on servers uses private servers of the test "
        "module (metrictank/testbed/pytest_plugin.py `private_kafka`, `private_bed`), never the shared bed.",
        "",
        "Runtime: the reliability tests take about 9-10 minutes (the multi-node scenario about 3 of them, six JVMs) and the lease tests about 5 on a shared 2-core machine (two private JVMs started "
        "on the way: ~16 s for Cassandra, ~8 s for Kafka); run one test file at a time there.",
        "",
        "Regenerate: `make reliability` (runs only these tests, then writes this file), or "
        "`python -m tests.integration.reliability_report [report.jsonl] [out.md]` from existing figures.",
        "",
    ]
    for key, (title, what) in SCENARIOS.items():
        out += [f"## {title}", "", what, ""]
        rows = latest.get(key)
        if not rows:
            out += ["_Not run yet (or not implemented): no figures._", ""]
            continue
        for row in rows:
            case = f", {row['case']}" if row.get("case") else ""
            out += [f"Latest figures{case} ({row['at']}):", "", "| figure | value |", "|---|---|"]
            for k, v in row.items():
                if k in ("scenario", "at", "case"):
                    continue
                note = f" ({FIGURE_NOTES[k]})" if k in FIGURE_NOTES else ""
                out.append(f"| {k}{note} | {fmt(v)} |")
            out.append("")
    out += [
        "## Not covered here",
        "",
        "- Hostile HTTP under a heavy ingest load: the storm above runs beside a light producer (800 "
        "messages/s), so it bounds stalls of the main loop (lag) rather than measuring the GIL's share; "
        "`make bench` (`ingest_load`) measures ingest under render load.",
        "- Faults of the multi-node bed beyond one broker and one Cassandra node at a time (a second node of "
        "either down leaves fewer than `min.insync.replicas` or a QUORUM: writes must then wait, which the store "
        "outage and broker fault scenarios cover on the single-node bed), network partitions between nodes "
        "(loopback only: no per-link faults), and a node killed with SIGKILL rather than stopped.",
        "",
    ]
    extra = sorted(set(latest) - set(SCENARIOS))
    for key in extra:
        for row in latest[key]:
            out += [f"## {key}", "", "```", json.dumps(row, indent=1, sort_keys=True), "```", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else report_path()
    dst = Path(argv[1]) if len(argv) > 1 else REPO / "docs" / "reliability.md"
    if not src.is_file():
        print(f"no figures at {src}: run `make reliability` first", file=sys.stderr)
        return 1
    dst.write_text(render(load(src)))
    print(f"wrote {dst} from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
