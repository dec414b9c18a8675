"""Process plumbing shared by the servers: free ports, JVM launch, PID-based stop, log tails.

Everything is PID-based (no process names) because several agents and test sessions share the machine:
we must only ever signal the JVMs this bed started.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the kernel for n distinct free ports; all sockets stay bound until every port is chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_ports_on(n: int, hosts: Sequence[str], attempts: int = 50) -> list[int]:
    """n distinct ports free on every one of `hosts` (the nodes of a multi-node bed share their ports, one
    loopback address each). An address that is not local raises OSError (EADDRNOTAVAIL)."""
    if len(hosts) <= 1:
        return free_ports(n, hosts[0] if hosts else "127.0.0.1")
    for _ in range(attempts):
        socks: list[socket.socket] = []
        try:
            ports = []
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((hosts[0], 0))
                port = s.getsockname()[1]
                for h in hosts[1:]:
                    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(t)
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    t.bind((h, port))
                ports.append(port)
            return ports
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
        finally:
            for s in socks:
                s.close()
    raise OSError(errno.EADDRINUSE, f"no {n} ports free on all of {', '.join(hosts)}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split "host:port" (also "[v6]:port"); the first entry of a comma-separated list is used."""
    value = value.split(",")[0].strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_s = rest.lstrip(":")
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            host, port_s = value, ""
    if not port_s:
        if default_port is None:
            raise ValueError(f"no port in {value!r}")
        return host, default_port
    return host, int(port_s)


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java on PATH and JAVA_HOME unset: install OpenJDK 17")
    return found


def _die_with_parent() -> None:
    """Runs in the child: the kernel sends SIGTERM to the JVM if the launching thread dies.

    This keeps a SIGKILLed test session from leaking JVMs. Detached beds (`up`) do not use it.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str], log_path: Path, cwd: Path, *, tie_to_parent: bool, env: dict | None = None
) -> subprocess.Popen:
    """Start a process in its own session (Ctrl-C in the terminal must not hit it before we stop it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
            env=env,
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_matches(pid: int, marker: str) -> bool:
    """Guard against PID reuse: only treat the PID as ours if its command line names our run dir."""
    return pid_alive(pid) and marker in pid_cmdline(pid)


def stop_pid(pid: int, marker: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> str:
    """SIGTERM, wait, then SIGKILL. Returns how it ended: "not running", "terminated" or "killed"."""
    if not pid_matches(pid, marker):
        if proc is not None:
            proc.poll()
        return "not running"

    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        return not pid_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone():
            return "terminated"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not gone():
        time.sleep(0.05)
    return "killed"


def run_checked(argv: Sequence[str], log_path: Path, cwd: Path, timeout: float = 120) -> None:
    """Run a short-lived JVM tool (e.g. storage format), appending its output to the server's log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-1] if argv else '?'} failed (exit {proc.returncode})\n{tail(log_path)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def grep_last(path: Path, needle: str) -> str | None:
    """Last log line containing needle; used to confirm the version a server actually reports."""
    found = None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if needle in line:
                    found = line.rstrip("\n")
    except OSError:
        return None
    return found
