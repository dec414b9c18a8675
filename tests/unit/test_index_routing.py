"""Routing of binary series keys to rows: the ingest path's only contact with the index."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.index import MemoryIndex, format_id, parse_id, split_md5
from metrictank.index.keys import hash_key, hash_keys, parse_ids


def _md5(name: str) -> bytes:
    return hashlib.md5(name.encode()).digest()


def _add(ix: MemoryIndex, org: int, md5: bytes, name: str, lastupdate: int = 100, partition: int = 0):
    return ix.add(f"{org}.{md5.hex()}", org, name, 10, "", "gauge", [], partition, lastupdate)


def _keys(md5s: list[bytes], orgs: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k0, k1 = split_md5(b"".join(md5s))
    return k0, k1, np.array(orgs, np.uint32)


def test_id_round_trip_and_key_convention():
    md5 = _md5("some.metric")
    org, k0, k1 = parse_id(f"42.{md5.hex()}")
    assert org == 42
    # the documented convention: the md5 read as two little-endian uint64 words
    assert (k0, k1) == tuple(int(x) for x in np.frombuffer(md5, "<u8"))
    assert format_id(org, k0, k1) == f"42.{md5.hex()}"
    assert format_id(*parse_id("7." + "AB" * 16)) == "7." + "ab" * 16


@pytest.mark.parametrize(
    "bad", ["", "1", "1.", "x.00112233445566778899aabbccddeeff", "1.0011", "1." + "g" * 32]
)
def test_parse_id_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_id(bad)


def test_scalar_and_vector_hash_agree():
    rng = np.random.default_rng(1)
    k0 = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    k1 = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    org = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    vec = hash_keys(k0, k1, org)
    for i in range(0, 1000, 37):
        assert hash_key(int(k0[i]), int(k1[i]), int(org[i])) == int(vec[i])


def test_lookup_random_keys_known_and_unknown():
    rng = np.random.default_rng(7)
    ix = MemoryIndex()
    md5s = [rng.bytes(16) for _ in range(5000)]
    orgs = [int(o) for o in rng.integers(1, 4, 5000)]
    rows = []
    for i, (m, o) in enumerate(zip(md5s, orgs, strict=True)):
        row, created = _add(ix, o, m, f"s.{i}")
        assert created
        rows.append(row)
    assert rows == list(range(5000))  # dense from 0
    assert len(ix) == 5000

    unknown = [rng.bytes(16) for _ in range(3000)]
    sel = rng.integers(0, 5000, 20000)
    batch_md5 = [md5s[i] for i in sel] + unknown
    batch_org = [orgs[i] for i in sel] + [1] * 3000
    perm = rng.permutation(len(batch_md5))
    k0, k1, org = _keys([batch_md5[i] for i in perm], [batch_org[i] for i in perm])
    got = ix.lookup_rows(k0, k1, org)
    want = np.concatenate([sel, np.full(3000, -1)])[perm]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_same_md5_in_another_org_is_another_series():
    ix = MemoryIndex()
    m = _md5("x")
    assert _add(ix, 1, m, "x") == (0, True)
    k0, k1, _ = _keys([m, m, m], [1, 1, 1])
    np.testing.assert_array_equal(ix.lookup_rows(k0, k1, np.array([1, 2, 3], np.uint32)), [0, -1, -1])
    assert _add(ix, 2, m, "x") == (1, True)
    np.testing.assert_array_equal(ix.lookup_rows(k0, k1, np.array([1, 2, 3], np.uint32)), [0, 1, -1])


def test_org_column_of_any_integer_dtype():
    ix = MemoryIndex()
    m = _md5("pub")
    ix.add(f"-1.{m.hex()}", -1, "pub", 10, "", "gauge", [], 0, 1)
    k0, k1 = split_md5(m)
    for org in (np.array([-1], np.int64), np.array([2**32 - 1], np.uint32), np.array([-1], np.int32)):
        np.testing.assert_array_equal(ix.lookup_rows(k0, k1, org), [0])
    assert ix.row_of(f"-1.{m.hex()}") == 0


def test_readding_returns_existing_row_and_updates():
    ix = MemoryIndex()
    m = _md5("a.b")
    assert _add(ix, 1, m, "a.b", lastupdate=100, partition=3) == (0, True)
    assert _add(ix, 1, m, "a.b", lastupdate=50, partition=5) == (0, False)
    d = ix.get(0)
    assert d.partition == 5
    assert d.lastupdate == 100  # an older copy never makes the series look staler
    assert _add(ix, 1, m, "a.b", lastupdate=200, partition=5) == (0, False)
    assert ix.get(0).lastupdate == 200
    assert len(ix) == 1


def test_removal_frees_rows_for_reuse_and_lookups_miss():
    ix = MemoryIndex()
    md5s = [_md5(f"m{i}") for i in range(100)]
    for i, m in enumerate(md5s):
        _add(ix, 1, m, f"m{i}")
    removed = ix.remove([3, 50, 50, 99, 1000, -1])
    assert removed.tolist() == [3, 50, 99]
    assert len(ix) == 97
    k0, k1, org = _keys(md5s, [1] * 100)
    got = ix.lookup_rows(k0, k1, org)
    want = np.arange(100)
    want[[3, 50, 99]] = -1
    np.testing.assert_array_equal(got, want)
    assert ix.row_of(f"1.{md5s[3].hex()}") is None
    with pytest.raises(KeyError):
        ix.get(3)

    new_rows = sorted(_add(ix, 1, _md5(f"new{i}"), f"new{i}")[0] for i in range(4))
    assert new_rows[:3] == [3, 50, 99]  # freed rows are handed out before the row count grows
    assert new_rows[3] == 100
    assert ix.row_capacity == 101
    # the old keys stay unknown, the new ones route to the reused rows
    np.testing.assert_array_equal(ix.lookup_rows(k0, k1, org)[[3, 50, 99]], [-1, -1, -1])
    k0n, k1n, orgn = _keys([_md5(f"new{i}") for i in range(4)], [1] * 4)
    assert sorted(ix.lookup_rows(k0n, k1n, orgn).tolist()) == new_rows


def test_many_inserts_and_deletes_keep_table_consistent():
    """Churn through several table resizes with tombstones; every live key must stay reachable."""
    rng = np.random.default_rng(3)
    ix = MemoryIndex(capacity=16)
    live: dict[bytes, int] = {}
    for step in range(6):
        for _ in range(3000):
            m = rng.bytes(16)
            row, created = _add(ix, 1, m, "n." + m.hex())
            assert created
            live[m] = row
        victims = list(live)[:: 3 if step % 2 else 2]
        ix.remove([live.pop(m) for m in victims])
        md5s = list(live) + victims[:500]
        k0, k1, org = _keys(md5s, [1] * len(md5s))
        got = ix.lookup_rows(k0, k1, org)
        np.testing.assert_array_equal(got[: len(live)], list(live.values()))
        assert (got[len(live) :] == -1).all()
    assert len(ix) == len(live)
    assert len(set(live.values())) == len(live)


def test_degenerate_ids_still_route():
    """Ids are trusted as sent; counters instead of md5s must not break (or collide in) routing."""
    ix = MemoryIndex()
    ids = [f"1.{i:032x}" for i in range(2000)] + [f"1.{i << 64:032x}" for i in range(1, 2000)]
    for i, id_ in enumerate(ids):
        assert ix.add(id_, 1, f"c.{i}", 10, "", "gauge", [], 0, 1) == (i, True)
    k0 = np.array([parse_id(i)[1] for i in ids], np.uint64)
    k1 = np.array([parse_id(i)[2] for i in ids], np.uint64)
    np.testing.assert_array_equal(ix.lookup_rows(k0, k1, np.ones(len(ids), np.uint32)), np.arange(len(ids)))


def test_empty_batch():
    ix = MemoryIndex()
    e = np.zeros(0, np.uint64)
    assert ix.lookup_rows(e, e, np.zeros(0, np.uint32)).shape == (0,)


def test_touch_raises_lastupdate_only():
    ix = MemoryIndex()
    for i in range(5):
        _add(ix, 1, _md5(f"t{i}"), f"t{i}", lastupdate=100)
    ix.touch(np.array([0, 1, 1, -1, 2, 4]), np.array([150, 120, 170, 999, 50, 100]))
    assert [ix.get(r).lastupdate for r in range(5)] == [150, 170, 100, 100, 100]
    np.testing.assert_array_equal(ix.lastupdates(np.arange(5)), [150, 170, 100, 100, 100])


def test_rows_of_partitions():
    ix = MemoryIndex()
    for i in range(20):
        _add(ix, 1, _md5(f"p{i}"), f"p{i}", partition=i % 4)
    ix.remove([1])
    np.testing.assert_array_equal(ix.rows_of_partitions([1, 3]), [3, 5, 7, 9, 11, 13, 15, 17, 19])
    np.testing.assert_array_equal(ix.rows_of_partitions([]), [])
    np.testing.assert_array_equal(ix.partitions(np.array([0, 2])), [0, 2])


def test_parse_ids_matches_parse_id_and_rejects_bad():
    ids = [f"{o}.{_md5(str(o)).hex()}" for o in (-1, 0, 1, 7, 2**32 - 1)]
    org, k0, k1 = parse_ids(ids)
    assert [(int(a), int(b), int(c)) for a, b, c in zip(org, k0, k1, strict=True)] == [
        parse_id(i) for i in ids
    ]
    assert [len(x) for x in parse_ids([])] == [0, 0, 0]
    for bad in ("1.abc", "x." + "0" * 32, "1." + "00 " * 10 + "00", "1" + "0" * 33):
        with pytest.raises(ValueError, match="invalid series id"):
            parse_ids([ids[0], bad])


def test_lookup_ids():
    ix = MemoryIndex()
    ids = [f"1.{_md5(f'l{i}').hex()}" for i in range(10)]
    for i, id_ in enumerate(ids[:5]):
        ix.add(id_, 1, f"l{i}", 10, "", "gauge", [], 0, 1)
    np.testing.assert_array_equal(ix.lookup_ids(ids), [0, 1, 2, 3, 4, -1, -1, -1, -1, -1])


DEF_NAMES = ["a.b", "a.c", "x"]
DEF_TAGS = [(), ("k=v",), ("k=w", "j=1"), ("j=1", "k=w")]


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 5),  # which id
                st.sampled_from([1, 2]),  # org field
                st.sampled_from(DEF_NAMES),
                st.sampled_from([10, 60]),
                st.sampled_from(["", "ms"]),
                st.sampled_from(["gauge", "rate"]),
                st.sampled_from(DEF_TAGS),
                st.integers(0, 3),  # partition
                st.integers(0, 1000),  # lastupdate
            ),
            max_size=12,
        ),
        max_size=4,
    )
)
def test_add_many_equals_sequential_add(batches):
    one, many = MemoryIndex(), MemoryIndex()
    for batch in batches:
        ids = [f"1.{_md5(f'id{b[0]}').hex()}" for b in batch]
        seq = [one.add(id_, *b[1:]) for id_, b in zip(ids, batch, strict=True)]
        cols = list(zip(*batch, strict=True)) if batch else [()] * 9
        rows, created = many.add_many(ids, *cols[1:])
        assert [(int(r), bool(c)) for r, c in zip(rows, created, strict=True)] == seq
    assert len(one) == len(many)
    for r in one.live_rows().tolist():
        assert one.get(r) == many.get(r)
    for pattern in ("*", "a.*"):
        assert one.find(1, pattern) == many.find(1, pattern)
        assert one.find(2, pattern) == many.find(2, pattern)
    assert one.find_by_tags(1, ["k=~.+"]) == many.find_by_tags(1, ["k=~.+"])
    assert one.tags(2) == many.tags(2)


def test_add_definitions_from_metricdata_like_objects():
    class MD:
        def __init__(self, i):
            self.id = f"3.{_md5(f'md{i}').hex()}"
            self.org_id, self.name, self.interval, self.unit = 3, f"m.{i}", 10, ""
            self.mtype, self.tags, self.time = "gauge", None if i % 2 else ["t=1"], 100 + i

    ix = MemoryIndex()
    rows, created = ix.add_definitions([MD(i) for i in range(4)], [0, 1, 2, 3])
    assert rows.tolist() == [0, 1, 2, 3] and created.all()
    rows, created = ix.add_definitions([MD(2), MD(9)], np.array([5, 5]))
    assert rows.tolist() == [2, 4] and created.tolist() == [False, True]
    assert ix.get(2).partition == 5 and ix.get(1).tags == ()


def test_lookup_of_strided_record_fields_equals_contiguous_and_scalar():
    """The ingest path looks up fields of the decoder's 40-byte records (strided views); the answer must be
    the one for packed arrays and for one key at a time, unknown keys (-1) included."""
    from metrictank.schema import POINT_DTYPE

    ix = MemoryIndex()
    md5s = [_md5(f"s.{i}") for i in range(3000)]
    for i, m in enumerate(md5s):
        _add(ix, 1 + i % 3, m, f"s.{i}")
    rng = np.random.default_rng(5)
    pick = rng.integers(0, 3000, 5000)
    pts = np.zeros(5000, POINT_DTYPE)
    k0, k1 = split_md5(b"".join(md5s[i] for i in pick.tolist()))
    pts["k0"], pts["k1"], pts["org"] = k0, k1, (1 + pick % 3).astype(np.uint32)
    pts["org"][::7] += 1  # a wrong org: unknown key
    strided = ix.lookup_rows(pts["k0"], pts["k1"], pts["org"])
    packed = ix.lookup_rows(pts["k0"].copy(), pts["k1"].copy(), pts["org"].copy())
    scalar = [
        ix.row_of(format_id(int(o), int(a), int(b)))
        for a, b, o in zip(pts["k0"], pts["k1"], pts["org"], strict=True)
    ]
    assert strided.tolist() == packed.tolist() == [-1 if r is None else r for r in scalar]
    assert (strided == -1).sum() > 0 and (strided >= 0).sum() > 0
