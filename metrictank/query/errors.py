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


class UnknownFunctionError(QueryError):
    """A target calls a function this project does not implement: a 400 naming it, unless a graphite-web
    fallback is configured, which is why the name travels with the error (the HTTP layer forwards the request
    and counts it per function)."""

    def __init__(self, function: str, pos: int) -> None:
        super().__init__(f'unknown function "{function}" at position {pos}')
        self.function = function
