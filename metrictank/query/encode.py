"""Render output formats: json (Graphite/Metrictank), csv and msgpack.

JSON is the hot path: a 24 h panel at 10 s is 8640 `[value, ts]` pairs per series, and Python's float repr
costs about 0.3 us per number on its own. Numbers are therefore formatted by numpy in bulk: for each value
the shortest number of decimals k whose decimal m / 10**k converts back to exactly the same float is found
by a vectorised binary search; m and the timestamps are turned into digit columns of a byte matrix, and
filler bytes are dropped in one pass. The check `m / 10**k == x` is exact: both operands are exactly
representable, IEEE division rounds correctly, and so does any conforming JSON parser reading the digits.
Values the fast path leaves out (2**53 and above, or needing more than 17 decimals) fall back to Python's
repr, rewritten in positional notation.

Where orjson is installed (a dependency) it writes the datapoints instead, about 7x faster, whenever its
output can be made byte-identical (see `_orjson_datapoints`); the numpy formatter stays the reference and
the path for everything else (infinities, magnitudes orjson would print with an exponent).

Numbers are written like Metrictank (Go's strconv 'f', -1): shortest round-trip digits, no exponent, no
trailing `.0` (`1`, `0.1`, `1234.5`). Null is `null`; infinities are `1e9999`/`-1e9999` as graphite-web
writes them (JSON has no infinity and any parser reads these as infinite).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from decimal import Decimal

import msgpack
import numpy as np

try:  # a dependency; the numpy formatter below keeps working (slower) where it is not installed
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

from .series import Series

_P10 = 10.0 ** np.arange(23)
_P10_INT = np.array([10**i for i in range(19)], dtype=np.int64)
_FAST_LIMIT = 2.0**53  # above this every float is an integer whose shortest form may end in zeros
_MAX_DECIMALS = 17


_PAIRS = np.array([(48 + i // 10) | ((48 + i % 10) << 8) for i in range(100)], dtype="<u2")


def _digit_columns(a: np.ndarray, width: int) -> np.ndarray:
    """ASCII digit columns of non-negative int64 values, zero padded to `width` (right aligned).

    Digits are produced two at a time (divide by the scalar 100, which numpy runs at full speed, and look
    the pair up as two ASCII bytes) into contiguous rows, then transposed once."""
    pairs = (width + 1) // 2
    rows = np.empty((pairs, len(a)), dtype="<u2")
    for j in range(pairs - 1, -1, -1):
        q = a // 100
        rows[j] = _PAIRS[a - q * 100]
        a = q
    out = np.ascontiguousarray(rows.T).view(np.uint8)
    return out[:, 1:] if width % 2 else out


def _int_digits(mag: np.ndarray, width: int | None = None) -> np.ndarray:
    """Digit columns (ASCII, leading zeros as 0 filler) of non-negative int64 values; the last column always
    holds a digit so zero prints as `0`."""
    n = len(mag)
    if width is None:
        width = max(1, len(str(int(mag.max())))) if n else 1
    out = _digit_columns(mag, width)
    if width > 1:
        lead = mag[:, None] < _P10_INT[width - 1 : 0 : -1][None, :]
        out[:, :-1][lead] = 0
    return out


_SPLIT = 134217729.0  # 2**27 + 1, Dekker's splitter
_P10_HI = _SPLIT * _P10 - (_SPLIT * _P10 - _P10)
_P10_LO = _P10 - _P10_HI


class _RoundTrip:
    """Tests "does the k-decimal number nearest to x read back as x" for many positive finite x at once.

    x * 10**k is computed exactly as prod + err (Dekker's two-product), so neither the candidate m (which
    may exceed 2**53) nor the test depends on a rounded product: m / 10**k reads back as x exactly when it
    lies strictly inside x's rounding interval, |m - x * 10**k| < ulp(x) * 10**k / 2 (a quarter ulp on the
    lower side of a power of two). Everything that does not depend on k is computed once.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        c = _SPLIT * x
        self.xh = c - (c - x)
        self.xl = x - self.xh
        self.half_ulp = 0.5 * np.spacing(x)
        self.pow2 = np.frexp(x)[0] == 0.5

    def __call__(self, sel: np.ndarray, k: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(ok, m) for the values at indices `sel` with k decimals (a scalar or one per value)."""
        x, xh, xl = self.x[sel], self.xh[sel], self.xl[sel]
        p, ph, pl = _P10[k], _P10_HI[k], _P10_LO[k]
        prod = x * p
        err = ((xh * ph - prod) + xh * pl + xl * ph) + xl * pl
        mf = np.rint(prod)
        d = (prod - mf) + err  # exact product minus mf
        r = np.rint(d)
        delta = r - d  # m minus the exact product
        half = self.half_ulp[sel] * p
        half = np.where((delta < 0) & self.pow2[sel], half * 0.5, half)
        return np.abs(delta) < half, mf.astype(np.int64) + r.astype(np.int64)


def _shortest_decimals(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For positive finite non-integers x < 2**53: (ok, k, m) with k the fewest decimals whose nearest
    decimal m / 10**k reads back as x; ok is False where 17 decimals (or int64) do not suffice."""
    n = len(x)
    k = np.zeros(n, dtype=np.int64)
    m = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    check = _RoundTrip(x)
    # measured data mostly has a few decimals: probe those directly on the shrinking remainder
    sel = np.arange(n)
    for kk in (1, 2, 3):
        if not len(sel):
            return ok, k, m
        hit, mm = check(sel, kk)
        done = sel[hit]
        k[done], m[done], ok[done] = kk, mm[hit], True
        sel = sel[~hit]
    if not len(sel):
        return ok, k, m
    # the rest: binary search between 4 decimals and the most that can matter (17 significant digits,
    # and m must fit an int64); the round-trip property is monotonic in k
    lg = np.log10(x[sel])
    hi = np.minimum(np.minimum(16 - np.floor(lg), np.floor(18.95 - lg)), _MAX_DECIMALS).astype(np.int64)
    fits = hi >= 4  # otherwise 4+ decimals would exceed 17 digits or int64: leave it to the fallback
    sel, hi = sel[fits], hi[fits]
    good, best = check(sel, hi)
    sel, hi, best = sel[good], hi[good], best[good]
    lo = np.full(len(sel), 4, dtype=np.int64)
    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            break
        mid = (lo[active] + hi[active]) // 2
        hit, mm = check(sel[active], mid)
        up, down = active[hit], active[~hit]
        hi[up], best[up] = mid[hit], mm[hit]
        lo[down] = mid[~hit] + 1
    k[sel], m[sel], ok[sel] = hi, best, True
    return ok, k, m


def _fallback_text(x: float) -> bytes:
    if x != x:
        return b"null"
    if x in (float("inf"), float("-inf")):
        return b"1e9999" if x > 0 else b"-1e9999"
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0" if text == "" else "-0"
    return text.encode()


def _chars_matrix(rows: Sequence[bytes], width: int) -> np.ndarray:
    """Left-aligned byte rows padded with 0 filler to `width`."""
    buf = b"".join(r.ljust(width, b"\0") for r in rows)
    return np.frombuffer(buf, dtype=np.uint8).reshape(len(rows), width)


def float_chars(values: np.ndarray) -> np.ndarray:
    """One row of ASCII per value (0 bytes are filler to drop), formatted as described in the module doc."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    ax = np.abs(v)
    finite = np.isfinite(v)
    fast = finite & (ax < _FAST_LIMIT)
    k = np.zeros(n, dtype=np.int64)
    m = np.zeros(n, dtype=np.int64)

    # integers (the common case for counters and gauges) need no search
    is_int = fast & (np.floor(ax) == ax)
    m[is_int] = ax[is_int].astype(np.int64)
    todo = np.flatnonzero(fast & ~is_int)
    if len(todo):
        ok, kk, mm = _shortest_decimals(ax[todo])
        k[todo], m[todo] = kk, mm
        fast[todo[~ok]] = False

    kmax = int(k[fast].max()) if fast.any() else 0
    intpart = np.where(fast, m // _P10_INT[k], 0)
    int_cols = _int_digits(intpart)
    cols = [np.where(fast & (v < 0), ord("-"), 0).astype(np.uint8)[:, None], int_cols]
    if kmax:
        # left-align every fraction to kmax digits, then blank the columns past each value's own k
        frac = np.where(fast, (m % _P10_INT[k]) * _P10_INT[kmax - k], 0)
        frac_cols = _digit_columns(frac, kmax)
        frac_cols[np.arange(kmax)[None, :] >= k[:, None]] = 0
        dot = np.where(k > 0, ord("."), 0).astype(np.uint8)[:, None]
        cols += [dot, frac_cols]
    mat = np.concatenate(cols, axis=1)
    if fast.all():
        return mat
    nulls = np.isnan(v)
    pos_inf = v == np.inf
    neg_inf = v == -np.inf
    slow = np.flatnonzero(~fast & ~nulls & ~pos_inf & ~neg_inf)
    texts = [_fallback_text(float(x)) for x in v[slow]]
    width = max(
        [mat.shape[1], 4 if nulls.any() else 0, 6 if pos_inf.any() else 0, 7 if neg_inf.any() else 0]
        + [len(t) for t in texts]
    )
    if width > mat.shape[1]:
        mat = np.concatenate([mat, np.zeros((n, width - mat.shape[1]), dtype=np.uint8)], axis=1)
    for mask, text in ((nulls, b"null"), (pos_inf, b"1e9999"), (neg_inf, b"-1e9999")):
        if mask.any():
            mat[mask] = _chars_matrix([text], width)[0]
    if len(slow):
        mat[slow] = _chars_matrix(texts, width)
    return mat


def format_floats(values: np.ndarray) -> list[str]:
    """The formatted numbers as strings (null for NaN); for tests and small outputs."""
    mat = float_chars(values)
    return [bytes(r[r != 0]).decode() for r in mat]


def _orjson_datapoints(values: np.ndarray, stamps: np.ndarray) -> bytes | None:
    """The same bytes as the numpy formatter, from orjson, or None where orjson would write something else.

    orjson prints the same shortest round-trip digits (Ryu), about 7x faster than the numpy formatter on a
    301-point panel (measured: 50 vs 360 us), but differs in three ways that are fixed or avoided here:
    integral floats end in `.0` (removed: in `[v,ts]` pairs `.0,` and `.0]` can only end an integral number,
    since shortest digits never end a fraction in 0; timestamps go in as exact floats and lose theirs the
    same way), -0.0 prints `-0.0` (zeros are normalised first, as the numpy path prints `0`), and very small or
    large magnitudes use an exponent (any `e` in the output sends the series to the numpy path, as does an
    infinity, which orjson would write as null where Graphite writes 1e9999)."""
    if _orjson is None or np.isinf(values).any():
        return None
    v = np.where(values == 0, 0.0, values)  # also turns -0.0 into 0.0; NaN stays NaN (orjson: null)
    body = _orjson.dumps(np.column_stack((v, stamps.astype(np.float64))), option=_orjson.OPT_SERIALIZE_NUMPY)
    if b"e" in body:
        return None
    return body.replace(b".0,", b",").replace(b".0]", b"]")


def datapoints_json(values: np.ndarray, start: int, step: int, keep: np.ndarray | None = None) -> bytes:
    """`[[v,ts],[v,ts],...]` for a regular series, built without a Python loop over points; `keep` (a boolean
    mask) selects which points to write. orjson writes it when it can (see `_orjson_datapoints`), else the
    numpy formatter of this module."""
    stamps = start + step * np.arange(len(values), dtype=np.int64)
    if keep is not None:
        values, stamps = values[keep], stamps[keep]
    n = len(values)
    if n == 0:
        return b"[]"
    if abs(int(stamps[-1])) < _FAST_LIMIT and abs(int(stamps[0])) < _FAST_LIMIT:
        fast = _orjson_datapoints(np.asarray(values, dtype=np.float64), stamps)
        if fast is not None:
            return fast
    return _numpy_datapoints(values, stamps)


def _numpy_datapoints(values: np.ndarray, stamps: np.ndarray) -> bytes:
    """`datapoints_json` by the numpy formatter (float_chars): exact for every float, the reference."""
    n = len(values)
    vals = float_chars(values)
    ts = _int_digits(stamps)
    w, t = vals.shape[1], ts.shape[1]
    mat = np.empty((n, w + t + 4), dtype=np.uint8)
    mat[:, 0] = ord("[")
    mat[:, 1 : 1 + w] = vals
    mat[:, 1 + w] = ord(",")
    mat[:, 2 + w : 2 + w + t] = ts
    mat[:, 2 + w + t] = ord("]")
    mat[:, 3 + w + t] = ord(",")
    flat = mat.ravel()
    body = flat[flat != 0].tobytes()
    return b"[" + body[:-1] + b"]"


def _quote(s: str) -> bytes:
    return json.dumps(s).encode()


def render_json(series: Sequence[Series], no_null_points: bool = False) -> bytes:
    """Graphite's render JSON: `[{"target": ..., "tags": {...}, "datapoints": [[value|null, ts], ...]}]`.

    `no_null_points` (graphite-web's noNullPoints): points without a finite value are left out, and so is a
    series left with none - for clients that cannot handle nulls."""
    parts = []
    for s in series:
        keep = None
        if no_null_points:
            keep = np.isfinite(s.values)
            if not keep.any():
                continue
        head = b'{"target":' + _quote(s.target)
        if s.tags:
            head += b',"tags":' + json.dumps(dict(sorted(s.tags.items())), separators=(",", ":")).encode()
        parts.append(head + b',"datapoints":' + datapoints_json(s.values, s.start, s.step, keep) + b"}")
    return b"[" + b",".join(parts) + b"]"


def render_csv(series: Sequence[Series]) -> bytes:
    """Graphite's CSV: `target,YYYY-MM-DD HH:MM:SS,value` per point (UTC), empty value for null."""
    out = []
    for s in series:
        n = len(s)
        if n == 0:
            continue
        stamps = np.datetime_as_string(s.timestamps().astype("datetime64[s]"), unit="s")
        vals = format_floats(s.values)
        prefix = s.target.replace("\n", " ") + ","
        out.extend(
            f"{prefix}{d.replace('T', ' ')},{'' if v == 'null' else v}\n"
            for d, v in zip(stamps, vals, strict=True)
        )
    return "".join(out).encode()


def _fetch_docs(series: Sequence[Series]) -> list[dict]:
    """graphite-web's remote-fetch shape: {name, start, end, step, values, pathExpression}, nulls as None."""
    docs = []
    for s in series:
        vals = s.values.tolist()
        if np.isnan(s.values).any():
            vals = [None if x != x else x for x in vals]
        docs.append(
            {
                "name": s.target,
                "start": int(s.start),
                "end": int(s.end),
                "step": int(s.step),
                "values": vals,
                "pathExpression": s.path_expr,
            }
        )
    return docs


def render_msgpack(series: Sequence[Series]) -> bytes:
    """Graphite's msgpack format, what graphite-web's cluster reader expects from a remote finder."""
    return msgpack.packb(_fetch_docs(series), use_bin_type=True)


def render_pickle(series: Sequence[Series]) -> bytes:
    """Graphite's pickle format (protocol 2), what older graphite-web cluster readers ask for."""
    return pickle.dumps(_fetch_docs(series), protocol=2)
