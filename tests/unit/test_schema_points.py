"""MetricPoint encoding and the vectorised batch decoder, checked against a per-message reference."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.schema import (
    BATCH_ERROR_REASONS,
    POINT_DTYPE,
    ControlMsg,
    MetricData,
    MetricDefinition,
    MKey,
    classify_and_decode,
    encode_control,
    encode_metricdata,
    encode_metricpoint,
    encode_metricpoint_array,
    encode_metricpoint_array_np,
    encode_metricpoints_many,
    parse_mkey,
)

MAX_TS = (1 << 31) - 1


def reference_decode(
    values: list, default_org: int
) -> tuple[list[tuple], dict[str, int], list[int], list[int]]:
    """Straight-line, one message at a time reading of spec section 2 (what the batch decoder must equal)."""
    points: list[tuple] = []
    errors: dict[str, int] = {}
    md_idx: list[int] = []
    ctl_idx: list[int] = []

    def err(reason: str, k: int = 1) -> None:
        if k:
            errors[reason] = errors.get(reason, 0) + k

    def body(i: int, b: bytes, with_org: bool) -> None:
        key, value, t = struct.unpack_from("<16sdI", b)
        org = struct.unpack_from("<I", b, 28)[0] if with_org else default_org
        if t == 0 or t >= MAX_TS:
            err("invalid-time")
            return
        k0, k1 = struct.unpack("<QQ", key)
        points.append((k0, k1, value, t, org, i))

    for i, v in enumerate(values):
        v = v or b""
        if not v:
            err("empty")
        elif v[0] == 2:
            if len(v) == 33:
                body(i, v[1:], True)
            else:
                err("invalid-length")
        elif v[0] == 3:
            if len(v) != 29:
                err("invalid-length")
            elif default_org == 0:
                err("no-org")
            else:
                body(i, v[1:], False)
        elif v[0] == 5:
            if len(v) < 30 or v[1] not in (2, 3):
                err("invalid-format")
                continue
            size = 32 if v[1] == 2 else 28
            rest = v[2:]
            if len(rest) % size:
                err("array-remainder")
            n = len(rest) // size
            if size == 28 and default_org == 0:
                err("no-org", n)
                continue
            for j in range(n):
                body(i, rest[j * size : (j + 1) * size], size == 32)
        elif v[0] == 4:
            ctl_idx.append(i)
        elif v[0] in (0, 1):
            err("unsupported-format")
        else:
            md_idx.append(i)
    return points, errors, md_idx, ctl_idx


def as_tuples(points: np.ndarray) -> list[tuple]:
    assert points.dtype == POINT_DTYPE
    return [
        (int(p["k0"]), int(p["k1"]), float(p["value"]), int(p["time"]), int(p["org"]), int(p["msg_index"]))
        for p in points
    ]


# ---------------------------------------------------------------------------------------------- strategies

keys = st.builds(MKey, st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFFFFFF))
times = st.one_of(
    st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, MAX_TS - 1, MAX_TS, 0xFFFFFFFF, 1500000000])
)
values_ = st.floats(allow_nan=False)
pt = st.tuples(keys, values_, times)

single_with = pt.map(lambda p: encode_metricpoint(*p, with_org=True))
single_without = pt.map(lambda p: encode_metricpoint(*p, with_org=False))
array_msg = st.tuples(st.lists(pt, min_size=1, max_size=8), st.booleans(), st.binary(max_size=31)).map(
    lambda a: encode_metricpoint_array(a[0], with_org=a[1]) + a[2]
)
md_msg = st.just(
    encode_metricdata(MetricData("1." + "ab" * 16, 1, "a.b", 10, 1.0, "", 1500000000, "gauge", []))
)
ctl_msg = st.just(encode_control(ControlMsg([MetricDefinition(MKey(b"k" * 16, 3), 3, "x")], 0)))
garbage = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=40).map(lambda b: b"\x02" + b),
    st.binary(max_size=40).map(lambda b: b"\x03" + b),
    st.binary(max_size=70).map(lambda b: b"\x05" + b),
    st.binary(max_size=20).map(lambda b: b"\x04" + b),
    st.just(b""),
    st.none(),
)
message = st.one_of(single_with, single_without, array_msg, md_msg, ctl_msg, garbage)


@given(st.lists(message, max_size=40), st.sampled_from([0, 1, 77, 0xFFFFFFFF]))
@settings(max_examples=400, deadline=None)
def test_batch_equals_reference(values: list, default_org: int) -> None:
    batch = classify_and_decode(values, default_org)
    points, errors, md_idx, ctl_idx = reference_decode(values, default_org)
    assert as_tuples(batch.points) == points
    md_errors = len(md_idx) - len(batch.metricdata)
    ctl_errors = len(ctl_idx) - len(batch.control)
    expected = dict(errors)
    if md_errors:
        expected["invalid-msgp"] = md_errors
    if ctl_errors:
        expected["invalid-control"] = ctl_errors
    assert batch.errors == expected
    assert [i for i, _ in batch.metricdata] == [i for i in md_idx if i in {j for j, _ in batch.metricdata}]
    assert {i for i, _ in batch.control} <= set(ctl_idx)
    assert set(batch.errors) <= set(BATCH_ERROR_REASONS)
    assert batch.n_messages == len(values)


@given(st.lists(st.one_of(st.binary(max_size=80), st.none()), max_size=60), st.integers(0, 0xFFFFFFFF))
@settings(max_examples=400, deadline=None)
def test_never_raises_on_garbage(values: list, default_org: int) -> None:
    batch = classify_and_decode(values, default_org)
    accounted = len(batch.metricdata) + len(batch.control)
    assert accounted <= len(values)


@given(st.lists(pt, min_size=1, max_size=300), st.booleans())
@settings(max_examples=100, deadline=None)
def test_array_roundtrip(pts: list, with_org: bool) -> None:
    raw = encode_metricpoint_array(pts, with_org=with_org)
    assert len(raw) == 2 + len(pts) * (32 if with_org else 28)
    batch = classify_and_decode([raw], 42)
    valid = [(k, v, t) for k, v, t in pts if 0 < t < MAX_TS]
    assert len(batch.points) == len(valid)
    assert batch.errors.get("invalid-time", 0) == len(pts) - len(valid)
    for row, (k, v, t) in zip(batch.points, valid, strict=True):
        assert MKey.from_words(row["k0"], row["k1"], row["org"]) == (k if with_org else MKey(k.key, 42))
        assert row["value"] == v and row["time"] == t and row["msg_index"] == 0


def test_homogeneous_fast_path_matches_mixed_path() -> None:
    rng = np.random.default_rng(3)
    pts = np.zeros(500, dtype=POINT_DTYPE)
    pts["k0"] = rng.integers(0, 2**63, 500, dtype=np.uint64)
    pts["k1"] = rng.integers(0, 2**63, 500, dtype=np.uint64)
    pts["value"] = rng.normal(size=500)
    pts["time"] = 1500000000 + np.arange(500)
    pts["org"] = 9
    pts["msg_index"] = np.arange(500)
    msgs = encode_metricpoints_many(pts)
    fast = classify_and_decode(msgs, 0)
    assert fast.points.tobytes() == pts.tobytes()
    mixed = classify_and_decode([*msgs, b"\xff"], 0)  # one garbage message forces the general path
    assert mixed.points.tobytes() == pts.tobytes()
    assert mixed.errors == {"invalid-msgp": 1}


def test_order_preserved_across_message_types() -> None:
    k = MKey(b"s" * 16, 1)
    msgs = [
        encode_metricpoint_array([(k, 1.0, 100), (k, 2.0, 110)]),
        encode_metricpoint(k, 3.0, 120),
        encode_metricpoint(k, 4.0, 130, with_org=False),
        encode_metricpoint_array([(k, 5.0, 140)], with_org=False),
        encode_metricpoint(k, 6.0, 150),
    ]
    batch = classify_and_decode(msgs, 1)
    assert batch.points["time"].tolist() == [100, 110, 120, 130, 140, 150]
    assert batch.points["msg_index"].tolist() == [0, 0, 1, 2, 3, 4]
    assert batch.points["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_invalid_time_removed_and_counted() -> None:
    k = MKey(b"t" * 16, 1)
    msgs = [encode_metricpoint(k, 1.0, t) for t in (0, 1, MAX_TS - 1, MAX_TS, 0xFFFFFFFF)]
    batch = classify_and_decode(msgs, 0)
    assert batch.points["time"].tolist() == [1, MAX_TS - 1]
    assert batch.points["msg_index"].tolist() == [1, 2]
    assert batch.errors == {"invalid-time": 3}


def test_no_org_counted_per_point() -> None:
    k = MKey(b"n" * 16, 1)
    msgs = [
        encode_metricpoint(k, 1.0, 5, with_org=False),
        encode_metricpoint_array([(k, 1.0, 5)] * 4, with_org=False),
    ]
    batch = classify_and_decode(msgs, 0)
    assert len(batch.points) == 0 and batch.errors == {"no-org": 5}
    batch = classify_and_decode(msgs, 12)
    assert batch.points["org"].tolist() == [12] * 5 and batch.errors == {}


def test_array_remainder_keeps_whole_points() -> None:
    k = MKey(b"r" * 16, 1)
    raw = encode_metricpoint_array([(k, 1.0, 10), (k, 2.0, 20)])
    batch = classify_and_decode([raw + b"\0" * 31, raw[:-1]], 0)
    assert batch.points["time"].tolist() == [10, 20, 10]
    assert batch.errors == {"array-remainder": 2}


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\x02" + b"\0" * 31, "invalid-length"),
        (b"\x02" + b"\0" * 33, "invalid-length"),
        (b"\x03" + b"\0" * 32, "invalid-length"),
        (b"\x05\x02" + b"\0" * 27, "invalid-format"),
        (b"\x05\x04" + b"\0" * 32, "invalid-format"),
        (b"\x05", "invalid-format"),
        (b"\x00" + b"\0" * 20, "unsupported-format"),
        (b"\x01abc", "unsupported-format"),
        (b"\x04\x80", "invalid-control"),
        (b"\x89\xa2Id", "invalid-msgp"),
        (b"\x06", "invalid-msgp"),
    ],
)
def test_error_reasons(raw: bytes | None, reason: str) -> None:
    batch = classify_and_decode([raw], 1)
    assert batch.errors == {reason: 1}
    assert len(batch.points) == 0 and not batch.metricdata and not batch.control


def test_metricdata_and_control_are_returned_with_index() -> None:
    md = MetricData("1." + "cd" * 16, 1, "x.y", 60, 2.0, "", 1600000000, "gauge", ["a=b"])
    ctl = ControlMsg([MetricDefinition(parse_mkey("1." + "cd" * 16), 1, "x.y", 60)], 2)
    k = MKey(b"p" * 16, 1)
    msgs = [
        encode_metricpoint(k, 1.0, 5),
        encode_metricdata(md),
        encode_control(ctl),
        encode_metricpoint(k, 2.0, 6),
    ]
    batch = classify_and_decode(tuple(msgs), 0)
    assert batch.metricdata == [(1, md)]
    assert batch.control == [(2, ctl)]
    assert batch.points["msg_index"].tolist() == [0, 3]


def test_empty_batch() -> None:
    batch = classify_and_decode([], 0)
    assert len(batch.points) == 0 and batch.points.dtype == POINT_DTYPE and batch.errors == {}


def test_numpy_encoders_match_scalar_encoders() -> None:
    k = parse_mkey("5." + "0123456789abcdef" * 2)
    pts = np.zeros(3, dtype=POINT_DTYPE)
    pts["k0"], pts["k1"] = k.words
    pts["org"] = 5
    pts["value"] = [1.0, -2.5, 3.25]
    pts["time"] = [10, 20, 30]
    triples = [(k, v, t) for v, t in zip([1.0, -2.5, 3.25], [10, 20, 30], strict=True)]
    for with_org in (True, False):
        assert encode_metricpoint_array_np(pts, with_org) == encode_metricpoint_array(triples, with_org)
        assert encode_metricpoints_many(pts, with_org) == [
            encode_metricpoint(*t, with_org=with_org) for t in triples
        ]


def test_empty_array_refused() -> None:
    with pytest.raises(ValueError):
        encode_metricpoint_array([])


# The fast path is taken when every message is 33 bytes long and starts with 0x02; batches that pass only part
# of that test (all 33 bytes but another first byte, or a 33-byte average from other lengths) must decode
# exactly as the per-message reference does.
thirty_three = st.one_of(
    single_with,
    st.binary(min_size=32, max_size=32).map(lambda b: b"\x02" + b),
    st.binary(min_size=32, max_size=32).map(lambda b: b"\x03" + b),
    st.binary(min_size=32, max_size=32).map(lambda b: b"\x05\x02" + b[:31]),
    st.binary(min_size=33, max_size=33),
)


@given(st.lists(thirty_three, min_size=1, max_size=40), st.sampled_from([0, 1, 77]))
@settings(max_examples=300, deadline=None)
def test_all_33_byte_batches_equal_reference(values: list, default_org: int) -> None:
    batch = classify_and_decode(values, default_org)
    points, errors, md_idx, ctl_idx = reference_decode(values, default_org)
    # values compared bit for bit: a NaN point is equal to its reference (NaN != NaN as floats)
    assert _bits(as_tuples(batch.points)) == _bits(points)
    assert {k: v for k, v in batch.errors.items() if k not in ("invalid-msgp", "invalid-control")} == errors


def _bits(points: list[tuple]) -> list[tuple]:
    return [(*p[:2], struct.pack("<d", p[2]), *p[3:]) for p in points]


def test_lengths_averaging_33_are_not_the_fast_path() -> None:
    """32- and 34-byte 0x02 messages sum to 33 bytes each: all invalid, none decoded as points."""
    k = MKey(b"q" * 16, 1)
    good = encode_metricpoint(k, 1.0, 1500000000)
    values = [good[:32], good + b"\x02"] * 10
    batch = classify_and_decode(values, 0)
    assert len(batch.points) == 0
    assert batch.errors == {"invalid-length": 20}


def test_tombstone_in_homogeneous_batch() -> None:
    k = MKey(b"t" * 16, 1)
    values = [encode_metricpoint(k, float(i), 1500000000 + i) for i in range(5)]
    values[2] = None
    batch = classify_and_decode(values, 0)
    assert batch.points["msg_index"].tolist() == [0, 1, 3, 4]
    assert batch.errors == {"empty": 1}


@settings(max_examples=150, deadline=None)
@given(
    msgs=st.lists(
        st.tuples(st.binary(min_size=0, max_size=3), st.integers(0, 5), st.integers(-5, 1 << 30)),
        max_size=12,
    ),
    size=st.sampled_from([32, 28]),
    org=st.integers(0, (1 << 32) - 1),
)
def test_c_gather_writes_the_records_a_numpy_reference_writes(msgs, size, org) -> None:
    """`_points.gather` (one pass in C) against the record layout built field by field in numpy: bodies as on
    the wire, org set for 28-byte bodies, msg_index, zero padding; each message's points at its own offset."""
    from metrictank.schema import _points
    from metrictank.schema.points import POINT_DTYPE, WIRE28_DTYPE, WIRE32_DTYPE

    rng = np.random.default_rng(len(msgs))
    buf, starts, counts, idx = b"", [], [], []
    for prefix, cnt, mi in msgs:
        buf += prefix
        starts.append(len(buf))
        buf += rng.integers(0, 256, cnt * size, dtype=np.uint8).tobytes()
        counts.append(cnt)
        idx.append(mi)
    got = np.frombuffer(
        _points.gather(
            buf,
            np.asarray(starts, np.int64).tobytes(),
            np.asarray(counts, np.int64).tobytes(),
            np.asarray(idx, np.int32).tobytes(),
            size,
            org,
        ),
        POINT_DTYPE,
    )
    want = np.zeros(sum(counts), POINT_DTYPE)
    pos = 0
    for s, cnt, mi in zip(starts, counts, idx, strict=True):
        wire = np.frombuffer(buf, WIRE32_DTYPE if size == 32 else WIRE28_DTYPE, count=cnt, offset=s)
        for f in wire.dtype.names:
            want[f][pos : pos + cnt] = wire[f]
        if size == 28:
            want["org"][pos : pos + cnt] = org
        want["msg_index"][pos : pos + cnt] = mi
        pos += cnt
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "starts, counts, size, why",
    [
        ([0], [2], 32, "run past"),  # 2 points need 64 bytes, the buffer has 40
        ([-1], [1], 32, "run past"),
        ([0], [-1], 32, "run past"),
        ([0], [1], 30, "size must be"),
    ],
)
def test_c_gather_refuses_what_does_not_fit_the_buffer(starts, counts, size, why) -> None:
    from metrictank.schema import _points

    with pytest.raises(ValueError, match=why):
        _points.gather(
            b"x" * 40,
            np.asarray(starts, np.int64).tobytes(),
            np.asarray(counts, np.int64).tobytes(),
            np.zeros(len(starts), np.int32).tobytes(),
            size,
            0,
        )
