"""Partitioning: scalar vs vectorised agreement and the Go arithmetic corner cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.schema import PARTITION_METHODS, partition, partition_many
from metrictank.schema.partition import fnv1a32_bytes, fnv1a32_runes, jump_hash, jump_hash_many

names = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(".;=é漢\U0001f600\0"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # surrogate-escaped invalid bytes
    ),
    max_size=50,
)
tag_lists = st.lists(st.text(min_size=1, max_size=12), max_size=4)


def test_fnv_known_values() -> None:
    # FNV-1a 32 reference values (empty input is the offset basis; "a" is the classic test vector)
    assert fnv1a32_bytes(b"") == 0x811C9DC5
    assert fnv1a32_bytes(b"a") == 0xE40C292C
    assert fnv1a32_runes("a") == 0xE40C292C


def test_fnv_is_rune_wise() -> None:
    # "é" is one rune 0xE9, not the two bytes C3 A9
    assert fnv1a32_runes("é") == fnv1a32_bytes(b"\xe9")
    assert fnv1a32_runes("é") != fnv1a32_bytes("é".encode())


def test_invalid_bytes_hash_as_replacement_char() -> None:
    assert fnv1a32_runes("a\udcff") == fnv1a32_runes("a\ufffd")


def test_go_truncating_remainder() -> None:
    # Find a name whose hash is negative as int32 and check the remainder is taken on the absolute value.
    name = next(f"s{i}" for i in range(1000) if fnv1a32_runes(f"s{i}") & 0x80000000)
    h = fnv1a32_runes(name) - (1 << 32)
    assert h < 0
    assert partition("bySeries", 1, name, [], 7) == (-h) % 7
    assert partition_many("bySeries", 1, [name], None, 7).tolist() == [(-h) % 7]


def test_unknown_method_named() -> None:
    with pytest.raises(ValueError, match="byName"):
        partition("byName", 1, "a", [], 8)
    with pytest.raises(ValueError, match="byName"):
        partition_many("byName", [1], ["a"], None, 8)
    with pytest.raises(ValueError):
        partition("bySeries", 1, "a", [], 0)


def test_tags_only_matter_for_tag_methods() -> None:
    assert partition("bySeries", 1, "a.b", ["x=1"], 64) == partition("bySeries", 1, "a.b", [], 64)
    assert partition("bySeriesWithTagsFnv", 1, "a.b", [], 64) == partition("bySeries", 1, "a.b", [], 64)
    assert partition("bySeriesWithTagsFnv", 1, "a.b", ["x=1", "y=2"], 64) == partition(
        "bySeriesWithTagsFnv", 1, "a.b", ["y=2", "name=zzz", "x=1"], 64
    )


@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), names, tag_lists), min_size=1, max_size=40),
       st.integers(1, 1024))  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_partition_many_equals_partition(rows: list, n: int) -> None:
    orgs = [r[0] for r in rows]
    nms = [r[1] for r in rows]
    tags = [r[2] for r in rows]
    for method in PARTITION_METHODS:
        got = partition_many(method, orgs, nms, tags, n)
        assert got.dtype == np.int32
        assert got.tolist() == [partition(method, o, nm, tg, n) for o, nm, tg in rows], method
        assert all(0 <= p < n for p in got.tolist())


def test_partition_many_scalar_org_and_no_tags() -> None:
    got = partition_many("byOrg", 5, ["a", "b", "c"], None, 32)
    assert got.tolist() == [partition("byOrg", 5, "a", [], 32)] * 3


def test_partition_many_long_and_many_names() -> None:
    nms = [("x" * (i % 300)) + str(i) for i in range(9000)]  # spans several internal batches
    got = partition_many("bySeries", 1, nms, None, 128)
    sample = range(0, 9000, 97)
    assert [got[i] for i in sample] == [partition("bySeries", 1, nms[i], [], 128) for i in sample]


@given(st.integers(0, 2**64 - 1), st.integers(1, 5000))
@settings(max_examples=300)
def test_jump_hash_consistency(key: int, n: int) -> None:
    a = jump_hash(key, n)
    b = jump_hash(key, n + 1)
    assert 0 <= a < n
    assert b == a or b == n  # growing by one bucket only ever moves keys into the new bucket


def test_jump_hash_many_matches_scalar() -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)
    for n in (1, 2, 7, 128, 100000):
        assert jump_hash_many(keys, n).tolist() == [jump_hash(int(k), n) for k in keys]
