"""Persist notifications of the ``metricpersist`` topic (spec section 6).

``0x01`` + compact JSON + ``"\\n"``, written the way Go's ``encoding/json`` writes it: field order
``instance, saved_chunks`` and ``key, t0``, and Go's string escaping (``<``, ``>``, ``&``, U+2028/U+2029 as
``\\u00XX``-style escapes). Go nodes only need to *parse* our messages, but byte identity keeps the golden
vector honest and makes mixed-cluster captures diffable.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from .errors import DecodeError
from .ids import parse_amkey

PERSIST_MESSAGE_BATCH_V1 = 0x01
_U32_MAX = 0xFFFFFFFF

# What Go's encodeState.string escapes, besides passing other non-ASCII through as UTF-8.
_GO_ESCAPE_RE = re.compile('[\\x00-\\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    e = _GO_ESCAPES.get(c)
    if e is not None:
        return e
    o = ord(c)
    if 0xD800 <= o <= 0xDFFF:
        return "\\ufffd"  # Go replaces invalid UTF-8 (our surrogate escapes) with an escaped U+FFFD
    return f"\\u{o:04x}"  # other control characters, including \b and \f (Go before 1.22)


def go_json_string(s: str) -> str:
    """A JSON string literal exactly as Go's ``encoding/json`` (HTML-safe escaping) writes it."""
    return '"' + _GO_ESCAPE_RE.sub(_escape_char, s) + '"'


def encode_persist(instance: str, saved: list[tuple[str, int]], epoch: int = 0) -> bytes:
    """``0x01{"instance":..,"saved_chunks":[{"key":..,"t0":..},..]}\\n`` (Go ``PersistMessageBatch``).

    With `epoch` > 0 (the writer's primary lease epoch) an `"epoch"` field follows `saved_chunks`: Go's decoder
    ignores unknown fields, so Metrictank nodes read the message as before; without it the bytes are exactly
    Metrictank's."""
    chunks = []
    for key, t0 in saved:
        if type(t0) is not int and not hasattr(t0, "__index__"):
            raise TypeError(f"t0 must be an integer, got {type(t0).__name__}")
        t0 = int(t0)
        if not 0 <= t0 <= _U32_MAX:
            raise ValueError(f"t0 {t0} out of uint32 range")
        chunks.append(f'{{"key":{go_json_string(str(key))},"t0":{t0}}}')
    tail = f',"epoch":{int(epoch)}' if epoch > 0 else ""
    body = f'{{"instance":{go_json_string(instance)},"saved_chunks":[{",".join(chunks)}]{tail}}}\n'
    return b"\x01" + body.encode("utf-8")


def _field(obj: dict, name: str) -> object:
    """Go's json matches struct fields exactly first, then case-insensitively."""
    if name in obj:
        return obj[name]
    found = None
    for k, v in obj.items():
        if k.lower() == name:
            found = v  # Go keeps the last matching key
    return found


def decode_persist(b: bytes) -> tuple[str, list[tuple[str, int]]]:
    """Parse a persist message into ``(instance, [(amkey string, t0), ...])``.

    AMKeys are returned as sent (not parsed): Go skips an unparseable key individually, and so should the
    caller (``AMKey.parse`` raises ``DecodeError``). Raises :class:`DecodeError` for garbage, an unknown
    version byte, or a t0 that is not a uint32 (Go's ``json.Unmarshal`` fails the whole batch then).
    """
    instance, items, epoch = _decode_envelope(b)
    saved: list[tuple[str, int]] = []
    for c in items:
        key, t0, reason = _item(c)
        if reason is not None:
            raise DecodeError("invalid-json", f"saved chunk: {reason}: {c!r:.80}")
        saved.append((key, t0))
    return instance, saved


class PersistBatch(NamedTuple):
    """A persist message decoded item by item: what is usable, and how many items were rejected why."""

    instance: str
    saved: list[tuple[str, int]]
    rejected: dict[str, int]
    epoch: int = 0  # the writer's primary lease epoch; 0 when absent (Metrictank nodes, older versions)


def decode_persist_items(b: bytes, validate_keys: bool = True) -> PersistBatch:
    """Like :func:`decode_persist`, but a bad *item* is skipped and counted instead of failing the message.

    Why: one chunk entry with a broken key or t0 must not cost the marks of the other entries of the same
    message (and a listener must never hand an unparseable key to the tank, where it raises). Rejection
    reasons: ``invalid-item`` (not an object), ``invalid-key`` (not a string, or with ``validate_keys`` not a
    Metrictank AMKey ``<org>.<32 hex>[_<method>_<span>]``), ``invalid-t0`` (not a uint32). The envelope must
    still be valid: ``empty``, ``unknown-version`` and ``invalid-json`` raise :class:`DecodeError`.
    """
    instance, items, epoch = _decode_envelope(b)
    saved: list[tuple[str, int]] = []
    rejected: dict[str, int] = {}
    for c in items:
        key, t0, reason = _item(c)
        if reason is None and validate_keys:
            try:
                parse_amkey(key)
            except DecodeError:
                reason = "invalid-key"
        if reason is None:
            saved.append((key, t0))
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    return PersistBatch(instance, saved, rejected, epoch)


def _decode_envelope(b: bytes) -> tuple[str, list, int]:
    """Version byte, JSON, instance, the raw saved_chunks list and the epoch; raises :class:`DecodeError`."""
    if not b:
        raise DecodeError("empty", "empty persist message")
    if b[0] != PERSIST_MESSAGE_BATCH_V1:
        raise DecodeError("unknown-version", f"persist message version {b[0]}")
    try:
        # Go's decoder replaces invalid UTF-8 with U+FFFD instead of failing.
        obj = json.loads(bytes(b[1:]).decode("utf-8", "replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise DecodeError("invalid-json", str(e)[:200]) from None
    if type(obj) is not dict:
        raise DecodeError("invalid-json", "expected an object")
    instance = _field(obj, "instance")
    if instance is None:
        instance = ""
    if type(instance) is not str:
        raise DecodeError("invalid-json", "instance: expected a string")
    raw = _field(obj, "saved_chunks")
    if raw is None:
        raw = []
    if type(raw) is not list:
        raise DecodeError("invalid-json", "saved_chunks: expected an array")
    epoch = obj.get("epoch", 0)
    if type(epoch) is not int or not 0 <= epoch < 1 << 63:
        raise DecodeError("invalid-json", "epoch: expected a non-negative integer")
    return instance, raw, epoch


def _item(c: object) -> tuple[str, int, str | None]:
    """(key, t0, None) of one saved_chunks entry, or (.., .., reason) when it is unusable."""
    if c is None:
        c = {}  # Go decodes null into a zero SavedChunk
    if type(c) is not dict:
        return "", 0, "invalid-item"
    key = _field(c, "key")
    t0 = _field(c, "t0")
    if key is None:
        key = ""
    if t0 is None:
        t0 = 0
    if type(key) is not str:
        return "", 0, "invalid-key"
    if type(t0) is not int or not 0 <= t0 <= _U32_MAX:
        return key, 0, "invalid-t0"
    return key, t0, None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")
