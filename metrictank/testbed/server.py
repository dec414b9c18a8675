"""What every test-bed server has in common: a resolved class path, a private directory, one JVM.

Subclasses only describe their configuration, launch command and health probe; start/stop/wait logic
lives here and in `bed.py` so Kafka and Cassandra behave identically.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import maven
from .process import pid_matches, spawn, stop_pid, tail

HOST = "127.0.0.1"


class ServerFailed(RuntimeError):
    """Raised when a server cannot start; the message carries the log path and its tail."""


@dataclass
class ServerState:
    """What we persist in the bed's state file so another process can report on or stop the server."""

    name: str
    pid: int
    host: str
    port: int
    dir: str
    log: str
    marker: str  # a string in the JVM command line, to recognise our PID
    version: str = ""
    ready_seconds: float = 0.0
    started_at: float = 0.0
    extra: dict = field(default_factory=dict)
    kind: str = ""  # "kafka" or "cassandra"; the name is "kafka-2" etc. for a node of a multi-node bed

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name.partition("-")[0]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ServerState:
        return cls(**data)

    def alive(self) -> bool:
        return pid_matches(self.pid, self.marker)


class Server(ABC):
    kind: str = "server"
    artifact: maven.Artifact

    def __init__(self, run_dir: Path, host: str = HOST, name: str | None = None) -> None:
        self.host = host
        self.name = name or self.kind  # "kafka", or "kafka-2" for a node of a multi-node bed
        self.dir = (run_dir / self.name).resolve()
        self.log_path = self.dir / f"{self.name}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.resolved: maven.Resolved | None = None
        self.launched_at = 0.0
        self.version = ""

    # -- to implement -------------------------------------------------------------------------------
    @abstractmethod
    def ports_needed(self) -> int: ...

    @abstractmethod
    def assign_ports(self, ports: list[int]) -> None: ...

    @abstractmethod
    def write_config(self) -> None: ...

    @abstractmethod
    def command(self) -> list[str]: ...

    def before_launch(self) -> None:
        """Hook for one-off preparation that needs the JVM (e.g. formatting Kafka's storage)."""
        return None

    @abstractmethod
    def probe(self) -> bool:
        """One quick health check; True once the server answers real client requests."""

    @abstractmethod
    def detect_version(self) -> str: ...

    def extra_state(self) -> dict:
        return {}

    def close_clients(self) -> None:
        """Release client objects the probe kept open."""
        return None

    # -- shared -------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def marker(self) -> str:
        """In the JVM's command line (its config paths): "…/kafka-1/" never matches node kafka-10's."""
        return f"{self.dir}/"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def resolve(self, log=print) -> maven.Resolved:
        try:
            self.resolved = maven.resolve(self.artifact, log=log)
        except (RuntimeError, OSError) as e:
            raise ServerFailed(f"cannot get the {self.name} jars: {e}") from e
        return self.resolved

    def prepare(self) -> None:
        """Wipe and recreate the private directory: every start is a throwaway, fresh server."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.write_config()

    def launch(self, tie_to_parent: bool) -> None:
        self.launched_at = time.monotonic()
        try:
            self.before_launch()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            raise self.failure(f"{self.name}: preparing to launch failed: {e}") from e
        self.proc = spawn(self.command(), self.log_path, self.dir, tie_to_parent=tie_to_parent)

    def wait_ready(self, deadline: float, poll: float = 0.25) -> float:
        """Block until probe() succeeds; fail fast with the log tail if the JVM exits."""
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise self.failure(
                    f"{self.name} exited with code {self.proc.returncode} before becoming ready"
                )
            try:
                if self.probe():
                    break
            except Exception:  # a half-started server can answer with anything; keep polling
                pass
            if time.monotonic() > deadline:
                raise self.failure(f"{self.name} not ready before the deadline")
            time.sleep(poll)
        seconds = time.monotonic() - self.launched_at
        self.version = self.detect_version()
        return seconds

    def failure(self, why: str) -> ServerFailed:
        return ServerFailed(f"{why}\nlog: {self.log_path}\n--- last lines ---\n{tail(self.log_path)}")

    def state(self, ready_seconds: float) -> ServerState:
        assert self.proc is not None
        return ServerState(
            name=self.name,
            pid=self.pid,
            host=self.host,
            port=self.port,
            dir=str(self.dir),
            log=str(self.log_path),
            marker=self.marker,
            version=self.version,
            ready_seconds=round(ready_seconds, 2),
            started_at=time.time(),
            extra=self.extra_state(),
            kind=self.kind,
        )

    def kill(self, timeout: float = 15.0) -> str:
        how = "not running" if self.proc is None else stop_pid(self.proc.pid, self.marker, timeout, self.proc)
        self.close_clients()
        return how
