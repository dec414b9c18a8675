"""Reliability scenario 8: hostile HTTP against a running instance under ingest.

A primary ingests a producer's stream (real Kafka, SQLite store) while several clients fire a seeded stream of
hundreds of generated requests at every HTTP surface: `/render` (GET and POST) with hostile targets, functions,
times, limits and formats; `/metrics/find` and `/metrics/expand`; `/tags/*`; `/functions`; the admin API with no
token, a wrong token and the right token with malformed bodies; unknown paths and methods. Asserts: no answer is
a 5xx, every answer arrives within a deadline, the process's peak RSS stays below a cap over its RSS before the
storm, ingest keeps pace with the producer meanwhile (lag bounded, ingest rate within 10 % of the production
rate), admin changes without the token are refused, and afterwards every produced point is in the store and
reads back through `/render` exactly.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import msgpack
import pytest

from metrictank.fakemetrics import SeriesSet

from .cluster import InstanceProc, SimProducer, sim_start
from .reliability import (
    check_render,
    check_sqlite,
    consumed_through,
    metric_values,
    record,
    scrape,
    topic_highs,
    wait,
    wait_saved_through,
)

pytestmark = pytest.mark.integration

PARTS = 2
N_SERIES = 40
PREFIX = "rel.hostile"
TOKEN = "hostile-admin-token"
REQUESTS = 480  # per round; rounds (each its own seed) go on for STORM_SECONDS
STORM_SECONDS = 30.0
CLIENTS = 6
SEED = 20261202
QUERY_TIMEOUT = 20.0  # [http] query-timeout for the instance
DEADLINE = QUERY_TIMEOUT + 10.0  # every answer, whatever it is, within this
RSS_CAP_MB = 512  # peak RSS over the RSS before the storm
MAX_LAG_SECONDS = 5.0  # production seconds the consumer may fall behind while the storm lasts
RATE = 20.0  # simulated seconds per wall second: N_SERIES * RATE messages/s


@dataclass
class Req:
    kind: str
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    data: dict | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] | None = None  # the only acceptable statuses, where they are known


# --- the generator ---------------------------------------------------------------------------------------------
def _name(rng: random.Random) -> str:
    i = rng.randrange(N_SERIES + 5)  # a few that do not exist
    return f"{PREFIX}.{i}"


def _glob(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{PREFIX}.*",
            f"{PREFIX}.[0-9]",
            f"{PREFIX}.{{1,2,3,x}}",
            "rel.*.*",
            "*.*.*",
            "**",
            "*",
            f"{PREFIX}." + "{" + ",".join(str(i) for i in range(200)) + "}",
            "{" + ",".join("{a,b,c,d}" for _ in range(12)) + "}",  # a brace explosion (4^12 branches)
            "rel." + "*" * 500,
            "[" * 300,
            "a" * 70_000,
            "rel.hostile.\x00",
            "rel..hostile",
            "",
            ".",
            "rel.hostile.{",
            "rel.hostile.[9-0]",
            "\u00e9\u00e8.\U0001f600.*",
        ]
    )


def _series_expr(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return _name(rng)
    if r < 0.8:
        return _glob(rng)
    return rng.choice(
        [
            "seriesByTag('name=~rel.hostile.*')",
            "seriesByTag('name=~(a+)+$')",
            "seriesByTag('')",
            "seriesByTag('name!=')",
            "seriesByTag('a=b', 'c!=~(((((((((x')",
            "seriesByTag(" + ",".join(f"'t{i}=v'" for i in range(300)) + ")",
        ]
    )


_FUNCS = [
    "sumSeries({s})",
    "averageSeries({s}, {s})",
    "summarize({s}, '{iv}', 'sum')",
    "summarize({s}, '1s')",
    "hitcount({s}, '{iv}')",
    "smartSummarize({s}, '{iv}', 'avg')",
    "movingAverage({s}, {n})",
    "movingAverage({s}, '{iv}')",
    "scale({s}, {n})",
    "scale({s}, 'abc')",
    "aliasByNode({s}, {n})",
    "aliasSub({s}, '(', 'x')",
    "aliasSub({s}, '(a+)+$', '\\\\1')",
    "asPercent({s}, {s})",
    "nonNegativeDerivative({s})",
    "perSecond({s}, {n})",
    "highestCurrent({s}, {n})",
    "sortByMaxima({s})",
    "groupByNode({s}, {n}, 'sum')",
    "groupByTags({s}, 'sum', 'name')",
    "timeShift({s}, '{iv}')",
    "transformNull({s}, {n})",
    "keepLastValue({s}, {n})",
    "consolidateBy({s}, 'max')",
    "consolidateBy({s}, 'nope')",
    "removeAboveValue({s}, {n})",
    "integral({s})",
    "divideSeries({s}, {s})",
    "nosuchfunction({s})",
    "sumSeries()",
    "{s} | scale({n}) | sumSeries()",
]


def _target(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if r < 0.06:  # hostile shapes that are not expressions at all
        return rng.choice(
            [
                "sumSeries(" * 150 + "a" + ")" * 150,  # nesting past max-nesting-depth
                "x" * 70_000,  # past max-target-length
                "sumSeries(a.b",
                "sumSeries(a.b))",
                "scale(a.b, 'unterminated)",
                "'",
                "()",
                ",,,",
                "sumSeries(a.b, key=)",
                "\x00\x01\x02",
                "%%%%%",
                "scale(a.b, 1e999999)",
                "scale(a.b, 99999999999999999999999999999999)",
            ]
        )
    if depth > 2 or r < 0.35:
        return _series_expr(rng)
    inner = _target(rng, depth + 1)
    f = rng.choice(_FUNCS)
    return f.format(
        s=inner,
        n=rng.choice(["0", "1", "2", "-1", "-5", "1e9", "3.5", "nan", "inf", "'x'", "None", "true"]),
        iv=rng.choice(["1s", "10s", "1min", "1h", "1d", "0s", "-1min", "1y", "x", "", "999999999d"]),
    )


def _time(rng: random.Random, t_lo: int, t_hi: int) -> str:
    return rng.choice(
        [
            "-1h",
            "-10min",
            "-2h",
            "-1d",
            "-10y",
            "-100000d",
            "now",
            "",
            "garbage",
            "-",
            "1e30",
            "99999999999999999999",
            "-0s",
            "-1s",
            str(t_lo),
            str(t_hi),
            str(rng.randint(t_lo, t_hi)),
            "0",
            "-1",
            "20261202",
            "00:00_20261201",
            "midnight",
            "now-1h",
            "\u00bd",
        ]
    )


def _render_params(rng: random.Random, t_lo: int, t_hi: int) -> list[tuple[str, str]]:
    params = [("target", _target(rng)) for _ in range(rng.choice([1, 1, 1, 2, 3, 0]))]
    if rng.random() < 0.8:
        params.append(("from", _time(rng, t_lo, t_hi)))
    if rng.random() < 0.6:
        params.append(("until", _time(rng, t_lo, t_hi)))
    if rng.random() < 0.5:
        params.append(
            ("maxDataPoints", rng.choice(["", "0", "-1", "1", "800", "abc", "1e9", "10000000", "9" * 30]))
        )
    if rng.random() < 0.5:
        params.append(("format", rng.choice(["json", "csv", "msgpack", "pickle", "raw", "xml", "", "JSON"])))
    if rng.random() < 0.15:
        params.append(("jsonp", rng.choice(["cb", "a.b_c", "alert(1)", "x" * 200, "", "1abc", "</script>"])))
    if rng.random() < 0.15:
        params.append(("noNullPoints", rng.choice(["1", "true", "maybe", ""])))
    if rng.random() < 0.1:
        params.append(("local", rng.choice(["1", "0", "x"])))
    return params


def _admin(rng: random.Random) -> Req:
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = rng.choice(
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic xyz"}, {"Authorization": ""}]
    )
    r = rng.random()
    if r < 0.3:
        path = rng.choice(["/node", "/priority", "/cluster", "/metrics", "/healthz", "/readyz", "/"])
        return Req("admin-get", "GET", path)
    if r < 0.55:  # changes without the right token: always refused, whatever the body
        fields = rng.choice(
            [{"primary": "false"}, {"primary": "true", "force": "true"}, {"primary": "x"}, {}]
        )
        return Req("admin-unauthorized", "POST", "/node", data=fields, headers=bad, expect=(401,))
    # the right token with bodies that must be refused (a demotion is never generated: it would be obeyed)
    json_bodies = [
        b"[" * 100_000 + b"]" * 100_000,  # nested 100k deep
        json.dumps({"primary": "x" * 1_000_000}).encode(),
        b"{not json",
        b"\xff\xfe\x00" * 1000,
    ]
    choice = rng.randrange(8)
    if choice == 0:
        return Req("admin-bad-body", "POST", "/node", data={"primary": "maybe"}, headers=good, expect=(400,))
    if choice == 1:
        return Req("admin-bad-body", "POST", "/node", data={"force": "true"}, headers=good, expect=(422,))
    if choice < 6:
        headers = {**good, "Content-Type": "application/json"}
        return Req(
            "admin-bad-body", "POST", "/node", content=json_bodies[choice - 2], headers=headers, expect=(400,)
        )
    if choice == 6:
        return Req(
            "admin-bad-body",
            "POST",
            "/node",
            data={"primary": "true", "force": "perhaps"},
            headers=good,
            expect=(400,),
        )
    # already primary: a promotion is a harmless 200
    return Req("admin-noop", "POST", "/node", data={"primary": "true"}, headers=good, expect=(200,))


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _internal(rng: random.Random) -> Req:
    """The peers' API: no credentials, msgpack bodies; as hostile as a user's request can be."""
    op = rng.choice(["find", "resolve", "resolve_tags", "fetch", "paths", "tags", "tag_values", "nosuch"])
    body = rng.choice(
        [
            b"",
            bytes(rng.randrange(256) for _ in range(64)),
            b"\xdf\xff\xff\xff\xff",  # a map announcing 4G entries
            b"\xdb\xff\xff\xff\xff",  # a string announcing 4 GB
            b"\x91" * 100_000 + b"\xc0",  # arrays nested 100k deep
            msgpack.packb({"pattern": _glob(rng)}),
            msgpack.packb({"pattern": 5, "exprs": "x"}),
            msgpack.packb({"exprs": ["name=~(a+)+$"], "from": "x"}),
            msgpack.packb({"tag": "name", "filter": "("}),
            msgpack.packb({"keys": [[1, 2]] * 1000, "from": -1, "until": 2**62}),
            msgpack.packb([1, 2, 3]),
        ]
    )
    org = rng.choice(["1", "abc", "-1", "", "99999999999999999999"])
    return Req("internal", "POST", f"/internal/{op}", content=body, headers={"X-Org-Id": org})


def hostile_requests(rng: random.Random, n: int, t_lo: int, t_hi: int) -> list[Req]:
    out: list[Req] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.30:
            out.append(Req("render-get", "GET", "/render", _render_params(rng, t_lo, t_hi)))
        elif r < 0.40:
            form = urlencode(_render_params(rng, t_lo, t_hi)).encode()
            out.append(Req("render-post", "POST", "/render", content=form, headers=_FORM))
        elif r < 0.45:
            out.append(_internal(rng))
        elif r < 0.55:
            params = [("query", _glob(rng) if rng.random() < 0.7 else _name(rng))]
            if rng.random() < 0.4:
                params.append(
                    ("format", rng.choice(["treejson", "completer", "json", "pickle", "msgpack", "bad"]))
                )
            if rng.random() < 0.3:
                params += [("from", _time(rng, t_lo, t_hi)), ("until", _time(rng, t_lo, t_hi))]
            if rng.random() < 0.1:
                params.append(("jsonp", rng.choice(["cb", "<x>"])))
            out.append(Req("find", "GET", "/metrics/find", params))
        elif r < 0.62:
            params = [("query", _glob(rng)) for _ in range(rng.choice([0, 1, 2, 5]))]
            if rng.random() < 0.5:
                params.append(("groupByExpr", rng.choice(["1", "0", "x"])))
            if rng.random() < 0.5:
                params.append(("leavesOnly", rng.choice(["1", "0", "x"])))
            out.append(Req("expand", "GET", "/metrics/expand", params))
        elif r < 0.75:
            expr = rng.choice(
                ["name=~rel.*", "name=~(a+)+$", "", "=", "a!=", "x" * 5000, "name=rel.hostile.1"]
            )
            choice = rng.randrange(6)
            if choice == 0:
                out.append(Req("tags", "GET", "/tags", [("filter", rng.choice([".*", "(", "a" * 3000, ""]))]))
            elif choice == 1:
                tag = rng.choice(["name", "nosuch", "x" * 3000, "%2F..%2F", "\u00e9"])
                out.append(Req("tags", "GET", f"/tags/{tag}", [("filter", rng.choice([".*", "(", ""]))]))
            elif choice == 2:
                out.append(
                    Req(
                        "tags",
                        "GET",
                        "/tags/findSeries",
                        [("expr", expr) for _ in range(rng.choice([0, 1, 3]))],
                    )
                )
            elif choice == 3:
                out.append(
                    Req(
                        "tags",
                        "GET",
                        "/tags/autoComplete/tags",
                        [
                            ("tagPrefix", rng.choice(["", "n", "(", "x" * 3000])),
                            ("expr", expr),
                            ("limit", rng.choice(["", "0", "-1", "10", "1e9", "abc", "99999999999999"])),
                        ],
                    )
                )
            elif choice == 4:
                out.append(
                    Req(
                        "tags",
                        "GET",
                        "/tags/autoComplete/values",
                        [
                            ("tag", rng.choice(["name", "", "x" * 3000])),
                            ("valuePrefix", rng.choice(["rel", "", "("])),
                            ("limit", rng.choice(["", "-5", "5", "x"])),
                        ],
                    )
                )
            else:
                tail = rng.choice(["terms", "delSeries", "name"])  # delSeries is not a route here: 405
                out.append(Req("tags", rng.choice(["GET", "POST"]), f"/tags/{tail}", [("tags", expr)]))
        elif r < 0.80:
            out.append(
                Req(
                    "functions",
                    "GET",
                    rng.choice(
                        ["/functions", "/functions/sumSeries", "/functions/nope", "/functions/" + "x" * 3000]
                    ),
                )
            )
        elif r < 0.93:
            out.append(_admin(rng))
        else:
            out.append(
                rng.choice(
                    [
                        Req("other", "GET", "/nosuch"),
                        Req("other", "GET", "/" + "a" * 8000),
                        Req("other", "PUT", "/render"),
                        Req("other", "DELETE", "/node"),
                        Req("other", "GET", "/render/../node"),
                        Req("other", "GET", "/metrics/find", [("query", "a")] * 2000),
                        Req("other", "GET", "/metrics/index.json", [("jsonp", rng.choice(["cb", "("]))]),
                    ]
                )
            )
    # the worst of each kind once, wherever the seed puts the rest
    worst = [
        Req("other", "POST", "/render", content=b"target=" + b"a" * 17_000_000, headers=_FORM, expect=(413,)),
        Req(
            "render-get", "GET", "/render", [("target", "sumSeries(" * 150 + "a" + ")" * 150)], expect=(400,)
        ),
        Req("render-get", "GET", "/render", [("target", "x" * 70_000)], expect=(400,)),
        Req(
            "render-get", "GET", "/render", [("target", "{" + ",".join("{a,b,c,d}" for _ in range(12)) + "}")]
        ),
        Req("render-get", "GET", "/render", [("target", f"summarize({PREFIX}.*, '1s')"), ("from", "-10y")]),
        Req("render-get", "GET", "/render", [("target", "seriesByTag('name=~(a+)+$')"), ("from", "-1d")]),
        Req("find", "GET", "/metrics/find", [("query", "**")]),
        Req(
            "internal", "POST", "/internal/fetch", content=b"\xdf\xff\xff\xff\xff", headers={"X-Org-Id": "1"}
        ),
        Req(
            "internal",
            "POST",
            "/internal/find",
            content=b"\x91" * 100_000 + b"\xc0",
            headers={"X-Org-Id": "1"},
        ),
    ]
    for q in worst:
        out.insert(rng.randrange(len(out) + 1), q)
    return out


# --- measuring the process ---------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _offsets(url: str) -> dict[int, int]:
    offs = metric_values(scrape(url), "metrictank_input_kafka_mdm_partition_offset")
    return {int(re.search(r'partition="(\d+)"', k).group(1)): int(v) for k, v in offs.items()}


class Watch:
    """Samples, twice a second: the consumer's lag behind the broker (in production seconds), the points added,
    and the process RSS."""

    def __init__(self, kafka: str, topic: str, inst: InstanceProc, msgs_per_s: float) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._tp = TopicPartition
        self._c = Consumer(
            {"bootstrap.servers": kafka, "group.id": "hostile-watch", "enable.auto.commit": False}
        )
        self.topic, self.inst, self.msgs_per_s = topic, inst, msgs_per_s
        self.max_lag_s = 0.0
        self.rss_kb: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _lag_s(self) -> float:
        offs = _offsets(self.inst.url)
        behind = 0
        for p in range(PARTS):
            _low, high = self._c.get_watermark_offsets(self._tp(self.topic, p), timeout=5)
            behind += max(0, high - (offs.get(p, -1) + 1))
        return behind / self.msgs_per_s

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.max_lag_s = max(self.max_lag_s, self._lag_s())
                self.rss_kb.append(_status_kb(self.inst.proc.pid, "VmRSS"))
            except Exception:  # noqa: BLE001, S110 - a sample missed under load is not a finding
                pass
            self._stop.wait(0.5)

    def start(self) -> Watch:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)
        self._c.close()


def _points_added(url: str) -> float:
    return sum(metric_values(scrape(url), "metrictank_tank_points_added_total").values())


def _raw_get(url: str, req: Req) -> int | str:
    """The request through http.client, which sends whatever URL it is given."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=DEADLINE)
    try:
        conn.request(req.method, req.path + "?" + urlencode(req.params), headers=req.headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as e:
        return f"error {type(e).__name__}: {e}"
    finally:
        conn.close()


def _fire(client: httpx.Client, url: str, req: Req) -> tuple[Req, int | str, float]:
    t0 = time.monotonic()
    try:
        r = client.request(
            req.method,
            url + req.path,
            params=req.params or None,
            data=req.data if req.content is None else None,
            content=req.content,
            headers=req.headers,
            timeout=DEADLINE,
        )
        status: int | str = r.status_code
        r.read()
    except httpx.InvalidURL:  # httpx refuses URLs over 64 kB; a hostile client does not
        status = _raw_get(url, req)
    except httpx.TimeoutException:
        status = "timeout"
    except httpx.HTTPError as e:
        status = f"error {type(e).__name__}: {e}"
    return req, status, time.monotonic() - t0


def test_hostile_http_storm_under_ingest(tmp_path, kafka_bootstrap, new_topic):
    topic = new_topic(PARTS)
    persist = new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix=PREFIX, interval=1)
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T, rate=RATE)
    prod.step_to(T + 120)
    db = tmp_path / "chunks.db"
    a = InstanceProc(
        tmp_path / "a",
        "mt-hostile",
        {
            "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
            "kafka-cluster": {"brokers": kafka_bootstrap, "topic": persist, "offset": "oldest"},
            "cluster": {"primary-node": True, "warm-up-period": "0s", "max-priority": 10},
            "store": {"backend": "sqlite"},
            "sqlite": {"path": str(db)},
            "http": {
                "query-timeout": f"{QUERY_TIMEOUT:.0f}s",
                "max-points-per-req-hard": 5_000_000,
            },
        },
        token=TOKEN,
    )
    watch = None
    try:
        a.start()
        prod.run_background()
        wait(lambda: a.node()["state"] == "NodeReady", 60, "ready", a)
        wait(lambda: consumed_through(a.url, topic_highs(kafka_bootstrap, topic)), 60, "caught up", a)

        msgs_per_s = N_SERIES * RATE
        watch = Watch(kafka_bootstrap, topic, a, msgs_per_s).start()
        time.sleep(5)  # the baseline: lag and RSS before the storm
        base_lag_s = watch.max_lag_s
        rss_before_kb = _status_kb(a.proc.pid, "VmRSS")
        watch.max_lag_s = 0.0

        added0, t_sim0, w0 = _points_added(a.url), prod.t, time.monotonic()
        results: list[tuple[Req, int | str, float]] = []
        rounds = 0
        with httpx.Client() as client, ThreadPoolExecutor(CLIENTS) as pool:
            while time.monotonic() - w0 < STORM_SECONDS:
                reqs = hostile_requests(random.Random(SEED + rounds), REQUESTS, T, prod.t + 3600)
                results += pool.map(lambda q: _fire(client, a.url, q), reqs)
                rounds += 1
        storm_s = time.monotonic() - w0
        added1, t_sim1 = _points_added(a.url), prod.t
        storm_lag_s = watch.max_lag_s
        watch.stop()
        rss_peak_kb = _status_kb(a.proc.pid, "VmHWM")
        rss_storm_max_kb = max(watch.rss_kb or [0])

        statuses: dict[str, int] = {}
        by_kind: dict[str, dict[str, int]] = {}
        failures = []
        latencies = sorted(d for _q, _s, d in results)
        for q, s, d in results:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
            by_kind.setdefault(q.kind, {}).setdefault(str(s), 0)
            by_kind[q.kind][str(s)] += 1
            bad = not isinstance(s, int) or s >= 500 or (q.expect is not None and s not in q.expect)
            if bad or d > DEADLINE:
                failures.append(
                    (q.kind, q.method, q.path[:80], str(q.params)[:300], str(q.content)[:80], s, round(d, 2))
                )

        # the node is still the primary, ready, and one process
        n = a.node()
        assert n["primary"] is True and n["state"] == "NodeReady", n
        assert a.proc.poll() is None

        # afterwards: everything produced is stored and reads back exactly
        t_end = prod.stop()
        wait(lambda: consumed_through(a.url, topic_highs(kafka_bootstrap, topic)), 120, "caught up", a)
        wait_saved_through(a, t_end, 120)
        ex = check_sqlite(db, ss, T, t_end)
        check_render(a.url, ss, [0, N_SERIES - 1], T, t_end, ex)

        produced = (t_sim1 - t_sim0) * N_SERIES
        ingest_ratio = (added1 - added0) / produced if produced else 0.0
        record(
            "hostile-http",
            requests=len(results),
            rounds=rounds,
            clients=CLIENTS,
            seed=SEED,
            storm_seconds=round(storm_s, 1),
            statuses=dict(sorted(statuses.items())),
            failures=len(failures),
            latency_p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
            latency_p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            latency_max_ms=round(latencies[-1] * 1000, 1),
            deadline_seconds=DEADLINE,
            rss_before_mb=round(rss_before_kb / 1024, 1),
            rss_max_during_mb=round(rss_storm_max_kb / 1024, 1),
            rss_peak_mb=round(rss_peak_kb / 1024, 1),
            rss_cap_over_before_mb=RSS_CAP_MB,
            lag_max_seconds_before=round(base_lag_s, 2),
            lag_max_seconds_during=round(storm_lag_s, 2),
            ingest_vs_production=round(ingest_ratio, 3),
            **ex.figures(),
        )
        assert not failures, f"{len(failures)} requests failed or were slow: {failures[:10]}"
        assert (rss_peak_kb - rss_before_kb) / 1024 <= RSS_CAP_MB, (rss_before_kb, rss_peak_kb)
        assert storm_lag_s <= MAX_LAG_SECONDS, f"ingest fell {storm_lag_s:.1f}s behind during the storm"
        assert ingest_ratio >= 0.9, f"ingested {ingest_ratio:.2f} of what was produced during the storm"
        ex.assert_exact()
    finally:
        if watch is not None:
            watch.stop() if watch._t.is_alive() else None
        prod.stop()
        a.kill9()
