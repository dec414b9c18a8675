"""MetricData: the self-describing msgpack message of the ``mdm`` topic (spec section 2).

Decoding follows what Go's generated ``MetricData.UnmarshalMsg`` accepts (any key order, unknown keys
skipped, signed or unsigned ints, float32 or float64 values, trailing bytes ignored) plus nil Tags. Encoding
reproduces Go's bytes exactly (fixed key order, smallest *signed* int types, Value always float64), which
keeps golden tests meaningful and lets a Python producer stand in for a Go one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from ._msgp import w_array_header, w_float64, w_int, w_str
from .errors import DecodeError

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

_unpackb = msgpack.unpackb
_ExtraData = msgpack.ExtraData


@dataclass(slots=True)
class MetricData:
    """One point plus the full description of its series (Go ``schema.MetricData``)."""

    id: str = ""
    org_id: int = 0
    name: str = ""
    interval: int = 0
    value: float = 0.0
    unit: str = ""
    time: int = 0
    mtype: str = ""
    tags: list[str] = field(default_factory=list)


def unpack_one(b: bytes) -> object:
    """Unpack the first msgpack object of ``b`` the way Go's ``UnmarshalMsg`` sees it.

    Trailing bytes are ignored (Go returns them and Metrictank drops them). Strings that are not valid
    UTF-8 survive as surrogate escapes so that validation, not decoding, rejects them - as in Go.
    """
    try:
        return _unpackb(b, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    except _ExtraData as e:
        return e.unpacked
    except Exception as e:  # msgpack raises ValueError, TypeError, FormatError, StackError, ...
        raise DecodeError("invalid-msgp", f"{type(e).__name__}: {e}") from None


def _bad(field_name: str, v: object) -> DecodeError:
    return DecodeError("invalid-msgp", f"field {field_name}: unexpected {type(v).__name__}")


def _as_int64(field_name: str, v: object) -> int:
    if type(v) is not int or not _I64_MIN <= v <= _I64_MAX:
        raise _bad(field_name, v)
    return v


def _as_str(field_name: str, v: object) -> str:
    if type(v) is not str:
        raise _bad(field_name, v)
    return v


def _as_tags(v: object) -> list[str]:
    if v is None:
        return []
    if type(v) is not list:
        raise _bad("Tags", v)
    for t in v:
        if type(t) is not str:
            raise _bad("Tags", t)
    return v


def metricdata_from_map(obj: object) -> MetricData:
    """Build a MetricData from an unpacked msgpack map, with Go's type rules per field."""
    if type(obj) is not dict:
        raise DecodeError("invalid-msgp", f"expected a map, got {type(obj).__name__}")
    md = MetricData()
    for k, v in obj.items():
        if type(k) is bytes:
            k = k.decode("utf-8", "surrogateescape")
        if k == "Id":
            md.id = _as_str(k, v)
        elif k == "OrgId":
            md.org_id = _as_int64(k, v)
        elif k == "Name":
            md.name = _as_str(k, v)
        elif k == "Interval":
            md.interval = _as_int64(k, v)
        elif k == "Value":
            if type(v) is not float:
                raise _bad(k, v)
            md.value = v
        elif k == "Unit":
            md.unit = _as_str(k, v)
        elif k == "Time":
            md.time = _as_int64(k, v)
        elif k == "Mtype":
            md.mtype = _as_str(k, v)
        elif k == "Tags":
            md.tags = _as_tags(v)
        elif type(k) is not str:
            raise DecodeError("invalid-msgp", f"map key of type {type(k).__name__}")
    return md


#: Go's key order: every Go producer (and ``encode_metricdata``) writes exactly these keys in this order.
_GO_KEYS = ("Id", "OrgId", "Name", "Interval", "Value", "Unit", "Time", "Mtype", "Tags")
_join = "".join


def decode_metricdata(b: bytes) -> MetricData:
    """Decode one MetricData message; raises :class:`DecodeError` (reason ``invalid-msgp``) on garbage.

    Messages with Go's exact key order and well-typed fields (all of them, in practice) are checked with
    one expression and built with one constructor call, which halves the cost of a new series' decode;
    anything else takes the general per-key path, so the accepted language is unchanged.
    """
    obj = unpack_one(b)
    if type(obj) is dict and tuple(obj) == _GO_KEYS:
        id_, org, name, interval, value, unit, ts, mtype, tags = obj.values()
        # msgpack ints are >= int64 min; only a uint64 above int64 max needs the bound
        if (
            type(id_) is type(name) is type(unit) is type(mtype) is str
            and type(value) is float
            and type(org) is type(interval) is type(ts) is int
            and org <= _I64_MAX
            and interval <= _I64_MAX
            and ts <= _I64_MAX
        ):
            if tags is None:
                tags = []
            elif type(tags) is not list:
                raise _bad("Tags", tags)
            elif tags:
                try:
                    _join(tags)  # raises TypeError on any non-str element, at C speed
                except TypeError:
                    _as_tags(tags)  # raises with the field's message
            return MetricData(id_, org, name, interval, value, unit, ts, mtype, tags)
    return metricdata_from_map(obj)


def encode_metricdata(md: MetricData) -> bytes:
    """Encode byte-identically to Go's ``MetricData.MarshalMsg`` (nil tags become an empty array)."""
    tags = md.tags or ()
    parts = [
        b"\x89\xa2Id",
        w_str(md.id),
        b"\xa5OrgId",
        w_int(md.org_id),
        b"\xa4Name",
        w_str(md.name),
        b"\xa8Interval",
        w_int(md.interval),
        b"\xa5Value",
        w_float64(md.value),
        b"\xa4Unit",
        w_str(md.unit),
        b"\xa4Time",
        w_int(md.time),
        b"\xa5Mtype",
        w_str(md.mtype),
        b"\xa4Tags",
        w_array_header(len(tags)),
    ]
    parts.extend(map(w_str, tags))
    return b"".join(parts)


class MetricDataBatch:
    """The MetricData of one Kafka batch: `(payload index, MetricData)` pairs as a sequence, and, when every
    message had the common (Go) shape, the same as columns (`columns`).

    Why columns: at a million new series the MetricData that announce them are most of the ingest loop's
    work, and validation, the index and the tank all take columns; a MetricData object per message (built,
    then taken apart again field by field) was a fifth of that. The pairs are built only when asked for
    (tests, tools, the rare batch with a message of another shape)."""

    __slots__ = ("_pairs", "columns")

    def __init__(
        self,
        pairs: list[tuple[int, MetricData]] | None = None,
        columns: tuple | None = None,
    ) -> None:
        #: (positions int64, ids, orgs int64, names, intervals int64, values float64, units, times int64,
        #: mtypes, tags): lists and numpy arrays of equal length, in payload order; None when built from pairs
        self.columns = columns
        self._pairs = pairs if pairs is not None or columns is not None else []

    @property
    def pairs(self) -> list[tuple[int, MetricData]]:
        if self._pairs is None:
            pos, ids, orgs, names, ivs, vals, units, times, mtypes, tags = self.columns  # type: ignore[misc]
            self._pairs = [
                (p, MetricData(i, o, n, iv, v, u, t, m, tg))
                for p, i, o, n, iv, v, u, t, m, tg in zip(
                    pos.tolist(),
                    ids,
                    orgs.tolist(),
                    names,
                    ivs.tolist(),
                    vals.tolist(),
                    units,
                    times.tolist(),
                    mtypes,
                    tags,
                    strict=True,
                )
            ]
        return self._pairs

    def row(self, j: int) -> MetricData:
        """Message j of the columns as a MetricData (for the few that need one: a flagged row, a fallback)."""
        _p, ids, orgs, names, ivs, vals, units, times, mtypes, tags = self.columns  # type: ignore[misc]
        return MetricData(
            ids[j],
            int(orgs[j]),
            names[j],
            int(ivs[j]),
            float(vals[j]),
            units[j],
            int(times[j]),
            mtypes[j],
            tags[j],
        )

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns is not None else len(self._pairs or ())

    def __iter__(self):
        return iter(self.pairs)

    def __getitem__(self, k):
        return self.pairs[k]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MetricDataBatch):
            return self.pairs == other.pairs
        if isinstance(other, list):
            return self.pairs == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MetricDataBatch({len(self)} messages, {'columns' if self.columns is not None else 'pairs'})"
