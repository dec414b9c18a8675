"""Shared helpers for integration tests: instance configs, running an instance in-process, waiting."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from metrictank.config import load_config
from metrictank.instance import Instance

SCHEMAS = """[default]
pattern = .*
retentions = 10s:1d:10min:7,1min:7d:1h:3
"""

AGGREGATIONS = """[default]
pattern = .*
xFilesFactor = 0.5
aggregationMethod = avg,max,min,sum,last,count
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict], top: dict | None = None) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in (top or {}).items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def instance_config(
    tmp: Path,
    name: str,
    kafka: str,
    topic: str,
    persist_topic: str | None = None,
    primary: bool = False,
    offset: str = "oldest",
    partitions: str = "*",
    store: dict | None = None,
    extra: dict[str, dict] | None = None,
    port: int | None = None,
) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "schemas.conf").write_text(SCHEMAS)
    (tmp / "aggregations.conf").write_text(AGGREGATIONS)
    sections: dict[str, dict] = {
        "http": {"listen": f"127.0.0.1:{port or free_port()}"},
        "kafka-mdm-in": {"brokers": kafka, "topics": topic, "offset": offset, "partitions": partitions},
        "kafka-cluster": (
            {"enabled": True, "topic": persist_topic, "offset": "oldest", "backlog-process-timeout": "20s"}
            if persist_topic
            else {"enabled": False}
        ),
        "cluster": {"primary-node": primary, "warm-up-period": "0s"},
        "retention": {
            "schemas-file": str(tmp / "schemas.conf"),
            "aggregations-file": str(tmp / "aggregations.conf"),
        },
        "store": {"backend": "sqlite"},
        "sqlite": {"path": str(tmp / "chunks.db")},
    }
    for k, v in (store or {}).items():
        sections.setdefault(k, {}).update(v)
    for k, v in (extra or {}).items():
        sections.setdefault(k, {}).update(v)
    return write_config(tmp / f"{name}.toml", sections, {"instance": name})


class Running:
    """An Instance running its main loop in a thread (for in-process integration tests)."""

    def __init__(self, cfg_path: Path, serve_http: bool = False) -> None:
        self.instance = Instance(load_config(cfg_path, env={}))
        self.instance.start(serve_http=serve_http)
        self.thread = threading.Thread(target=self.instance.run, daemon=True)
        self.thread.start()

    def __enter__(self) -> Instance:
        return self.instance

    def __exit__(self, exc_type, exc, tb) -> None:
        # stop the loop first: the consumer may not be used from two threads at once
        self.instance.stop_event.set()
        self.thread.join(10)
        if exc_type is not None:
            print(self.diagnose())
        self.instance.stop(drain_timeout=10)

    def diagnose(self) -> str:
        """The consumer's state, printed when a test fails inside the block."""
        from confluent_kafka import TopicPartition

        inst = self.instance
        c = inst.consumer
        tps = [TopicPartition(c.topics[0], p) for p in c.partitions]
        try:
            positions = {tp.partition: tp.offset for tp in c._consumer.position(tps)}
            marks = {tp.partition: c._consumer.get_watermark_offsets(tp, timeout=5) for tp in tps}
        except Exception as e:  # noqa: BLE001
            positions, marks = str(e), {}
        return (
            f"[{inst.name}] thread alive={self.thread.is_alive()} batches={inst.batches} "
            f"fetch_restarts={c.fetch_restarts} unknown={inst.handler.unknown_points} "
            f"discarded={ {k: v for k, v in inst.tank.discarded.items() if v} } "
            f"decode_errors={dict(inst.handler.decode_errors)} invalid={dict(inst.handler.metricdata_invalid)} "
            f"messages={inst.handler.messages} points={inst.tank.points_added} batch_errors={inst.batch_errors} "
            f"positions={positions} watermarks={marks} first={c.tracker.first_offset}"
        )


def wait_for(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
