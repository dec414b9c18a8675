"""A series' lastupdate follows its points, not just its MetricData: queries with `from` (find, findSeries)
hide series that stopped reporting, never ones that report through compact MetricPoints."""

import threading

from metrictank.api.source import InstanceSource
from metrictank.index import MemoryIndex
from metrictank.input.handler import IngestHandler
from metrictank.retention import Aggregations, Schemas
from metrictank.schema import MetricData, encode_metricdata, encode_metricpoint, series_id
from metrictank.tank import Tank

T0 = 1_700_000_000


def _md(name: str, tags: list[str], t: int) -> MetricData:
    md = MetricData(org_id=1, name=name, interval=10, value=1.0, time=t, mtype="gauge", tags=tags)
    md.id = series_id(1, name, "", "gauge", 10, tags)
    return md


def test_points_raise_lastupdate_and_from_filters_on_it() -> None:
    index = MemoryIndex()
    tank = Tank(Schemas.load(None), Aggregations.load(None), row_of_id=index.row_of)
    handler = IngestHandler(index, tank, 1)
    live, stopped = _md("app.live", [], T0), _md("app.stopped", [], T0)
    handler.process([encode_metricdata(live), encode_metricdata(stopped)], lambda i: 0)
    # only `live` keeps reporting, through MetricPoints (no new MetricData)
    msgs = [encode_metricpoint(live.id, float(k), T0 + 10 * k) for k in range(1, 361)]
    assert handler.process(msgs, lambda i: 0) == 360
    assert index.get(index.row_of(live.id)).lastupdate == T0 + 3600
    assert index.get(index.row_of(stopped.id)).lastupdate == T0
    # an out-of-order point never lowers it
    handler.process([encode_metricpoint(live.id, 0.0, T0 + 5)], lambda i: 0)
    assert index.get(index.row_of(live.id)).lastupdate == T0 + 3600

    src = InstanceSource(index, tank, None, Schemas.load(None), threading.Lock())
    assert [n.path for n in src.find(1, "app.*")] == ["app.live", "app.stopped"]
    assert [n.path for n in src.find(1, "app.*", T0 + 1800)] == ["app.live"]
    refs = src.resolve_tags(1, ["name=~app"])
    assert {(r.name, r.last_update) for r in refs} == {
        ("app.live", T0 + 3600),
        ("app.stopped", T0),
    }
    assert [r.name for r in src.resolve_tags(1, ["name=~app"], T0 + 1800)] == ["app.live"]
