"""Property and robustness tests for the chunk codec.

A slow, obviously-literal Python rendering of the format (spec section 4) serves as the oracle: the C codec
must produce the same bytes for SeriesLong and decode what the oracle writes in the legacy Series4h format,
which Metrictank can no longer write and of which the golden file holds a single example.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metrictank.chunk import (
    SPANS,
    ChunkError,
    decode_chunk,
    decode_chunks,
    encode_chunk,
    encode_chunks,
    span_code,
    span_of_code,
)

U32_MAX = 2**32 - 1
GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"

# ---------------------------------------------------------------------------------------------------------
# Reference implementation (bit strings)


def _bits(value: int, width: int) -> str:
    return format(value & ((1 << width) - 1), f"0{width}b")


def _pack(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


def _f2u(v: float) -> int:
    return struct.unpack(">Q", struct.pack(">d", v))[0]


def _dod_bits(dod: int, long_format: bool) -> str:
    if dod == 0:
        return "0"
    if -63 <= dod <= 64:
        return "10" + _bits(dod, 7)
    if -255 <= dod <= 256:
        return "110" + _bits(dod, 9)
    if -2047 <= dod <= 2048:
        return "1110" + _bits(dod, 12)
    return ("11110" if long_format else "1111") + _bits(dod, 32)


def _int32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


class _ValueWriter:
    def __init__(self, reset_rule: bool) -> None:
        self.window: tuple[int, int] | None = None
        self.reset_rule = reset_rule

    def bits(self, x: int) -> str:
        if x == 0:
            return "0"
        lead = min(64 - x.bit_length(), 31)
        trail = (x & -x).bit_length() - 1
        sig = 64 - lead - trail
        if self.window is not None:
            wl, wt = self.window
            cur = 64 - wl - wt
            if lead >= wl and trail >= wt and (not self.reset_rule or cur - sig < 22):
                return "10" + _bits(x >> wt, cur)
        self.window = (lead, trail)
        return "11" + _bits(lead, 5) + _bits(sig, 6) + _bits(x >> trail, sig)


def ref_series_long(t0: int, ts: list[int], vals: list[int], reset_rule: bool = True) -> str:
    out, prev_t, prev_delta, prev_v = [], None, 60, 0
    vw = _ValueWriter(reset_rule)
    for t, v in zip(ts, vals, strict=True):
        delta = t - (t0 if prev_t is None else prev_t)
        out.append(_dod_bits(_int32(delta - prev_delta), True))
        out.append(_bits(v, 64) if prev_t is None else vw.bits(v ^ prev_v))
        prev_t, prev_delta, prev_v = t, delta, v
    out.append("11111")
    return "".join(out)


def ref_encode(t0: int, span: int, ts: list[int], vals: list[int], reset_rule: bool = True) -> bytes:
    return bytes([2, SPANS.index(span)]) + _pack(ref_series_long(t0, ts, vals, reset_rule))


def ref_series4h(t0: int, ts: list[int], vals: list[int]) -> bytes:
    """Metrictank's Series4h: t0 in-stream, 14-bit first delta (wraps above 16383), no reset rule."""
    out = [_bits(t0, 32)]
    vw = _ValueWriter(reset_rule=False)
    prev_t = prev_delta = prev_v = None
    for t, v in zip(ts, vals, strict=True):
        if prev_t is None:
            out.append(_bits(t - t0, 14) + _bits(v, 64))
            prev_delta = t - t0
        else:
            delta = t - prev_t
            out.append(_dod_bits(_int32(delta - prev_delta), False))
            out.append(vw.bits(v ^ prev_v))
            prev_delta = delta
        prev_t, prev_v = t, v
    out.append("1111" + "1" * 32 + "0")
    return _pack("".join(out))


# ---------------------------------------------------------------------------------------------------------
# Strategies

float_bits = st.one_of(
    st.integers(0, 2**64 - 1),  # every bit pattern: NaN payloads, subnormals, +-inf, -0.0
    st.sampled_from([_f2u(x) for x in (0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 5e-324)]),
    st.sampled_from([0x7FF8000000000000, 0x7FF0000000000001, 0xFFFFFFFFFFFFFFFF, 0x000FFFFFFFFFFFFF]),
)


@st.composite
def series(draw: st.DrawFn, min_size: int = 0, max_size: int = 150) -> tuple[int, list[int], list[int]]:
    """t0 plus strictly increasing timestamps >= t0 (> 0) with any gaps, and arbitrary value bits."""
    n = draw(st.integers(min_size, max_size))
    t0 = draw(st.one_of(st.integers(0, U32_MAX), st.sampled_from([0, 1, 1_500_000_000, U32_MAX - 200])))
    gap = st.one_of(
        st.integers(1, 120),
        st.sampled_from([1, 10, 59, 60, 61, 64, 65, 124, 125, 316, 317, 2108, 2109]),
        st.integers(1, 2**32 - 1),
    )
    ts, t = [], t0 + draw(st.one_of(st.just(0), st.integers(0, 100), st.integers(0, U32_MAX)))
    t = min(max(t, 1), U32_MAX)
    for _ in range(n):
        if t > U32_MAX:
            break
        ts.append(t)
        t += draw(gap)
    smooth = draw(st.booleans())
    if smooth:  # values that exercise window reuse/reset: a random walk with few significant bits
        start = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
        steps = draw(st.lists(st.integers(-4, 4), min_size=len(ts), max_size=len(ts)))
        vals = [_f2u(start + 0.25 * sum(steps[: i + 1])) for i in range(len(ts))]
    else:
        vals = draw(st.lists(float_bits, min_size=len(ts), max_size=len(ts)))
    return t0, ts, vals


def _arrays(ts: list[int], vals: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(ts, dtype=np.uint32), np.array(vals, dtype=np.uint64).view(np.float64)


def _same(got: tuple[np.ndarray, np.ndarray], ts: list[int], vals: list[int]) -> None:
    assert got[0].tolist() == ts
    assert got[1].view(np.uint64).tolist() == vals


spans = st.sampled_from(SPANS)

# ---------------------------------------------------------------------------------------------------------
# Round trips and byte equality with the reference


@settings(max_examples=300, deadline=None)
@given(series(), spans)
def test_encode_equals_reference_and_round_trips(s: tuple[int, list[int], list[int]], span: int) -> None:
    t0, ts, vals = s
    blob = encode_chunk(t0, span, *_arrays(ts, vals))
    assert blob == ref_encode(t0, span, ts, vals)
    _same(decode_chunk(t0, blob), ts, vals)


@settings(max_examples=200, deadline=None)
@given(series(min_size=1, max_size=60))
def test_legacy_series4h_formats_decode(s: tuple[int, list[int], list[int]]) -> None:
    t0, ts, vals = s
    assume(ts[0] - t0 < 16384)  # Series4h cannot hold a larger first delta (see the overflow test)
    # Metrictank's overflow check adds the first delta to the next dod as int32; like Go we misread a
    # second delta of 2**31 s or more, which no real chunk has
    assume(len(ts) < 2 or ts[1] - ts[0] < 2**31)
    stream = ref_series4h(t0, ts, vals)
    _same(decode_chunk(0, b"\x00" + stream), ts, vals)
    _same(decode_chunk(t0, b"\x01\x0b" + stream), ts, vals)


def test_legacy_first_delta_overflow_is_repaired_like_metrictank() -> None:
    """A 14-bit first delta wraps beyond 4.5 h; Metrictank repairs it when the next delta would go negative."""
    t0 = 1_500_019_200
    ts, vals = [t0 + 20000, t0 + 20060, t0 + 20120], [_f2u(1.0), _f2u(2.0), _f2u(3.0)]
    _same(decode_chunk(t0, b"\x01\x1f" + ref_series4h(t0, ts, vals)), ts, vals)


def test_reference_matches_golden_and_golden_needs_the_reset_rule() -> None:
    """Validates the oracle, and shows the golden vectors pin down SeriesLong's 22-bit window-reset rule."""
    rows = [json.loads(line) for line in GOLDEN.open() if '"type": "chunk"' in line]
    without_rule = 0
    for r in rows:
        ts = [p[0] for p in r["points"]]
        vals = [_f2u(p[1]) for p in r["points"]]
        assert ref_encode(r["t0"], r["span"], ts, vals).hex() == r["hex"]
        without_rule += ref_encode(r["t0"], r["span"], ts, vals, reset_rule=False).hex() != r["hex"]
    assert without_rule > 0


def test_special_floats_round_trip_bit_exact() -> None:
    specials = [0x7FF8000000000001, 0xFFF0000000000001, 0x7FF4000000000000, _f2u(-0.0), _f2u(0.0)]
    specials += [_f2u(float("inf")), _f2u(float("-inf")), 1, 0x8000000000000001, 0x7FEFFFFFFFFFFFFF]
    ts = [100 + 10 * i for i in range(len(specials))]
    blob = encode_chunk(0, 600, *_arrays(ts, specials))
    assert blob == ref_encode(0, 600, ts, specials)
    _same(decode_chunk(0, blob), ts, specials)


def test_single_point_chunk() -> None:
    blob = encode_chunk(1_500_000_000, 600, [1_500_000_000], [42.5])
    assert blob == ref_encode(1_500_000_000, 600, [1_500_000_000], [_f2u(42.5)])
    _same(decode_chunk(1_500_000_000, blob), [1_500_000_000], [_f2u(42.5)])


def test_empty_chunk_is_header_and_end_marker() -> None:
    blob = encode_chunk(1_500_000_000, 600, np.empty(0, np.uint32), np.empty(0))
    assert blob == bytes([0x02, span_code(600), 0b11111000])
    ts, vals = decode_chunk(1_500_000_000, blob)
    assert ts.size == 0 and vals.size == 0


def test_day_chunk_at_one_second() -> None:
    t0 = 1_500_076_800
    ts = t0 + np.arange(86400, dtype=np.uint32)
    rng = np.random.default_rng(1)
    vals = np.round(np.cumsum(rng.normal(size=86400)), 2)
    vals[::1000] = np.nan
    blob = encode_chunk(t0, 86400, ts, vals)
    got = decode_chunk(t0, blob)
    np.testing.assert_array_equal(got[0], ts)
    np.testing.assert_array_equal(got[1].view(np.uint64), vals.view(np.uint64))
    assert blob == ref_encode(t0, 86400, ts.tolist(), vals.view(np.uint64).tolist())


def test_timestamp_extremes() -> None:
    ts = [1, 2, 2**31, U32_MAX - 1, U32_MAX]
    vals = [_f2u(float(i)) for i in range(5)]
    blob = encode_chunk(0, 86400, *_arrays(ts, vals))
    assert blob == ref_encode(0, 86400, ts, vals)
    _same(decode_chunk(0, blob), ts, vals)
    _same(decode_chunk(U32_MAX, encode_chunk(U32_MAX, 1, [U32_MAX], [1.0])), [U32_MAX], [_f2u(1.0)])


# ---------------------------------------------------------------------------------------------------------
# Batch calls


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(series(max_size=30), max_size=12), spans)
def test_batch_calls_equal_single_calls(chunks: list[tuple[int, list[int], list[int]]], span: int) -> None:
    t0s = np.array([c[0] for c in chunks], dtype=np.uint32)
    counts = np.array([len(c[1]) for c in chunks], dtype=np.int64)
    ts = np.array([t for c in chunks for t in c[1]], dtype=np.uint32)
    vals = np.array([v for c in chunks for v in c[2]], dtype=np.uint64).view(np.float64)
    blobs = encode_chunks(t0s, span, counts, ts, vals)
    assert blobs == [encode_chunk(c[0], span, *_arrays(c[1], c[2])) for c in chunks]
    got_counts, got_ts, got_vals = decode_chunks(t0s, blobs)
    assert got_counts.dtype == np.int64 and got_counts.tolist() == counts.tolist()
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_vals.view(np.uint64), vals.view(np.uint64))


def test_batch_decode_accepts_bytes_like_blobs() -> None:
    blob = encode_chunk(600, 600, [610, 620], [1.0, 2.0])
    counts, ts, _ = decode_chunks(np.array([600, 600, 600]), [blob, bytearray(blob), memoryview(blob)])
    assert counts.tolist() == [2, 2, 2] and ts.tolist() == [610, 620] * 3


def test_batch_reports_the_failing_chunk() -> None:
    good = encode_chunk(600, 600, [610], [1.0])
    with pytest.raises(ChunkError, match="chunk 1"):
        decode_chunks(np.array([600, 600]), [good, good[:-1]])
    with pytest.raises(ChunkError, match="chunk 1"):
        encode_chunks(
            np.array([600, 1200]), 600, np.array([1, 1]), np.array([610, 620]), np.array([1.0, 2.0])
        )


# ---------------------------------------------------------------------------------------------------------
# Invalid input


@pytest.mark.parametrize(
    ("t0", "ts"),
    [(1000, [999]), (1000, [1010, 1010]), (1000, [1010, 1005]), (0, [0, 10]), (0, [-1]), (0, [2**32])],
)
def test_encode_rejects_timestamps_metrictank_would_not_store(t0: int, ts: list[int]) -> None:
    with pytest.raises(ChunkError):
        encode_chunk(t0, 600, ts, [1.0] * len(ts))


@pytest.mark.parametrize(
    "bad", [dict(span=7), dict(span=0), dict(t0=-1), dict(t0=2**32), dict(values=[1.0, 2.0])]
)
def test_encode_rejects_bad_arguments(bad: dict) -> None:
    args = dict(t0=600, span=600, ts=[610], values=[1.0]) | bad
    with pytest.raises(ChunkError):
        encode_chunk(args["t0"], args["span"], args["ts"], args["values"])


def test_batch_encode_rejects_inconsistent_counts() -> None:
    for counts in ([2, 1], [3, -1], [1], [0, 1]):
        with pytest.raises(ChunkError):
            encode_chunks(
                np.array([600, 600])[: len(counts)], 600, np.array(counts), np.array([610, 620]), [1.0, 2]
            )


def test_spans_table() -> None:
    assert len(SPANS) == 32 and SPANS[0] == 1 and SPANS[11] == 600 and SPANS[31] == 86400
    assert all(span_of_code(span_code(s)) == s for s in SPANS)
    for bad_span in (0, 7, 601, None):
        with pytest.raises(ValueError):
            span_code(bad_span)  # type: ignore[arg-type]
    for bad_code in (-1, 32, 255):
        with pytest.raises(ValueError):
            span_of_code(bad_code)
    assert issubclass(ChunkError, ValueError)


# ---------------------------------------------------------------------------------------------------------
# Corrupt blobs: never crash, never hang, never read out of bounds, never return an invalid series

_GOOD = encode_chunk(1_500_000_000, 600, [1_500_000_010, 1_500_000_020, 1_500_000_035], [1.0, 2.5, -3.0])


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x02",
        b"\x02\x0b",
        b"\x01\x0b",
        b"\x00",
        b"\x03\x0b\xf8",
        b"\xff\x0b\xf8",
        b"\x02\x20\xf8",  # span code 32
        b"\x02\x0b\x00",  # a point, no end marker
        b"\x02\x0b\xf8\x00",  # a byte after the end marker
        b"\x02\x0b\xfc",  # padding after the end marker is not zero
        _GOOD + b"\x00",
        _GOOD[:-1],
    ],
)
def test_corrupt_blobs_raise(blob: bytes) -> None:
    with pytest.raises(ChunkError):
        decode_chunk(1_500_000_000, blob)
    with pytest.raises(ChunkError):
        decode_chunks(np.array([1_500_000_000], np.uint32), [blob])


def test_window_reuse_before_any_window_is_corrupt() -> None:
    # first point (dod 0 + raw value), then a point whose value says "reuse the window" ('10')
    bits = "0" + "0" * 64 + "0" + "10" + "1" + "11111"
    with pytest.raises(ChunkError):
        decode_chunk(0x1000, b"\x02\x0b" + _pack(bits))


def test_window_wider_than_64_bits_is_corrupt() -> None:
    bits = "0" + "0" * 64 + "0" + "11" + _bits(31, 5) + _bits(40, 6) + "1" * 40 + "11111"
    with pytest.raises(ChunkError):
        decode_chunk(0x1000, b"\x02\x0b" + _pack(bits))


def _check_decoded(t0: int, blob: bytes, ts: np.ndarray, vals: np.ndarray) -> None:
    """Whatever a mangled blob decodes to must still be a well-formed series of bounded size."""
    assert ts.dtype == np.uint32 and vals.dtype == np.float64 and len(ts) == len(vals)
    assert len(ts) <= max(0, (len(blob) - 2) * 8 - 5) // 2 + 1
    if blob[0] == 0x02 and len(ts):
        assert int(ts[0]) >= t0
    assert np.all(np.diff(ts.astype(np.int64)) > 0)


@settings(max_examples=300, deadline=None)
@given(series(max_size=40), st.data())
def test_every_truncation_raises(s: tuple[int, list[int], list[int]], data: st.DataObject) -> None:
    t0, ts, vals = s
    blob = encode_chunk(t0, 600, *_arrays(ts, vals))
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ChunkError):
        decode_chunk(t0, blob[:cut])


@settings(max_examples=500, deadline=None)
@given(series(max_size=40), st.data())
def test_bit_flips_raise_or_give_a_valid_series(
    s: tuple[int, list[int], list[int]], data: st.DataObject
) -> None:
    t0, ts, vals = s
    blob = bytearray(encode_chunk(t0, 600, *_arrays(ts, vals)))
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(8, len(blob) * 8 - 1))
        blob[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        got = decode_chunk(t0, bytes(blob))
    except ChunkError:
        return
    _check_decoded(t0, bytes(blob), *got)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([b"\x02\x0b", b"\x01\x0b", b"\x00", b""]),
    st.binary(max_size=300),
    st.integers(0, U32_MAX),
)
def test_random_bytes_raise_or_give_a_valid_series(header: bytes, body: bytes, t0: int) -> None:
    blob = header + body
    try:
        got = decode_chunk(t0, blob)
    except ChunkError:
        return
    _check_decoded(t0, blob, *got)


def test_long_runs_of_zero_bits_are_truncation_not_points() -> None:
    """Zero bits decode as 'same delta, same value' points forever: without an end marker that is truncation."""
    with pytest.raises(ChunkError):
        decode_chunk(1000, b"\x02\x0b" + bytes(100_000))


# ---------------------------------------------------------------------------------------------------------
# Output sizing, argument conversion, threads


def test_outputs_grow_beyond_the_initial_estimate() -> None:
    """Constant series take 2 bits a point, far denser than the decoder's first guess of the output size."""
    t0 = 1_500_076_800
    ts = t0 + np.arange(86400, dtype=np.uint32)
    vals = np.full(86400, 3.0)
    blob = encode_chunk(t0, 86400, ts, vals)
    got_ts, got_vals = decode_chunk(t0, blob)
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_vals, vals)
    counts, bts, bvals = decode_chunks(np.full(20, t0, np.uint32), [blob] * 20)
    assert counts.tolist() == [86400] * 20
    np.testing.assert_array_equal(bts, np.tile(ts, 20))
    np.testing.assert_array_equal(bvals, np.tile(vals, 20))


def test_empty_batches() -> None:
    assert encode_chunks(np.empty(0, np.uint32), 600, np.empty(0, np.int64), np.empty(0, np.uint32), []) == []
    counts, ts, vals = decode_chunks(np.empty(0, np.uint32), [])
    assert counts.size == ts.size == vals.size == 0
    assert (counts.dtype, ts.dtype, vals.dtype) == (np.int64, np.uint32, np.float64)


def test_any_array_layout_or_integer_type_gives_the_same_bytes() -> None:
    ts = np.array([610, 620, 631], dtype=np.uint32)
    vals = np.array([1.0, 2.0, 2.5])
    want = encode_chunk(600, 600, ts, vals)
    variants = [
        (ts.astype(np.int64), vals),
        (ts.tolist(), vals.tolist()),
        (np.repeat(ts, 2)[::2], np.repeat(vals, 2)[::2]),  # non-contiguous views
        (ts.astype(">u4"), vals.astype(">f8")),  # non-native byte order
        (ts, vals.astype(np.float32)),
    ]
    for v_ts, v_vals in variants:
        assert encode_chunk(600, 600, v_ts, v_vals) == want
    assert encode_chunks([600], 600, [3], ts.astype(np.int32), vals.tolist()) == [want]
    assert decode_chunks([600], [want])[1].tolist() == ts.tolist()


def test_batch_calls_are_thread_safe_without_the_gil() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    n = 500
    t0s = (1_500_000_000 + 1200 * np.arange(n)).astype(np.uint32)
    ts = np.repeat(t0s, 120) + np.tile(np.arange(120, dtype=np.uint32) * 10, n)
    vals = np.round(np.cumsum(rng.normal(size=n * 120)), 2)
    counts = np.full(n, 120, np.int64)
    blobs = encode_chunks(t0s, 1200, counts, ts, vals)

    def work(_: int) -> bool:
        again = encode_chunks(t0s, 1200, counts, ts, vals)
        c, t, v = decode_chunks(t0s, blobs)
        return again == blobs and np.array_equal(t, ts) and np.array_equal(v, vals)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(16)))
