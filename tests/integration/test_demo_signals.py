"""`make run` (metrictank.demo) stops on Ctrl-C and SIGTERM, with nothing left running.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the demo and its two instances. The
fault: a demo started with SIGINT ignored (a background job of a non-interactive shell, some make and IDE setups)
kept running after its instances stopped, printing "an instance exited with 0" every second. The demo is pointed
at the test bed's Kafka (METRICTANK_TEST_KAFKA), so no test bed of its own is started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .helpers import free_port


def _two_free_ports() -> int:
    for _ in range(50):
        p = free_port()
        with contextlib.suppress(OSError):
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
    raise RuntimeError("no two consecutive free ports")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["group-sigint", "group-sigint-inherited-ignore", "sigterm"])
def test_demo_stops_on_signals(how: str, kafka_bootstrap: str, kafka_admin, tmp_path: Path) -> None:
    prefix = f"demo-{uuid.uuid4().hex[:8]}-"
    port = _two_free_ports()
    out = tmp_path / "demo.out"
    env = {
        **os.environ,
        "METRICTANK_TEST_KAFKA": kafka_bootstrap,
        "STORE": "sqlite",
        "DEMO_DIR": str(tmp_path / "demo"),
        "DEMO_SERIES": "5",
        "DEMO_PORT": str(port),
        "DEMO_TOPIC_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metrictank.demo"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            preexec_fn=_ignore_sigint if how == "group-sigint-inherited-ignore" else None,
        )
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 150
        while b"demo is running" not in out.read_bytes():
            assert proc.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.2)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(pgid, signal.SIGINT)
        try:
            rc = proc.wait(45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop on {how}:\n{out.read_text(errors='replace')[-2000:]}")
        assert rc == 0
        deadline = time.monotonic() + 15
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), "instances of the demo are still running"
        assert out.read_text(errors="replace").count("an instance exited") <= 2
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(10)
        with contextlib.suppress(Exception):
            for fut in kafka_admin.delete_topics([prefix + "mdm", prefix + "metricpersist"]).values():
                fut.result(15)
