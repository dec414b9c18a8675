"""systemd integration without libsystemd: the sd_notify datagram protocol, readiness and the watchdog.

Under `Type=notify` systemd considers a unit started only when it says `READY=1`. We say it when the *node* is
ready (persist backlog applied, Kafka replay caught up, warm-up over), not when the process merely runs, so that
`systemctl restart metrictank@a && systemctl restart metrictank@b` (a rolling restart) never takes the second
node down before the first one can serve again. A replay can take longer than any fixed start timeout, so while
the main loop makes progress towards readiness it extends the start timeout (`EXTEND_TIMEOUT_USEC`): a node that
is alive but catching up keeps starting; a node whose main loop is stuck is killed at the unit's timeout.

The watchdog is pinged from the ingest loop's once-a-second tick (never from a helper thread during normal
operation): a ping proves that the loop which consumes Kafka and completes chunks is still turning. During
shutdown the loop has ended, so `keepalive` pings from a thread while the write queue drains.

Everything here is a no-op (returning False) when the process was not started by systemd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

__all__ = ["notify", "watchdog_interval", "SystemdNotifier", "NodeLike"]


def _address(path: str) -> str | bytes:
    """`@name` is an abstract socket: the kernel wants a leading NUL instead of the '@'."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify message (`READY=1`, `WATCHDOG=1`, `STATUS=...`, newline-separated assignments).

    Returns whether it was sent: False without `$NOTIFY_SOCKET` (not under systemd) or when sending failed.
    Failure is never fatal: losing a status line must not stop ingest.
    """
    env = os.environ if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith("/") or path.startswith("@")):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), _address(path))
        return True
    except OSError as e:
        log.debug("sd_notify %r to %s failed: %s", state, path, e)
        return False


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog applies to this process.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for; a child that inherited the
    variables must not think it is watched.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1e6


class NodeLike(Protocol):
    """What the notifier reads from `metrictank.cluster.node.Node`."""

    ready: bool
    primary: bool
    state: str
    priority: int


def status_line(node: NodeLike) -> str:
    role = "primary" if node.primary else "secondary"
    return f"{role}, {node.state}, priority {node.priority}"


class SystemdNotifier:
    """Readiness, status and watchdog for one instance, driven by the main loop's tick.

    `tick(node)` is meant to be called about once a second from the ingest loop: it sends `READY=1` the first
    time the node is ready, `STATUS=` when the status line changes, `WATCHDOG=1` at half the watchdog timeout,
    and, until ready, `EXTEND_TIMEOUT_USEC` so a long replay does not hit the start timeout.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[str], bool] | None = None,
        extend_by: float = 30.0,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._send = send if send is not None else (lambda state: notify(state, env))
        self._clock = clock
        interval = watchdog_interval(env)
        self.watchdog_every = None if interval is None else interval / 2
        self.extend_by = extend_by
        self.ready_sent = False
        self.stopping_sent = False
        self._last_status = ""
        self._last_ping = -1e18
        self._last_extend = -1e18

    def _emit(self, *assignments: str) -> bool:
        if not self.enabled:
            return False
        return self._send("\n".join(assignments))

    def ping(self, now: float | None = None, force: bool = False) -> bool:
        """WATCHDOG=1 if half the watchdog timeout has passed since the last ping."""
        if self.watchdog_every is None:
            return False
        now = self._clock() if now is None else now
        if not force and now - self._last_ping < self.watchdog_every:
            return False
        self._last_ping = now
        return self._emit("WATCHDOG=1")

    def tick(self, node: NodeLike, status: str | None = None) -> None:
        """Once a second from the main loop (cheap when not under systemd: returns at once)."""
        if not self.enabled or self.stopping_sent:
            return
        now = self._clock()
        line = status if status is not None else status_line(node)
        out: list[str] = []
        if node.ready and not self.ready_sent:
            self.ready_sent = True
            out.append("READY=1")
        elif not self.ready_sent and now - self._last_extend >= 1.0:
            self._last_extend = now
            out.append(f"EXTEND_TIMEOUT_USEC={int(self.extend_by * 1e6)}")
        if line != self._last_status:
            self._last_status = line
            out.append(f"STATUS={line}")
        if out:
            self._emit(*out)
        self.ping(now)

    def stopping(self, status: str = "stopping: demote, drain the write queue, exit") -> bool:
        """STOPPING=1: systemd shows the unit as deactivating while we drain."""
        if self.stopping_sent:
            return False
        self.stopping_sent = True
        return self._emit("STOPPING=1", f"STATUS={status}")

    @contextlib.contextmanager
    def keepalive(self, limit: float, every: float = 1.0) -> Iterator[None]:
        """Ping the watchdog and extend the stop timeout from a thread while a long shutdown step runs.

        For at most `limit` seconds: the step has a timeout of its own, and if it hangs past that anyway,
        systemd's TimeoutStopSec must be allowed to end it.
        """
        if not self.enabled:
            yield
            return
        done = threading.Event()
        deadline = self._clock() + limit

        def loop() -> None:
            while not done.wait(every) and self._clock() < deadline:
                self._emit(f"EXTEND_TIMEOUT_USEC={int(self.extend_by * 1e6)}")
                self.ping(force=True)

        t = threading.Thread(target=loop, name="systemd-keepalive", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join(2)
