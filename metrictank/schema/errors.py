"""The one exception type the schema decoders raise.

Ingest must be able to tell "this payload is garbage" (count it, skip it, keep consuming) apart from a bug in
our own code, so every decoder turns any failure of its input into a :class:`DecodeError` carrying a short,
stable ``reason`` that can be used directly as a metric label.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """A payload could not be decoded; ``reason`` is a short stable label such as ``"invalid-msgp"``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
