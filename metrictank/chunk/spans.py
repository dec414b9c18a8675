"""Chunk span codes.

Chunk blobs store their span as a one-byte index into this fixed table instead of the span itself, so the
table is part of the on-disk format: its order can never change, and a span outside it cannot be stored.
"""

SPANS: tuple[int, ...] = (
    1,
    5,
    10,
    15,
    20,
    30,
    60,
    90,
    2 * 60,
    3 * 60,
    5 * 60,
    10 * 60,
    15 * 60,
    20 * 60,
    30 * 60,
    45 * 60,
    3600,
    90 * 60,
    2 * 3600,
    150 * 60,
    3 * 3600,
    4 * 3600,
    5 * 3600,
    6 * 3600,
    7 * 3600,
    8 * 3600,
    9 * 3600,
    10 * 3600,
    12 * 3600,
    15 * 3600,
    18 * 3600,
    24 * 3600,
)

_CODES: dict[int, int] = {span: code for code, span in enumerate(SPANS)}


def span_code(span: int) -> int:
    """The one-byte code stored in a chunk blob for `span` seconds; ValueError if it has none."""
    try:
        return _CODES[span]
    except (KeyError, TypeError):
        raise ValueError(f"invalid chunk span {span!r}: must be one of {SPANS}") from None


def span_of_code(code: int) -> int:
    """The span in seconds that the code byte of a chunk blob stands for; ValueError if unknown."""
    if isinstance(code, int) and 0 <= code < len(SPANS):
        return SPANS[code]
    raise ValueError(f"invalid chunk span code {code!r}: must be in [0, {len(SPANS)})")
