"""Graphite from/until forms as Grafana and dashboards send them."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from metrictank.query.errors import QueryError
from metrictank.query.timeparse import parse_duration, parse_offset, parse_time

# Tuesday 2023-11-14 22:13:20 UTC
NOW = 1700000000


def ts(*args: int, tz=UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp())


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("now", NOW),
        ("-5min", NOW - 300),
        ("-6h", NOW - 6 * 3600),
        ("-1d", NOW - 86400),
        ("-1mon", NOW - 30 * 86400),
        ("-1y", NOW - 365 * 86400),
        ("-2w", NOW - 14 * 86400),
        ("-30s", NOW - 30),
        ("-30", NOW - 30),
        ("now-5min", NOW - 300),
        ("now+1h", NOW + 3600),
        ("-1h30min", NOW - 5400),
        # graphite-web's unit spellings
        ("-5minutes", NOW - 300),
        ("-2hours", NOW - 7200),
        ("-3days", NOW - 3 * 86400),
        ("-10seconds", NOW - 10),
        ("-1months", NOW - 30 * 86400),
        # Grafana's absolute times are epoch seconds
        ("1699990000", 1699990000),
        ("12:30_20240102", ts(2024, 1, 2, 12, 30)),
        ("20240102", ts(2024, 1, 2)),
        ("midnight", ts(2023, 11, 14)),
        ("noon", ts(2023, 11, 14, 12)),
        ("teatime", ts(2023, 11, 14, 16)),
        ("today", ts(2023, 11, 14)),
        ("yesterday", ts(2023, 11, 13)),
        ("tomorrow", ts(2023, 11, 15)),
        ("noon yesterday", ts(2023, 11, 13, 12)),
        ("midnight-1d", ts(2023, 11, 13)),
        ("6pm", ts(2023, 11, 14, 18)),
        ("6:30am", ts(2023, 11, 14, 6, 30)),
        ("monday", ts(2023, 11, 13)),
        ("tuesday", ts(2023, 11, 14)),
        ("sunday", ts(2023, 11, 12)),
        ("jan 5", ts(2023, 1, 5)),
        ("01/31/24", ts(2024, 1, 31)),
        ("01/31/2024", ts(2024, 1, 31)),
        ("  NOW-5MIN ", NOW - 300),
    ],
)
def test_graphite_time_forms(spec: str, expected: int) -> None:
    assert parse_time(spec, NOW) == expected


def test_absolute_times_use_the_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time("midnight", NOW, berlin) == ts(2023, 11, 14, tz=berlin)
    assert parse_time("12:30_20240102", NOW, berlin) == ts(2024, 1, 2, 12, 30, tz=berlin)
    # relative and epoch forms do not depend on the zone
    assert parse_time("-1h", NOW, berlin) == NOW - 3600
    assert parse_time("1699990000", NOW, berlin) == 1699990000


@pytest.mark.parametrize(
    "spec", ["", "bogus", "-5parsecs", "now-", "13/45/2024", "25:00_20240101", "20241341x"]
)
def test_bad_time_formats_are_user_errors(spec: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_time(spec, NOW)
    assert e.value.status == 400


def test_intervals() -> None:
    assert parse_duration("5min") == 300
    assert parse_duration("1h30min") == 5400
    assert parse_duration("2d") == 172800
    assert parse_offset("-1d") == -86400
    assert parse_offset("+2h") == 7200
    assert parse_offset("1w") == 7 * 86400
    with pytest.raises(QueryError):
        parse_duration("5 furlongs")
