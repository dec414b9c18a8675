"""Retention policies: Graphite's `storage-schemas.conf` and `storage-aggregation.conf`, as Metrictank reads them.

Metrictank extends Graphite's retention syntax to `interval:ttl[:chunkspan[:numchunks[:ready]]]` and adds the
`reorderBuffer`, `reorderBufferAllowUpdate` and `priority` keys. The rules below are Metrictank's (conf/*.go),
because an operator moving a config file between the two must get the same archives, chunk spans and TTLs --
and the TTLs decide the Cassandra tables both write to:

- A retention whose first two fields are plain integers is Graphite's legacy `seconds-per-point:points`; the
  TTL is then their product. Otherwise both are durations (`s`, `min`/`m`, `h`, `d`, `w`, `mon`, `y`, summed
  when chained like `1h30min`, bare numbers are seconds) and the TTL is rounded down to whole intervals.
- Chunkspan defaults to the smallest chunk span holding >= 100 points (the largest span otherwise); an explicit
  one must be a chunk span code and divide 28 days. numchunks defaults to 2.
- Rollup intervals must be spans an archive id can encode; intervals grow, divide each other, and TTLs grow.
- Sections are ordered by `priority` (higher first), then by position in the file. A series matches the
  first section whose unanchored regex finds its name; within it, the series interval picks the archive to
  use as raw (the last one whose interval is <= the series interval), the later ones become its rollups.
- When nothing matches, the built-in fallback `1s:1d:10min:2` applies.

One deliberate difference: where Metrictank would crash or silently wrap (numchunks 0, a zero interval), the
parse fails with a :class:`RetentionError` naming the file, section and key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from metrictank.chunk import SPANS

__all__ = [
    "METHOD_NAMES",
    "ARCHIVE_SPANS",
    "Aggregation",
    "Aggregations",
    "DEFAULT_AGGREGATION",
    "FALLBACK_RETENTIONS",
    "MONTH_SEC",
    "RetentionError",
    "Retention",
    "Schema",
    "Schemas",
    "SHIPPED_SCHEMAS",
    "STORED_METHODS",
    "parse_duration",
    "parse_retentions",
]

#: 28 days: the width of a Cassandra row bucket; a chunk must never straddle two.
MONTH_SEC = 28 * 24 * 3600

#: Rollup intervals an archive id (the `_<method>_<span>` suffix of an AMKey) can carry (schema/archive.go).
ARCHIVE_SPANS: frozenset[int] = frozenset(
    [2, 5, 10, 15, 30, 60, 90, 120, 150, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200]
    + [h * 3600 for h in (3, 4, 5, 6, 8, 12, 24)]
)

#: Metrictank's shipped `storage-schemas.conf` (what `Schemas.load(None)` gives).
SHIPPED_SCHEMAS = "[default]\npattern = .*\nretentions = 1s:35d:10min:7\n"

#: What a series gets when no section matches (Metrictank's built-in DefaultSchema).
FALLBACK_RETENTIONS = "1s:1d:10min:2"

#: Rollup methods stored as series of their own, in the order the tank lays out their slots.
STORED_METHODS: tuple[str, ...] = ("sum", "cnt", "min", "max", "lst")

_UNITS = {
    **dict.fromkeys(("", "s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
    **dict.fromkeys(("mon", "month", "months"), 30 * 86400),
    **dict.fromkeys(("y", "year", "years"), 365 * 86400),
}
_DUR_PART = re.compile(r"(\d*)(\D*)")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_READY_NEVER = 0xFFFFFFFF


class RetentionError(ValueError):
    """A storage-schemas/storage-aggregation file is invalid; the message names file, section and key."""


def parse_duration(text: str) -> int:
    """Seconds in a Metrictank duration (raintank/dur): `10min`, `1h30min`, `35d`, `600`."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    if s[0] == "-":
        raise ValueError(f"negative duration {text!r}")
    total, pos = 0, 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        assert m is not None
        num, unit = m.group(1), m.group(2)
        if unit not in _UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        if not num:
            raise ValueError(f"missing number before {unit!r} in {text!r}")
        total += int(num) * _UNITS[unit]
        pos = m.end()
    if total >= 1 << 32:
        raise ValueError(f"duration {text!r} does not fit in 32 bits")
    return total


def _go_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Retention:
    """One archive: points every `interval` s, kept `ttl` s, in chunks of `chunkspan` s, `numchunks` in memory.

    `ready` is the data timestamp from which the archive may serve reads (0: always, 2**32-1: never).
    """

    interval: int
    ttl: int
    chunkspan: int
    numchunks: int = 2
    ready: int = 0

    @property
    def points(self) -> int:
        return self.ttl // self.interval

    def __str__(self) -> str:
        ready = {0: "true", _READY_NEVER: "false"}.get(self.ready, str(self.ready))
        return f"{self.interval}s:{self.ttl}s:{self.chunkspan}s:{self.numchunks}:{ready}"


def _default_chunkspan(interval: int) -> int:
    want = interval * 100
    for span in SPANS:
        if span >= want:
            return span
    return SPANS[-1]


def _parse_one(defn: str, first: bool) -> Retention:
    parts = defn.split(":")
    if len(parts) < 2 or len(parts) > 5:
        raise ValueError(f"bad retention {defn!r}: want interval:ttl[:chunkspan[:numchunks[:ready]]]")
    if parts[0].isdigit() and parts[1].isdigit():  # Graphite's legacy seconds-per-point:points
        interval, npoints = int(parts[0]), int(parts[1])
    else:
        interval = parse_duration(parts[0])
        if interval == 0:
            raise ValueError(f"bad retention {defn!r}: the interval must be positive")
        npoints = parse_duration(parts[1]) // interval
    if interval == 0:
        raise ValueError(f"bad retention {defn!r}: the interval must be positive")
    if not first and interval not in ARCHIVE_SPANS:
        raise ValueError(f"bad retention {defn!r}: a rollup interval of {interval}s cannot be encoded")
    if len(parts) >= 3:
        span = parse_duration(parts[2])
        if span == 0 or MONTH_SEC % span:
            raise ValueError(f"bad retention {defn!r}: chunkspan must divide 28 days (2419200 s)")
        if span not in SPANS:
            raise ValueError(f"bad retention {defn!r}: chunkspan {parts[2]} is not a valid chunk span")
    else:
        span = _default_chunkspan(interval)
    numchunks = 2
    if len(parts) >= 4:
        try:
            numchunks = int(parts[3])
        except ValueError:
            raise ValueError(f"bad retention {defn!r}: numchunks must be an integer") from None
        if not 1 <= numchunks <= 255:
            raise ValueError(f"bad retention {defn!r}: numchunks must be in [1, 255]")
    ready = 0
    if len(parts) == 5:
        r = parts[4]
        if r.isdigit():
            ready = int(r)
            if ready > _READY_NEVER:
                raise ValueError(f"bad retention {defn!r}: ready does not fit in 32 bits")
        else:
            try:
                ready = 0 if _go_bool(r) else _READY_NEVER
            except ValueError:
                raise ValueError(
                    f"bad retention {defn!r}: ready must be a bool or unsigned integer"
                ) from None
    return Retention(interval, interval * npoints, span, numchunks, ready)


def parse_retentions(text: str) -> tuple[Retention, ...]:
    """Parse a `retentions = ...` value; ValueError (without file context) when invalid."""
    defs = [d.strip() for d in text.split(",")]
    if len(defs) > 255:
        raise ValueError("no more than 255 retentions per rule")
    rets = tuple(_parse_one(d, i == 0) for i, d in enumerate(defs))
    for i in range(1, len(rets)):
        prev, cur = rets[i - 1], rets[i]
        if prev.interval >= cur.interval:
            raise ValueError("each retention must have a longer interval than the one before")
        if cur.interval % prev.interval:
            raise ValueError(f"interval {cur.interval}s is not a multiple of {prev.interval}s")
        if prev.ttl >= cur.ttl:
            raise ValueError("each retention must have a longer ttl than the one before")
        if prev.points < cur.interval // prev.interval:
            raise ValueError(f"retention {i - 1} has too few points to consolidate into retention {i}")
    return rets


@dataclass(frozen=True)
class Schema:
    """A storage-schemas section, or (from `Schemas.match`) its tail starting at the series' raw archive."""

    name: str
    pattern: re.Pattern[str]
    retentions: tuple[Retention, ...]
    priority: int = 0
    reorder_window: int = 0
    reorder_allow_update: bool = False

    @property
    def raw(self) -> Retention:
        return self.retentions[0]


def _sections(text: str, source: str) -> list[tuple[str, dict[str, str]]]:
    """INI sections in file order: keys are matched case-insensitively, `#`/`;` lines are comments."""
    out: list[tuple[str, dict[str, str]]] = []
    cur: dict[str, str] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            name = line.strip(" []")
            cur = {}
            out.append((name, cur))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise RetentionError(f"{source}:{lineno}: expected `key = value` or `[section]`, got {raw!r}")
        if cur is None:
            raise RetentionError(f"{source}:{lineno}: key {key.strip()!r} outside of any section")
        cur[key.strip().lower()] = value.strip()
    return out


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise RetentionError(f"{path}: cannot read: {e.strerror or e}") from None


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RetentionError(f"{where} pattern: invalid regular expression {pattern!r}: {e}") from None


@dataclass
class Schemas:
    """The parsed schema sections (ordered for matching) plus the fallback."""

    schemas: list[Schema]
    default: Schema = field(
        default_factory=lambda: Schema("default", re.compile(".*"), parse_retentions(FALLBACK_RETENTIONS))
    )

    def __post_init__(self) -> None:
        # Metrictank's expanded index: one entry per (section, starting archive); index values are positions.
        self._index: list[Schema] = []
        self._starts: list[int] = []
        for s in [*self.schemas, self.default]:
            self._starts.append(len(self._index))
            for pos in range(len(s.retentions)):
                self._index.append(
                    Schema(
                        s.name,
                        s.pattern,
                        s.retentions[pos:],
                        s.priority,
                        s.reorder_window,
                        s.reorder_allow_update,
                    )
                )

    def with_memory_window(self, seconds: float) -> Schemas:
        """The same schemas with each archive's numchunks cut to what covers `seconds` (the open chunk plus
        ceil(seconds / chunkspan) closed ones, at least 2, at most the configured numchunks): a read node's
        memory holds only what the writers may not have saved yet; queries read the rest from the store."""

        def cut(s: Schema) -> Schema:
            rets = tuple(
                replace(r, numchunks=max(2, min(r.numchunks, 1 + math.ceil(seconds / r.chunkspan))))
                if r.numchunks > 2
                else r
                for r in s.retentions
            )
            return replace(s, retentions=rets)

        return Schemas([cut(s) for s in self.schemas], cut(self.default))

    @classmethod
    def parse(cls, text: str, source: str = "<storage-schemas>") -> Schemas:
        schemas: list[tuple[int, int, Schema]] = []
        for pos, (name, kv) in enumerate(_sections(text, source)):
            if not name or name.startswith("#"):
                continue
            where = f"{source}: [{name}]"
            pattern = kv.get("pattern", "")
            if not pattern:
                raise RetentionError(f"{where} pattern: empty pattern")
            regex = _compile(pattern, where)
            try:
                rets = parse_retentions(kv.get("retentions", ""))
            except ValueError as e:
                raise RetentionError(f"{where} retentions: {e}") from None
            try:
                priority = int(kv.get("priority", "0") or "0")
            except ValueError:
                raise RetentionError(f"{where} priority: not an integer: {kv['priority']!r}") from None
            window = 0
            if kv.get("reorderbuffer"):
                try:
                    window = int(kv["reorderbuffer"])
                    if not 0 <= window < 1 << 32:
                        raise ValueError
                except ValueError:
                    raise RetentionError(
                        f"{where} reorderBuffer: expected a number of points, got {kv['reorderbuffer']!r}"
                    ) from None
            allow = False
            if kv.get("reorderbufferallowupdate"):
                try:
                    allow = _go_bool(kv["reorderbufferallowupdate"])
                except ValueError as e:
                    raise RetentionError(f"{where} reorderBufferAllowUpdate: {e}") from None
            schemas.append((priority, pos, Schema(name, regex, rets, priority, window, allow)))
        schemas.sort(key=lambda t: (-t[0], t[1]))
        return cls([s for _, _, s in schemas])

    @classmethod
    def load(cls, path: str | Path | None) -> Schemas:
        """Read a storage-schemas.conf; None gives Metrictank's shipped default (`1s:35d:10min:7`)."""
        if path is None:
            return cls.parse(SHIPPED_SCHEMAS, "<shipped storage-schemas.conf>")
        return cls.parse(_read(path), str(path))

    def match(self, name: str, interval: int) -> tuple[int, Schema]:
        """The schema for a series: (position in the expanded index, schema starting at its raw archive)."""
        for k, s in enumerate([*self.schemas, self.default]):
            if not s.pattern.search(name):
                continue
            start = self._starts[k]
            if interval == 0:
                return start, self._index[start]
            j = len(s.retentions) - 1
            for i, ret in enumerate(s.retentions):
                if interval < ret.interval:
                    j = max(i - 1, 0)
                    break
            return start + j, self._index[start + j]
        return len(self._index) - len(self.default.retentions), self._index[-len(self.default.retentions)]

    def get(self, index: int) -> Schema:
        return self._index[index] if 0 <= index < len(self._index) else self.default

    def __len__(self) -> int:
        return len(self._index)

    def _all(self) -> Iterable[Retention]:
        for s in [*self.schemas, self.default]:
            yield from s.retentions

    def max_chunkspan(self) -> int:
        """Largest chunkspan of any raw or rollup archive (the fallback's 600 s included)."""
        return max(r.chunkspan for r in self._all())

    def all_chunkspans(self) -> list[int]:
        return sorted({r.chunkspan for r in self._all()})

    def raw_retentions(self) -> list[Retention]:
        """The raw archive of every schema (the fallback's included)."""
        return [s.retentions[0] for s in [*self.schemas, self.default]]

    def all_ttls(self) -> list[int]:
        """Every distinct archive TTL (they name the Cassandra tables)."""
        return sorted({r.ttl for r in self._all()})


#: Graphite and Metrictank spellings of aggregation methods -> the stored names (avg is kept as sum and cnt).
METHOD_NAMES = {
    "avg": "avg",
    "average": "avg",
    "sum": "sum",
    "min": "min",
    "max": "max",
    "last": "lst",
    "lst": "lst",
    "count": "cnt",
    "cnt": "cnt",
}


@dataclass(frozen=True)
class Aggregation:
    """A storage-aggregation section. `methods` are normalised names (avg sum min max lst cnt); the first one
    is the default consolidation. xFilesFactor is parsed but, as in Metrictank, not applied."""

    name: str
    pattern: re.Pattern[str]
    xfiles_factor: float = 0.5
    methods: tuple[str, ...] = ("avg",)

    @property
    def stored_methods(self) -> tuple[str, ...]:
        """The rollup series kept per archive: avg needs sum and cnt."""
        want = set()
        for m in self.methods:
            want.update(("sum", "cnt") if m == "avg" else (m,))
        return tuple(m for m in STORED_METHODS if m in want)

    @property
    def default_method(self) -> str:
        return self.methods[0]


DEFAULT_AGGREGATION = Aggregation("default", re.compile(".*"), 0.5, ("avg",))


@dataclass
class Aggregations:
    """The parsed aggregation sections in file order (first match wins) plus the default (avg)."""

    aggregations: list[Aggregation]
    default: Aggregation = DEFAULT_AGGREGATION

    @classmethod
    def parse(cls, text: str, source: str = "<storage-aggregation>") -> Aggregations:
        out: list[Aggregation] = []
        for name, kv in _sections(text, source):
            where = f"{source}: [{name}]"
            if not name:
                raise RetentionError(f"{source}: a section has an empty name")
            if "pattern" not in kv:
                raise RetentionError(f"{where} pattern: missing pattern")
            # ' ;' and ' #' start a comment in this file (Metrictank's ValueOfWithoutComments)
            clean = {k: re.split(r"\s[;#]", v, maxsplit=1)[0].strip() for k, v in kv.items()}
            regex = _compile(clean["pattern"], where)
            xff = 0.5
            if "xfilesfactor" in clean:
                try:
                    xff = float(clean["xfilesfactor"])
                except ValueError:
                    raise RetentionError(
                        f"{where} xFilesFactor: not a number: {clean['xfilesfactor']!r}"
                    ) from None
            methods: tuple[str, ...] = ("avg",)
            if "aggregationmethod" in clean:
                names = [m.strip() for m in clean["aggregationmethod"].split(",")]
                bad = [m for m in names if m not in METHOD_NAMES]
                if bad:
                    raise RetentionError(f"{where} aggregationMethod: unknown aggregation method {bad[0]!r}")
                methods = tuple(dict.fromkeys(METHOD_NAMES[m] for m in names))
            out.append(Aggregation(name, regex, xff, methods))
        return cls(out)

    @classmethod
    def load(cls, path: str | Path | None) -> Aggregations:
        """Read a storage-aggregation.conf; None gives the built-in default (avg for everything)."""
        if path is None:
            return cls([])
        return cls.parse(_read(path), str(path))

    def match(self, name: str) -> tuple[int, Aggregation]:
        """(position, aggregation) of the first section whose regex finds `name`; the default otherwise."""
        for i, a in enumerate(self.aggregations):
            if a.pattern.search(name):
                return i, a
        return len(self.aggregations), self.default

    def get(self, index: int) -> Aggregation:
        return self.aggregations[index] if 0 <= index < len(self.aggregations) else self.default

    def __len__(self) -> int:
        return len(self.aggregations) + 1
