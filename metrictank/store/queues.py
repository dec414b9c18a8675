"""Bounded write queues with batch put/take.

Python pays per call, so the queues move lists, not single items: one lock round trip per `put_many`
and per `take`, instead of one per chunk as with `queue.Queue`. Each of the N queues has its own
capacity, as in Metrictank, so one hot queue blocks only the producers that feed it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from metrictank.store.base import ChunkWrite, StoreClosed, queue_index


class WriteQueues:
    """N bounded FIFO queues keyed by Metrictank's (org + key bytes) % N rule."""

    def __init__(self, n: int, maxsize: int, wakeup: Callable[[], None] | None = None) -> None:
        if n < 1 or maxsize < 1:
            raise ValueError("need at least one queue of size >= 1")
        self.n = n
        self.maxsize = maxsize
        self._qs: list[deque[ChunkWrite]] = [deque() for _ in range(n)]
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._not_empty = threading.Condition(self._lock)
        self._size = 0
        self._closed = False
        self._next = 0  # round-robin start for `take`, so no queue starves
        self._wakeup = wakeup
        self.blocked_puts = 0  # times a producer had to wait: the backpressure counter

    def __len__(self) -> int:
        return self._size

    def depths(self) -> list[int]:
        return [len(q) for q in self._qs]

    def put_many(self, writes: Sequence[ChunkWrite], abort: Callable[[], bool] | None = None) -> int:
        """Append in order; block while a target queue is full (backpressure). While blocked, `abort()` is
        asked every half second: when it says so, the rest is not queued. Returns how many were queued."""
        n = self.n
        if n == 1:
            groups: dict[int, list[ChunkWrite]] = {0: list(writes)}
        else:
            groups = {}
            for w in writes:
                i = queue_index(w.amkey, w.org, n)
                g = groups.get(i)
                if g is None:
                    groups[i] = [w]
                else:
                    g.append(w)
        maxsize = self.maxsize
        accepted = 0
        with self._lock:
            for i, items in groups.items():
                q = self._qs[i]
                pos = 0
                while pos < len(items):
                    if self._closed:
                        err = StoreClosed("store closed")
                        err.accepted = accepted
                        raise err
                    free = maxsize - len(q)
                    if free <= 0:
                        if abort is not None and abort():
                            return accepted
                        self.blocked_puts += 1
                        self._signal()
                        self._not_full.wait(0.5)
                        continue
                    part = items[pos : pos + free]
                    q.extend(part)
                    pos += len(part)
                    accepted += len(part)
                    self._size += len(part)
                    self._signal()
        return accepted

    def _signal(self) -> None:
        """Tell consumers there is work, also mid-put: a producer blocked on a full queue must not
        leave what it already queued unannounced."""
        self._not_empty.notify()
        if self._wakeup is not None:
            self._wakeup()

    def take(self, max_items: int, timeout: float | None = 0.0) -> list[ChunkWrite]:
        """Up to `max_items`, round-robin across the queues; waits up to `timeout` for the first."""
        out: list[ChunkWrite] = []
        if max_items <= 0:
            return out
        with self._lock:
            if self._size == 0 and timeout:
                self._not_empty.wait(timeout)
            if self._size == 0:
                return out
            qs = self._qs
            n = self.n
            share = max(1, max_items // n)
            while len(out) < max_items and self._size > len(out):
                for k in range(n):
                    q = qs[(self._next + k) % n]
                    if not q:
                        continue
                    m = min(share, len(q), max_items - len(out))
                    if m == len(q):
                        out.extend(q)
                        q.clear()
                    else:
                        out.extend(q.popleft() for _ in range(m))
                    if len(out) >= max_items:
                        break
            self._next = (self._next + 1) % n
            self._size -= len(out)
            self._not_full.notify_all()
        return out

    def clear(self) -> list[ChunkWrite]:
        """Take everything queued (puts stay allowed), waking blocked producers; for `discard_pending`."""
        with self._lock:
            left = [w for q in self._qs for w in q]
            for q in self._qs:
                q.clear()
            self._size = 0
            self._not_full.notify_all()
        return left

    def close(self) -> list[ChunkWrite]:
        """Refuse further puts, wake blocked producers, and hand back what was still queued."""
        with self._lock:
            self._closed = True
            left = [w for q in self._qs for w in q]
            for q in self._qs:
                q.clear()
            self._size = 0
            self._not_full.notify_all()
            self._not_empty.notify_all()
        return left
