"""storage-schemas.conf / storage-aggregation.conf parsing, checked against Metrictank's rules (conf/*.go).

These files decide each series' chunk span, ring size and TTL, and the TTL names the Cassandra table: an operator
who moves a config from Metrictank must get the same archives, or the two would write to different tables.
"""

from __future__ import annotations

import pytest

from metrictank.retention import (
    Aggregations,
    Retention,
    RetentionError,
    Schemas,
    parse_duration,
    parse_retentions,
)


def test_shipped_default_and_fallback():
    s = Schemas.load(None)
    idx, schema = s.match("any.series", 10)
    assert schema.retentions == (Retention(1, 35 * 86400, 600, 7, 0),)
    assert s.get(idx) == schema
    # nothing matches: Metrictank's built-in 1s:1d:10min:2
    s = Schemas.parse("[only]\npattern = ^foo\nretentions = 10s:1d\n")
    _, schema = s.match("bar", 10)
    assert schema.name == "default"
    assert schema.retentions == (Retention(1, 86400, 600, 2, 0),)


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("10", 10),
        ("10s", 10),
        ("10sec", 10),
        ("10min", 600),
        ("10m", 600),
        ("2h", 7200),
        ("1h30min", 5400),
        ("35d", 35 * 86400),
        ("1w", 7 * 86400),
        ("1mon", 30 * 86400),
        ("2y", 2 * 365 * 86400),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1s", "10x", "min", "1.5h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_legacy_format_counts_points():
    (r,) = parse_retentions("60:1440")
    assert (r.interval, r.ttl) == (60, 86400)
    # new format: ttl is a duration, rounded down to whole intervals
    (r,) = parse_retentions("7s:1min")
    assert (r.interval, r.ttl) == (7, 56)


@pytest.mark.parametrize(
    "interval,span",
    [("1s", 120), ("5s", 600), ("10s", 1200), ("60s", 7200), ("15min", 86400), ("1h", 86400)],
)
def test_default_chunkspan_is_smallest_span_for_100_points(interval, span):
    (r,) = parse_retentions(f"{interval}:400d")
    assert r.chunkspan == span
    assert r.numchunks == 2


def test_explicit_fields_and_ready():
    rets = parse_retentions("1s:1d:10min:1,1m:21d,15m:5y:2h:1:false")
    assert rets[0] == Retention(1, 86400, 600, 1, 0)
    assert rets[1] == Retention(60, 21 * 86400, 7200, 2, 0)
    assert rets[2] == Retention(900, 5 * 365 * 86400, 7200, 1, 0xFFFFFFFF)
    assert parse_retentions("1s:1d:10min:2:1500000000")[0].ready == 1500000000
    assert parse_retentions("1s:1d:10min:2:true")[0].ready == 0


@pytest.mark.parametrize(
    "spec,why",
    [
        ("1s:1d:7min", "not a valid chunk span"),
        ("1s:1d:9h", "divide 28 days"),
        ("1s:1d:0", "divide 28 days"),
        ("1s:1d:10min:0", "numchunks"),
        ("1s:1d:10min:x", "numchunks"),
        ("1s:1d:10min:2:maybe", "ready"),
        ("1s", "bad retention"),
        ("1s:1d:10min:2:true:x", "bad retention"),
        ("0s:1d", "positive"),
        ("1s:1d,7s:2d", "cannot be encoded"),
        ("1m:1d,30s:2d", "longer interval"),
        ("10s:1d,15s:2d", "multiple"),
        ("1s:2d,1m:1d", "longer ttl"),
        ("1m:1min,1h:2d", "too few points"),
    ],
)
def test_invalid_retentions(spec, why):
    with pytest.raises(ValueError, match=why):
        parse_retentions(spec)


def test_errors_name_file_section_and_key(tmp_path):
    p = tmp_path / "storage-schemas.conf"
    p.write_text("[good]\npattern = a\nretentions = 1s:1d\n[broken]\npattern = b\nretentions = 1s:1d:7min\n")
    with pytest.raises(RetentionError, match=r"storage-schemas.conf: \[broken\] retentions: .*7min"):
        Schemas.load(p)
    p.write_text("[nopattern]\nretentions = 1s:1d\n")
    with pytest.raises(RetentionError, match=r"\[nopattern\] pattern"):
        Schemas.load(p)
    p.write_text("[rx]\npattern = (\nretentions = 1s:1d\n")
    with pytest.raises(RetentionError, match=r"\[rx\] pattern"):
        Schemas.load(p)
    p.write_text("[rob]\npattern = a\nretentions = 1s:1d\nreorderBuffer = lots\n")
    with pytest.raises(RetentionError, match=r"\[rob\] reorderBuffer"):
        Schemas.load(p)
    with pytest.raises(RetentionError, match="cannot read"):
        Schemas.load(tmp_path / "missing.conf")
    assert issubclass(RetentionError, ValueError)


def test_priority_then_file_order_and_reorder_keys():
    s = Schemas.parse(
        """
# comment
[first]
pattern = ^a
retentions = 1s:1d
[second]
pattern = ^a\\.b
retentions = 10s:2d
priority = 5
reorderBuffer = 20
reorderBufferAllowUpdate = true
"""
    )
    assert [x.name for x in s.schemas] == ["second", "first"]
    _, schema = s.match("a.b.c", 10)
    assert schema.name == "second"
    assert (schema.reorder_window, schema.reorder_allow_update) == (20, True)
    _, schema = s.match("a.x", 1)
    assert schema.name == "first"
    assert schema.reorder_window == 0


def test_match_uses_series_interval_to_pick_raw_archive():
    # Metrictank's Match: the raw archive is the last whose interval is <= the series interval
    s = Schemas.parse("[a]\npattern = .\nretentions = 1s:1d,1m:7d,1h:1y\n")
    i1, s1 = s.match("x", 1)
    i10, s10 = s.match("x", 10)
    i60, s60 = s.match("x", 60)
    i120, s120 = s.match("x", 120)
    i0, s0 = s.match("x", 3 * 3600)
    assert [r.interval for r in s10.retentions] == [1, 60, 3600]
    assert (i1, i10) == (0, 0)
    assert [r.interval for r in s60.retentions] == [60, 3600] and i60 == 1
    assert [r.interval for r in s120.retentions] == [60, 3600] and i120 == 1
    assert [r.interval for r in s0.retentions] == [3600] and i0 == 2
    assert s.match("x", 0)[1].retentions == s1.retentions
    # the pattern is an unanchored search
    s = Schemas.parse("[a]\npattern = cpu\nretentions = 10s:1d\n")
    assert s.match("host.cpu.idle", 10)[1].name == "a"


def test_chunkspans_and_ttls_cover_every_schema():
    s = Schemas.parse("[a]\npattern = x\nretentions = 10s:1d:30min,1h:1y:24h\n")
    assert s.max_chunkspan() == 86400
    assert s.all_chunkspans() == [600, 1800, 86400]
    assert s.all_ttls() == [86400, 365 * 86400]
    assert Schemas.parse("[a]\npattern = x\nretentions = 1s:1h:1min\n").max_chunkspan() == 600


def test_aggregations():
    a = Aggregations.load(None)
    _, agg = a.match("anything")
    assert agg.methods == ("avg",) and agg.stored_methods == ("sum", "cnt") and agg.xfiles_factor == 0.5
    a = Aggregations.parse(
        """
[counters]
pattern = \\.count$  ; a comment
xFilesFactor = 0
aggregationMethod = sum, last
[mixed]
pattern = ^mixed
aggregationMethod = max,avg,min,count
[default]
pattern = .*
xFilesFactor = 0.1
aggregationMethod = avg,min,max
"""
    )
    i, agg = a.match("foo.count")
    assert (i, agg.name, agg.methods, agg.xfiles_factor) == (0, "counters", ("sum", "lst"), 0.0)
    assert agg.stored_methods == ("sum", "lst") and agg.default_method == "sum"
    _, agg = a.match("mixed.x")
    assert agg.default_method == "max"
    assert agg.stored_methods == ("sum", "cnt", "min", "max")
    _, agg = a.match("other")
    assert agg.name == "default" and agg.methods == ("avg", "min", "max")
    with pytest.raises(RetentionError, match=r"\[x\] aggregationMethod: unknown aggregation method 'median'"):
        Aggregations.parse("[x]\npattern = .\naggregationMethod = avg,median\n", "agg.conf")
    with pytest.raises(RetentionError, match=r"\[x\] pattern: missing"):
        Aggregations.parse("[x]\naggregationMethod = avg\n")
    with pytest.raises(RetentionError, match=r"\[x\] xFilesFactor"):
        Aggregations.parse("[x]\npattern = .\nxFilesFactor = half\n")
