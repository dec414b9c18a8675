"""Series ids and archive keys (spec section 1).

Metrictank never recomputes an id on ingest; it trusts the ``Id`` of a MetricData. ``series_id`` exists for
producers and tests, which must generate exactly the ids Go generates. ``MKey``/``AMKey`` are the binary
and rollup-aware forms used as map keys, row-key prefixes and persist-message keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from .errors import DecodeError

#: Aggregation methods Metrictank stores as rollup archives (avg is stored as sum and cnt).
AGG_METHODS: tuple[str, ...] = ("sum", "cnt", "lst", "max", "min")
#: Methods Go's ``MethodFromString`` accepts when parsing an archive suffix ("avg" parses but is never stored).
PARSE_METHODS: frozenset[str] = frozenset(AGG_METHODS + ("avg",))
#: Go's ``schema.Method`` numbering (used in the 16-bit Archive code).
METHOD_CODES: dict[str, int] = {"avg": 1, "sum": 2, "lst": 3, "max": 4, "min": 5, "cnt": 6}
#: Rollup spans Metrictank can represent in an Archive (its ``spanHumanToCode`` table), in code order.
VALID_SPANS: tuple[int, ...] = (
    2, 5, 10, 15, 30, 60, 90, 120, 150, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200,
    10800, 14400, 18000, 21600, 28800, 43200, 86400,
)  # fmt: skip
_SPAN_SET = frozenset(VALID_SPANS)

_MKEY_RE = re.compile(r"([0-9]+)\.([0-9a-fA-F]{32})")
_SPAN_RE = re.compile(r"[0-9]+")
_U32_MAX = 0xFFFFFFFF


def _tag_sort_key(tag: str) -> bytes:
    # Go sorts strings by bytes; Python's code-point order only differs for surrogate-escaped bytes,
    # but sorting on the encoded form makes the equivalence unconditional.
    return tag.encode("utf-8", "surrogateescape")


def series_id(org: int, name: str, unit: str, mtype: str, interval: int, tags: list[str] | None) -> str:
    """The id ``"<org>.<md5 hex>"`` Metrictank's ``MetricDefinition.SetId`` computes.

    Tags are hashed in byte order; tags ``name=<x>`` (longer than 5 bytes) are skipped, as in the index.
    """
    parts = [name, unit, mtype, str(interval)]
    for t in sorted(tags or (), key=_tag_sort_key):
        if len(t) > 5 and t.startswith("name="):
            continue
        parts.append(t)
    digest = hashlib.md5("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{org}.{digest}"


@dataclass(frozen=True, slots=True)
class MKey:
    """A series key: the 16 md5 bytes plus the org (Go ``schema.MKey``)."""

    key: bytes
    org: int

    def __post_init__(self) -> None:
        if len(self.key) != 16:
            raise ValueError(f"MKey needs 16 key bytes, got {len(self.key)}")
        if not 0 <= self.org <= _U32_MAX:
            raise ValueError(f"MKey org {self.org} out of uint32 range")

    def __str__(self) -> str:
        return f"{self.org}.{self.key.hex()}"

    @property
    def words(self) -> tuple[int, int]:
        """The key as two little-endian uint64 — the ``k0``/``k1`` fields of decoded point arrays."""
        k = self.key
        return int.from_bytes(k[:8], "little"), int.from_bytes(k[8:], "little")

    @classmethod
    def from_words(cls, k0: int, k1: int, org: int) -> MKey:
        """Inverse of :attr:`words`, for turning a decoded point row back into a key."""
        return cls(int(k0).to_bytes(8, "little") + int(k1).to_bytes(8, "little"), int(org))

    @classmethod
    def parse(cls, s: str) -> MKey:
        return parse_mkey(s)


@lru_cache(maxsize=1 << 16)
def parse_mkey(s: str) -> MKey:
    """Parse ``"<org>.<32 hex>"``; raises :class:`DecodeError` (``invalid-id``) otherwise.

    Stricter than Go's ``MKeyFromString`` in one respect: the separator must be a dot (Go does not look at
    it), so that ``str(parse_mkey(s))`` always denotes the same series as ``s``. Upper-case hex is accepted,
    as in Go. Cached because the same ids arrive again and again in MetricData messages.
    """
    m = _MKEY_RE.fullmatch(s) if type(s) is str else None
    if m is None:
        raise DecodeError("invalid-id", f"not an <org>.<32 hex> id: {s!r}")
    org = int(m.group(1))
    if org > _U32_MAX:
        raise DecodeError("invalid-id", f"org out of uint32 range: {s!r}")
    return MKey(bytes.fromhex(m.group(2)), org)


# byte -> nibble value, 255 for a byte that is not a hex digit (both cases accepted, as in Go)
_HEX_VAL = np.full(256, 255, np.uint8)
for _c in b"0123456789":
    _HEX_VAL[_c] = _c - 48
for _c in b"abcdef":
    _HEX_VAL[_c] = _c - 87
    _HEX_VAL[_c - 32] = _c - 87
_ORG_DIGITS = 10  # a uint32 has at most 10 digits; longer orgs (leading zeros) are left to parse_mkey


def _parse_fixed(raw: bytes, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ok, org, md5 words as (n, 2) uint64) of ids of one length `width`, concatenated in `raw`."""
    mat = np.frombuffer(raw, np.uint8).reshape(-1, width)
    n = len(mat)
    nib = _HEX_VAL[mat[:, width - 32 :]]
    ok = (mat[:, width - 33] == 46) & (nib != 255).all(axis=1)  # "." then 32 hex digits
    org = np.zeros(n, np.int64)
    for j in range(width - 33):  # the org's digits, most significant first
        d = mat[:, j] - np.uint8(48)  # wraps below "0", so one comparison checks the range
        ok &= d <= 9
        org = org * 10 + d
    ok &= org <= _U32_MAX
    words = ((nib[:, 0::2] << 4) | nib[:, 1::2]).view("<u8")  # the 16 md5 bytes, as two words
    return ok, np.where(ok, org, 0), np.where(ok[:, None], words, np.uint64(0))


def _rejected(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, np.uint64), np.zeros(n, np.uint64)


def parse_mkeys(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch :func:`parse_mkey` for the ingest path: ``(ok, org, k0, k1)``, one row per id.

    ``ok`` (bool) says which ids this fast check accepts; where it is False, ``org``/``k0``/``k1`` are 0 and the
    caller asks :func:`parse_mkey` (which gives the reason, and also accepts the rare orgs written with more
    than ten digits). Accepted ids are exactly ones ``parse_mkey`` accepts, with ``org`` (int64) its org and
    ``k0``/``k1`` (uint64) its :attr:`MKey.words`. Why: a MetricData batch full of new series would otherwise
    cost a regex match, two int conversions and a frozen dataclass per id; here ids of one length (one org)
    are one string join and a few numpy passes over the bytes, viewed as an (ids x length) matrix.
    """
    n = len(ids)
    ok, org, k0, k1 = _rejected(n)
    words = np.zeros((n, 2), np.uint64)
    if n:
        try:
            lens = np.fromiter(map(len, ids), np.int64, n)
        except TypeError:  # a non-str id (or one without a length): only parse_mkey can say which
            return ok, org, k0, k1
        widths = np.unique(lens[(lens >= 34) & (lens <= 33 + _ORG_DIGITS)]).tolist()
        for width in widths:
            sel = None if len(widths) == 1 and lens[0] == width and (lens == width).all() else lens == width
            part = ids if sel is None else [ids[j] for j in np.flatnonzero(sel).tolist()]
            try:
                # ascii with "replace" keeps one byte per character (offsets stay put); a replaced character
                # becomes "?", which is neither a digit, a dot nor hex, so its id is rejected as it should be
                raw = "".join(part).encode("ascii", "replace")
            except TypeError:  # a non-str id of a plausible length
                return _rejected(n)
            if len(raw) != width * len(part):  # a str subclass with an odd len(): leave it all to parse_mkey
                return _rejected(n)
            g_ok, g_org, g_words = _parse_fixed(raw, width)
            if sel is None:
                ok, org, words = g_ok, g_org, g_words
            else:
                ok[sel], org[sel], words[sel] = g_ok, g_org, g_words
    return ok, org, words[:, 0], words[:, 1]


@dataclass(frozen=True, slots=True)
class AMKey:
    """A series key plus archive: raw (``method is None``, ``span == 0``) or a rollup ``<method>_<span>``."""

    mkey: MKey
    method: str | None = None
    span: int = 0

    RAW_SPAN: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if self.method is None:
            if self.span != 0:
                raise ValueError("a raw AMKey has span 0")
            return
        if self.method not in PARSE_METHODS:
            raise ValueError(f"unknown aggregation method {self.method!r}")
        if self.span not in _SPAN_SET:
            raise ValueError(f"span {self.span} is not one Metrictank can encode (see VALID_SPANS)")

    def __str__(self) -> str:
        if self.method is None:
            return str(self.mkey)
        return f"{self.mkey}_{self.method}_{self.span}"

    @property
    def is_raw(self) -> bool:
        return self.method is None

    @property
    def archive_code(self) -> int:
        """Go's 16-bit ``schema.Archive``: method in the low byte, span code in the high byte; 0 for raw."""
        if self.method is None:
            return 0
        return METHOD_CODES[self.method] | (VALID_SPANS.index(self.span) << 8)

    @classmethod
    def parse(cls, s: str) -> AMKey:
        return parse_amkey(s)


@lru_cache(maxsize=1 << 16)
def parse_amkey(s: str) -> AMKey:
    """Parse an AMKey string as Go's ``AMKeyFromString``: zero underscores (raw) or exactly two."""
    if type(s) is not str:
        raise DecodeError("invalid-amkey", f"not a string: {s!r}")
    n = s.count("_")
    if n == 0:
        return AMKey(parse_mkey(s))
    if n != 2:
        raise DecodeError("invalid-amkey", f"expected 0 or 2 underscores: {s!r}")
    ident, method, span = s.split("_")
    mkey = parse_mkey(ident)
    if method not in PARSE_METHODS:
        raise DecodeError("invalid-amkey", f"unknown method {method!r} in {s!r}")
    if _SPAN_RE.fullmatch(span) is None or int(span) not in _SPAN_SET:
        raise DecodeError("invalid-amkey", f"invalid span {span!r} in {s!r}")
    return AMKey(mkey, method, int(span))
