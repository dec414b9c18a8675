"""MetricData validation with Metrictank's rules and named reasons (spec section 2).

Metrictank validates in two places (``MetricData.Validate`` and ``input.ProcessMetricData``); this module
applies both, in Go's order, so that the first failure reported is the one Go would report. Reasons are
metric-label friendly; where Go lumps several causes into ``invalid-input`` we say which one it was.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from .errors import DecodeError
from .ids import parse_mkey, parse_mkeys
from .metricdata import MetricData, MetricDataBatch

MTYPES: frozenset[str] = frozenset(("gauge", "rate", "count", "counter", "timestamp"))
_MAX_TS = (1 << 31) - 1  # Cassandra stores ts/interval as int32; Metrictank rejects >= MaxInt32
_U32_MAX = 0xFFFFFFFF
_BAD_KEY_CHARS = frozenset(";!^=")

#: Reasons ``validate_metricdata`` may return, with Go's label for the same rejection.
VALIDATION_REASONS: dict[str, str] = {
    "invalid-orgid": "invalid-orgID",  # OrgId 0 (we also reject < 0 and > uint32: ids carry a uint32 org)
    "invalid-interval": "invalid-interval",  # 0, negative or >= 2^31-1
    "invalid-name": "invalid-name",  # empty after eat_dots; also invalid UTF-8 (Go: invalid-input)
    "invalid-mtype": "invalid-mtype",
    "invalid-tags": "invalid-input",  # a tag not of the form k=v with Metrictank's character rules
    "invalid-time": "invalid-timestamp",  # <= 0 or >= 2^31-1
    "invalid-id": "(dropped without a label)",  # id not "<org>.<32 hex>"
}


def eat_dots(name: str) -> str:
    """Collapse runs of dots and strip leading/trailing ones (Go ``schema.EatDots``); all-dots gives ``""``."""
    if ".." not in name and not name.startswith(".") and not name.endswith("."):
        return name
    return ".".join(p for p in name.split(".") if p)


def _valid_utf8(s: str) -> bool:
    # decode_metricdata keeps undecodable bytes as surrogate escapes; a strict encode finds them.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_tag(tag: str) -> bool:
    """Go ``ValidateTag``: ``k=v`` split at the first ``=``, k and v non-empty, k without ``;!^=``,
    v without ``;`` and not starting with ``~``, valid UTF-8."""
    eq = tag.find("=")
    if eq <= 0 or eq == len(tag) - 1:
        return False
    if not _valid_utf8(tag):
        return False
    if not _BAD_KEY_CHARS.isdisjoint(tag[:eq]):
        return False
    value = tag[eq + 1 :]
    return value[0] != "~" and ";" not in value


def validate_tags(tags: list[str]) -> bool:
    return all(validate_tag(t) for t in tags)


def validate_metricdata(md: MetricData) -> str | None:
    """Return ``None`` if Metrictank would ingest ``md``, else the reason it would drop it.

    Like Go's ``Validate`` this normalises ``md.name`` in place with :func:`eat_dots` (the id is *not*
    recomputed: Metrictank trusts the producer's id).
    """
    org = md.org_id
    if org == 0 or not 0 < org <= _U32_MAX:
        return "invalid-orgid"
    if md.interval == 0:
        return "invalid-interval"
    name = eat_dots(md.name)
    md.name = name
    if not name:
        return "invalid-name"
    if md.mtype not in MTYPES:
        return "invalid-mtype"
    if not _valid_utf8(name):
        return "invalid-name"
    if md.tags and not validate_tags(md.tags):
        return "invalid-tags"
    if not 0 < md.time < _MAX_TS:
        return "invalid-time"
    if not 0 < md.interval < _MAX_TS:
        return "invalid-interval"
    try:
        parse_mkey(md.id)
    except DecodeError:
        return "invalid-id"
    return None


_FIELDS = operator.attrgetter("id", "org_id", "name", "interval", "value", "unit", "time", "mtype", "tags")


@dataclass(slots=True)
class ValidBatch:
    """The MetricData of a batch that passed validation, as columns in input order, plus the rejects.

    Columns because the index and the tank take columns; ``id_org``/``k0``/``k1`` are the parsed ids (as
    ``metrictank.index.keys.parse_ids`` gives them) so that nothing downstream parses an id again.
    """

    positions: np.ndarray  # int64: index of each valid message in the input
    ids: Sequence[str]
    orgs: np.ndarray  # int64
    names: Sequence[str]  # normalised (eat_dots)
    intervals: np.ndarray  # int64
    units: Sequence[str]
    mtypes: Sequence[str]
    tags: Sequence[list[str]]
    times: np.ndarray  # int64
    values: np.ndarray  # float64
    id_org: np.ndarray  # int64
    k0: np.ndarray  # uint64
    k1: np.ndarray  # uint64
    invalid: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.positions)


def _one_by_one(mds: Sequence[MetricData]) -> ValidBatch:
    """The reference path: `validate_metricdata` per message (used when a column has unexpected types)."""
    invalid: dict[str, int] = {}
    keep: list[int] = []
    keys: list[tuple[int, int, int]] = []
    for j, md in enumerate(mds):
        reason = validate_metricdata(md)
        if reason:
            invalid[reason] = invalid.get(reason, 0) + 1
            continue
        mk = parse_mkey(md.id)
        keep.append(j)
        keys.append((mk.org, *mk.words))
    valid = [mds[j] for j in keep]
    k = np.array(keys, np.uint64).reshape(len(keys), 3)
    return ValidBatch(
        np.array(keep, np.int64),
        [m.id for m in valid],
        np.array([m.org_id for m in valid], np.int64),
        [m.name for m in valid],
        np.array([m.interval for m in valid], np.int64),
        [m.unit for m in valid],
        [m.mtype for m in valid],
        [m.tags for m in valid],
        np.array([m.time for m in valid], np.int64),
        np.array([m.value for m in valid], np.float64),
        k[:, 0].astype(np.int64),
        k[:, 1].copy(),
        k[:, 2].copy(),
        invalid,
    )


def _needs_check(names: list[str]) -> np.ndarray | None:
    """Mask of names that are empty, need `eat_dots` or are not valid UTF-8; None when there are none.

    The whole batch is tested on one NUL-joined string first (C speed): a name needing work shows up as
    "..", a dot next to a separator, or at either end, and bad UTF-8 as a failed encode."""
    try:
        joined = "\0".join(names)
        joined.encode("utf-8")
        if not (
            ".." in joined
            or "\0." in joined
            or ".\0" in joined
            or joined.startswith(".")
            or joined.endswith(".")
            or not all(names)
        ):
            return None
    except UnicodeEncodeError:
        pass
    return np.fromiter((not n or eat_dots(n) is not n or not _valid_utf8(n) for n in names), bool, len(names))


def _flag(
    ids: Sequence[str],
    orgs: Sequence[int],
    names: list[str],
    intervals: Sequence[int],
    values: Sequence[float],
    times: Sequence[int],
    mtypes: Sequence[str],
    tags: Sequence[list[str]],
) -> tuple[np.ndarray, ...]:
    """Mask of messages some rule may reject, with the parsed ids and the numeric columns."""
    n = len(ids)
    org_a = np.array(orgs, np.int64)
    iv_a = np.array(intervals, np.int64)
    ts_a = np.array(times, np.int64)
    val_a = np.array(values, np.float64)
    bad = (
        (org_a <= 0) | (org_a > _U32_MAX) | (iv_a <= 0) | (iv_a >= _MAX_TS) | (ts_a <= 0) | (ts_a >= _MAX_TS)
    )
    if not MTYPES.issuperset(mtypes):
        bad |= np.fromiter((m not in MTYPES for m in mtypes), bool, n)
    odd_names = _needs_check(names)
    if odd_names is not None:
        bad |= odd_names
    if any(tags):
        bad_tags = {t for t in set(chain.from_iterable(tags)) if not validate_tag(t)}
        if bad_tags:
            bad |= np.fromiter((bool(t) and not bad_tags.isdisjoint(t) for t in tags), bool, n)
    ok, id_org, k0, k1 = parse_mkeys(ids)
    bad |= ~ok
    return bad, ok, id_org, k0, k1, org_a, iv_a, ts_a, val_a


def validate_metricdata_many(mds: Sequence[MetricData] | MetricDataBatch) -> ValidBatch:
    """:func:`validate_metricdata` for a batch: the same verdicts, reasons and name normalisation, at a
    fraction of the per-message cost.

    Every rule is first checked for the whole batch with numpy or one string operation; only messages that
    some check flags go through `validate_metricdata` (which then also picks the reason Go would give).
    A `MetricDataBatch` with columns is validated from them, without a MetricData per message.
    """
    cols = mds.columns if isinstance(mds, MetricDataBatch) else None
    if cols is not None:
        _pos, ids, orgs, names_t, intervals, values, units, times, mtypes, tags = cols

        one = mds.row  # type: ignore[union-attr]
    else:
        if isinstance(mds, MetricDataBatch):
            mds = [md for _i, md in mds.pairs]
        if not mds:
            return _one_by_one(mds)
        ids, orgs, names_t, intervals, values, units, times, mtypes, tags = zip(
            *map(_FIELDS, mds), strict=True
        )
        one = mds.__getitem__
    n = len(ids)
    if n == 0:
        return _one_by_one([])
    names = list(names_t)
    try:
        bad, ok, id_org, k0, k1, org_a, iv_a, ts_a, val_a = _flag(
            ids, orgs, names, intervals, values, times, mtypes, tags
        )
    except (OverflowError, TypeError, ValueError):  # a column with unexpected types: let the reference decide
        return _one_by_one([one(j) for j in range(n)])
    invalid: dict[str, int] = {}
    if not bad.any():
        keep = np.arange(n, dtype=np.int64)
        return ValidBatch(
            keep, ids, org_a, names, iv_a, units, mtypes, tags, ts_a, val_a, id_org, k0, k1, invalid
        )
    dropped = []
    for j in np.flatnonzero(bad).tolist():
        md = one(j)
        reason = validate_metricdata(md)
        if reason:
            invalid[reason] = invalid.get(reason, 0) + 1
            dropped.append(j)
            continue
        names[j] = md.name
        if not ok[j]:  # an id only parse_mkey accepts (an org written with leading zeros)
            mk = parse_mkey(md.id)
            id_org[j] = mk.org
            k0[j], k1[j] = mk.words
    if not dropped:
        keep = np.arange(n, dtype=np.int64)
        return ValidBatch(
            keep, ids, org_a, names, iv_a, units, mtypes, tags, ts_a, val_a, id_org, k0, k1, invalid
        )
    mask = np.ones(n, bool)
    mask[dropped] = False
    keep = np.flatnonzero(mask)
    kl = keep.tolist()
    return ValidBatch(
        keep,
        [ids[j] for j in kl],
        org_a[keep],
        [names[j] for j in kl],
        iv_a[keep],
        [units[j] for j in kl],
        [mtypes[j] for j in kl],
        [tags[j] for j in kl],
        ts_a[keep],
        val_a[keep],
        id_org[keep],
        k0[keep],
        k1[keep],
        invalid,
    )
