"""The one shape of a benchmark result row: what `bench/run.py` writes to results.json and docs/benchmarks.md
(value, unit, target and its direction, how many runs the median is of, and a note saying what was measured)."""

from __future__ import annotations


def row(
    name: str,
    value: float,
    unit: str,
    target: float | None = None,
    runs: int = 1,
    note: str = "",
    higher: bool = True,
) -> dict:
    """A result row; `higher` says whether a larger value is better (rates) or worse (latency, bytes)."""
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "target": target,
        "higher_is_better": higher,
        "runs": runs,
        "note": note,
    }
