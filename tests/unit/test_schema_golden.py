"""Every golden vector produced by Metrictank's Go code for the schema layer, one test per line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrictank.schema import (
    PARTITION_METHODS,
    AMKey,
    MetricData,
    agg_boundaries,
    agg_boundary,
    classify_and_decode,
    decode_metricdata,
    decode_persist,
    encode_metricdata,
    encode_metricpoint,
    encode_metricpoint_array,
    encode_persist,
    parse_mkey,
    partition,
    row_key,
    series_id,
    table_for_ttl,
)

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "metrictank-golden.jsonl"
TYPES = {
    "id",
    "partition",
    "metricdata_msgp",
    "metricpoint",
    "metricpoint_array",
    "persist_message",
    "cassandra_table",
    "row_key",
    "agg_boundary",
}


def _vectors() -> list:
    out = []
    with GOLDEN.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            d = json.loads(line)
            if d["type"] in TYPES:
                out.append(pytest.param(d, id=f"L{ln}-{d['type']}"))
    return out


VECTORS = _vectors()


def test_all_types_present() -> None:
    seen = {p.values[0]["type"] for p in VECTORS}
    assert seen == TYPES


def _check_id(d: dict) -> None:
    assert series_id(d["org"], d["name"], d["unit"], d["mtype"], d["interval"], d["tags"]) == d["id"]
    # tag order given by the producer must not matter
    assert series_id(d["org"], d["name"], d["unit"], d["mtype"], d["interval"], d["tags"][::-1]) == d["id"]
    assert str(parse_mkey(d["id"])) == d["id"]


def _check_partition(d: dict) -> None:
    for method in PARTITION_METHODS:
        assert partition(method, d["org"], d["name"], d["tags"], d["partitions"]) == d[method], method


def _check_metricdata(d: dict) -> None:
    md = MetricData(
        d["id"], d["org"], d["name"], d["interval"], d["value"], d["unit"], d["time"], d["mtype"], d["tags"]
    )
    raw = bytes.fromhex(d["hex"])
    assert encode_metricdata(md) == raw
    assert decode_metricdata(raw) == md
    batch = classify_and_decode([raw], 0)
    assert batch.metricdata == [(0, md)]
    assert len(batch.points) == 0 and batch.errors == {}


def _check_point_rows(points, expected: list[tuple[str, float, int]], org_default: int) -> None:
    assert len(points) == len(expected)
    for row, (ident, value, t) in zip(points, expected, strict=True):
        mk = parse_mkey(ident)
        assert (int(row["k0"]), int(row["k1"])) == mk.words
        assert float(row["value"]) == value
        assert int(row["time"]) == t
        assert int(row["org"]) == (mk.org if org_default == 0 else org_default)


def _check_metricpoint(d: dict) -> None:
    raw = bytes.fromhex(d["hex"])
    assert encode_metricpoint(d["id"], d["value"], d["time"], with_org=d["with_org"]) == raw
    assert encode_metricpoint(parse_mkey(d["id"]), d["value"], d["time"], with_org=d["with_org"]) == raw
    org = 0 if d["with_org"] else parse_mkey(d["id"]).org
    batch = classify_and_decode([raw], org)
    assert batch.errors == {}
    _check_point_rows(batch.points, [(d["id"], d["value"], d["time"])], org)


def _check_metricpoint_array(d: dict) -> None:
    raw = bytes.fromhex(d["hex"])
    pts = [tuple(p) for p in d["points"]]
    assert encode_metricpoint_array(pts, with_org=d["with_org"]) == raw
    org = 0 if d["with_org"] else parse_mkey(pts[0][0]).org
    batch = classify_and_decode([raw], org)
    assert batch.errors == {}
    _check_point_rows(batch.points, pts, org)


def _check_persist(d: dict) -> None:
    raw = bytes.fromhex(d["hex"])
    saved = [(c["key"], c["t0"]) for c in d["saved_chunks"]]
    assert encode_persist(d["instance"], saved) == raw
    assert decode_persist(raw) == (d["instance"], saved)
    for key, _ in saved:
        assert str(AMKey.parse(key)) == key


def _check_table(d: dict) -> None:
    assert table_for_ttl(d["ttl"]) == (d["table"], d["window_hours"])


def _check_row_key(d: dict) -> None:
    assert row_key(d["amkey"], d["t0"]) == d["row_key"]
    assert row_key(AMKey.parse(d["amkey"]), d["t0"]) == d["row_key"]


def _check_agg_boundary(d: dict) -> None:
    import numpy as np

    assert agg_boundary(d["ts"], d["span"]) == d["boundary"]
    for dtype in (np.uint32, np.int64):
        got = agg_boundaries(np.array([d["ts"]], dtype=dtype), d["span"])
        assert got.dtype == dtype and got.tolist() == [d["boundary"]]


CHECKS = {
    "id": _check_id,
    "partition": _check_partition,
    "metricdata_msgp": _check_metricdata,
    "metricpoint": _check_metricpoint,
    "metricpoint_array": _check_metricpoint_array,
    "persist_message": _check_persist,
    "cassandra_table": _check_table,
    "row_key": _check_row_key,
    "agg_boundary": _check_agg_boundary,
}


@pytest.mark.parametrize("vector", VECTORS)
def test_golden(vector: dict) -> None:
    CHECKS[vector["type"]](vector)
