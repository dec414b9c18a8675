"""MetricData validation with Metrictank's rules and named reasons (spec section 2).

Metrictank validates in two places (``MetricData.Validate`` and ``input.ProcessMetricData``); this module
applies both, in Go's order, so that the first failure reported is the one Go would report. Reasons are
metric-label friendly; where Go lumps several causes into ``invalid-input`` we say which one it was.
"""

from __future__ import annotations

from .errors import DecodeError
from .ids import parse_mkey
from .metricdata import MetricData

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
