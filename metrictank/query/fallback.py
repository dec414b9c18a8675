"""Forwarding a /render this project cannot serve to a graphite-web (Metrictank's `graphite-proxy`).

A target that calls a function the engine does not implement is not the user's mistake when a graphite-web
stands behind this node: Metrictank forwards such a request to it, and so does this module when
`[graphite] fallback-url` is set. The request goes to `<fallback-url>/render` with the same method and the same
parameters (repeated `target`s included), and graphite-web's answer is streamed back with its status and
content type.

The forward is bounded like a local render: it must produce its headers, and then every chunk, before
`[http] query-timeout` has run out (504 when the headers do not come in time), and it relays at most
`[graphite] fallback-max-response-size` bytes (a 502 when Content-Length says more up front; a connection cut
short when the stream grows past it, so a truncated body is never passed off as complete). A fallback that
cannot be reached is a 502 naming the function and the failure, never a 500: the node is fine, its helper is
not.

The HTTP client is async (httpx.AsyncClient), so a slow graphite-web holds no worker thread and does not block
the event loop. One client per forward: forwards are rare (only unimplemented functions), and a client bound to
one event loop could not be shared by the apps of several instances or test clients in one process.

Counted per function (`metrictank_graphite_fallback_requests_total{function=...}`) and, per failure reason,
`metrictank_graphite_fallback_errors_total{reason=...}`; the first forward of each function name is logged, so
the log shows which functions users need without a line per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from metrictank.stats import Stats, by_label

__all__ = ["DEFAULT_MAX_RESPONSE_SIZE", "FallbackAborted", "GraphiteFallback"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
# response headers relayed to the client: what it needs to read the body. Hop-by-hop headers and length are the
# server's business (the body is re-framed), and cookies or caching of graphite-web's are not ours to pass on.
_RELAYED_HEADERS = ("content-type", "content-encoding", "content-disposition")


class FallbackAborted(Exception):
    """A fallback response was cut off mid-stream (too large, or past the deadline). Raised out of the body
    iterator on purpose: the server then drops the connection, which is the only way to tell a client that
    already has the status line that the body it got is not whole."""


class GraphiteFallback:
    """The graphite-web fallback of one HTTP API, with its counters (read by `register_stats`)."""

    def __init__(
        self,
        url: str = "",
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_response_size = max_response_size
        self._transport = transport  # tests may hand in a mock transport; production uses the network
        self.requests: Counter[str] = Counter()  # forwards by function name
        self.errors: Counter[str] = Counter()  # failed forwards by reason
        self._logged: set[str] = set()

    @classmethod
    def from_config(cls, graphite: Mapping[str, Any]) -> GraphiteFallback:
        """The fallback of a config's `[graphite]` section (`cfg.graphite`); off when `fallback-url` is empty."""
        return cls(
            str(graphite["fallback-url"] or ""),
            int(graphite["fallback-max-response-size"] or DEFAULT_MAX_RESPONSE_SIZE),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def register_stats(self, stats: Stats) -> None:
        """`graphite.fallback.requests{function}` and `graphite.fallback.errors{reason}` counters."""
        stats.counter(
            "graphite.fallback.requests",
            "renders forwarded to the graphite-web fallback, by the unimplemented function that caused it",
            lambda: by_label(self.requests),
            ("function",),
        )
        stats.counter(
            "graphite.fallback.errors",
            "forwards to the graphite-web fallback that failed, by reason "
            "(unreachable, timeout, too_large, aborted)",
            lambda: by_label(self.errors),
            ("reason",),
        )

    def _fail(self, reason: str, status: int, function: str, detail: str) -> Response:
        self.errors[reason] += 1
        log.warning("graphite fallback for function %r failed (%s): %s", function, reason, detail)
        return PlainTextResponse(
            f'the target uses function "{function}", which this node does not implement and forwards to its '
            f"graphite-web fallback; the fallback {detail}",
            status_code=status,
        )

    async def forward(
        self,
        method: str,
        params: Mapping[str, list[str]],
        function: str,
        timeout: float,
        accept_encoding: str | None = None,
    ) -> Response:
        """graphite-web's answer to this /render, streamed: `params` (every value of every parameter) go in
        the query string of a GET, or as a form body of a POST, as the client sent them; the whole forward is
        held to `timeout` seconds (0 or less: no limit)."""
        self.requests[function] += 1
        if function not in self._logged:
            self._logged.add(function)
            log.info(
                "forwarding renders that use %r to the graphite-web fallback (logged once per function)",
                function,
            )
        deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        headers = {"accept-encoding": accept_encoding or "identity"}
        client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(timeout if timeout > 0 else None),
            follow_redirects=False,
            trust_env=False,  # the configured URL is where it goes, not wherever a proxy variable points
        )
        # name -> every value, in order: how httpx takes repeated fields, in a form body or a query string
        fields = {k: list(vals) for k, vals in params.items()}
        if method == "POST":
            req = client.build_request("POST", self.url + "/render", data=fields, headers=headers)
        else:
            req = client.build_request("GET", self.url + "/render", params=fields, headers=headers)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                resp = await client.send(req, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            await client.aclose()
            return self._fail(
                "timeout", 504, function, f"did not answer within query-timeout ({timeout:g} s)"
            )
        except httpx.HTTPError as e:
            await client.aclose()
            return self._fail("unreachable", 502, function, f"could not be reached ({type(e).__name__}: {e})")

        async def close() -> None:
            await resp.aclose()
            await client.aclose()

        length = resp.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_response_size:
            await close()
            return self._fail(
                "too_large",
                502,
                function,
                f"answered {length} bytes, more than fallback-max-response-size ({self.max_response_size})",
            )

        out_headers = {k: resp.headers[k] for k in _RELAYED_HEADERS if k in resp.headers}
        return StreamingResponse(
            self._relay(resp, deadline, function, close),
            status_code=resp.status_code,
            headers=out_headers,
            background=BackgroundTask(close),
        )

    async def _relay(
        self, resp: httpx.Response, deadline: float, function: str, close: Any
    ) -> AsyncIterator[bytes]:
        """The body as it arrives (still encoded: the client asked for that encoding), within the size bound
        and the deadline; FallbackAborted once either is passed."""
        sent = 0
        chunks = resp.aiter_raw()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(_loop_time(deadline)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except (TimeoutError, httpx.TimeoutException):
                    self.errors["aborted"] += 1
                    log.warning(
                        "graphite fallback for %r: body not done within query-timeout; cut off", function
                    )
                    raise FallbackAborted("graphite fallback response past query-timeout") from None
                sent += len(chunk)
                if sent > self.max_response_size:
                    self.errors["too_large"] += 1
                    log.warning(
                        "graphite fallback for %r: body larger than fallback-max-response-size (%d); cut off",
                        function,
                        self.max_response_size,
                    )
                    raise FallbackAborted("graphite fallback response larger than fallback-max-response-size")
                yield chunk
        finally:
            await close()


def _loop_time(monotonic_deadline: float) -> float | None:
    """A time.monotonic() deadline on the running loop's clock (asyncio.timeout_at wants that); None = never."""
    if monotonic_deadline == float("inf"):
        return None
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
