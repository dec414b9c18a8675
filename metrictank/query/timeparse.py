"""Graphite's `from`/`until` time specifications and interval strings.

Grafana sends relative times (`-6h`, `now-5min`, `now`), epoch seconds, and `HH:MM_YYYYMMDD` for absolute
ranges; hand-written dashboards use the rest of Graphite's `at`-style forms (`midnight`, `noon yesterday`,
`20240131`, `01/31/24`, `monday`, `jan 5`, `6pm`). The grammar follows Metrictank's parser (space separated
tokens applied left to right to a base time) with graphite-web's unit names, so anything either accepts is
accepted here. Relative offsets are absolute seconds (a month is 30 days, a year 365), as in both.

Range: timestamps are unsigned 32-bit, as in Metrictank. A time before 1970 reads as the epoch (no point can be
older, so `from=-100y` simply means "everything"); a time after 2106-02-07 or a specification that does not fit
datetime arithmetic at all (`-10000000y`) is a QueryError, as is one longer than MAX_SPEC_LENGTH characters.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from .errors import QueryError

_UNIT_SECONDS: dict[str, int] = {}
for _names, _secs in (
    (("", "s", "sec", "secs", "second", "seconds"), 1),
    (("m", "min", "mins", "minute", "minutes"), 60),
    (("h", "hour", "hours"), 3600),
    (("d", "day", "days"), 86400),
    (("w", "week", "weeks"), 7 * 86400),
    (("mon", "month", "months"), 30 * 86400),
    (("y", "year", "years"), 365 * 86400),
):
    for _n in _names:
        _UNIT_SECONDS[_n] = _secs

_DURATION_PART = re.compile(r"([0-9]+)([a-z]*)")
MAX_TS = 2**32 - 1  # the largest timestamp Metrictank stores (uint32)
MAX_SPEC_LENGTH = 256  # characters of one time or interval specification
_DATETIME_ERRORS = (OverflowError, OSError, ValueError)
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _unit_seconds(unit: str) -> int | None:
    """Seconds per unit: Metrictank's exact names first, then graphite-web's prefix rules (`5minutes`)."""
    secs = _UNIT_SECONDS.get(unit)
    if secs is not None:
        return secs
    for prefix, secs in (("s", 1), ("min", 60), ("h", 3600), ("d", 86400), ("w", 604800)):
        if unit.startswith(prefix):
            return secs
    if unit.startswith("mon"):
        return 30 * 86400
    if unit.startswith("y"):
        return 365 * 86400
    return None


def parse_duration(s: str) -> int:
    """Seconds in an unsigned interval such as `5min`, `1h30min`, `2d` or `90` (seconds)."""
    text = s.strip().lower()
    if not text:
        raise QueryError("empty interval")
    if len(text) > MAX_SPEC_LENGTH:
        raise QueryError(f"invalid interval: longer than {MAX_SPEC_LENGTH} characters")
    total = 0
    pos = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        secs = _unit_seconds(m.group(2))
        if secs is None:
            raise QueryError(f"invalid interval {s!r}: unknown unit {m.group(2)!r}")
        total += int(m.group(1)) * secs
        pos = m.end()
    if pos != len(text):
        raise QueryError(f"invalid interval {s!r}")
    return total


def parse_offset(s: str) -> int:
    """Signed seconds of an interval with an optional sign (`-1d`, `+2h`, `1w`); unsigned means positive."""
    text = s.strip()
    if text[:1] in ("-", "+"):
        sign = -1 if text[0] == "-" else 1
        return sign * parse_duration(text[1:])
    return parse_duration(text)


def _at(base: datetime, tz: tzinfo, hour: int, minute: int, second: int) -> datetime:
    return datetime(base.year, base.month, base.day, hour, minute, second, tzinfo=tz)


def _date(y: int, m: int, d: int, hms: tuple[int, int, int], tz: tzinfo, raw: str) -> datetime:
    try:
        return datetime(y, m, d, *hms, tzinfo=tz)
    except ValueError as e:
        raise QueryError(f"invalid time {raw!r}: {e}") from None


def _digits(s: str) -> bool:
    """ASCII digits only (`str.isdigit` also accepts `²`, which `int()` refuses)."""
    return s.isascii() and s.isdigit()


def _from_ts(ts: float, tz: tzinfo, raw: str) -> datetime:
    """The datetime of an epoch time, clamped to the epoch below; QueryError above MAX_TS."""
    if ts > MAX_TS:
        raise QueryError(f"invalid time {raw[:100]!r}: after 2106-02-07, the largest time that can be stored")
    return datetime.fromtimestamp(max(0, ts), tz)


def _time_of_day(tok: str) -> tuple[int, int] | None:
    """`14:30`, `6pm`, `6:30am` -> (hour, minute); None when the token is not a time of day."""
    m = re.fullmatch(r"([0-9]{1,2})(?::([0-9]{2}))?(am|pm)?", tok)
    if not m or (m.group(2) is None and m.group(3) is None):
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if m.group(3) == "pm" and hour < 12:
        hour += 12
    elif m.group(3) == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def parse_time(s: str, now: int, tz: tzinfo = UTC) -> int:
    """Epoch seconds of a Graphite time specification, relative ones taken from `now` (epoch seconds), within
    [0, MAX_TS] (earlier times read as the epoch; later ones and unparsable ones are a QueryError)."""
    raw = s
    text = s.strip().lower()
    if not text:
        raise QueryError("empty time specification")
    if len(text) > MAX_SPEC_LENGTH:
        raise QueryError(f"invalid time: longer than {MAX_SPEC_LENGTH} characters")
    try:
        ts = _parse_time(raw, text, now, tz)
    except _DATETIME_ERRORS as e:  # arithmetic past what datetime can represent
        raise QueryError(f"invalid time {raw[:100]!r}: out of range ({e})") from None
    if ts > MAX_TS:
        raise QueryError(f"invalid time {raw[:100]!r}: after 2106-02-07, the largest time that can be stored")
    return max(0, ts)


def _parse_time(raw: str, text: str, now: int, tz: tzinfo) -> int:
    if _digits(text) and not (
        len(text) == 8 and int(text[:4]) > 1900 and 0 < int(text[4:6]) < 13 and 0 < int(text[6:]) < 32
    ):
        return int(text)

    now_dt = _from_ts(now, tz, raw)
    tokens = text.replace(",", " ").replace("-", " -").replace("+", " +").replace("_", " ", 1).split()
    base = now_dt
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        hms = (0, 0, 0) if i == 0 else (base.hour, base.minute, base.second)
        i += 1
        if tok == "now":
            base = now_dt
        elif tok in ("today", "yesterday", "tomorrow"):
            day = now_dt + timedelta(days={"today": 0, "yesterday": -1, "tomorrow": 1}[tok])
            base = _date(day.year, day.month, day.day, hms, tz, raw)
        elif tok in ("midnight", "noon", "teatime"):
            base = _at(base, tz, {"midnight": 0, "noon": 12, "teatime": 16}[tok], 0, 0)
        elif tok[0] in "+-":
            try:
                secs = parse_duration(tok[1:])
            except QueryError:
                raise QueryError(f"invalid time {raw!r}: bad offset {tok!r}") from None
            base = _from_ts(base.timestamp() + (secs if tok[0] == "+" else -secs), tz, raw)
        elif _digits(tok) and len(tok) != 8:
            base = _from_ts(int(tok), tz, raw)
        elif (tod := _time_of_day(tok)) is not None:
            base = _at(base, tz, tod[0], tod[1], 0)
        elif _digits(tok):  # YYYYMMDD
            base = _date(int(tok[:4]), int(tok[4:6]), int(tok[6:]), hms, tz, raw)
        elif re.fullmatch(r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{2}(?:[0-9]{2})?", tok):
            mo, d, y = (int(x) for x in tok.split("/"))
            if y < 100:
                y += 2000 if y < 70 else 1900
            base = _date(y, mo, d, hms, tz, raw)
        elif len(tok) >= 3 and any(w.startswith(tok) for w in _WEEKDAYS):
            target = next(n for n, w in enumerate(_WEEKDAYS) if w.startswith(tok))
            back = (base.weekday() - target) % 7
            day = base - timedelta(days=back)
            base = _date(day.year, day.month, day.day, hms, tz, raw)
        elif tok[:3] in _MONTHS:
            month = _MONTHS.index(tok[:3]) + 1
            rest = re.sub(r"^[a-z]+", "", tok)
            if not rest and i < len(tokens) and _digits(tokens[i]):
                rest = tokens[i]
                i += 1
            if not _digits(rest):
                raise QueryError(f"invalid time {raw!r}: day of month required after month name")
            base = _date(base.year, month, int(rest), hms, tz, raw)
        else:
            raise QueryError(f"invalid time {raw!r}: unknown format near {tok!r}")
    return int(base.timestamp())
