"""Graphite-compatible query layer: target parsing, render functions, maxDataPoints consolidation, output
formats and the HTTP routes Grafana's Graphite data source uses. Storage is reached through `SeriesSource`
(see `source.py`); the HTTP router lives in `metrictank.query.http` (`graphite_router`)."""

from .consolidate import quantize
from .engine import render
from .errors import QueryError
from .series import Series
from .source import FindNode, SeriesRef, SeriesSource, StaticSource

__all__ = [
    "FindNode",
    "QueryError",
    "Series",
    "SeriesRef",
    "SeriesSource",
    "StaticSource",
    "quantize",
    "render",
]
