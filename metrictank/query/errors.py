"""Errors of the query layer.

Every user mistake (bad time, bad target, unknown function, wrong argument) is a `QueryError`, which the HTTP
layer turns into a 400 with the message as body; anything else escaping the engine is a server fault (500).
Keeping the distinction in one exception type is what lets Grafana show the user a useful message instead of
a generic "internal error".
"""

from __future__ import annotations


class QueryError(Exception):
    """A request the user can fix: reported as HTTP `status` (400 unless told otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message
