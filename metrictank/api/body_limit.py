"""A bound on request bodies, for every endpoint.

Starlette reads a whole body (or form) into memory when a handler asks for it, and uvicorn sets no limit, so one
POST of gigabytes (a render form, a JSON body, a multipart upload) would grow the process without bound. This ASGI
middleware answers 413 when the declared Content-Length is over the limit, and stops a body without a length (or
with a false one) as soon as the bytes received pass it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "DEFAULT_MAX_REQUEST_BODY"]

DEFAULT_MAX_REQUEST_BODY = 16 << 20  # a Grafana render POST with hundreds of targets is a few hundred KB


class _TooLarge(HTTPException):
    """An HTTP 413 raised from inside a handler's body read: handlers and Starlette turn it into the answer."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit).decode())


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, b"invalid Content-Length header")
                    return
                if declared > limit:
                    await _answer(send, 413, _too_large(limit))
                    return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _answer(send, 413, _too_large(limit))


def _too_large(limit: int) -> bytes:
    return f"request body larger than [http] max-request-body ({limit} bytes)".encode()


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
