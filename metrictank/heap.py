"""Returning freed heap to the OS while ingesting.

A replay moves hundreds of MB of payload through short-lived batches (the client's fetch buffers, the payload
lists, the decoded point arrays). glibc keeps what they free for reuse, and its mmap threshold grows after the
first large free, so later big buffers come from the heap too: without trimming, RSS after a replay is a third
above what the series actually hold, and an operator sizing hosts by RSS over-provisions. malloc_trim(0) hands
free pages back (from every arena, also from the middle of the heap); it costs milliseconds, so it runs when
enough data went through since the last trim, not per batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer", "trim"]

try:
    _malloc_trim = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "malloc_trim", None)
except OSError:  # pragma: no cover - no C library to load
    _malloc_trim = None


def trim() -> None:
    """Give the C heap's free pages back to the OS (a no-op where malloc_trim does not exist)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class HeapTrimmer:
    """Trims after every `min_bytes` of consumed payload, at most once per `min_interval` seconds.

    The payload since the last trim is the measure of garbage made: a steady instance at a few MB/s trims
    every few seconds at most, a replay every `min_interval`; an idle one never.
    """

    def __init__(
        self,
        min_bytes: int = 64 << 20,
        min_interval: float = 1.0,
        trim_fn: Callable[[], None] = trim,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_bytes < 0 or min_interval < 0:
            raise ValueError("min_bytes and min_interval must not be negative")
        self.min_bytes = min_bytes
        self.min_interval = min_interval
        self._trim = trim_fn
        self._clock = clock
        self._bytes = 0.0
        self._last = clock()
        self.trims = 0
        self.seconds = 0.0

    def consumed(self, nbytes: float) -> bool:
        """Count `nbytes` of payload just processed; trim if due. Returns whether it trimmed."""
        self._bytes += nbytes
        if self._bytes < self.min_bytes:
            return False
        now = self._clock()
        if now - self._last < self.min_interval:
            return False
        self.now()
        return True

    def now(self) -> None:
        """Trim unconditionally (after a replay caught up, after GC dropped series)."""
        t0 = time.perf_counter()
        self._trim()
        self.seconds += time.perf_counter() - t0
        self.trims += 1
        self._bytes = 0.0
        self._last = self._clock()
