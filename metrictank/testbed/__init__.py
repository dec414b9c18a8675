"""A real Kafka + Cassandra test bed started from Maven jars (no Docker): CLI, Python API, pytest plugin.

    from metrictank.testbed import TestBed
    with TestBed(dir) as bed:
        ep = bed.start(kafka=True, cassandra=True)   # Endpoints(kafka="127.0.0.1:p", cassandra=..., versions=...)

See `python -m metrictank.testbed --help` for the command line.
"""

from .bed import Endpoints, ServerFailed, TestBed, default_dir, private_dir
from .process import parse_hostport

__all__ = ["Endpoints", "ServerFailed", "TestBed", "default_dir", "parse_hostport", "private_dir"]
