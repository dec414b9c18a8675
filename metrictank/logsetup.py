"""Logging, configured once per process.

systemd's journal adds its own timestamps, so the text format stays short; json is for log shippers.
Secrets never reach the log: the admin token is masked by the config's renderer and never formatted here.
"""

from __future__ import annotations

import json
import logging
import sys

_configured = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Install one stderr handler on the root logger; later calls only change the level."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    # librdkafka and the Cassandra driver are chatty at INFO.
    logging.getLogger("cassandra").setLevel(max(logging.WARNING, root.level))
    _configured = True
