"""Batched SQLite reads: one query per table and batch of row keys must answer what a read per series does.

What users depend on: a render of many series gets, for every series, exactly the chunks a read of that
series alone returns (range, TTL table, 28-day row keys, expiry, t0 order), however many series it asks for.
"""

from __future__ import annotations

import pytest

from metrictank.schema import ROW_KEY_BUCKET
from metrictank.store import ChunkWrite
from metrictank.store import sqlite as sqlite_store
from metrictank.store.sqlite import SQLiteStore

SPAN = 600
TTL = 35 * 86400
LONG = 365 * 86400
BOUNDARY = 627 * ROW_KEY_BUCKET  # a 28-day row key boundary near 1.5e9
NOW = BOUNDARY + 3 * 86400


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(i: int) -> str:
    return f"1.{i:032x}"


def blob(amkey: str, t0: int) -> bytes:
    return f"{amkey}@{t0}".encode()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def filled(tmp_path, clock):
    """1200 raw series (more than two query batches) with chunks on both sides of a row key boundary, some
    rollups in a long-TTL table, and chunks that have expired."""
    store = SQLiteStore(tmp_path / "c.db", write_queue_size=100_000, clock=clock)
    writes = []
    for i in range(1200):
        first = BOUNDARY - (4 + i % 5) * SPAN
        for j in range(8 + i % 3):
            t0 = first + j * SPAN
            writes.append(ChunkWrite(key(i), 1, t0, SPAN, TTL, blob(key(i), t0), 0))
    for i in range(0, 1200, 7):
        t0 = BOUNDARY - 2 * SPAN
        writes.append(ChunkWrite(key(i) + "_sum_3600", 1, t0, 7200, LONG, blob(key(i) + "_sum", t0), 0))
    for i in range(5):  # expired: written with a TTL that has run out by NOW
        t0 = BOUNDARY - 10 * SPAN
        writes.append(ChunkWrite(key(5000 + i), 1, t0, SPAN, 3 * 86400, blob(key(5000 + i), t0), 0))
    clock.now = BOUNDARY - 9 * SPAN
    store.submit(writes)
    assert store.drain(60) == 0
    clock.now = NOW
    yield store
    store.close(timeout=5)


def reqs() -> list[tuple[str, int]]:
    out = [(key(i), TTL) for i in range(1200)]
    out += [(key(i) + "_sum_3600", LONG) for i in range(0, 1200, 7)]
    out += [(key(5000 + i), 3 * 86400) for i in range(5)]
    out += [(key(9999), TTL), ("1.nothing_max_60", 7 * 86400)]  # unknown series, unknown table
    return out


@pytest.mark.parametrize(
    ("start", "end", "max_span"),
    [
        (BOUNDARY - 6 * SPAN + 17, BOUNDARY + 5 * SPAN, SPAN),  # across the row key boundary
        (BOUNDARY - 3 * SPAN, BOUNDARY, SPAN),  # ends exactly at the boundary
        (BOUNDARY + 1, BOUNDARY + 2 * SPAN, 7200),  # after it, looking back by a long span
        (BOUNDARY - 20 * SPAN, BOUNDARY + 20 * SPAN, 0),  # unknown span: the whole first bucket
        (BOUNDARY, BOUNDARY, SPAN),  # empty range
    ],
)
def test_read_many_answers_what_read_answers(filled, start, end, max_span) -> None:
    got = filled.read_many(reqs(), start, end, max_span)
    assert set(got) == {a for a, _ in reqs()}
    for amkey, ttl in reqs():
        assert got[amkey] == filled.read(amkey, ttl, start, end, max_span), amkey
    crossing = BOUNDARY - 6 * SPAN + 17
    if start == crossing:  # the case is not vacuous: series with chunks from both row keys, in t0 order
        chunks = got[key(4)]
        assert [t for t, _ in chunks] == sorted(t for t, _ in chunks)
        assert chunks[0][0] < BOUNDARY <= chunks[-1][0]
        assert chunks[0][1] == blob(key(4), chunks[0][0])
        assert got[key(5000)] == []  # expired
        assert len(got[key(7) + "_sum_3600"]) == 1


def test_read_many_batches_row_keys(filled, monkeypatch) -> None:
    seen: list[int] = []
    real = filled._reader

    class Spy:
        def __init__(self, conn) -> None:
            self.conn = conn

        def execute(self, sql, params):
            seen.append(len(params) - 3)
            return self.conn.execute(sql, params)

    monkeypatch.setattr(filled, "_reader", lambda: Spy(real()))
    monkeypatch.setattr(sqlite_store, "_KEYS_PER_QUERY", 300)
    start, end = BOUNDARY - 6 * SPAN, BOUNDARY + 5 * SPAN  # two row keys per series
    got = filled.read_many(reqs(), start, end, SPAN)
    assert all(n <= 300 for n in seen)
    assert sum(seen) == 2 * len({a for a, _ in reqs()})  # every row key asked once
    assert len(seen) <= 15  # not one statement per series
    assert got == {a: filled.read(a, t, start, end, SPAN) for a, t in reqs()}


def test_read_many_last_ttl_of_a_repeated_key_wins(filled) -> None:
    start, end = BOUNDARY - 2 * SPAN, BOUNDARY + 2 * SPAN
    got = filled.read_many([(key(1), LONG), (key(1), TTL)], start, end, SPAN)
    assert got[key(1)] == filled.read(key(1), TTL, start, end, SPAN) != []
    assert filled.read_many([(key(1), TTL), (key(1), LONG)], start, end, SPAN)[key(1)] == []
