"""Reliability scenario 5: bad input.

A seeded stream of malformed messages is interleaved with good data on `mdm`, and malformed or untrusted persist
messages on `metricpersist`. Every bad message of a deterministic kind must be dropped and counted under its
reason, exactly (the counts on /metrics equal what was sent); a seeded chaos part (random bytes, bit flips of
messages of never-announced series, msgpack bombs) must only not crash anything. The good data must be exact in
the store and through /render, and the instance must have run as one process throughout (no crash, no restart
loop, no failed batch).
"""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest

from metrictank.fakemetrics import SeriesSet
from metrictank.schema import MetricData, encode_metricdata, encode_metricpoint, series_id
from metrictank.schema.persist import encode_persist

from .cluster import SPAN, InstanceProc, SimProducer, sim_start
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
N_SERIES = 10
SEED = 5
PER_KIND = 7  # messages of each deterministic kind


def md(name: str, t: int, **over) -> bytes:
    """A MetricData message of a series outside the good set, with some fields overridden."""
    f = dict(org_id=1, name=name, interval=1, value=1.0, unit="", time=t, mtype="gauge", tags=[])
    f.update(over)
    id_ = over.get("id") or series_id(
        f["org_id"] if f["org_id"] > 0 else 1, name or "x", f["unit"], f["mtype"], f["interval"] or 1, []
    )
    f.pop("id", None)
    return encode_metricdata(MetricData(id=id_, **f))


def unknown_key(rng: random.Random) -> str:
    return series_id(1, f"rel.fuzz.never.{rng.randrange(10**9)}", "", "gauge", 1, [])


def bad_mdm(rng: random.Random, ss: SeriesSet, t: int) -> tuple[list[bytes], Counter, Counter, int]:
    """One round of deterministic bad messages: (messages, expected decode errors by reason, expected invalid
    MetricData by reason, expected points of unknown series)."""
    msgs: list[bytes] = []
    dec: Counter = Counter()
    inv: Counter = Counter()
    unknown = 0

    def add(b: bytes, reason: str | None = None, invalid: str | None = None) -> None:
        msgs.append(b)
        if reason:
            dec[reason] += 1
        if invalid:
            inv[invalid] += 1

    for _ in range(PER_KIND):
        good = encode_metricpoint(ss.ids[rng.randrange(len(ss))], 1.0, t)
        add(b"", "empty")
        n = rng.choice([x for x in range(1, 80) if x != 33])
        add(b"\x02" + rng.randbytes(n - 1), "invalid-length")
        n = rng.choice([x for x in range(1, 80) if x != 29])
        add(b"\x03" + rng.randbytes(n - 1), "invalid-length")
        add(b"\x05" + bytes([rng.choice([0, 1, 4, 5, 6, 0xFF])]) + rng.randbytes(40), "invalid-format")
        add(b"\x05\x02" + rng.randbytes(rng.randrange(0, 28)), "invalid-format")  # shorter than 30
        k = rng.randrange(1, 4)
        body = b"".join(encode_metricpoint(unknown_key(rng), 1.0, t)[1:] for _ in range(k))
        add(b"\x05\x02" + body + rng.randbytes(rng.randrange(1, 32)), "array-remainder")
        unknown += k
        add(bytes([rng.choice([0, 1])]) + rng.randbytes(rng.randrange(0, 50)), "unsupported-format")
        add(b"\x04" + rng.randbytes(rng.randrange(0, 50)), "invalid-control")
        add(b"\x03" + good[1:29], "no-org")  # a good series' point without org: default org-id is 0
        add(good[:25] + struct.pack("<I", 0) + good[29:], "invalid-time")  # a good series at time 0
        add(good[:25] + struct.pack("<I", 2**31 + rng.randrange(2**31 - 1)) + good[29:], "invalid-time")
        # msgpack: not a map, a truncated map, bombs (huge announced lengths, deep nesting)
        add(b"\x92\x01\x02", "invalid-msgp")
        add(md("rel.fuzz.trunc", t)[: rng.randrange(1, 40)], "invalid-msgp")
        add(b"\xdf\xff\xff\xff\xff", "invalid-msgp")  # map32 announcing 4G entries
        add(b"\x81\xa4Name\xdb\xff\xff\xff\xff", "invalid-msgp")  # str32 announcing 4 GB
        add(b"\x91" * 100_000, "invalid-msgp")  # 100k nested arrays
        # MetricData that decodes but is invalid
        add(md("rel.fuzz.org", t, org_id=0, id=unknown_key(rng)), invalid="invalid-orgid")
        add(md("rel.fuzz.interval", t, interval=0, id=unknown_key(rng)), invalid="invalid-interval")
        add(md("", t, id=unknown_key(rng)), invalid="invalid-name")
        add(md("...", t, id=unknown_key(rng)), invalid="invalid-name")
        add(md("rel.fuzz.mtype", t, mtype="bogus"), invalid="invalid-mtype")
        add(md("rel.fuzz.tags", t, tags=["novalue"]), invalid="invalid-tags")
        add(md("rel.fuzz.tags2", t, tags=["a=~b"]), invalid="invalid-tags")
        add(md("rel.fuzz.time0", 0), invalid="invalid-time")
        add(md("rel.fuzz.timehuge", 2**31 + 5), invalid="invalid-time")
        add(md("rel.fuzz.id", t, id="1.nothex"), invalid="invalid-id")
        add(md("rel.fuzz.id2", t, id="garbage"), invalid="invalid-id")
    return msgs, dec, inv, unknown


def accepted_odd(rng: random.Random, t: int) -> list[bytes]:
    """Valid but odd MetricData of series outside the good set: NaN and infinite values, a huge name."""
    return [
        md("rel.fuzz.nan", t, value=float("nan")),
        md("rel.fuzz.inf", t, value=float("inf")),
        md("rel.fuzz.ninf", t, value=float("-inf")),
        md("rel.fuzz.huge." + "x" * 100_000, t),
    ]


def chaos(rng: random.Random, t: int, n: int) -> list[bytes]:
    """Random bytes and bit flips of points and arrays of never-announced series: anything may happen to these
    except a crash or a change to the good series (whose keys no single flip can reach)."""
    out = []
    for _ in range(n):
        kind = rng.randrange(3)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 200)))
        else:
            if kind == 1:
                b = bytearray(encode_metricpoint(unknown_key(rng), rng.random(), t))
            else:
                b = bytearray(
                    b"\x05\x02" + b"".join(encode_metricpoint(unknown_key(rng), 1.0, t)[1:] for _ in range(3))
                )
            i = rng.randrange(1, len(b))  # the format byte stays: a flip there could make it a MetricData
            b[i] ^= 1 << rng.randrange(8)
            out.append(bytes(b))
    return out


def bad_persist(rng: random.Random, ss: SeriesSet, t0: int) -> tuple[list[bytes], Counter, Counter]:
    """Malformed or untrusted persist messages: (messages, expected message drops by reason, expected chunk-entry
    drops by reason). None of them may raise a saved mark. The malformed entries come under this node's own name
    (mt-fuzz, a forgery the trust policy cannot tell apart): they must still be dropped entry by entry."""
    msgs: list[bytes] = []
    whole: Counter = Counter()
    chunks: Counter = Counter()
    for _ in range(PER_KIND):
        msgs.append(b"")
        whole["empty"] += 1
        msgs.append(bytes([rng.choice([0, 2, 3, 0x7B])]) + b'{"instance":"x","saved_chunks":[]}')
        whole["unknown-version"] += 1
        msgs.append(b"\x01" + rng.randbytes(rng.randrange(1, 60)).replace(b"{", b"("))
        whole["invalid-json"] += 1
        msgs.append(b'\x01{"instance":"mt-fuzz","saved_chunks":[{"key":"nope","t0":60},{"key":5,"t0":60}]}')
        chunks["invalid-key"] += 2
        msgs.append(b'\x01{"instance":"mt-fuzz","saved_chunks":[{"key":"%s","t0":-5}]}' % ss.ids[0].encode())
        chunks["invalid-t0"] += 1
        msgs.append(b'\x01{"instance":"mt-fuzz","saved_chunks":[7]}')
        chunks["invalid-item"] += 1
        # well-formed, from an instance nobody trusts, claiming the good series' next chunk is saved
        msgs.append(encode_persist("mt-rogue", [(ss.ids[i], t0) for i in range(len(ss))]))
        whole["untrusted-instance"] += 1
        chunks["untrusted-instance"] += len(ss)
    return msgs, whole, chunks


def labelled(text: str, name: str) -> dict[str, int]:
    return {k.split('"')[1]: int(v) for k, v in metric_values(text, name).items() if v}


def test_fuzzed_mdm_and_persist_streams_good_data_exact_drops_counted(tmp_path, kafka_bootstrap, new_topic):
    rng = random.Random(SEED)
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ss = SeriesSet.make(N_SERIES, PARTS, prefix="rel.fuzz.good", interval=1)
    T = sim_start()
    prod = SimProducer(kafka_bootstrap, topic, ss, T)
    from confluent_kafka import Producer

    raw = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    db = tmp_path / "chunks.db"
    a = InstanceProc(
        tmp_path / "a",
        "mt-fuzz",
        {
            "kafka-mdm-in": {"brokers": kafka_bootstrap, "topics": topic, "offset": "oldest"},
            "kafka-cluster": {"topic": persist, "offset": "oldest", "backlog-process-timeout": "30s"},
            "cluster": {"primary-node": True, "warm-up-period": "0s"},
            "store": {"backend": "sqlite", "drain-timeout": "30s"},
            "sqlite": {"path": str(db)},
        },
    )
    exp_dec: Counter = Counter()
    exp_inv: Counter = Counter()
    exp_whole: Counter = Counter()
    exp_chunks: Counter = Counter()
    exp_unknown = 0
    sent_bad = sent_chaos = sent_odd = 0
    try:
        a.start()
        for r in range(6):  # six rounds, one per simulated minute, interleaved with the good points
            t = T + r * SPAN + 30
            prod.step_to(t)
            msgs, dec, inv, unk = bad_mdm(rng, ss, t)
            odd = accepted_odd(rng, t)
            noise = chaos(rng, t, 60)
            for m in msgs + odd + noise:
                raw.produce(topic, m, partition=rng.randrange(PARTS), timestamp=t * 1000)
                raw.poll(0)
            pm, whole, chunks = bad_persist(rng, ss, t - t % SPAN)
            for m in pm:
                raw.produce(persist, m, partition=rng.randrange(PARTS))
            assert raw.flush(30) == 0
            exp_dec += dec
            exp_inv += inv
            exp_whole += whole
            exp_chunks += chunks
            exp_unknown += unk
            sent_bad += len(msgs) + len(pm)
            sent_chaos += len(noise)
            sent_odd += len(odd)
        prod.step_to(T + 7 * SPAN + 10)
        t_end = prod.stop()
        highs = topic_highs(kafka_bootstrap, topic)
        wait(lambda: consumed_through(a.url, highs), 120, "every message consumed", a)
        p_highs = topic_highs(kafka_bootstrap, persist)
        sent_persist = sum(p_highs.values())
        wait(
            lambda: (
                sum(
                    metric_values(
                        scrape(a.url), "metrictank_cluster_notifier_all_messages_received_total"
                    ).values()
                )
                >= sent_persist
            ),
            60,
            "every persist message read",
            a,
        )
        wait_saved_through(a, t_end, 60)
        text = scrape(a.url)
        dec_got = labelled(text, "metrictank_input_kafka_mdm_metrics_decode_err_total")
        inv_got = labelled(text, "metrictank_input_kafka_mdm_metricdata_invalid_total")
        whole_got = labelled(text, "metrictank_cluster_notifier_all_messages_dropped_total")
        chunks_got = labelled(text, "metrictank_cluster_notifier_all_chunks_dropped_total")
        batch_errors = sum(metric_values(text, "metrictank_input_kafka_mdm_batch_errors_total").values())
        loop_errors = sum(metric_values(text, "metrictank_process_main_loop_errors_total").values())
        assert a.proc is not None and a.proc.poll() is None, "the instance exited"
        starts = a.log_path.read_text(errors="replace").count("instance mt-fuzz started")
        ex = check_sqlite(db, ss, T, t_end)
        check_render(a.url, ss, range(N_SERIES), T, t_end, ex)
        record(
            "bad-input",
            seed=SEED,
            bad_messages_sent=sent_bad,
            chaos_messages_sent=sent_chaos,
            odd_but_valid_sent=sent_odd,
            mdm_decode_errors_by_reason=dec_got,
            mdm_metricdata_invalid_by_reason=inv_got,
            persist_messages_dropped_by_reason=whole_got,
            persist_chunks_dropped_by_reason=chunks_got,
            batch_errors=int(batch_errors),
            main_loop_errors=int(loop_errors),
            process_starts=starts,
            **ex.figures(),
        )
        ex.assert_exact()
        assert batch_errors == 0 and loop_errors == 0
        assert starts == 1
        # the deterministic kinds exactly (chaos messages may add to any reason: at least, then)
        for reason, n in exp_dec.items():
            assert dec_got.get(reason, 0) >= n, (reason, n, dec_got)
        assert dict(inv_got) == dict(exp_inv), (inv_got, exp_inv)
        assert dict(whole_got) == dict(exp_whole), (whole_got, exp_whole)
        assert dict(chunks_got) == dict(exp_chunks), (chunks_got, exp_chunks)
    finally:
        prod.stop()
        a.kill9()
