"""One metrictank-py instance: `Instance` wires the components (wiring.py); `IngestLoop` is the main loop that
owns the tank (loop.py). Which thread owns which state, and how the others hand it work: docs/concurrency.md."""

from metrictank.instance.wiring import Instance

__all__ = ["Instance"]
