"""A find with a pathological glob must neither stall ingest nor take long itself.

Before: `fnmatch.translate` of 40,000 `[` took about a minute, inside the index lock, and every new series of
an ingest batch waited for it. Now the pattern is compiled before the lock (and past MAX_GLOB_LENGTH refused)."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from metrictank.index import MemoryIndex
from metrictank.regex import MAX_GLOB_LENGTH, PatternError


def _id(n: int) -> str:
    return f"1.{hashlib.md5(str(n).encode()).hexdigest()}"


@pytest.mark.parametrize(
    "pattern",
    [
        "[" * 40_000,  # past the length limit: refused at once
        "a." + "[" * (MAX_GLOB_LENGTH - 10),  # within it: compiled in linear time
        "a." + "[!" * 10_000,
        "a." + "*a" * 5_000 + "b",
    ],
    ids=["40k-open-brackets", "30k-open-brackets", "negated-runs", "many-stars"],
)
def test_insert_is_not_blocked_by_a_find_compiling_a_pathological_pattern(pattern):
    ix = MemoryIndex()
    for i in range(200):
        ix.add(_id(i), 1, f"a.host{i}", 10, "", "gauge", [], 0, 100)
    outcome: list[object] = []
    started = threading.Event()

    def find() -> None:
        started.set()
        t = time.perf_counter()
        try:
            outcome.append(ix.find(1, pattern))
        except PatternError as e:
            outcome.append(e)
        outcome.append(time.perf_counter() - t)

    th = threading.Thread(target=find, daemon=True)
    th.start()
    started.wait()
    worst = 0.0
    for i in range(200, 260):
        t = time.perf_counter()
        ix.add(_id(i), 1, f"a.new{i}", 10, "", "gauge", [], 0, 100)
        worst = max(worst, time.perf_counter() - t)
    th.join(10)
    assert not th.is_alive(), "find with a pathological pattern took more than 10 s"
    assert worst < 0.1, f"an insert waited {worst:.3f} s for a find"
    result, took = outcome
    assert took < 2.0
    if len(pattern) > MAX_GLOB_LENGTH:
        assert isinstance(result, PatternError) and "longer than the limit" in str(result)
    else:
        assert result == []
