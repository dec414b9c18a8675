"""The series model the query layer computes with.

A series is a regular grid: point i has timestamp `start + i * step` and value `values[i]` (float64, NaN for
null). Timestamps follow Metrictank: a point is stamped at the end of the interval it covers, so a 10 s
series has points at multiples of 10 and a rollup bucket (B-span, B] carries timestamp B. Keeping values as
one numpy array per series (never one Python object per point) is what keeps functions and serialisation
cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(slots=True)
class Series:
    """One time series.

    `target` is the name shown to the user (legend); `path_expr` is the query pattern the series came from
    (e.g. `a.*` for every series `a.*` matched), which aggregate functions use to name their result
    (`sumSeries(a.*)`), as graphite-web does. `consolidator` is the method used when the series must be
    reduced to maxDataPoints (None: the default, avg).
    """

    target: str
    path_expr: str
    tags: dict[str, str]
    start: int
    step: int
    values: np.ndarray
    consolidator: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.dtype != np.float64:
            self.values = np.asarray(self.values, dtype=np.float64)
        if self.step <= 0:
            raise ValueError(f"series {self.target!r}: step must be positive, got {self.step}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end(self) -> int:
        """One step past the last point (exclusive), like graphite-web's TimeSeries.end."""
        return self.start + len(self.values) * self.step

    @property
    def last_ts(self) -> int:
        return self.start + (len(self.values) - 1) * self.step

    def timestamps(self) -> np.ndarray:
        return self.start + self.step * np.arange(len(self.values), dtype=np.int64)

    def copy(self, **changes: object) -> Series:
        """A shallow copy with some fields replaced; tags are copied so a function can edit them freely.

        What `dataclasses.replace` does (the constructor runs, so `__post_init__` still checks the result), but
        without its per-field introspection (~5 us a call, against ~1.5 us here): every fetched series is copied
        once, and a sumSeries over 1000 series went from 16.2 to 13.8 ms in-process with this alone."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"Series has no field(s) {sorted(unknown)}")
        g = changes.get
        return Series(
            g("target", self.target),  # type: ignore[arg-type]
            g("path_expr", self.path_expr),  # type: ignore[arg-type]
            g("tags", None) if "tags" in changes else dict(self.tags),  # type: ignore[arg-type]
            g("start", self.start),  # type: ignore[arg-type]
            g("step", self.step),  # type: ignore[arg-type]
            g("values", self.values),  # type: ignore[arg-type]
            g("consolidator", self.consolidator),  # type: ignore[arg-type]
            g("meta", self.meta),  # type: ignore[arg-type]
        )


_FIELDS = frozenset(f.name for f in fields(Series))


def tags_from_name(name: str) -> dict[str, str]:
    """Tags of a series name as Metrictank derives them: `name` is the part before the first `;`, each
    following `k=v` pair is a tag (a `name` tag in the pairs never overrides the real name)."""
    if ";" not in name:
        return {"name": name}
    head, *pairs = name.split(";")
    tags: dict[str, str] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if sep and k:
            tags[k] = v
    tags["name"] = head
    return tags


def name_from_tags(tags: dict[str, str]) -> str:
    """The canonical series name of a tag set: `name;k1=v1;k2=v2` with keys sorted."""
    keys = sorted(k for k in tags if k != "name")
    return ";".join([tags.get("name", ""), *(f"{k}={tags[k]}" for k in keys)])
