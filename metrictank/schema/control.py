"""Index control messages (``0x04`` + msgpack ``{Defs, Op}``) of the ``mdm`` topic.

They let an operator remove, archive or restore series on every node through the data stream itself. The
definitions inside are Go ``MetricDefinition`` maps whose ``Id`` is a binary MKey ``{Key: bin16, Org}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._msgp import w_array_header, w_bin, w_int, w_str, w_uint
from .errors import DecodeError
from .ids import MKey
from .metricdata import unpack_one

FORMAT_INDEX_CONTROL = 0x04
OP_REMOVE = 0
OP_ARCHIVE = 1
OP_RESTORE = 2
OP_NAMES: dict[int, str] = {OP_REMOVE: "remove", OP_ARCHIVE: "archive", OP_RESTORE: "restore"}

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_U32_MAX = 0xFFFFFFFF


@dataclass(slots=True)
class MetricDefinition:
    """A series definition as carried in control messages (Go ``schema.MetricDefinition``)."""

    id: MKey
    org_id: int = 0
    name: str = ""
    interval: int = 0
    unit: str = ""
    mtype: str = ""
    tags: list[str] = field(default_factory=list)
    last_update: int = 0
    partition: int = 0


@dataclass(slots=True)
class ControlMsg:
    defs: list[MetricDefinition]
    op: int


def _err(detail: str) -> DecodeError:
    return DecodeError("invalid-control", detail)


def _int(name: str, v: object, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _err(f"field {name}: bad integer {v!r}")
    return v


def _str(name: str, v: object) -> str:
    if type(v) is not str:
        raise _err(f"field {name}: expected str, got {type(v).__name__}")
    return v


def _keyname(k: object) -> object:
    return k.decode("utf-8", "surrogateescape") if type(k) is bytes else k


def _mkey(obj: object) -> MKey:
    if type(obj) is not dict:
        raise _err("Id: expected a map")
    key = b"\0" * 16
    org = 0
    for k, v in obj.items():
        k = _keyname(k)
        if k == "Key":
            if type(v) is not bytes or len(v) != 16:
                raise _err("Id.Key: expected bin of 16 bytes")
            key = v
        elif k == "Org":
            org = _int("Id.Org", v, 0, _U32_MAX)
    return MKey(key, org)


def _definition(obj: object) -> MetricDefinition:
    if type(obj) is not dict:
        raise _err("definition: expected a map")
    d = MetricDefinition(MKey(b"\0" * 16, 0))
    for k, v in obj.items():
        k = _keyname(k)
        if k == "Id":
            d.id = _mkey(v)
        elif k == "OrgId":
            d.org_id = _int(k, v, 0, _U32_MAX)
        elif k == "Name":
            d.name = _str(k, v)
        elif k == "Interval":
            d.interval = _int(k, v, _I64_MIN, _I64_MAX)
        elif k == "Unit":
            d.unit = _str(k, v)
        elif k == "Mtype":
            d.mtype = _str(k, v)
        elif k == "Tags":
            if v is None:
                v = []
            if type(v) is not list or any(type(t) is not str for t in v):
                raise _err("Tags: expected an array of str")
            d.tags = v
        elif k == "LastUpdate":
            d.last_update = _int(k, v, _I64_MIN, _I64_MAX)
        elif k == "Partition":
            d.partition = _int(k, v, _I32_MIN, _I32_MAX)
    return d


def decode_control(b: bytes) -> ControlMsg:
    """Decode a ``0x04`` message; raises :class:`DecodeError` (``invalid-control``) on garbage or unknown op."""
    if not b or b[0] != FORMAT_INDEX_CONTROL:
        raise _err("not an index control message")
    try:
        obj = unpack_one(b[1:])
    except DecodeError as e:
        raise _err(e.detail) from None
    if type(obj) is not dict:
        raise _err("expected a map")
    defs: list[MetricDefinition] = []
    op = None
    for k, v in obj.items():
        k = _keyname(k)
        if k == "Defs":
            if v is None:
                v = []
            if type(v) is not list:
                raise _err("Defs: expected an array")
            defs = [_definition(x) for x in v]
        elif k == "Op":
            op = _int("Op", v, 0, 0xFF)
    if op is None or op not in OP_NAMES:
        raise _err(f"unknown op {op!r}")
    return ControlMsg(defs, op)


def _encode_definition(d: MetricDefinition) -> bytes:
    parts = [
        b"\x89\xa2Id\x82\xa3Key",
        w_bin(d.id.key),
        b"\xa3Org",
        w_uint(d.id.org),
        b"\xa5OrgId",
        w_uint(d.org_id),
        b"\xa4Name",
        w_str(d.name),
        b"\xa8Interval",
        w_int(d.interval),
        b"\xa4Unit",
        w_str(d.unit),
        b"\xa5Mtype",
        w_str(d.mtype),
        b"\xa4Tags",
        w_array_header(len(d.tags)),
        *map(w_str, d.tags),
        b"\xaaLastUpdate",
        w_int(d.last_update),
        b"\xa9Partition",
        w_int(d.partition),
    ]
    return b"".join(parts)


def encode_control(msg: ControlMsg) -> bytes:
    """``0x04`` + the msgpack Go's ``WriteIndexControlMsg`` writes (key order Defs, Op; Op as uint8)."""
    parts = [bytes((FORMAT_INDEX_CONTROL,)), b"\x82\xa4Defs", w_array_header(len(msg.defs))]
    parts.extend(map(_encode_definition, msg.defs))
    parts.append(b"\xa2Op")
    parts.append(w_uint(msg.op))
    return b"".join(parts)
