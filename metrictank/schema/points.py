"""MetricPoint messages and the vectorised batch decoder of the ``mdm`` topic (spec section 2).

``classify_and_decode`` is the hot path of ingest: it turns one ``consume()`` batch (thousands of raw Kafka
payloads) into a single numpy array of points, with a constant number of numpy calls per batch. Python-level
work is limited to ``len``/``join`` over the payload list (C loops), a slice per *array* message, and a decode
per MetricData/control message (those carry strings and cannot be columnar).

Point array layout (:data:`POINT_DTYPE`, 40 bytes/record): ``k0``, ``k1`` (the 16 key bytes as two
little-endian uint64), ``value`` f8, ``time`` u4, ``org`` u4, ``msg_index`` i4, 4 bytes of zero padding.
The first 32 bytes are exactly the wire body of a ``0x02`` point, so filling the array is one strided byte
copy and no field-by-field conversion. Two integer words route faster than a ``V16`` key: they hash, compare
and ``searchsorted`` as plain integers; :meth:`MKey.words <metrictank.schema.ids.MKey.words>` gives the
same pair for a known series.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _mdata, _points
from .control import ControlMsg, decode_control
from .errors import DecodeError
from .ids import MKey, parse_mkey
from .metricdata import MetricData, MetricDataBatch, decode_metricdata

FORMAT_METRIC_DATA_ARRAY_JSON = 0x00  # legacy, not accepted by current Metrictank
FORMAT_METRIC_DATA_ARRAY_MSGP = 0x01  # legacy, not accepted by current Metrictank
FORMAT_METRIC_POINT = 0x02
FORMAT_METRIC_POINT_WITHOUT_ORG = 0x03
FORMAT_INDEX_CONTROL = 0x04
FORMAT_METRIC_POINT_ARRAY = 0x05

POINT_DTYPE = np.dtype(
    {
        "names": ["k0", "k1", "value", "time", "org", "msg_index"],
        "formats": ["<u8", "<u8", "<f8", "<u4", "<u4", "<i4"],
        "offsets": [0, 8, 16, 24, 28, 32],
        "itemsize": 40,
    }
)
#: Wire body of a point with org (32 bytes) and without (28 bytes), as numpy record types.
WIRE32_DTYPE = np.dtype(
    {"names": ["k0", "k1", "value", "time", "org"], "formats": ["<u8", "<u8", "<f8", "<u4", "<u4"]}
)
WIRE28_DTYPE = np.dtype({"names": ["k0", "k1", "value", "time"], "formats": ["<u8", "<u8", "<f8", "<u4"]})

_REC = POINT_DTYPE.itemsize
_MAX_TS = (1 << 31) - 1

#: Every reason ``classify_and_decode`` counts, with what one count stands for.
BATCH_ERROR_REASONS: dict[str, str] = {
    "empty": "message: zero-length (or None) payload",
    "invalid-length": "message: first byte 0x02/0x03 but not 33/29 bytes long",
    "invalid-format": "message: 0x05 shorter than 30 bytes or with a sub-format other than 0x02/0x03",
    "unsupported-format": "message: legacy MetricDataArray formats 0x00/0x01",
    "invalid-msgp": "message: not a decodable MetricData",
    "invalid-control": "message: 0x04 that is not a valid {Defs, Op} control message",
    "array-remainder": "message: 0x05 whose length leaves a partial point (whole points before it are kept)",
    "no-org": "point: sent without org (0x03) while default_org is 0; dropped",
    "invalid-time": "point: time 0 or >= 2^31-1; dropped",
}

_pack32 = struct.Struct("<16sdII").pack
_pack28 = struct.Struct("<16sdI").pack
_pack_msg32 = struct.Struct("<B16sdII").pack
_pack_msg28 = struct.Struct("<B16sdI").pack


# ------------------------------------------------------------------------------------------------ encoding


def _mkey_of(mkey: MKey | str) -> MKey:
    return mkey if isinstance(mkey, MKey) else parse_mkey(mkey)


def encode_metricpoint(mkey: MKey | str, value: float, time: int, with_org: bool = True) -> bytes:
    """A single-point message: ``0x02`` + 32-byte body, or ``0x03`` + 28-byte body without org."""
    k = _mkey_of(mkey)
    if with_org:
        return _pack_msg32(FORMAT_METRIC_POINT, k.key, value, time, k.org)
    return _pack_msg28(FORMAT_METRIC_POINT_WITHOUT_ORG, k.key, value, time)


def encode_metricpoint_array(points: Iterable[tuple[MKey | str, float, int]], with_org: bool = True) -> bytes:
    """``0x05`` + sub-format + the bodies back to back; Go refuses an empty array, so do we (ValueError)."""
    if with_org:
        head = bytes((FORMAT_METRIC_POINT_ARRAY, FORMAT_METRIC_POINT))
        bodies = [_pack32(k.key, v, t, k.org) for k, v, t in ((_mkey_of(m), v, t) for m, v, t in points)]
    else:
        head = bytes((FORMAT_METRIC_POINT_ARRAY, FORMAT_METRIC_POINT_WITHOUT_ORG))
        bodies = [_pack28(_mkey_of(m).key, v, t) for m, v, t in points]
    if not bodies:
        raise ValueError("a MetricPointArray needs at least one point")
    return head + b"".join(bodies)


def _wire_bodies(points: np.ndarray, with_org: bool) -> np.ndarray:
    """(P, 32|28) uint8 wire bodies from any structured array with k0, k1, value, time (and org) fields."""
    dt = WIRE32_DTYPE if with_org else WIRE28_DTYPE
    w = np.empty(len(points), dtype=dt)
    for name in dt.names:
        w[name] = points[name]
    return w.view(np.uint8).reshape(len(points), dt.itemsize)


def encode_metricpoints_many(points: np.ndarray, with_org: bool = True) -> list[bytes]:
    """One single-point message per row of a structured array (fields k0, k1, value, time[, org]).

    For producers and load generators: the bytes are built in one numpy pass; only the final split into
    separate message objects is per point.
    """
    n = len(points)
    body = _wire_bodies(points, with_org)
    msg = np.empty((n, body.shape[1] + 1), dtype=np.uint8)
    msg[:, 0] = FORMAT_METRIC_POINT if with_org else FORMAT_METRIC_POINT_WITHOUT_ORG
    msg[:, 1:] = body
    raw = msg.tobytes()
    w = msg.shape[1]
    return [raw[i : i + w] for i in range(0, n * w, w)]


def encode_metricpoint_array_np(points: np.ndarray, with_org: bool = True) -> bytes:
    """Vectorised :func:`encode_metricpoint_array` from a structured array (fields k0, k1, value, time[, org])."""
    if len(points) == 0:
        raise ValueError("a MetricPointArray needs at least one point")
    sub = FORMAT_METRIC_POINT if with_org else FORMAT_METRIC_POINT_WITHOUT_ORG
    return bytes((FORMAT_METRIC_POINT_ARRAY, sub)) + _wire_bodies(points, with_org).tobytes()


# ------------------------------------------------------------------------------------------------ decoding


@dataclass(slots=True)
class DecodedBatch:
    """Everything one batch of ``mdm`` payloads contained.

    ``points`` (:data:`POINT_DTYPE`) are in message order (stable within a message), so per-series order is
    preserved; ``msg_index`` says which payload each came from. ``metricdata`` and ``control`` hold
    ``(payload index, decoded message)``; MetricData are *not* validated here (see ``validate_metricdata``).
    ``errors`` counts rejected payloads/points by reason (see :data:`BATCH_ERROR_REASONS`).
    """

    points: np.ndarray
    metricdata: MetricDataBatch = field(default_factory=MetricDataBatch)
    control: list[tuple[int, ControlMsg]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    n_messages: int = 0

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def _count(errors: dict[str, int], reason: str, k: int) -> None:
    if k:
        errors[reason] = errors.get(reason, 0) + int(k)


def _sanitise(values: Sequence[object]) -> list[bytes]:
    # Tombstones arrive as None; anything else that is not a byte buffer is treated the same way.
    return [v if isinstance(v, bytes | bytearray | memoryview) else b"" for v in values]


def classify_and_decode(values: Sequence[bytes], default_org: int) -> DecodedBatch:
    """Split a batch of raw ``mdm`` payloads by type and decode all points in one vectorised pass.

    ``values``: a sequence of payloads, or a packed batch (an object with ``payloads``, all of them joined,
    ``lengths``, an int array, and ``tolist()``), as the batch consumer hands them over.

    ``default_org`` is the org of ``0x03`` points (Metrictank's ``org-id``; 0 rejects them as ``no-org``).
    Never raises on malformed payloads: they are counted in ``errors``. Points whose series is unknown are
    still returned - routing and dropping unknown series is the tank's job.
    """
    n = len(values)
    errors: dict[str, int] = {}
    if n == 0:
        return DecodedBatch(np.empty(0, POINT_DTYPE), errors=errors, n_messages=0)
    packed = getattr(
        values, "payloads", None
    )  # a packed batch: the payloads joined already, and their lengths
    if packed is not None:
        lengths = values.lengths
        all33 = int(lengths.min()) == 33 == int(lengths.max())
        buf = packed
    else:
        # The set of lengths first: in the common batch (every message a 33-byte point) it proves every length
        # without building the per-message length array, which costs twice as much (an int64 per message
        # through fromiter) and is then needed only to locate first bytes that sit at a fixed stride anyway.
        try:
            sizes = set(map(len, values))
        except TypeError:
            values = _sanitise(values)
            sizes = set(map(len, values))
        all33 = sizes == {33}
        buf = b"".join(values)
    arr = np.frombuffer(buf, dtype=np.uint8)
    ready: list[np.ndarray] = []  # POINT_DTYPE records gathered in C, one array per kind of message
    rec = arr.reshape(n, 33) if all33 else None

    if rec is not None and bool((rec[:, 0] == FORMAT_METRIC_POINT).all()):
        # the common case: a homogeneous batch of single points with org
        ready.append(np.frombuffer(_points.gather_fixed(buf, n, 33, 1, 32, 0), dtype=POINT_DTYPE))
        md_idx = ctl_idx = ()
    else:
        if packed is not None:  # per-message bytes only if single points are to be cut out below
            lens = values.lengths.astype(np.int64)
            offs = values.starts
        else:
            lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
            offs = np.cumsum(lens) - lens
        nonempty = lens > 0
        last = max(len(arr) - 1, 0)
        if len(arr):
            first = arr[np.minimum(offs, last)].astype(np.int16)
            first[~nonempty] = -1
        else:
            first = np.full(n, -1, dtype=np.int16)
        m2 = (first == FORMAT_METRIC_POINT) & (lens == 33)
        m3 = (first == FORMAT_METRIC_POINT_WITHOUT_ORG) & (lens == 29)
        is5 = first == FORMAT_METRIC_POINT_ARRAY
        second = np.full(n, -1, dtype=np.int16)
        if len(arr):
            second[is5 & (lens >= 2)] = arr[np.minimum(offs[is5 & (lens >= 2)] + 1, last)]
        m5 = (
            is5
            & (lens >= 30)
            & ((second == FORMAT_METRIC_POINT) | (second == FORMAT_METRIC_POINT_WITHOUT_ORG))
        )
        m4 = first == FORMAT_INDEX_CONTROL
        bad_len = ((first == FORMAT_METRIC_POINT) & ~m2) | ((first == FORMAT_METRIC_POINT_WITHOUT_ORG) & ~m3)
        bad5 = is5 & ~m5
        legacy = (first == FORMAT_METRIC_DATA_ARRAY_JSON) | (first == FORMAT_METRIC_DATA_ARRAY_MSGP)
        _count(errors, "empty", np.count_nonzero(~nonempty))
        _count(errors, "invalid-length", np.count_nonzero(bad_len))
        _count(errors, "invalid-format", np.count_nonzero(bad5))
        _count(errors, "unsupported-format", np.count_nonzero(legacy))
        is_md = nonempty & ~(m2 | m3 | m4 | is5 | bad_len | legacy)

        if m2.any():
            ready.append(_gather(buf, offs, np.flatnonzero(m2), None, 32, 0))
        k3 = np.count_nonzero(m3)
        if k3:
            if default_org:
                ready.append(_gather(buf, offs, np.flatnonzero(m3), None, 28, default_org))
            else:
                _count(errors, "no-org", k3)
        if m5.any():
            _decode_arrays(buf, lens, offs, second, m5, default_org, ready, errors)

        md_idx = np.flatnonzero(is_md).tolist()
        ctl_idx = np.flatnonzero(m4).tolist()

    points = _assemble(ready)
    if len(points):
        t = points["time"]
        bad = (t == 0) | (t >= _MAX_TS)
        nbad = np.count_nonzero(bad)
        if nbad:
            _count(errors, "invalid-time", nbad)
            points = points[~bad]

    metricdata = MetricDataBatch([])
    if md_idx:
        metricdata = _decode_metricdata(buf, offs, lens, md_idx, values, errors)
    control: list[tuple[int, ControlMsg]] = []
    for i in ctl_idx:
        try:
            control.append((i, decode_control(values[i])))
        except DecodeError as e:
            _count(errors, e.reason, 1)
    return DecodedBatch(points, metricdata, control, errors, n)


def _decode_metricdata(
    buf: bytes, offs: np.ndarray, lens: np.ndarray, md_idx: list[int], values, errors: dict[str, int]
) -> MetricDataBatch:
    """The MetricData payloads at `md_idx`: the common shape in C, straight into columns, in one call; a batch
    with a message of another shape goes through the general path for those, which gives their verdict, and
    is handed on as pairs (the columns cannot hold every value the general path accepts)."""
    at = np.asarray(md_idx, np.int64)
    ok_b, ids, orgs, names, ivs, vals, units, times, mtypes, tags = _mdata.decode_columns(
        buf, offs[at].tobytes(), lens[at].astype(np.int32).tobytes()
    )
    ok = np.frombuffer(ok_b, np.bool_)
    orgs_a, ivs_a = np.frombuffer(orgs, np.int64), np.frombuffer(ivs, np.int64)
    times_a, vals_a = np.frombuffer(times, np.int64), np.frombuffer(vals, np.float64)
    cols = MetricDataBatch(columns=(at, ids, orgs_a, names, ivs_a, vals_a, units, times_a, mtypes, tags))
    if ok.all():
        return cols
    pairs: list[tuple[int, MetricData]] = []
    for j, (i, good) in enumerate(zip(md_idx, ok.tolist(), strict=True)):
        if good:
            md = cols.row(j)
        else:
            try:
                md = decode_metricdata(values[i])
            except DecodeError as e:
                _count(errors, e.reason, 1)
                continue
        pairs.append((i, md))
    return MetricDataBatch(pairs)


def _gather(
    buf: bytes, offs: np.ndarray, sel: np.ndarray, cnt: np.ndarray | None, size: int, org: int
) -> np.ndarray:
    """Point records of the messages at `sel` (`cnt` points each, one if None), from byte 1 of each message
    (single points) or byte 2 (arrays, when `cnt` is given), written once in C with the GIL released."""
    skip = 1 if cnt is None else 2
    counts = np.ones(len(sel), np.int64) if cnt is None else cnt.astype(np.int64, copy=False)
    recs = _points.gather(
        buf,
        (offs[sel] + skip).astype(np.int64, copy=False).tobytes(),
        counts.tobytes(),
        sel.astype(np.int32).tobytes(),
        size,
        org,
    )
    return np.frombuffer(recs, dtype=POINT_DTYPE)


def _decode_arrays(
    buf: bytes,
    lens: np.ndarray,
    offs: np.ndarray,
    second: np.ndarray,
    m5: np.ndarray,
    default_org: int,
    ready: list[np.ndarray],
    errors: dict[str, int],
) -> None:
    """The whole points of all 0x05 messages, as point records, one array per sub-format; a partial point at
    a message's end is counted and left out. Nothing per message or per point runs in Python."""
    idx5 = np.flatnonzero(m5)
    sub = second[idx5]
    for fmt, size, with_org in (
        (FORMAT_METRIC_POINT, 32, True),
        (FORMAT_METRIC_POINT_WITHOUT_ORG, 28, False),
    ):
        sel = idx5[sub == fmt]
        if not len(sel):
            continue
        body = lens[sel] - 2
        cnt = body // size
        _count(errors, "array-remainder", np.count_nonzero(body % size))
        if not with_org and not default_org:
            _count(errors, "no-org", int(cnt.sum()))
            continue
        if cnt.any():
            ready.append(_gather(buf, offs, sel, cnt, size, 0 if with_org else default_org))


def _assemble(ready: list[np.ndarray]) -> np.ndarray:
    """The batch's point records (one array per kind of message, each in message order) as one array in
    message order."""
    if len(ready) == 1:
        return ready[0]
    total = sum(map(len, ready))
    out = np.empty(total, dtype=POINT_DTYPE)  # not np.concatenate: it drops the record's padding
    ob = out.view(np.uint8).reshape(total, _REC)
    pos = 0
    for r in ready:
        ob[pos : pos + len(r)] = r.view(np.uint8).reshape(len(r), _REC)
        pos += len(r)
    mi = out["msg_index"]
    if total and np.any(mi[1:] < mi[:-1]):
        out = out[np.argsort(mi, kind="stable")]
    return out
