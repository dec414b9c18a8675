"""Holt-Winters forecasting (graphite-web's holtWintersForecast, holtWintersConfidenceBands and
holtWintersAberration), registered into `functions.FUNCTIONS` when `functions.py` imports this module.

The model is graphite-web's: triple exponential smoothing with alpha = gamma = 0.1 and beta = 0.0035, a
season of `seasonality` (default a day) and deviations smoothed per season slot. It needs history: the
series is read from `bootstrapInterval` (default 7 days) before the requested range, which the `prepare`
hook asks the engine for, like movingAverage asks for its window. The bootstrap is read at full resolution
(maxDataPoints 0): the season is counted in points, so the step must not change with the range, and the
engine consolidates the output to maxDataPoints afterwards as for any series.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .consolidate import align_forward
from .errors import QueryError
from .functions import _SL, EvalContext, Invocation, Param, register
from .series import Series
from .timeparse import parse_duration

ALPHA = GAMMA = 0.1
BETA = 0.0035


def holt_winters(values: np.ndarray, season_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, deviations) for every point, as graphite-web's holtWintersAnalysis computes them.

    A null input breaks the recurrences, so it gets no intercept (the next point restarts from its own
    value), a null prediction for the point after it and a zero deviation. The loop is sequential by
    nature (each point's state depends on the previous one's), hence plain Python floats."""
    n = len(values)
    intercepts: list[float | None] = []
    slopes: list[float] = []
    seasonals: list[float] = []
    predictions = np.full(n, np.nan)
    deviations: list[float] = []
    next_pred: float | None = None

    def last_season(xs: list[float], i: int) -> float:
        j = i - season_length
        return xs[j] if j >= 0 else 0.0

    for i, actual in enumerate(values.tolist()):
        if math.isnan(actual):
            intercepts.append(None)
            slopes.append(0.0)
            seasonals.append(0.0)
            deviations.append(0.0)
            if next_pred is not None:
                predictions[i] = next_pred
            next_pred = None
            continue
        if i == 0:
            last_intercept, last_slope, prediction = actual, 0.0, actual
        else:
            prev = intercepts[-1]
            last_intercept = actual if prev is None else prev
            last_slope = slopes[-1]
            prediction = next_pred
        seasonal_before = last_season(seasonals, i)
        intercept = ALPHA * (actual - seasonal_before) + (1 - ALPHA) * (last_intercept + last_slope)
        slope = BETA * (intercept - last_intercept) + (1 - BETA) * last_slope
        seasonal = GAMMA * (actual - intercept) + (1 - GAMMA) * seasonal_before
        next_pred = intercept + slope + last_season(seasonals, i + 1)
        deviation = GAMMA * abs(actual - (prediction if prediction is not None else 0.0)) + (
            1 - GAMMA
        ) * last_season(deviations, i)
        intercepts.append(intercept)
        slopes.append(slope)
        seasonals.append(seasonal)
        deviations.append(deviation)
        if prediction is not None:
            predictions[i] = prediction
    return predictions, np.array(deviations, dtype=np.float64)


def _prepare(ctx: EvalContext, args: dict[str, Any]) -> EvalContext:
    bootstrap = parse_duration(args["bootstrapInterval"])
    return ctx.replace(start=ctx.start - bootstrap, max_data_points=0)


def _analyse(inv: Invocation, s: Series, seasonality: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(start, actual, predictions, deviations) of a bootstrapped series, cut to the requested range."""
    season_length = parse_duration(seasonality) // s.step
    if season_length < 2:
        raise QueryError(
            f"holtWinters: seasonality {seasonality!r} must span at least two points of {s.target!r} "
            f"(step {s.step}s)"
        )
    pred, dev = holt_winters(s.values, season_length)
    first_ts = align_forward(inv.outer.start, s.step)
    first = max(0, (first_ts - s.start) // s.step)
    return s.start + first * s.step, s.values[first:], pred[first:], dev[first:]


def _derived(s: Series, name: str, path_expr: str, tag: str, start: int, values: np.ndarray) -> Series:
    tags = dict(s.tags)
    tags[tag] = "1"
    return Series(name, path_expr, tags, start, s.step, values, s.consolidator)


_BOOTSTRAP = Param("bootstrapInterval", "interval", default="7d", suggestions=("7d", "30d"))
_SEASONALITY = Param("seasonality", "interval", default="1d", suggestions=("1d", "7d"))
_DELTA = Param("delta", "integer", default=3)


@register("holtWintersForecast", [_SL, _BOOTSTRAP, _SEASONALITY], "Calculate", prepare=_prepare)
def holt_winters_forecast(
    inv: Invocation, seriesList: list[Series], bootstrapInterval: str = "7d", seasonality: str = "1d"
) -> list[Series]:
    """The Holt-Winters prediction of each series, learnt from bootstrapInterval of history before the
    range (default 7 days) with a season of `seasonality` (default 1 day)."""
    out = []
    for s in seriesList:
        start, _, pred, _ = _analyse(inv, s, seasonality)
        name = f"holtWintersForecast({s.target})"
        out.append(_derived(s, name, name, "holtWintersForecast", start, pred))
    return out


def _bands(
    inv: Invocation, s: Series, delta: int, seasonality: str
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(start, actual, lower, upper): the prediction minus and plus delta deviations."""
    start, actual, pred, dev = _analyse(inv, s, seasonality)
    return start, actual, pred - delta * dev, pred + delta * dev  # null where the prediction is null


@register(
    "holtWintersConfidenceBands", [_SL, _DELTA, _BOOTSTRAP, _SEASONALITY], "Calculate", prepare=_prepare
)
def holt_winters_confidence_bands(
    inv: Invocation,
    seriesList: list[Series],
    delta: int = 3,
    bootstrapInterval: str = "7d",
    seasonality: str = "1d",
) -> list[Series]:
    """Two series per input, lower then upper: the Holt-Winters prediction minus and plus delta times the
    predicted deviation. Their path expression is the input's, as in graphite-web."""
    out = []
    for s in seriesList:
        start, _, lower, upper = _bands(inv, s, delta, seasonality)
        for kind, vals in (("Lower", lower), ("Upper", upper)):
            tag = f"holtWintersConfidence{kind}"
            out.append(_derived(s, f"{tag}({s.target})", s.path_expr, tag, start, vals))
    return out


@register("holtWintersAberration", [_SL, _DELTA, _BOOTSTRAP, _SEASONALITY], "Calculate", prepare=_prepare)
def holt_winters_aberration(
    inv: Invocation,
    seriesList: list[Series],
    delta: int = 3,
    bootstrapInterval: str = "7d",
    seasonality: str = "1d",
) -> list[Series]:
    """How far each point lies outside its Holt-Winters confidence band (positive above the upper band,
    negative below the lower one, 0 inside it or where the point is null)."""
    out = []
    for s in seriesList:
        start, actual, lower, upper = _bands(inv, s, delta, seasonality)
        with np.errstate(invalid="ignore"):
            above = np.where(actual > upper, actual - upper, 0.0)  # False where either is null
            below = np.where(actual < lower, actual - lower, 0.0)
        vals = np.where(above != 0, above, below)
        name = f"holtWintersAberration({s.target})"
        out.append(_derived(s, name, name, "holtWintersAberration", start, vals))
    return out
