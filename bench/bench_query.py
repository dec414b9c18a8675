"""CPU cost of the Graphite query pipeline (parse, fetch from an in-memory source, functions, maxDataPoints
consolidation, JSON encoding), without HTTP or storage.

Rows:
- render of one 24 h series at 10 s (8640 points) and its JSON body: the per-panel floor of a Grafana query;
- sumSeries over 1,000 such series, consolidated to 800 points (Metrictank's default maxDataPoints);
- JSON encoding of 8640 points with the numpy serializer, with the stdlib `json` module as baseline measured in
  the same process (random floats are the worst case: 16-17 significant digits each).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from report import row

from metrictank.query.encode import datapoints_json, render_json
from metrictank.query.engine import render
from metrictank.query.source import StaticSource

POINTS = 8640  # 24 h at 10 s
STEP = 10
END = 1_700_006_400  # a multiple of 10 (and of 86400 * ...), the 'until' of every query
START = END - POINTS * STEP


def _cpu_ms(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm up (imports, caches)
    out = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        out.append((time.process_time() - t0) * 1e3)
    return out


def _row(name: str, samples: list[float], target: float | None, note: str) -> dict:
    return row(name, round(statistics.median(samples), 3), "ms", target, len(samples), note, higher=False)


def _stdlib_json(values: np.ndarray, start: int, step: int) -> bytes:
    vals = [None if v != v else v for v in values.tolist()]
    ts = range(start, start + step * len(values), step)
    return json.dumps(list(zip(vals, ts, strict=True)), separators=(",", ":")).encode()


def run(quick: bool = False) -> list[dict]:
    rng = np.random.default_rng(42)
    runs_small = 10 if quick else 50
    runs_big = 3 if quick else 7
    rows: list[dict] = []

    # one series, 24 h at 10 s: render + JSON
    gauge = np.round(rng.random(POINTS) * 100, 2)
    one = StaticSource({"bench.one": (START + STEP, STEP, gauge)})

    def single() -> bytes:
        return render_json(render(["bench.one"], START, END, 0, one, now=END))

    rows.append(
        _row(
            "query_render_json_1x8640",
            _cpu_ms(single, runs_small),
            5.0,
            "parse + StaticSource fetch + JSON body of 8640 points (2-decimal gauge), no HTTP; CPU ms p50",
        )
    )

    # sumSeries over 1,000 series of 8640 points, consolidated to 800 points (Metrictank default mdp)
    n_series = 200 if quick else 1000
    data = {f"bench.s{i:04d}": (START + STEP, STEP, rng.random(POINTS) * 100) for i in range(n_series)}
    many = StaticSource(data)

    def summed() -> bytes:
        return render_json(render(["sumSeries(bench.*)"], START, END, 800, many, now=END))

    rows.append(
        _row(
            f"query_sumseries_{n_series}x8640",
            _cpu_ms(summed, runs_big),
            300.0 if n_series == 1000 else None,
            "resolve 1 glob + fetch + LCM-aligned sum + maxDataPoints=800 + JSON; CPU ms p50",
        )
    )

    # JSON encoding alone: numpy serializer vs stdlib json, same process
    for label, values in (
        ("random", rng.random(POINTS) * 100),
        ("2dec", np.round(rng.random(POINTS) * 100, 2)),
        ("int", np.floor(rng.random(POINTS) * 1e6)),
    ):
        values = values.copy()
        values[::50] = np.nan
        fast = _cpu_ms(lambda v=values: datapoints_json(v, START, STEP), runs_small)
        base = _cpu_ms(lambda v=values: _stdlib_json(v, START, STEP), runs_small)
        fast_ms, base_ms = statistics.median(fast), statistics.median(base)
        rows.append(
            _row(f"query_json_encode_8640_{label}", fast, None, f"numpy serializer, {label} values, 2% null")
        )
        rows.append(
            {
                "name": f"query_json_encode_8640_{label}_vs_stdlib",
                "value": round(base_ms / max(fast_ms, 1e-9), 2),
                "unit": "x",
                "target": None,
                "higher_is_better": True,
                "runs": len(fast),
                "note": f"speed ratio vs json.dumps of (value|None, ts) pairs ({base_ms:.3f} ms), same process",
            }
        )
    return rows


if __name__ == "__main__":
    for r in run():
        print(
            f"{r['name']:36s} {r['value']:9.3f} {r['unit']}  target={r['target']}  runs={r['runs']}  {r['note']}"
        )
