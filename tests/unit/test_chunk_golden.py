"""The chunk codec against blobs produced by Metrictank's own Go code (tests/testdata/metrictank-golden.jsonl).

Byte equality matters because Metrictank nodes and tools read the chunks we write to Cassandra, and we read
theirs, including the legacy Series4h formats still found in old tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metrictank.chunk import decode_chunk, decode_chunks, encode_chunk, encode_chunks

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"


def _load(kind: str) -> list[dict]:
    with GOLDEN.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["type"] == kind]


CHUNKS = _load("chunk")
LEGACY = _load("chunk_legacy")


def _points(row: dict) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array([p[0] for p in row["points"]], dtype=np.uint32)
    vals = np.array([float(p[1]) for p in row["points"]], dtype=np.float64)
    return ts, vals


def _assert_points(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.uint32 and got[1].dtype == np.float64
    np.testing.assert_array_equal(got[0], want[0])
    # bit-exact: NaN payloads and -0.0 must survive
    np.testing.assert_array_equal(got[1].view(np.uint64), want[1].view(np.uint64))


def test_golden_file_has_the_expected_vectors() -> None:
    assert len(CHUNKS) == 201
    assert len(LEGACY) >= 1
    assert all(bytes.fromhex(r["hex"])[0] == 0x02 for r in CHUNKS)


@pytest.mark.parametrize("row", CHUNKS, ids=lambda r: f"{r['t0']}-{r['span']}-{len(r['points'])}")
def test_encode_matches_metrictank_bytes(row: dict) -> None:
    ts, vals = _points(row)
    assert encode_chunk(row["t0"], row["span"], ts, vals).hex() == row["hex"]


@pytest.mark.parametrize("row", CHUNKS + LEGACY, ids=lambda r: f"{r['type']}-{r['t0']}-{len(r['points'])}")
def test_decode_gives_metrictank_points(row: dict) -> None:
    _assert_points(decode_chunk(row["t0"], bytes.fromhex(row["hex"])), _points(row))


def test_encode_accepts_python_lists() -> None:
    row = CHUNKS[0]
    ts = [p[0] for p in row["points"]]
    vals = [p[1] for p in row["points"]]
    assert encode_chunk(row["t0"], row["span"], ts, vals).hex() == row["hex"]


def test_batch_encode_matches_metrictank_bytes_per_span() -> None:
    spans = sorted({r["span"] for r in CHUNKS})
    for span in spans:
        rows = [r for r in CHUNKS if r["span"] == span]
        t0s = np.array([r["t0"] for r in rows], dtype=np.uint32)
        counts = np.array([len(r["points"]) for r in rows], dtype=np.int64)
        ts = np.concatenate([_points(r)[0] for r in rows])
        vals = np.concatenate([_points(r)[1] for r in rows])
        blobs = encode_chunks(t0s, span, counts, ts, vals)
        assert [b.hex() for b in blobs] == [r["hex"] for r in rows]


def test_batch_decode_of_all_formats_matches_points() -> None:
    rows = CHUNKS + LEGACY
    t0s = np.array([r["t0"] for r in rows], dtype=np.uint32)
    counts, ts, vals = decode_chunks(t0s, [bytes.fromhex(r["hex"]) for r in rows])
    assert counts.tolist() == [len(r["points"]) for r in rows]
    want_ts = np.concatenate([_points(r)[0] for r in rows])
    want_vals = np.concatenate([_points(r)[1] for r in rows])
    _assert_points((ts, vals), (want_ts, want_vals))


def test_legacy_series4h_ignores_the_t0_argument() -> None:
    """Series4h carries its own t0, and Metrictank reads that one."""
    for row in LEGACY:
        _assert_points(decode_chunk(0, bytes.fromhex(row["hex"])), _points(row))
