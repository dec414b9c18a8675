"""metrictank-py: Metrictank's clustered ingest tier in Python, byte-compatible with Metrictank."""

__version__ = "0.1.0"
