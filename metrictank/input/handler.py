"""One batch of `mdm` messages into the index and the tank.

The batch is decoded at once (numpy over the concatenated payloads), MetricData messages update the index (they
are rare after warm-up, so they are handled one by one), and then every point of the batch is routed to its series
row with one vectorised lookup and handed to the tank in arrival order. A MetricData is a point too: when a batch
has any, their points are merged with the compact points by message position, so a series' order is kept.
Nothing here raises on bad input: every rejected message or point is counted by reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from metrictank.schema import classify_and_decode, validate_metricdata

log = logging.getLogger(__name__)

__all__ = ["IngestHandler"]

_OP_REMOVE, _OP_ARCHIVE, _OP_RESTORE = 0, 1, 2


class IngestHandler:
    def __init__(
        self, index, tank, default_org: int = 0, on_new_series: Callable[[list[str]], None] | None = None
    ) -> None:
        self.index = index
        self.tank = tank
        self.default_org = default_org
        self.on_new_series = on_new_series
        # counters (Metrictank: input.kafka-mdm.*)
        self.messages = 0
        self.metricdata_received = 0
        self.metricpoint_received = 0
        self.metricdata_invalid: Counter[str] = Counter()
        self.decode_errors: Counter[str] = Counter()
        self.unknown_points = 0
        self.control_received = 0

    def process(self, values: Sequence[bytes], partitions: Callable[[int], int]) -> int:
        """Ingest one batch; `partitions(i)` gives the Kafka partition of message i. Returns points handed on."""
        self.messages += len(values)
        d = classify_and_decode(values, self.default_org)
        for reason, k in d.errors.items():
            self.decode_errors[reason] += k
        pts = d.points
        self.metricpoint_received += len(pts)

        md_rows: list[int] = []
        md_ts: list[int] = []
        md_vals: list[float] = []
        md_idx: list[int] = []
        if d.metricdata:
            new_rows, new_names, new_intervals, new_parts, new_ids = [], [], [], [], []
            for i, md in d.metricdata:
                self.metricdata_received += 1
                reason = validate_metricdata(md)
                if reason:
                    self.metricdata_invalid[reason] += 1
                    continue
                p = partitions(i)
                row, created = self.index.add(
                    md.id, md.org_id, md.name, md.interval, md.unit, md.mtype, list(md.tags), p, md.time
                )
                if created:
                    new_rows.append(row)
                    new_names.append(md.name)
                    new_intervals.append(md.interval)
                    new_parts.append(p)
                    new_ids.append(md.id)
                md_rows.append(row)
                md_ts.append(md.time)
                md_vals.append(md.value)
                md_idx.append(i)
            if new_rows:
                self.tank.add_series(
                    np.asarray(new_rows, dtype=np.int64),
                    new_names,
                    np.asarray(new_intervals, dtype=np.int64),
                    np.asarray(new_parts, dtype=np.int64),
                    new_ids,
                )
                if self.on_new_series is not None:
                    self.on_new_series(new_ids)
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
        if md_rows:
            order = np.argsort(np.concatenate([msg_index, np.asarray(md_idx, np.int32)]), kind="stable")
            rows = np.concatenate([rows, np.asarray(md_rows, np.int64)])[order]
            ts = np.concatenate([ts, np.asarray(md_ts, np.uint32)])[order]
            vals = np.concatenate([vals, np.asarray(md_vals, np.float64)])[order]
        if len(rows):
            self.tank.add_points(
                np.ascontiguousarray(rows, dtype=np.int64),
                np.ascontiguousarray(ts, dtype=np.uint32),
                np.ascontiguousarray(vals, dtype=np.float64),
            )
        return len(rows)

    def _control(self, msgs) -> None:
        for _i, msg in msgs:
            self.control_received += 1
            if msg.op in (_OP_REMOVE, _OP_ARCHIVE):
                rows = [r for r in (self.index.row_of(str(d.id)) for d in msg.defs) if r is not None]
                if rows:
                    arr = np.asarray(rows, dtype=np.int64)
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
                        self.tank.add_series(
                            np.asarray([row], np.int64),
                            [d.name],
                            np.asarray([d.interval], np.int64),
                            np.asarray([d.partition], np.int64),
                            [str(d.id)],
                        )
