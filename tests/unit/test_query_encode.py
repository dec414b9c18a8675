"""Output encoding: the vectorised number formatter must print exactly what Go's strconv 'f', -1 does
(shortest digits that read back as the same float, positional notation)."""

import json
import math
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.query.encode import datapoints_json, format_floats, render_json
from metrictank.query.series import Series


def shortest_positional(x: float) -> str:
    """Reference: Python's repr has the shortest round-trip digits; rewrite it without an exponent."""
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_formatting_is_shortest_round_trip(xs) -> None:
    got = format_floats(np.array(xs, dtype=np.float64))
    for x, g in zip(xs, got, strict=True):
        assert float(g) == x
        assert "e" not in g and "E" not in g
        if x != 0:  # -0.0 prints as 0
            assert g == shortest_positional(x)


def test_typical_metric_values() -> None:
    xs = [
        0.0,
        1.0,
        -1.0,
        0.1,
        0.25,
        12.5,
        1 / 3,
        99.99,
        1e-7,
        123456789.0,
        2**53,
        1e16 + 2,
        1e20,
        1e300,
        5e-324,
    ]
    assert format_floats(np.array(xs)) == [
        "0",
        "1",
        "-1",
        "0.1",
        "0.25",
        "12.5",
        "0.3333333333333333",
        "99.99",
        "0.0000001",
        "123456789",
        "9007199254740992",
        "10000000000000002",
        "100000000000000000000",
        "1" + "0" * 300,
        "0." + "0" * 323 + "5",
    ]


def test_large_non_integers_and_small_fractions() -> None:
    xs = [4503599627370495.5, 1e15 + 0.125, 99999999.99999999, 0.000123, 2.5e-5]
    assert format_floats(np.array(xs)) == [
        "4503599627370495.5",
        "1000000000000000.1",
        "99999999.99999999",
        "0.000123",
        "0.000025",
    ]


def test_null_and_infinities() -> None:
    assert format_floats(np.array([math.nan, math.inf, -math.inf, 1.5])) == [
        "null",
        "1e9999",
        "-1e9999",
        "1.5",
    ]


def test_datapoints_json_is_valid_json() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal(1000) * 1e3
    v[::5] = np.nan
    doc = json.loads(datapoints_json(v, 1_700_000_000, 10))
    assert len(doc) == 1000
    for i, (val, ts) in enumerate(doc):
        assert ts == 1_700_000_000 + 10 * i
        assert (val is None) if math.isnan(v[i]) else (val == v[i])
    assert datapoints_json(np.array([]), 0, 10) == b"[]"


def test_render_json_document() -> None:
    s = Series('a"b', "a", {"name": 'a"b', "dc": "eu"}, 60, 60, np.array([1.0, np.nan]))
    doc = json.loads(render_json([s, Series("e", "e", {}, 0, 10, np.array([]))]))
    assert doc == [
        {"target": 'a"b', "tags": {"dc": "eu", "name": 'a"b'}, "datapoints": [[1, 60], [None, 120]]},
        {"target": "e", "datapoints": []},
    ]


_metric_floats = st.one_of(
    st.floats(allow_infinity=True),  # anything, NaN and infinities included
    st.integers(-(10**9), 10**9).map(float),  # counters and gauges: integral values
    st.decimals(-(10**6), 10**6, places=3, allow_nan=False, allow_infinity=False).map(
        float
    ),  # a few decimals
    st.sampled_from([0.0, -0.0, 1e-5, 9.999e-6, 1e15, 1e16, 9999999999999998.0, 2.0**53, 0.1 + 0.2]),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_metric_floats, min_size=1, max_size=60), st.integers(0, 2**33), st.sampled_from([1, 10, 60]))
def test_orjson_path_writes_the_same_bytes_as_the_numpy_formatter(xs, start, step) -> None:
    """datapoints_json takes orjson's output where it can; it must be byte for byte what the reference
    (numpy) formatter writes, or the fast path must decline."""
    from metrictank.query.encode import _numpy_datapoints, _orjson_datapoints

    values = np.array(xs, dtype=np.float64)
    stamps = start + step * np.arange(len(values), dtype=np.int64)
    reference = _numpy_datapoints(values, stamps)
    fast = _orjson_datapoints(values, stamps)
    if fast is not None:
        assert fast == reference
    assert datapoints_json(values, start, step) == reference


def test_orjson_path_is_taken_for_ordinary_panels() -> None:
    """The speed-up must not silently stop applying (orjson missing, a guard too strict)."""
    from metrictank.query.encode import _orjson_datapoints

    values = np.round(np.linspace(-50, 50, 301), 2)
    values[::7] = np.nan
    assert _orjson_datapoints(values, 1_700_000_000 + 10 * np.arange(301, dtype=np.int64)) is not None
