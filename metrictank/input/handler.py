"""One batch of `mdm` messages into the index and the tank.

The batch is decoded at once (numpy over the concatenated payloads), MetricData messages are validated and
update the index as one batch (columns, not objects: a backlog starts with one MetricData per series, so new
series come by the hundred thousand), and then every point of the batch is routed to its series row with one
vectorised lookup and handed to the tank in arrival order. A MetricData is a point too: when a batch
has any, their points are merged with the compact points by message position, so a series' order is kept.
Nothing here raises on bad input: every rejected message or point is counted by reason.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from metrictank.index.defbatch import DefBatch
from metrictank.schema import classify_and_decode
from metrictank.schema.metricdata import MetricDataBatch
from metrictank.schema.validate import validate_metricdata_many
from metrictank.stats import Stats, by_label

log = logging.getLogger(__name__)

__all__ = ["IngestHandler"]

_OP_REMOVE, _OP_ARCHIVE, _OP_RESTORE = 0, 1, 2


class DefinitionSink(Protocol):
    """Who keeps the persistent index up to date (`metrictank.store.index.IndexUpdater`)."""

    def seen(self, rows: np.ndarray, new_rows: np.ndarray | None = None) -> int: ...

    def restored(self, rows: np.ndarray, lastupdates: np.ndarray, partitions: np.ndarray) -> None: ...

    def removed(self, defs: DefBatch) -> None: ...


class IngestHandler:
    def __init__(
        self,
        index,
        tank,
        default_org: int = 0,
        on_new_series: Callable[[list[str]], None] | None = None,
        on_definitions: DefinitionSink | None = None,
    ) -> None:
        self.index = index
        self.tank = tank
        self.default_org = default_org
        self.on_new_series = on_new_series
        # told after every batch which rows got data and which are new, so the store's index follows the
        # memory index without the main loop knowing about it; settable after construction
        self.on_definitions = on_definitions
        self._batch_new: list[np.ndarray] = []
        # counters (Metrictank: input.kafka-mdm.*)
        self.messages = 0
        self.metricdata_received = 0
        self.metricpoint_received = 0
        self.metricdata_invalid: Counter[str] = Counter()
        self.decode_errors: Counter[str] = Counter()
        self.unknown_points = 0
        self.control_received = 0

    def register_stats(self, stats: Stats) -> None:
        """Metrictank's `input.kafka-mdm.*` figures of this handler."""
        stats.counter(
            "input.kafka-mdm.metricdata.received",
            "MetricData messages received",
            lambda: self.metricdata_received,
        )
        stats.counter(
            "input.kafka-mdm.metricpoint.received", "MetricPoints received", lambda: self.metricpoint_received
        )
        stats.counter(
            "input.kafka-mdm.metricpoint.unknown",
            "points of series not in the index",
            lambda: self.unknown_points,
        )
        stats.counter(
            "input.kafka-mdm.metricdata.invalid",
            "invalid MetricData by reason",
            lambda: by_label(self.metricdata_invalid),
            ("reason",),
        )
        stats.counter(
            "input.kafka-mdm.metrics_decode_err",
            "undecodable messages or points by reason",
            lambda: by_label(self.decode_errors),
            ("reason",),
        )

    def process(self, values: Sequence[bytes], partitions: Callable[[int], int] | np.ndarray) -> int:
        """Ingest one batch; `partitions` gives the Kafka partition of message i (`partitions(i)`, or an array
        indexed by message, as the batch consumer hands them: no Python call per MetricData). Returns points
        handed on.

        Cyclic garbage collection is paused for the batch: decoding MetricData makes a few short-lived
        tracked objects per message, and collections that ran meanwhile would traverse them (and everything
        the batch adds to the index) for nothing; what is left is collected once, after the batch.
        """
        gc_was_enabled = gc.isenabled()
        if gc_was_enabled:
            gc.disable()
        try:
            return self._process(values, partitions)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _process(self, values: Sequence[bytes], partitions: Callable[[int], int] | np.ndarray) -> int:
        self.messages += len(values)
        d = classify_and_decode(values, self.default_org)
        for reason, k in d.errors.items():
            self.decode_errors[reason] += k
        pts = d.points
        self.metricpoint_received += len(pts)

        md_rows = md_idx = md_ts = md_vals = None
        if d.metricdata:
            md_rows, md_idx, md_ts, md_vals = self._metricdata(d.metricdata, partitions)
        if d.control:
            self._control(d.control)

        rows = self.index.lookup_rows(pts["k0"], pts["k1"], pts["org"]) if len(pts) else np.empty(0, np.int64)
        ts = pts["time"]
        vals = pts["value"]
        known = rows >= 0
        n_unknown = len(rows) - int(np.count_nonzero(known))
        if n_unknown:
            self.unknown_points += n_unknown
            rows, ts, vals = rows[known], ts[known], vals[known]
            msg_index = pts["msg_index"][known]
        else:
            msg_index = pts["msg_index"]
        if md_rows is not None and len(md_rows):
            order = np.argsort(np.concatenate([msg_index, md_idx]), kind="stable")
            rows = np.concatenate([rows, md_rows])[order]
            ts = np.concatenate([ts, md_ts.astype(np.uint32)])[order]
            vals = np.concatenate([vals, md_vals])[order]
        if len(rows):
            rows = np.ascontiguousarray(rows, dtype=np.int64)
            self.tank.add_points(
                rows, np.ascontiguousarray(ts, dtype=np.uint32), np.ascontiguousarray(vals, dtype=np.float64)
            )
            # the definition's lastupdate follows the data (as Metrictank's index does): find and findSeries
            # with `from` hide series that stopped reporting, not ones that report only MetricPoints
            self.index.touch(rows, ts)
        if self.on_definitions is not None:
            new = np.concatenate(self._batch_new) if self._batch_new else None
            self.on_definitions.seen(rows, new)
        self._batch_new.clear()
        return len(rows)

    def restore_series(self, batches: Iterable[DefBatch]) -> int:
        """Definitions loaded from the store (at start-up, before consumption) into the index and the tank,
        one `add_many` per batch, exactly as new series of a MetricData batch are registered, so that
        MetricPoints of a series whose last MetricData is older than the replay are accepted. A definition the
        index has already keeps its newer lastupdate. Returns the number of series new to the index."""
        created_total = 0
        for b in batches:
            if not len(b):
                continue
            rows, created = self.index.add_many(
                b.ids,
                b.orgs,
                b.names,
                b.intervals,
                b.units,
                b.mtypes,
                b.tags,
                b.partitions,
                b.lastupdates,
            )
            rows = np.asarray(rows, np.int64)
            new = np.flatnonzero(created)
            if len(new):
                at = new.tolist()
                self._register_new(
                    rows[new],
                    [b.names[i] for i in at],
                    b.intervals[new],
                    b.partitions[new],
                    [b.ids[i] for i in at],
                )
                if self.on_definitions is not None:
                    self.on_definitions.restored(rows[new], b.lastupdates[new], b.partitions[new])
            created_total += len(new)
        self._batch_new.clear()
        return created_total

    def _metricdata(
        self, items: MetricDataBatch, partitions: Callable[[int], int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validate (per batch, see `validate_metricdata_many`), index (one `add_many` for the batch, given
        the ids the validation parsed) and register new series with the tank; returns (rows, message
        indices, times, values) of the valid ones, in message order."""
        self.metricdata_received += len(items)
        if items.columns is not None:  # the common case: columns from the decoder, no MetricData objects
            positions = items.columns[0]
            vb = validate_metricdata_many(items)
        else:
            positions, mds = zip(*items.pairs, strict=True)
            vb = validate_metricdata_many(mds)
        if vb.invalid:
            self.metricdata_invalid.update(vb.invalid)
        if not len(vb):
            return (
                np.empty(0, np.int64),
                np.empty(0, np.int32),
                np.empty(0, np.int64),
                np.empty(0, np.float64),
            )
        idx = np.asarray(positions, np.int32)
        if len(vb) < len(positions):
            idx = idx[vb.positions]
        if isinstance(partitions, np.ndarray):
            parts = partitions[idx].astype(np.int64)
        else:
            parts = np.fromiter(map(partitions, idx.tolist()), np.int64, len(idx))
        rows, created = self.index.add_many(
            vb.ids,
            vb.orgs,
            vb.names,
            vb.intervals,
            vb.units,
            vb.mtypes,
            vb.tags,
            parts,
            vb.times,
            parsed=(vb.id_org, vb.k0, vb.k1),
        )
        rows = np.asarray(rows, np.int64)
        new = np.flatnonzero(created)
        if len(new):
            if len(new) == len(rows):
                new_rows, names, ivs, new_parts, new_ids = rows, vb.names, vb.intervals, parts, list(vb.ids)
            else:
                new_l = new.tolist()
                new_rows, ivs, new_parts = rows[new], vb.intervals[new], parts[new]
                names = [vb.names[j] for j in new_l]
                new_ids = [vb.ids[j] for j in new_l]
            self._register_new(new_rows, names, ivs, new_parts, new_ids)
        return rows, idx, vb.times, vb.values

    def _register_new(
        self, rows: np.ndarray, names: list[str], intervals, partitions, ids: list[str]
    ) -> None:
        """Series new to the index get tank state, and saved marks that were waiting for them."""
        self.tank.add_series(rows, names, intervals, partitions, ids)
        self._batch_new.append(np.asarray(rows, np.int64))
        if self.on_new_series is not None:
            self.on_new_series(ids)

    def _control(self, msgs) -> None:
        for _i, msg in msgs:
            self.control_received += 1
            if msg.op in (_OP_REMOVE, _OP_ARCHIVE):
                rows = [r for r in (self.index.row_of(str(d.id)) for d in msg.defs) if r is not None]
                if rows:
                    arr = np.asarray(rows, dtype=np.int64)
                    if self.on_definitions is not None:
                        defs = self.index.definitions(arr)
                        if msg.op == _OP_ARCHIVE:
                            self.on_definitions.archived(defs)
                        else:
                            self.on_definitions.removed(defs)
                    self.tank.remove_series(arr)
                    self.index.remove(arr)
            elif msg.op == _OP_RESTORE:
                for d in msg.defs:
                    row, created = self.index.add(
                        str(d.id),
                        d.org_id,
                        d.name,
                        d.interval,
                        d.unit,
                        d.mtype,
                        list(d.tags),
                        d.partition,
                        d.last_update,
                    )
                    if created:
                        self._register_new(
                            np.asarray([row], np.int64),
                            [d.name],
                            np.asarray([d.interval], np.int64),
                            np.asarray([d.partition], np.int64),
                            [str(d.id)],
                        )
