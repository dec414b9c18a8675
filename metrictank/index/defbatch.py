"""A batch of series definitions as columns: what the index hands to the persistent index and gets back.

The persistent index (`metrictank.store.index`) writes and loads definitions by the hundred thousand (a
start-up load, the first MetricData of a backlog); columns keep that to a few lists and numpy arrays instead
of one object per series, and they are exactly what `MemoryIndex.add_many` takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DefBatch"]


@dataclass
class DefBatch:
    """Definitions column-wise; every column has one entry per series, in the same order.

    `tags` holds the sorted, de-duplicated `k=v` strings of each series (empty tuple when untagged): the
    form Cassandra's `set<text>` gives back, so a written and a loaded batch compare equal."""

    ids: list[str]
    orgs: np.ndarray  # int64
    names: list[str]
    intervals: np.ndarray  # int64
    units: list[str]
    mtypes: list[str]
    tags: list[tuple[str, ...]]
    partitions: np.ndarray  # int64
    lastupdates: np.ndarray  # int64

    def __post_init__(self) -> None:
        n = len(self.ids)
        cols = (self.orgs, self.names, self.intervals, self.units, self.mtypes, self.tags)
        if any(len(c) != n for c in (*cols, self.partitions, self.lastupdates)):
            raise ValueError("DefBatch: every column must have one entry per id")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> DefBatch:
        z = np.zeros(0, np.int64)
        return cls([], z, [], z.copy(), [], [], [], z.copy(), z.copy())

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> DefBatch:
        """From (id, org, partition, name, interval, unit, mtype, tags, lastupdate) tuples: the column order
        of Metrictank's `metric_idx` table, so a store backend can hand over its result rows as they come."""
        n = len(rows)
        if n == 0:
            return cls.empty()
        ids, orgs, parts, names, ivs, units, mtypes, tags, lus = zip(*rows, strict=True)
        return cls(
            list(ids),
            np.fromiter(orgs, np.int64, n),
            list(names),
            np.fromiter(ivs, np.int64, n),
            list(units),
            list(mtypes),
            [tuple(sorted(set(t))) if t else () for t in tags],
            np.fromiter(parts, np.int64, n),
            np.fromiter(lus, np.int64, n),
        )

    def rows(self) -> Iterator[tuple[str, int, int, str, int, str, str, tuple[str, ...], int]]:
        """(id, org, partition, name, interval, unit, mtype, tags, lastupdate) per series, Python ints."""
        return zip(
            self.ids,
            self.orgs.tolist(),
            self.partitions.tolist(),
            self.names,
            self.intervals.tolist(),
            self.units,
            self.mtypes,
            self.tags,
            self.lastupdates.tolist(),
            strict=True,
        )

    def take(self, sel: np.ndarray | Sequence[int]) -> DefBatch:
        """The series at positions `sel` (an index array or a boolean mask), in that order."""
        idx = np.asarray(sel)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        at = idx.tolist()
        return DefBatch(
            [self.ids[i] for i in at],
            self.orgs[idx],
            [self.names[i] for i in at],
            self.intervals[idx],
            [self.units[i] for i in at],
            [self.mtypes[i] for i in at],
            [self.tags[i] for i in at],
            self.partitions[idx],
            self.lastupdates[idx],
        )
