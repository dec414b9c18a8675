"""MetricData msgpack encoding/decoding and validation."""

from __future__ import annotations

import math
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.schema import (
    DecodeError,
    MetricData,
    decode_metricdata,
    eat_dots,
    encode_metricdata,
    series_id,
    validate_metricdata,
)

I64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
metricdatas = st.builds(
    MetricData,
    id=st.text(max_size=80),
    org_id=I64,
    name=st.text(max_size=300),
    interval=I64,
    value=st.floats(allow_nan=False),
    unit=st.text(max_size=10),
    time=I64,
    mtype=st.text(max_size=10),
    tags=st.lists(st.text(max_size=40), max_size=20),
)


def good_md(**kw) -> MetricData:
    base = dict(
        org_id=1, name="a.b.c", interval=10, value=1.5, unit="ms", time=1500000000, mtype="gauge", tags=[]
    )
    base.update(kw)
    md = MetricData(id="", **base)
    md.id = series_id(md.org_id, md.name, md.unit, md.mtype, md.interval, md.tags)
    return md


# ---------------------------------------------------------------------------------------------- encoding


@given(metricdatas)
@settings(max_examples=300)
def test_roundtrip(md: MetricData) -> None:
    raw = encode_metricdata(md)
    assert decode_metricdata(raw) == md
    # an independent msgpack reader agrees on every field
    ref = msgpack.unpackb(raw, raw=False)
    assert list(ref) == ["Id", "OrgId", "Name", "Interval", "Value", "Unit", "Time", "Mtype", "Tags"]
    assert ref["OrgId"] == md.org_id and ref["Time"] == md.time and ref["Tags"] == md.tags


@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, "00"),
        (127, "7f"),
        (128, "d10080"),  # Go never uses int8/uint8 for positives
        (255, "d100ff"),
        (32767, "d17fff"),
        (32768, "d200008000"),
        ((1 << 31) - 1, "d27fffffff"),
        (1 << 31, "d30000000080000000"),
        ((1 << 63) - 1, "d37fffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-32768, "d18000"),
        (-32769, "d2ffff7fff"),
        (-(1 << 31), "d280000000"),
        (-(1 << 31) - 1, "d3ffffffff7fffffff"),
        (-(1 << 63), "d38000000000000000"),
    ],
)
def test_smallest_signed_int(value: int, encoded: str) -> None:
    raw = encode_metricdata(MetricData(interval=value))
    prefix = b"\x89\xa2Id\xa0\xa5OrgId\x00\xa4Name\xa0\xa8Interval"
    assert raw.startswith(prefix)
    assert raw[len(prefix) :].startswith(bytes.fromhex(encoded) + b"\xa5Value")


def test_value_always_float64_and_nil_tags_empty_array() -> None:
    md = MetricData(value=2.0, tags=None)  # type: ignore[arg-type]
    raw = encode_metricdata(md)
    assert b"\xa5Value\xcb" + struct.pack(">d", 2.0) in raw
    assert raw.endswith(b"\xa4Tags\x90")


@pytest.mark.parametrize(
    "n, header", [(31, "bf"), (32, "d920"), (255, "d9ff"), (256, "da0100"), (70000, "db00011170")]
)
def test_string_headers(n: int, header: str) -> None:
    raw = encode_metricdata(MetricData(id="x" * n))
    assert raw[4 : 4 + len(header) // 2] == bytes.fromhex(header)


def test_out_of_range_int_refused() -> None:
    with pytest.raises(ValueError):
        encode_metricdata(MetricData(time=1 << 63))


# ---------------------------------------------------------------------------------------------- decoding


def _pack(d: dict, **kw) -> bytes:
    return msgpack.packb(d, use_bin_type=True, **kw)


FULL = {
    "Id": "1.0dd2132bf7bcb5dcbde9786f9eea621b",
    "OrgId": 1,
    "Name": "some.id",
    "Interval": 10,
    "Value": 1.5,
    "Unit": "ms",
    "Time": 1500000000,
    "Mtype": "gauge",
    "Tags": ["a=b"],
}
EXPECTED = MetricData(
    "1.0dd2132bf7bcb5dcbde9786f9eea621b", 1, "some.id", 10, 1.5, "ms", 1500000000, "gauge", ["a=b"]
)


def test_any_key_order_unsigned_ints_float32() -> None:
    d = dict(reversed(list(FULL.items())))
    d["Time"] = 4000000000  # msgpack-python writes this as uint32
    d["Interval"] = 200  # and this as uint8
    raw = _pack(d, use_single_float=True)
    assert b"\xca" in raw and b"\xce" in raw and b"\xcc" in raw
    md = decode_metricdata(raw)
    assert md.time == 4000000000 and md.interval == 200 and md.value == 1.5
    assert md.name == "some.id" and md.tags == ["a=b"]


def test_nil_tags_missing_fields_unknown_keys_trailing_bytes() -> None:
    d = {"Name": "x", "Tags": None, "Extra": {"nested": [1, 2, {3: 4}]}, b"OrgId": 7}
    md = decode_metricdata(_pack(d) + b"\xc1trailing")
    assert md == MetricData(name="x", org_id=7, tags=[])


def test_invalid_utf8_name_survives_decode_and_fails_validation() -> None:
    d = dict(FULL)
    raw = _pack(d).replace(b"\xa7some.id", b"\xa7some.\xff\xfe")
    md = decode_metricdata(raw)
    # re-encoding carries the original bytes (Go passes strings through untouched)
    assert encode_metricdata(md) == encode_metricdata(EXPECTED).replace(b"\xa7some.id", b"\xa7some.\xff\xfe")
    assert validate_metricdata(md) == "invalid-name"


@pytest.mark.parametrize(
    "field, value",
    [
        ("Value", 1),  # Go's ReadFloat64 refuses ints
        ("OrgId", "1"),
        ("OrgId", True),
        ("OrgId", 1.0),
        ("Time", 1 << 63),  # uint64 above int64 max
        ("Name", b"bytes"),  # bin is not str
        ("Tags", "a=b"),
        ("Tags", ["a=b", 3]),
        ("Id", None),
    ],
)
def test_wrong_types_rejected(field: str, value: object) -> None:
    d = dict(FULL)
    d[field] = value
    with pytest.raises(DecodeError) as e:
        decode_metricdata(_pack(d))
    assert e.value.reason == "invalid-msgp"


@pytest.mark.parametrize(
    "raw", [b"", b"\x92\x01\x02", b"\xc1", b"\x81\x01\x02", b"\xa3abc", b"\x02" + b"\0" * 32]
)
def test_not_a_map_rejected(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_metricdata(raw)


@given(metricdatas)
@settings(max_examples=100)
def test_every_truncation_is_a_decode_error(md: MetricData) -> None:
    raw = encode_metricdata(md)
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            decode_metricdata(raw[:cut])


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_random_bytes_only_decode_error(raw: bytes) -> None:
    try:
        md = decode_metricdata(raw)
    except DecodeError as e:
        assert e.reason == "invalid-msgp"
    else:
        assert isinstance(md, MetricData)


@given(metricdatas, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
@settings(max_examples=300)
def test_corrupted_bytes_only_decode_error(md: MetricData, pos: int, byte: int) -> None:
    raw = bytearray(encode_metricdata(md))
    raw[pos % len(raw)] = byte
    try:
        decode_metricdata(bytes(raw))
    except DecodeError:
        pass


# -------------------------------------------------------------------------------------------- validation


def test_valid() -> None:
    assert validate_metricdata(good_md(tags=["a=b", "c=d~"])) is None


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(org_id=0), "invalid-orgid"),
        (dict(org_id=-1), "invalid-orgid"),
        (dict(org_id=1 << 32), "invalid-orgid"),
        (dict(interval=0), "invalid-interval"),
        (dict(interval=-10), "invalid-interval"),
        (dict(interval=(1 << 31) - 1), "invalid-interval"),
        (dict(name=""), "invalid-name"),
        (dict(name="..."), "invalid-name"),
        (dict(name="a.\udcff"), "invalid-name"),
        (dict(mtype=""), "invalid-mtype"),
        (dict(mtype="Gauge"), "invalid-mtype"),
        (dict(tags=["a"]), "invalid-tags"),
        (dict(tags=["=b"]), "invalid-tags"),
        (dict(tags=["a="]), "invalid-tags"),
        (dict(tags=["a;x=b"]), "invalid-tags"),
        (dict(tags=["a!=b"]), "invalid-tags"),
        (dict(tags=["a^=b"]), "invalid-tags"),
        (dict(tags=["a=b;c"]), "invalid-tags"),
        (dict(tags=["a=~b"]), "invalid-tags"),
        (dict(tags=["ok=1", "a=\udcff"]), "invalid-tags"),
        (dict(time=0), "invalid-time"),
        (dict(time=-5), "invalid-time"),
        (dict(time=(1 << 31) - 1), "invalid-time"),
    ],
)
def test_invalid_reasons(kw: dict, reason: str) -> None:
    md = good_md()
    for k, v in kw.items():
        setattr(md, k, v)
    assert validate_metricdata(md) == reason


def test_first_failure_wins_in_go_order() -> None:
    md = good_md(org_id=0, interval=0, name="", mtype="x", time=0)
    assert validate_metricdata(md) == "invalid-orgid"
    md.org_id = 1
    assert validate_metricdata(md) == "invalid-interval"
    md.interval = 10
    assert validate_metricdata(md) == "invalid-name"
    md.name = "ok"
    assert validate_metricdata(md) == "invalid-mtype"
    md.mtype = "rate"
    assert validate_metricdata(md) == "invalid-time"


def test_tag_value_may_contain_equals_and_tilde_later() -> None:
    assert validate_metricdata(good_md(tags=["k=v=w~", "k2=a~b"])) is None


def test_bad_id() -> None:
    md = good_md()
    md.id = "1.xyz"
    assert validate_metricdata(md) == "invalid-id"


def test_name_normalised_in_place_id_untouched() -> None:
    md = good_md(name="..a..b...c.")
    ident = md.id
    assert validate_metricdata(md) is None
    assert md.name == "a.b.c" and md.id == ident


@pytest.mark.parametrize(
    "name, expected",
    [("", ""), (".", ""), ("....", ""), ("a", "a"), ("a.b", "a.b"), (".a", "a"), ("a.", "a"), ("a..b", "a.b"),
     ("..a...b..", "a.b"), ("a.b.c", "a.b.c"), ("é..漢", "é.漢")],
)  # fmt: skip
def test_eat_dots(name: str, expected: str) -> None:
    assert eat_dots(name) == expected


@given(st.text(alphabet=st.sampled_from("ab.é"), max_size=30))
def test_eat_dots_property(name: str) -> None:
    out = eat_dots(name)
    assert ".." not in out and not out.startswith(".") and not out.endswith(".")
    assert out.replace(".", "") == name.replace(".", "")
    assert [p for p in name.split(".") if p] == (out.split(".") if out else [])


def test_float_nan_and_inf_roundtrip() -> None:
    for v in (math.inf, -math.inf):
        assert decode_metricdata(encode_metricdata(MetricData(value=v))).value == v
    assert math.isnan(decode_metricdata(encode_metricdata(MetricData(value=math.nan))).value)


# ------------------------------------------------------------------------- the C decoder of the common shape


def _c_columns(buf: bytes, starts, lens) -> list:
    """decode_columns' rows as MetricData (None where it deferred), checking the columns' types on the way."""
    import numpy as np

    from metrictank.schema import _mdata

    ok, ids, orgs, names, ivs, vals, units, times, mtypes, tags = _mdata.decode_columns(buf, starts, lens)
    n = len(ok)
    assert len(ids) == len(names) == len(units) == len(mtypes) == len(tags) == n
    cols = [np.frombuffer(b, t).tolist() for b, t in ((orgs, np.int64), (ivs, np.int64), (vals, np.float64))]
    orgs_l, ivs_l, vals_l = cols
    times_l = np.frombuffer(times, np.int64).tolist()
    out = []
    for j in range(n):
        if not ok[j]:
            assert ids[j] is names[j] is units[j] is mtypes[j] is tags[j] is None
            assert orgs_l[j] == ivs_l[j] == times_l[j] == 0 and vals_l[j] == 0.0
            out.append(None)
            continue
        assert (
            all(isinstance(x, str) for x in (ids[j], names[j], units[j], mtypes[j])) and type(tags[j]) is list
        )
        out.append(
            MetricData(
                ids[j], orgs_l[j], names[j], ivs_l[j], vals_l[j], units[j], times_l[j], mtypes[j], tags[j]
            )
        )
    return out


def _c_decode(raws: list[bytes]) -> list:
    import numpy as np

    lens = np.array([len(r) for r in raws], np.int32)
    starts = np.zeros(len(raws), np.int64)
    starts[1:] = np.cumsum(lens[:-1])
    return _c_columns(b"".join(raws), starts.tobytes(), lens.tobytes())


def _python_verdict(raw: bytes):
    try:
        return decode_metricdata(raw)
    except DecodeError as e:
        return e.reason


@given(metricdatas)
@settings(max_examples=300)
def test_c_decoder_takes_every_go_encoded_message_exactly(md: MetricData) -> None:
    raw = encode_metricdata(md)
    (got,) = _c_decode([raw])
    assert got is not None, "a Go-shaped message left to the slow path"
    assert got == decode_metricdata(raw) == md
    assert type(got.org_id) is type(got.time) is int and type(got.value) is float


@given(metricdatas, st.data())
@settings(max_examples=400)
def test_c_decoder_agrees_with_python_or_defers(md: MetricData, data) -> None:
    """Whatever the bytes (truncated, corrupted, re-encoded with other types), the C decoder either gives what
    the Python decoder gives or defers to it (None); it never accepts what Python rejects."""
    raw = bytearray(encode_metricdata(md))
    kind = data.draw(st.sampled_from(["flip", "truncate", "trail", "float32", "msgpack"]))
    if kind == "flip":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "trail":
        raw += data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "float32":
        raw = bytearray(
            _pack(
                {
                    "Id": md.id,
                    "OrgId": md.org_id,
                    "Name": md.name,
                    "Interval": md.interval,
                    "Value": md.value if abs(md.value) < 1e38 else 1.5,  # float32 range
                    "Unit": md.unit,
                    "Time": md.time,
                    "Mtype": md.mtype,
                    "Tags": md.tags or None,
                },
                use_single_float=True,
            )
        )
    else:  # msgpack-python's own encoding of the same map (str8 keys are never used for these short keys)
        raw = bytearray(
            _pack(
                dict(
                    zip(
                        ("Id", "OrgId", "Name", "Interval", "Value", "Unit", "Time", "Mtype", "Tags"),
                        (
                            md.id,
                            md.org_id,
                            md.name,
                            md.interval,
                            md.value,
                            md.unit,
                            md.time,
                            md.mtype,
                            md.tags,
                        ),
                        strict=True,
                    )
                )
            )
        )
    raw = bytes(raw)
    (got,) = _c_decode([raw])
    want = _python_verdict(raw)
    if got is not None:
        assert isinstance(want, MetricData), f"C accepted what Python rejects ({want})"
        assert got == want or (math.isnan(got.value) and math.isnan(want.value))
    if kind in ("trail", "float32", "msgpack"):
        assert got is not None, f"{kind}: a message of the common shape left to the slow path"


def test_c_decoder_defers_other_shapes_and_bad_bounds() -> None:
    other_order = _pack({k: FULL[k] for k in reversed(list(FULL))})
    int_value = _pack({**FULL, "Value": 3})
    big_uint = _pack({**FULL, "Time": 1 << 63})
    bad_tag = _pack({**FULL, "Tags": ["a=b", 5]})
    good = _pack(FULL)
    got = _c_decode([other_order, int_value, big_uint, bad_tag, good])
    assert got[:4] == [None, None, None, None]
    assert got[4] == EXPECTED
    # out-of-range (start, length) pairs are deferred, never read
    import numpy as np

    from metrictank.schema import _mdata

    starts = np.array([0, 5, -1], np.int64).tobytes()
    lens = np.array([len(good) + 1, 1000, 3], np.int32).tobytes()
    assert _c_columns(good, starts, lens) == [None, None, None]
    with pytest.raises(ValueError):
        _mdata.decode_columns(good, starts, lens[:4])


def test_c_decoder_shares_repeated_units_and_mtypes_and_survives_bad_rows_between() -> None:
    """Units and mtypes that repeat are one object per run (a column of a million "gauge" is one string); a
    deferred message in between, whose unit was new, does not leave the next ones pointing at freed memory."""
    rows = [
        _pack({**FULL, "Unit": "ms", "Mtype": "gauge"}),
        _pack({**FULL, "Unit": "ms", "Mtype": "gauge"}),
        _pack(
            {**FULL, "Unit": "fresh-unit", "Mtype": "rate", "Tags": ["a=b", 5]}
        ),  # deferred after Unit/Mtype
        _pack({**FULL, "Unit": "ms", "Mtype": "gauge"}),
        _pack({**FULL, "Unit": "fresh-unit", "Mtype": "rate"}),
        _pack({**FULL, "Unit": "fresh-unit", "Mtype": "rate"}),
    ]
    got = _c_decode(rows)
    assert got[2] is None
    assert [g.unit for g in got if g] == ["ms", "ms", "ms", "fresh-unit", "fresh-unit"]
    assert [g.mtype for g in got if g] == ["gauge", "gauge", "gauge", "rate", "rate"]
    assert got[0].unit is got[1].unit and got[4].unit is got[5].unit and got[4].mtype is got[5].mtype
    assert all(g == decode_metricdata(r) for g, r in zip(got, rows, strict=True) if g)
