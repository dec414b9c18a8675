"""Issue 15: a warm start (`offset = auto`) replays only the unsaved part of Kafka and loads the rest from the store.

On real Kafka and Cassandra: a primary ingests 70 minutes of data (10-minute raw chunks, 30-minute rollup
chunks) and saves every finished chunk; it restarts with `offset = auto`. What the operator depends on:

- the restart consumes only what may be unsaved (from the open chunks' starts, minus the margin), not the
  window: far fewer messages than the first run;
- memory holds the whole in-memory window again, every point exact, each saved chunk byte-identical to the one
  in the store (the chunk the replay began inside is replaced by the whole saved one);
- the restarted primary rewrites nothing that was saved, and saves the chunk that was open at the restart
  whole and byte-identical to what a node that saw all of it writes (no partial chunk).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from metrictank.chunk import encode_chunk
from metrictank.fakemetrics import Producer, SeriesSet, values_for

from .helpers import Running, instance_config, wait_for

pytestmark = pytest.mark.integration

PARTS = 4
N = 40
SCHEMAS = """[default]
pattern = .*
retentions = 10s:1d:10min:7,1min:7d:30min:3
"""
MARGIN = 60


def _expected(ss: SeriesSet, i: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(lo, hi, 10, dtype=np.int64)
    return ts, values_for("walk", np.full(len(ts), i), ts)


def test_warm_start_replays_only_unsaved_data_and_loads_saved_chunks(
    tmp_path, kafka_bootstrap, new_topic, cassandra_hosts, new_keyspace
):
    topic, persist = new_topic(PARTS), new_topic(PARTS)
    ks = new_keyspace()
    store = {
        "store": {"backend": "cassandra", "drain-timeout": "20s"},
        "cassandra": {"addrs": cassandra_hosts, "keyspace": ks, "create-keyspace": True, "timeout": "10s"},
    }
    ss = SeriesSet.make(N, PARTS, prefix="warm.start")
    now = int(time.time())
    cur = now - now % 600  # the raw chunk open at the restart
    start = cur - 4200  # 70 minutes of data: the 7th-oldest raw chunk and before
    end = now - now % 10 + 10  # points up to now
    prod = Producer(kafka_bootstrap, topic)
    prod.send_metricdata(ss, start)
    for t in range(start + 10, end, 10):
        prod.send_points(ss, t, message_ts_ms=t * 1000)
    assert prod.flush(60) == 0
    total_msgs = N * len(range(start, end, 10))

    def cfg(offset: str):
        path = instance_config(
            tmp_path,
            "mt-warm",
            kafka_bootstrap,
            topic,
            persist_topic=persist,
            primary=True,
            offset=offset,
            store=store,
            extra={"kafka-mdm-in": {"auto-offset-margin": f"{MARGIN}s"}},
        )
        (tmp_path / "schemas.conf").write_text(SCHEMAS)  # instead of the helper's default schemas
        return path

    # first run: the whole log; every finished chunk saved and announced
    raw_saved = N * 7
    with Running(cfg("oldest")) as inst:
        wait_for(lambda: inst.handler.messages >= total_msgs, 90, "first run consumed")
        wait_for(
            lambda: inst.store.chunks_written >= raw_saved and inst.store.pending() == 0, 60, "chunks saved"
        )
        first_written = inst.store.chunks_written
        slot0 = inst.tank.slot_of(ss.ids[0])
        first_ring = {
            int(inst.tank._ring_t0[i]): inst.tank._ring_blobs[i]
            for i in inst.tank._ring_entries(np.array([slot0]))[1].tolist()
        }
    assert first_written >= raw_saved

    # restart with offset = auto
    with Running(cfg("auto")) as inst:
        wait_for(lambda: inst.node.ready, 60, "restarted node ready")
        wait_for(lambda: inst.warm.state == "done", 60, "saved chunks loaded")
        wait_for(lambda: inst.loop.loaded_pending() == 0, 10, "loaded chunks applied")
        time.sleep(0.5)
        ws = inst.warm_start
        # replay start: the open rollup chunk (30 min) needs its raw points from its start - 59 s; the raw
        # chunks from `cur`; minus the margin. Never the whole window (no fallback).
        need = min(cur, now - now % 1800 - 59) - MARGIN
        for p in range(PARTS):
            assert "saved marks" in ws[p]["why"], ws
            assert need - 10 <= ws[p]["from"] <= need + 1, (ws, need)
        replayed = inst.handler.messages
        want_replayed = N * len(range(need - 10, end, 10))
        assert replayed <= want_replayed, (replayed, want_replayed, total_msgs)
        assert replayed < total_msgs / 2, (replayed, total_msgs)
        assert inst.handler.unknown_points == 0

        # memory holds the whole window (6 closed raw chunks + the open one), every point exact
        lo = cur - 6 * 600
        with inst.lock:
            for i in range(N):
                row = inst.index.row_of(ss.ids[i])
                ts, vals, oldest = inst.tank.read(row, 0, None, lo, end)
                ets, evals = _expected(ss, i, lo, end)
                assert oldest <= lo, (i, oldest, lo)
                np.testing.assert_array_equal(np.asarray(ts, np.int64), ets)
                np.testing.assert_array_equal(vals, evals)
            # ring chunks are the saved bytes
            slot0 = inst.tank.slot_of(ss.ids[0])
            ring = {
                int(inst.tank._ring_t0[i]): inst.tank._ring_blobs[i]
                for i in inst.tank._ring_entries(np.array([slot0]))[1].tolist()
            }
        amkey, ttl = inst.tank.slot_key(slot0)
        stored = dict(inst.store.read(amkey, ttl, lo, cur, 600))
        assert sorted(ring) == list(range(lo, cur, 600)), sorted(ring)
        for t0 in ring:
            assert ring[t0] == bytes(stored[t0]) == first_ring[t0], t0
        assert inst.warm.chunks_read >= N * 6
        assert inst.loop.warm_chunks_loaded >= N * 6

        # nothing saved is written again
        assert inst.store.chunks_written == 0, inst.store.chunks_written

        # the chunk open at the restart completes: saved whole, as a node that saw all of it writes it
        nxt = cur + 600
        for t in range(end, nxt + 10, 10):
            prod.send_points(ss, t, message_ts_ms=t * 1000)
        assert prod.flush(30) == 0
        keys = [inst.tank.slot_key(inst.tank.slot_of(ss.ids[i])) for i in range(N)]

        def saved_now() -> int:
            return sum(1 for k, t in keys if cur in dict(inst.store.read(k, t, cur, cur + 1, 600)))

        wait_for(lambda: saved_now() == N, 60, "the chunk open at the restart saved for every series")
        got = dict(inst.store.read(amkey, ttl, cur, cur + 1, 600))
        ets, evals = _expected(ss, 0, cur, nxt)
        assert bytes(got[cur]) == encode_chunk(cur, 600, ets.astype(np.uint32), evals)
        for i, (k, t) in enumerate(keys):
            ets, evals = _expected(ss, i, cur, nxt)
            chunk = dict(inst.store.read(k, t, cur, cur + 1, 600))[cur]
            assert bytes(chunk) == encode_chunk(cur, 600, ets.astype(np.uint32), evals), i
