"""Cassandra table/row-key/TTL math, rollup boundaries and index control messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrictank.schema import (
    ROW_KEY_BUCKET,
    AMKey,
    ControlMsg,
    DecodeError,
    MetricDefinition,
    MKey,
    agg_boundaries,
    agg_boundary,
    classify_and_decode,
    decode_control,
    encode_control,
    read_lower_bound,
    row_key,
    row_keys_for_range,
    table_for_ttl,
    write_ttl,
)

H = 3600


@pytest.mark.parametrize(
    "ttl, table, window",
    [
        (0, "metric_0", 1),
        (H - 1, "metric_0", 1),
        (H, "metric_1", 1),
        (2 * H - 1, "metric_1", 1),
        (2 * H, "metric_2", 1),
        (31 * H, "metric_16", 1),
        (32 * H, "metric_32", 2),
        (64 * H, "metric_64", 4),
        (200 * H, "metric_128", 7),
        (256 * H, "metric_256", 13),
        (1023 * H + 3599, "metric_512", 26),
        (1024 * H, "metric_1024", 52),
        (4096 * H, "metric_4096", 205),
        (32768 * H, "metric_32768", 1639),
    ],
)
def test_table_for_ttl_matches_go_table(ttl: int, table: str, window: int) -> None:
    assert table_for_ttl(ttl) == (table, window)


def test_table_window_factor() -> None:
    assert table_for_ttl(512 * H, window_factor=10) == ("metric_512", 52)


def test_row_keys_for_range_go_example() -> None:
    # the worked example in Metrictank's SearchTable comment
    assert row_keys_for_range("k", 5222000, 7555000) == ["k_2", "k_3"]
    assert row_keys_for_range("k", 0, 1) == ["k_0"]
    assert row_keys_for_range("k", 0, ROW_KEY_BUCKET) == ["k_0"]
    assert row_keys_for_range("k", 0, ROW_KEY_BUCKET + 1) == ["k_0", "k_1"]
    assert row_keys_for_range("k", 10, 10) == []


@given(st.integers(0, 2**31), st.integers(1, 10 * ROW_KEY_BUCKET))
def test_row_keys_cover_every_t0_in_range(start: int, length: int) -> None:
    end = start + length
    keys = row_keys_for_range("s", start, end)
    for t0 in (start, end - 1, (start + end) // 2):
        assert row_key("s", t0) in keys
    assert len(keys) == (end - 1) // ROW_KEY_BUCKET - start // ROW_KEY_BUCKET + 1


def test_row_key_with_amkey() -> None:
    ak = AMKey(MKey(b"\x01" * 16, 3), "max", 3600)
    assert row_key(ak, ROW_KEY_BUCKET * 5 + 1) == f"3.{'01' * 16}_max_3600_5"


def test_write_ttl() -> None:
    assert write_ttl(1000, 600, 3600, 2000) == 3200
    assert write_ttl(1000, 600, 3600, 5200) == 0  # expired: skip
    assert write_ttl(1000, 600, 3600, 6000) < 0


def test_read_lower_bound() -> None:
    b = ROW_KEY_BUCKET
    assert read_lower_bound(b * 3 + 10000, 3600) == b * 3 + 10000 - 3600
    assert read_lower_bound(b * 3 + 100, 3600) == b * 3  # not before the first row
    assert read_lower_bound(100, 3600) == 0  # no uint32 wrap-around


@given(st.integers(1, 2**32 - 1), st.sampled_from([1, 2, 10, 60, 600, 3600, 86400, 7]))
def test_agg_boundary_properties(ts: int, span: int) -> None:
    b = agg_boundary(ts, span)
    assert b % span == 0 and ts <= b < ts + span
    assert b == ts + span - ((ts - 1) % span + 1)  # Go's expression


def test_agg_boundaries_vectorised() -> None:
    rng = np.random.default_rng(7)
    ts = rng.integers(1, 2**31, 5000).astype(np.uint32)
    for span in (1, 60, 600, 86400):
        got = agg_boundaries(ts, span)
        assert got.dtype == np.uint32
        assert got.tolist() == [agg_boundary(int(t), span) for t in ts]


# ----------------------------------------------------------------------------------------- control messages


def test_control_encoding_layout() -> None:
    d = MetricDefinition(MKey(b"\xaa" * 16, 200), 200, "a.b", 10, "ms", "gauge", ["x=y"], 1500000000, 3)
    raw = encode_control(ControlMsg([d], 1))
    expected = (
        b"\x04\x82\xa4Defs\x91"
        b"\x89\xa2Id\x82\xa3Key\xc4\x10" + b"\xaa" * 16 + b"\xa3Org\xcc\xc8"
        b"\xa5OrgId\xcc\xc8\xa4Name\xa3a.b\xa8Interval\x0a\xa4Unit\xa2ms\xa5Mtype\xa5gauge"
        b"\xa4Tags\x91\xa3x=y\xaaLastUpdate\xd2" + (1500000000).to_bytes(4, "big") + b"\xa9Partition\x03"
        b"\xa2Op\x01"
    )
    assert raw == expected
    assert decode_control(raw) == ControlMsg([d], 1)


@given(
    st.lists(
        st.builds(
            MetricDefinition,
            st.builds(MKey, st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1)),
            st.integers(0, 2**32 - 1),
            st.text(max_size=20),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=5),
            st.text(max_size=8),
            st.lists(st.text(max_size=10), max_size=3),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=5,
    ),
    st.integers(0, 2),
)
def test_control_roundtrip(defs: list, op: int) -> None:
    msg = ControlMsg(defs, op)
    raw = encode_control(msg)
    assert decode_control(raw) == msg
    assert classify_and_decode([raw], 0).control == [(0, msg)]
    for cut in range(1, len(raw)):
        with pytest.raises(DecodeError):
            decode_control(raw[:cut])


@pytest.mark.parametrize(
    "raw",
    [b"\x04", b"\x04\x81\xa2Op\x03", b"\x04\x81\xa4Defs\x90", b"\x04\x92\x01\x02", b"\x05", b""],
)
def test_control_rejects(raw: bytes) -> None:
    with pytest.raises(DecodeError) as e:
        decode_control(raw)
    assert e.value.reason == "invalid-control"
