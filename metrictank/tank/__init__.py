"""The tank: in-memory chunks of every series (Metrictank's AggMetrics). See :mod:`metrictank.tank.tank`."""

from metrictank.tank.tank import DISCARD_REASONS, CompletedChunks, Tank, WarmLoadPlan

__all__ = ["CompletedChunks", "DISCARD_REASONS", "Tank", "WarmLoadPlan"]
