"""Every registered function called with `None` in each argument position answers below 500.

Graphite's parser accepts `None` as a literal, meaning "the default"; a required number such as scale's factor
has no default, and `scale(x, None)` used to reach the implementation and fail there with a TypeError (a 500,
found by the hostile-HTTP reliability scenario)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from metrictank.query.functions import FUNCTIONS

from .test_query_fuzz import client  # noqa: F401 - the fixture: the fuzz test's app and limits

SERIES = "servers.*.cpu"
FILL = {
    "integer": "1",
    "node": "1",
    "float": "2",
    "intOrInf": "1",
    "boolean": "true",
    "nodeOrTag": "1",
    "intOrInterval": "'1min'",
    "interval": "'1min'",
    "date": "'-1h'",
    "aggFunc": "'sum'",
    "aggOrSeriesFunc": "'sum'",
    "string": "'x'",
    "tag": "'dc'",
}


def _arg(p, none: bool) -> str:
    if none:
        return "None"
    if p.type in ("seriesList", "seriesLists"):
        return SERIES
    return FILL.get(p.type, "1")


def _targets() -> list[str]:
    out = []
    for name, fdef in sorted(FUNCTIONS.items()):
        params = list(fdef.params)
        for i in range(len(params)):
            args = [
                _arg(p, j == i) for j, p in enumerate(params[: max(i + 1, sum(p.required for p in params))])
            ]
            out.append(f"{name}({', '.join(args)})")
        out.append(f"{name}({', '.join(['None'] * max(1, len(params)))})")
    return out


def test_none_in_every_position_of_every_function_is_not_a_server_error(client: TestClient) -> None:  # noqa: F811
    failures = []
    for target in _targets():
        r = client.get("/render", params={"target": target, "from": "-1h", "until": "now"})
        if r.status_code >= 500:
            failures.append((target, r.status_code, r.text[:200]))
    assert not failures, failures[:20]
    assert len(_targets()) > 3 * len(FUNCTIONS)


def test_required_number_given_none_names_the_argument(client: TestClient) -> None:  # noqa: F811
    r = client.get("/render", params={"target": f"scale({SERIES}, None)"})
    assert r.status_code == 400
    assert "factor" in r.text and "number" in r.text
