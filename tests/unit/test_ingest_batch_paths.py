"""The batch paths a Kafka batch of MetricData takes give exactly the per-message results.

New series are validated, parsed, indexed and given tank state per batch (numpy over columns) rather than one
message at a time; what users depend on is that nothing observable changes: the same messages are accepted
or rejected for the same reasons, ids map to the same keys and rows, the index answers finds and tag queries
the same, and the tank stores each series under the schema and aggregation its name and interval select.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.index import MemoryIndex
from metrictank.index.keytable import KeyTable
from metrictank.index.tree import Tree
from metrictank.input.handler import IngestHandler
from metrictank.retention import Aggregations, Schemas
from metrictank.schema import (
    DecodeError,
    MetricData,
    decode_metricdata,
    encode_metricdata,
    encode_metricpoint,
    parse_mkey,
    series_id,
    validate_metricdata,
)
from metrictank.schema.ids import parse_mkeys
from metrictank.schema.metricdata import metricdata_from_map, unpack_one
from metrictank.schema.validate import validate_metricdata_many
from metrictank.tank import Tank

HEX = "0123456789abcdefABCDEF"
NOW = 1_700_000_000


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------- ids

hexes = st.text(HEX, min_size=32, max_size=32)
orgs = st.one_of(
    st.integers(0, 0xFFFFFFFF).map(str),
    st.sampled_from(["4294967296", "99999999999", "0001", "000000000007", ""]),
)
good_ids = st.builds(lambda o, h: f"{o}.{h}", orgs, hexes)
noise = st.text("0123456789abcdefg.-+ \n\u0661x\udcff", max_size=40)


@st.composite
def mangled(draw: st.DrawFn) -> str:
    s = draw(good_ids)
    if s and draw(st.booleans()):
        i = draw(st.integers(0, len(s) - 1))
        s = s[:i] + draw(st.sampled_from(list(".g-+ \n\u0661x\udcff0"))) + s[i + 1 :]
    return s


def _check_against_parse_mkey(ids: list[str]) -> None:
    ok, org, k0, k1 = parse_mkeys(ids)
    for i, s in enumerate(ids):
        try:
            mk = parse_mkey(s)
        except DecodeError:
            assert not ok[i], s
            continue
        if ok[i]:
            assert (int(org[i]), int(k0[i]), int(k1[i])) == (mk.org, *mk.words)
        else:  # the fast check leaves only orgs written with more than ten digits to parse_mkey
            assert len(s.partition(".")[0]) > 10, s


@settings(max_examples=300)
@given(st.lists(st.one_of(good_ids, mangled(), noise), max_size=30))
def test_parse_mkeys_agrees_with_parse_mkey(ids: list[str]) -> None:
    _check_against_parse_mkey(ids)


@settings(max_examples=200)
@given(st.integers(1, 10), st.lists(st.one_of(hexes, mangled()), min_size=1, max_size=20))
def test_parse_mkeys_agrees_on_equal_length_batches(digits: int, tails: list[str]) -> None:
    # one org per batch gives ids of one length: the reshape path
    width = digits + 33
    ids = [(("7" * digits + "." + t) if len(t) == 32 else t.rjust(width, "1"))[-width:] for t in tails]
    _check_against_parse_mkey(ids)


def test_parse_mkeys_non_str_left_to_parse_mkey() -> None:
    ok, *_ = parse_mkeys(["1." + "a" * 32, 5])  # type: ignore[list-item]
    assert not ok.any()


# -------------------------------------------------------------------------------------- decode + validate


def good_md(i: int, **kw: object) -> MetricData:
    base: dict = dict(
        org_id=1, name=f"a.b.{i}", interval=10, value=float(i), unit="ms", time=NOW, mtype="gauge", tags=[]
    )
    base.update(kw)
    md = MetricData(id="", **base)
    md.id = series_id(1, md.name, md.unit, md.mtype, md.interval, md.tags)
    return md


BAD_FIELDS: list[dict] = [
    {"org_id": 0},
    {"org_id": -3},
    {"org_id": 1 << 32},
    {"org_id": 1 << 70},
    {"interval": 0},
    {"interval": (1 << 31) - 1},
    {"name": ""},
    {"name": "..."},
    {"name": "..x..y."},
    {"name": "a.\udcff"},
    {"mtype": "Gauge"},
    {"tags": ["a"]},
    {"tags": ["k=v", "x=~y"]},
    {"tags": ["a;b=c"]},
    {"tags": ["ok=\udcff"]},
    {"tags": ["dc=eu", "host=h1"]},
    {"time": 0},
    {"time": 1 << 40},
    {"id": "1.xyz"},
    {"id": "0007." + "ab" * 16},  # valid, but only parse_mkey accepts it
    {"id": "00000000007." + "cd" * 16},
    {"id": "4294967296." + "ab" * 16},
    {"id": "1." + "AB" * 16},
    {"org_id": 0, "time": 0, "id": "x"},
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from([None, *range(len(BAD_FIELDS))])), max_size=25))
def test_validate_many_equals_one_by_one(spec: list[tuple[int, int | None]]) -> None:
    def build() -> list[MetricData]:
        out = []
        for i, bad in spec:
            md = good_md(i)
            for k, v in (BAD_FIELDS[bad] if bad is not None else {}).items():
                setattr(md, k, v)
            out.append(md)
        return out

    one, many = build(), build()
    reasons: Counter[str] = Counter()
    keep = []
    for j, md in enumerate(one):
        r = validate_metricdata(md)
        if r:
            reasons[r] += 1
        else:
            keep.append(j)
    vb = validate_metricdata_many(many)
    assert vb.positions.tolist() == keep
    assert Counter(vb.invalid) == reasons
    assert [md.name for md in many] == [md.name for md in one]  # normalised in place alike
    valid = [one[j] for j in keep]
    assert list(vb.names) == [m.name for m in valid]
    assert list(vb.ids) == [m.id for m in valid]
    assert vb.orgs.tolist() == [m.org_id for m in valid]
    assert vb.intervals.tolist() == [m.interval for m in valid]
    assert vb.times.tolist() == [m.time for m in valid]
    assert vb.values.tolist() == [m.value for m in valid]
    assert [list(t) for t in vb.tags] == [m.tags for m in valid]
    keys = [(parse_mkey(m.id).org, *parse_mkey(m.id).words) for m in valid]
    assert list(zip(vb.id_org.tolist(), vb.k0.tolist(), vb.k1.tolist(), strict=True)) == keys


@settings(max_examples=200)
@given(
    st.builds(
        MetricData,
        id=st.text(max_size=40),
        org_id=st.integers(-(1 << 63), (1 << 63) - 1),
        name=st.text(max_size=40),
        interval=st.integers(-(1 << 63), (1 << 63) - 1),
        value=st.floats(allow_nan=False),
        unit=st.text(max_size=5),
        time=st.integers(-(1 << 63), (1 << 63) - 1),
        mtype=st.text(max_size=6),
        tags=st.lists(st.text(max_size=10), max_size=4),
    )
)
def test_decode_fast_path_equals_general_path(md: MetricData) -> None:
    raw = encode_metricdata(md)
    assert decode_metricdata(raw) == metricdata_from_map(unpack_one(raw)) == md


# -------------------------------------------------------------------------------------------------- index

PATHS = [
    "a",
    "a.b",
    "a.b.c",
    "a.c",
    "x.y",
    "x.y.z",
    "",
    ".a",
    "a..b",
    "q",
    "a.bc.d",
    "a.b.c.d",
    "a.b.",
    "é.ü",
]


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.integers(0, 6)), max_size=20))
def test_tree_add_many_equals_add(items: list[tuple[str, int]]) -> None:
    one, many = Tree(), Tree()
    for p, r in items:
        one.add(p, r)
    many.add_many([p for p, _ in items], [r for _, r in items])
    assert _flat(one) == _flat(many)
    assert one.leaves == many.leaves
    for pattern in ("*", "a.*", "*.*", "x.y.*", "a.b"):
        assert one.find(pattern)[0] == many.find(pattern)[0]


def _flat(t: Tree) -> list:
    return sorted((p, r if isinstance(r, tuple) else (r,)) for p, r in t.iter_leaves())


def test_keytable_insert_many_reuses_tombstones_and_resizes() -> None:
    rng = np.random.default_rng(3)
    kt = KeyTable(64)
    k0 = rng.integers(0, 2**64, 3000, dtype=np.uint64)
    k1 = rng.integers(0, 2**64, 3000, dtype=np.uint64)
    org = rng.integers(0, 5, 3000).astype(np.uint32)
    for r in range(100):
        kt.insert(int(k0[r]), int(k1[r]), int(org[r]), r)
    for r in range(0, 100, 3):
        kt.delete(r)
    rows = np.arange(100, 3000)
    kt.insert_many(k0[100:200], k1[100:200], org[100:200], rows[:100])  # into the existing table
    kt.insert_many(k0[200:], k1[200:], org[200:], rows[100:])  # forces a rebuild
    got = kt.lookup(k0, k1, org)
    want = np.arange(3000)
    want[np.arange(0, 100, 3)] = -1
    np.testing.assert_array_equal(got, want)
    assert kt.get(int(k0[150]), int(k1[150]), int(org[150])) == 150


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 600),
    st.integers(0, 200),
    st.sampled_from([np.uint32, np.int64]),
)
def test_keytable_c_probe_equals_numpy_probe(seed: int, n: int, removed: int, org_dtype) -> None:
    """The C probe (GIL released) gives the numpy reference's rows for every key of a batch: known keys,
    unknown ones, keys whose slot was tombstoned, keys that share k0/k1 and differ only by org (the public org
    -1 included), and keys passed as strided fields of point records, as the ingest path passes them."""
    rng = np.random.default_rng(seed)
    kt = KeyTable(64)
    k0 = rng.integers(0, 2**64, n, dtype=np.uint64)
    k1 = rng.integers(0, 2**64, n, dtype=np.uint64)
    k0[n // 2 :] = k0[0]  # many keys differ by k1 or org only
    org = rng.integers(0, 4, n).astype(np.uint32)
    org[::7] = np.uint32(2**32 - 1)  # the public org, -1 wrapped
    keys = {(int(a), int(b), int(o)) for a, b, o in zip(k0, k1, org, strict=True)}
    uniq = np.array(sorted(keys), dtype=object)
    u0 = np.array([k[0] for k in uniq], np.uint64)
    u1 = np.array([k[1] for k in uniq], np.uint64)
    uo = np.array([k[2] for k in uniq], np.uint32)
    kt.insert_many(u0, u1, uo, np.arange(len(uniq)))
    for r in rng.permutation(len(uniq))[: min(removed, len(uniq))].tolist():
        kt.delete(int(r))
    # the batch: every key, unknown keys, and repeats, as 40-byte records whose fields are strided views
    m = len(uniq) + 50
    rec = np.zeros(
        m, [("k0", "<u8"), ("k1", "<u8"), ("org", "<u4"), ("pad", "<u4"), ("x", "<u8"), ("y", "<u8")]
    )
    rec["k0"][: len(uniq)], rec["k1"][: len(uniq)], rec["org"][: len(uniq)] = u0, u1, uo
    rec["k0"][len(uniq) :] = rng.integers(0, 2**64, 50, dtype=np.uint64)
    rec["k1"][len(uniq) :] = u1[0]
    rec["org"][len(uniq) :] = uo[0]
    qo = (
        rec["org"]
        if org_dtype is np.uint32
        else rec["org"].astype(np.int64) - (rec["org"] == 2**32 - 1) * 2**32
    )
    got = kt.lookup(rec["k0"], rec["k1"], qo)
    want = kt.lookup_numpy(rec["k0"], rec["k1"], qo)
    np.testing.assert_array_equal(got, want)
    live = kt.live[: len(uniq)]
    np.testing.assert_array_equal(got[: len(uniq)], np.where(live, np.arange(len(uniq)), -1))
    assert (got[len(uniq) :] == -1).all() or set(got[len(uniq) :].tolist()) <= set(range(len(uniq)))


def test_keytable_c_probe_refuses_inconsistent_arguments() -> None:
    kt = KeyTable(64)
    k = np.zeros(3, np.uint64)
    with pytest.raises(ValueError):
        kt.lookup(k, np.zeros(2, np.uint64), np.zeros(3, np.uint32))
    with pytest.raises(ValueError):
        kt.lookup(k.reshape(3, 1), k.reshape(3, 1), np.zeros((3, 1), np.uint32))
    np.testing.assert_array_equal(kt.lookup(k[:0], k[:0], np.zeros(0, np.uint32)), np.zeros(0, np.int64))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.integers(0, 7),
                    st.sampled_from([1, 2]),
                    st.sampled_from(["a.b", "a.c", "x", "a.b.c"]),
                    st.sampled_from([10, 60]),
                    st.sampled_from([(), ("k=v",), ("k=w", "j=1")]),
                ),
                max_size=10,
            ),
            st.lists(st.integers(0, 7), max_size=3),  # ids removed after the batch
        ),
        max_size=5,
    )
)
def test_add_many_with_removals_equals_sequential_add(steps) -> None:
    # removals put rows on the free list; new series of the next batch must take them as `add` would
    one, many = MemoryIndex(), MemoryIndex()
    for batch, removed in steps:
        ids = [f"1.{_md5(f'id{b[0]}')}" for b in batch]
        seq = [
            one.add(i, o, n, iv, "", "gauge", t, 0, 5) for i, (_, o, n, iv, t) in zip(ids, batch, strict=True)
        ]
        rows, created = many.add_many(
            ids,
            [b[1] for b in batch],
            [b[2] for b in batch],
            [b[3] for b in batch],
            [""] * len(batch),
            ["gauge"] * len(batch),
            [b[4] for b in batch],
            [0] * len(batch),
            [5] * len(batch),
        )
        assert [(int(r), bool(c)) for r, c in zip(rows, created, strict=True)] == seq
        for ix in (one, many):
            gone = [ix.row_of(f"1.{_md5(f'id{k}')}") for k in removed]
            ix.remove([r for r in gone if r is not None])
    assert len(one) == len(many)
    for r in one.live_rows().tolist():
        assert one.get(r) == many.get(r)
    for org in (1, 2):
        for pattern in ("*", "a.*", "a.b.*"):
            assert one.find(org, pattern) == many.find(org, pattern)
        assert one.find_by_tags(org, ["k=~.+"]) == many.find_by_tags(org, ["k=~.+"])
        assert one.find_by_tags(org, ["name=a.b"]) == many.find_by_tags(org, ["name=a.b"])


def test_add_many_parsed_argument_is_used() -> None:
    ix = MemoryIndex()
    ids = [f"3.{_md5(str(i))}" for i in range(5)]
    from metrictank.index.keys import parse_ids

    rows, created = ix.add_many(
        ids, [3] * 5, [f"m.{i}" for i in range(5)], [10] * 5, [""] * 5, ["gauge"] * 5, [None] * 5, [0] * 5,
        [1] * 5, parsed=parse_ids(ids),
    )  # fmt: skip
    assert created.all() and ix.lookup_ids(ids).tolist() == rows.tolist()
    assert [ix.get(r).id for r in rows.tolist()] == ids


# --------------------------------------------------------------------------------------------------- tank

SCHEMAS = """
[cpu]
pattern = ^cpu\\.
retentions = 1s:1d:10min:2,1m:30d:2h:2

[mem]
pattern = mem
retentions = 10s:7d:30min:2

[default]
pattern = .*
retentions = 1s:35d:10min:7
"""
AGGS = """
[max]
pattern = \\.max$
aggregationMethod = max

[sum]
pattern = count
aggregationMethod = sum,cnt
"""


@pytest.mark.parametrize("schemas", [SCHEMAS, SCHEMAS.replace("pattern = .*", "pattern = ^x")])
def test_add_series_matches_schema_and_aggregation_per_name(schemas: str) -> None:
    sch, agg = Schemas.parse(schemas), Aggregations.parse(AGGS)
    tank = Tank(sch, agg, clock=lambda: NOW)
    names = ["cpu.a", "cpu.b.max", "x.mem", "mem.count", "other", "cpu", "a.count.max", "x.y"]
    intervals = [1, 60, 10, 120, 1, 5, 60, 3600]
    n = len(names)
    tank.add_series(np.arange(n), names, np.array(intervals), np.zeros(n), [f"1.{i:032x}" for i in range(n)])
    for r, (name, iv) in enumerate(zip(names, intervals, strict=True)):
        assert tank.schema_of(r) == (sch.match(name, iv)[1], agg.match(name)[1])
    # the vectorised lookup the query path uses agrees with schema_of, and marks rows not in the tank
    lids = tank.layouts_of(np.array([*range(n), n, -1, 10**6]))
    assert list(lids[n:]) == [-1, -1, -1]
    for r in range(n):
        assert tank.layout(int(lids[r])) == tank.schema_of(r)


# ------------------------------------------------------------------------------------------------ handler


def _reordered(md: MetricData) -> bytes:
    """The same MetricData with its keys in another order: valid, but not the shape the C decoder takes."""
    import msgpack

    fields = {"Id": md.id, "OrgId": md.org_id, "Name": md.name, "Interval": md.interval, "Value": md.value}
    fields |= {"Unit": md.unit, "Time": md.time, "Mtype": md.mtype, "Tags": md.tags or None}
    return msgpack.packb(dict(reversed(list(fields.items()))))


def _msgs(odd_shape: bool = False) -> list[bytes]:
    out = []
    for i in range(40):  # 25 series, some announced twice, some tagged, some invalid
        md = good_md(i % 25, time=NOW + i, value=float(i))
        if i % 7 == 3:
            md.tags = ["dc=eu", f"host=h{i % 4}"]
            md.id = series_id(1, md.name, md.unit, md.mtype, md.interval, md.tags)
        if i % 11 == 5:
            md.mtype = "bogus"
        out.append(_reordered(md) if odd_shape and i % 9 == 4 else encode_metricdata(md))
    for k in range(30):  # points of the plain series (unknown where never validly announced)
        out.append(encode_metricpoint(parse_mkey(good_md(k).id), float(k), NOW + 100 + k))
    return out


def _ingest(batch: int, odd_shape: bool = False) -> tuple[MemoryIndex, Tank, IngestHandler]:
    index = MemoryIndex()
    tank = Tank(Schemas.load(None), Aggregations.load(None), clock=lambda: NOW + 1000, row_of_id=index.row_of)
    handler = IngestHandler(index, tank)
    msgs = _msgs(odd_shape)
    for lo in range(0, len(msgs), batch):
        handler.process(msgs[lo : lo + batch], lambda i, lo=lo: (lo + i) % 3)
    return index, tank, handler


@pytest.mark.parametrize("odd_shape", [False, True], ids=["columns", "some-messages-of-another-shape"])
def test_handler_batch_equals_one_message_at_a_time(odd_shape: bool) -> None:
    """A batch of Go-shaped MetricData goes through the decoder's columns; one with a message of another shape
    through (position, MetricData) pairs: both must give what one message at a time gives."""
    from metrictank.schema import classify_and_decode

    assert (classify_and_decode(_msgs(odd_shape), 0).metricdata.columns is None) == odd_shape
    one, one_tank, h1 = _ingest(1, odd_shape)
    many, many_tank, hn = _ingest(1000, odd_shape)
    assert h1.metricdata_invalid == hn.metricdata_invalid and sum(hn.metricdata_invalid.values()) > 0
    assert h1.unknown_points == hn.unknown_points > 0
    assert len(one) == len(many) > 25
    for r in one.live_rows().tolist():
        d = one.get(r)
        r2 = many.row_of(d.id)
        assert r2 is not None
        m = many.get(r2)
        assert (m.org, m.name, m.tags, m.interval, m.partition, m.lastupdate) == (
            d.org,
            d.name,
            d.tags,
            d.interval,
            d.partition,
            d.lastupdate,
        )
        a, b = one_tank.read(r, 0, None, 0, 2**32 - 1), many_tank.read(r2, 0, None, 0, 2**32 - 1)
        assert len(a[0]) > 0
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_partitions_as_an_array_equal_partitions_as_a_callable() -> None:
    """A packed batch hands the handler its partitions as an array (no Python call per MetricData): the index
    must record the same partition for every series as with `partition_of`."""
    msgs = _msgs()
    parts = np.array([(i * 7) % 5 for i in range(len(msgs))], np.int32)
    got = []
    for source in (parts, lambda i: int(parts[i])):
        index = MemoryIndex()
        tank = Tank(
            Schemas.load(None), Aggregations.load(None), clock=lambda: NOW + 1000, row_of_id=index.row_of
        )
        IngestHandler(index, tank).process(msgs, source)
        got.append(sorted((index.get(r).id, index.get(r).partition) for r in index.live_rows().tolist()))
    assert got[0] == got[1] and len(got[0]) > 20
    assert len({p for _id, p in got[0]}) > 1
