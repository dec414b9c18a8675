"""Self-metrics in Prometheus form, under Metrictank's stat names.

A Metrictank stat `input.kafka-mdm.metricpoint.received` becomes `metrictank_input_kafka_mdm_metricpoint_received`
(`.` and `-` as `_`); counters get `_total`. Per-partition or per-reason families carry the part that varies as a
label (`partition`, `reason`) instead of inside the name.

The hot path never touches prometheus_client: components keep plain Python ints and dicts, and this collector
reads them when `/metrics` is scraped. That keeps the per-batch cost at zero and lets several instances live in
one process (tests) with a registry each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["prom_name", "Stats", "Sample", "by_label"]

Sample = tuple[tuple[str, ...], float]  # label values, value


def by_label(counts) -> list[Sample]:
    """A dict of label value -> number as samples, safe to call while another thread adds keys.

    `list(d.items())` copies the items in one C call that holds the GIL, where iterating in Python would raise
    "dictionary changed size during iteration" when the main loop adds a reason meanwhile, and the family
    would be missing from that scrape."""
    return [((k,), v) for k, v in list(counts.items())]


def prom_name(metrictank_name: str) -> str:
    """Metrictank's dotted stat name as a Prometheus metric name (without the counter suffix)."""
    return "metrictank_" + re.sub(r"[^A-Za-z0-9_]", "_", metrictank_name)


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge
    doc: str
    labels: tuple[str, ...]
    read: Callable[[], Iterable[Sample] | float]


class Stats:
    """A registry of metric families read on scrape."""

    def __init__(self) -> None:
        self._families: list[_Family] = []
        self.read_errors = 0  # families left out of a scrape because their reader raised
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def counter(
        self, name: str, doc: str, read: Callable[[], Iterable[Sample] | float], labels: tuple[str, ...] = ()
    ) -> None:
        self._families.append(_Family(prom_name(name), "counter", doc, labels, read))

    def gauge(
        self, name: str, doc: str, read: Callable[[], Iterable[Sample] | float], labels: tuple[str, ...] = ()
    ) -> None:
        self._families.append(_Family(prom_name(name), "gauge", doc, labels, read))

    def collect(self):  # prometheus_client collector protocol
        for f in self._families:
            try:
                data = f.read()
                if not isinstance(data, int | float):
                    data = list(data)
            except Exception:  # noqa: BLE001 - a broken reader must not break the scrape
                self.read_errors += 1
                continue
            if f.kind == "counter":
                fam = CounterMetricFamily(f.name, f.doc, labels=list(f.labels))
            else:
                fam = GaugeMetricFamily(f.name, f.doc, labels=list(f.labels))
            if isinstance(data, int | float):
                fam.add_metric([], float(data))
            else:
                for labels, value in data:
                    fam.add_metric([str(x) for x in labels], float(value))
            yield fam

    def describe(self):
        return []

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, float]:
        """Flat name{labels} -> value map, for the CLI and tests."""
        out: dict[str, float] = {}
        for fam in self.collect():
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = s.name
                if s.labels:
                    key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                out[key] = s.value
        return out
